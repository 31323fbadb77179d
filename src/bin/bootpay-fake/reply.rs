//! Response shapes: Bootpay's bare v2 error object, v1's envelope
//! `{"status", "code", "message", "data"}`, and the non-JSON answers a proxy in front of
//! Bootpay can produce (HTML error pages, cut-off bodies).
//!
//! Bootpay documents the error codes but not the HTTP status of each; the mapping here
//! (404 not found, 401 bad token, 400 invalid state, 5xx server trouble) is an assumption
//! the client must not depend on beyond "non-2xx". v1's numeric codes are documented only as
//! negative; -2410 (credentials Bootpay does not recognise) is the one seen from Bootpay, the
//! others are this fake's own.

use std::borrow::Cow;

use axum::Json;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Which of Bootpay's two APIs an answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// At the host's root: envelopes, raw-token auth.
    V1,
    /// Under `/v2`: bare objects, Bearer or Basic auth.
    V2,
}

/// A v2 error: `{"error_code": "...", "message": "..."}` with a non-2xx status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// The v2 `error_code`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Adds `Retry-After`, as a rate limiter would.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn receipt_not_found() -> Self {
        // Code and message as captured from Bootpay.
        Self::new(
            StatusCode::NOT_FOUND,
            "RC_NOT_FOUND",
            "영수증 정보를 찾지 못했습니다.",
        )
    }

    pub fn route_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "요청한 API를 찾을 수 없습니다.",
        )
    }

    pub fn credentials_refused() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "TOKEN_KEY_INVALID",
            "application_id 또는 private_key가 올바르지 않습니다.",
        )
    }

    pub fn basic_refused() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "TOKEN_KEY_INVALID",
            "client_key 또는 secret_key가 올바르지 않습니다.",
        )
    }

    pub fn invalid_access_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_ACCESS_TOKEN",
            "유효하지 않거나 만료된 access token입니다.",
        )
    }

    pub fn invalid_request(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", detail)
    }

    pub fn not_confirm_ready() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "RC_NOT_CONFIRM_READY",
            "승인 대기 상태의 결제가 아닙니다.",
        )
    }

    pub fn already_cancelled() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "RC_ALREADY_CANCELLED",
            "이미 취소된 결제입니다.",
        )
    }

    /// A payment that was never paid: nothing to give back.
    pub fn not_cancellable() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "RC_NOT_CANCELLABLE",
            "취소할 수 없는 상태의 결제입니다.",
        )
    }

    /// A deposit or an expiry asked of a receipt that is not an issued virtual account.
    pub fn not_awaiting_deposit() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "RC_NOT_AWAITING_DEPOSIT",
            "입금 대기 중인 가상계좌 결제가 아닙니다.",
        )
    }

    pub fn cancel_price_exceeded(message: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "RC_CANCEL_PRICE_EXCEEDED", message)
    }

    /// A transient server failure with the given status (503 unless a fixture says otherwise).
    pub fn server_error(status: StatusCode) -> Self {
        Self::new(
            status,
            "SERVER_ERROR",
            "일시적인 서버 오류입니다. 잠시 후 다시 시도해 주세요.",
        )
    }

    /// v1's `code` for this error.
    fn v1_code(&self) -> i64 {
        match self.code {
            "TOKEN_KEY_INVALID" => -2410,
            "INVALID_ACCESS_TOKEN" => -2400,
            "RC_NOT_FOUND" | "NOT_FOUND" => -404,
            "RC_NOT_CONFIRM_READY" => -2300,
            "RC_ALREADY_CANCELLED" => -2501,
            "RC_NOT_CANCELLABLE" => -2502,
            "RC_CANCEL_PRICE_EXCEEDED" => -2503,
            _ => -i64::from(self.status.as_u16()),
        }
    }

    /// The error as `dialect` writes it: v2's bare object, or v1's envelope with `data: null`.
    /// Either way the HTTP status is the error's, which v1 repeats in the envelope.
    pub fn render(self, dialect: Dialect) -> Response {
        let body = match dialect {
            Dialect::V2 => json!({ "error_code": self.code, "message": self.message }),
            Dialect::V1 => json!({
                "status": self.status.as_u16(),
                "code": self.v1_code(),
                "message": self.message,
                "data": null,
            }),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.render(Dialect::V2)
    }
}

impl From<ApiError> for Response {
    fn from(error: ApiError) -> Self {
        error.into_response()
    }
}

/// A v1 success: HTTP 200 and the envelope around `data`.
pub fn envelope(data: Value) -> Response {
    Json(json!({ "status": 200, "code": 0, "message": "", "data": data })).into_response()
}

/// The page a load balancer serves while Bootpay is down: not JSON, not even the right type.
pub fn outage() -> Response {
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        "<html><body><h1>503 Service Unavailable</h1></body></html>",
    )
}

pub fn bad_gateway() -> Response {
    html(
        StatusCode::BAD_GATEWAY,
        "<html><body><h1>502 Bad Gateway</h1></body></html>",
    )
}

/// A 200 whose JSON body stops mid-string, as when a connection is cut during the body.
pub fn truncated(dialect: Dialect, receipt_id: &str) -> Response {
    let receipt = json!({ "receipt_id": receipt_id });
    let mut body = match dialect {
        Dialect::V2 => receipt.to_string(),
        Dialect::V1 => {
            json!({ "status": 200, "code": 0, "message": "", "data": receipt }).to_string()
        }
    };
    // Drops the closing `"}` (and v1's `}`), leaving `...{"receipt_id":"abc`.
    let closing = match dialect {
        Dialect::V2 => 2,
        Dialect::V1 => 3,
    };
    body.truncate(body.len().saturating_sub(closing));
    (StatusCode::OK, [(CONTENT_TYPE, "application/json")], body).into_response()
}

fn html(status: StatusCode, body: &'static str) -> Response {
    (status, [(CONTENT_TYPE, "text/html")], body).into_response()
}

/// A refusal that quotes the request: its line, every header (`Authorization` among them)
/// and its body, with CR LF between, in Bootpay's error shape, as some WAFs answer.
pub async fn echo(request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let mut quoted = format!(
        "Request blocked by policy.\r\n{} {}\r\n",
        parts.method, parts.uri
    );
    // By name, so the quote reads the same from run to run.
    let mut headers: Vec<_> = parts.headers.iter().collect();
    headers.sort_by_key(|(name, _)| name.as_str());
    for (name, value) in headers {
        quoted.push_str(&format!(
            "{name}: {}\r\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    quoted.push_str("\r\n");
    quoted.push_str(&String::from_utf8_lossy(&body));
    (
        StatusCode::FORBIDDEN,
        Json(json!({"error_code": "REQUEST_BLOCKED", "message": quoted})),
    )
        .into_response()
}

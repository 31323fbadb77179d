//! Bootpay's v2 dialect: paths under the `/v2` base, JSON bodies, Bearer tokens, the
//! receipt object and the `{error_code, message}` error shape.

use std::time::Duration;

use receipt_verifier_core::{PaymentStatus, Receipt};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Number;

use super::error::BootpayError;

/// Paths appended to the base URL.
pub const TOKEN_PATH: &[&str] = &["request", "token"];
pub const CONFIRM_PATH: &[&str] = &["confirm"];

/// The receipt path for `receipt_id`; the id is one percent-encoded path segment.
pub fn receipt_path(receipt_id: &str) -> [&str; 2] {
    ["receipt", receipt_id]
}

/// The parts of a v2 receipt the verifier relies on. Everything else is ignored, so
/// Bootpay can add fields freely.
#[derive(Debug, Clone, Deserialize)]
struct WireReceipt {
    receipt_id: String,
    order_id: String,
    price: Number,
    status: i64,
    #[serde(default)]
    currency: Option<String>,
    /// Cumulative amount cancelled; partial cancels can leave the status untouched.
    #[serde(default)]
    cancelled_price: Option<Number>,
    /// Set on payments made with a test project.
    #[serde(default)]
    sandbox: Option<bool>,
    /// A virtual account's details, its deposit deadline (`expired_at`) among them. Kept
    /// loose: a shape we do not expect here must not make the receipt unreadable.
    #[serde(default)]
    vbank_data: Option<serde_json::Value>,
}

impl From<WireReceipt> for Receipt {
    fn from(wire: WireReceipt) -> Self {
        Self {
            receipt_id: wire.receipt_id,
            order_id: wire.order_id,
            price: wire.price,
            status: PaymentStatus::from_code(wire.status),
            currency: wire.currency,
            cancelled_price: wire.cancelled_price,
            sandbox: wire.sandbox,
            deposit_due: wire
                .vbank_data
                .as_ref()
                .and_then(|v| v.get("expired_at")?.as_str())
                .and_then(super::time::parse),
        }
    }
}

/// `POST /request/token`'s answer.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Seconds the token lives.
    #[serde(default)]
    expire_in: Option<f64>,
}

/// An access token and how long it lives, from `POST /request/token`.
///
/// # Errors
/// The error the answer is, classified; `Malformed` for a body without a token.
pub fn token(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<(String, Option<f64>), BootpayError> {
    let response: TokenResponse = success(status, retry_after, body)?;
    Ok((response.access_token, response.expire_in))
}

/// The receipt a lookup or a confirm answered.
///
/// # Errors
/// The error the answer is, classified.
pub fn receipt(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Receipt, BootpayError> {
    success::<WireReceipt>(status, retry_after, body).map(Receipt::from)
}

/// The bare object of a 2xx answer, or the error another answer is.
fn success<T: serde::de::DeserializeOwned>(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<T, BootpayError> {
    if !status.is_success() {
        return Err(classify_error(status, retry_after, body));
    }
    serde_json::from_slice(body).map_err(|e| BootpayError::Malformed(format!("HTTP {status}: {e}")))
}

/// Classifies a non-2xx, non-401 answer.
fn classify_error(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> BootpayError {
    #[derive(Deserialize)]
    struct ErrorBody {
        error_code: Option<serde_json::Value>,
        #[serde(default)]
        message: Option<String>,
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return BootpayError::Unavailable {
            status: status.as_u16(),
            retry_after,
        };
    }
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|b| b.error_code.as_ref())
        .map(|c| match c {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    match code.as_deref() {
        Some("RC_NOT_FOUND") => BootpayError::NotFound,
        Some("RC_NOT_CONFIRM_READY") => BootpayError::NotConfirmReady,
        Some("TOKEN_KEY_INVALID") => BootpayError::CredentialsRefused {
            status: status.as_u16(),
            code: "TOKEN_KEY_INVALID".into(),
        },
        Some(code) => BootpayError::Rejected {
            status: status.as_u16(),
            code: code.to_owned(),
            message: parsed
                .and_then(|b| b.message)
                .map(|m| m.chars().take(200).collect())
                .unwrap_or_default(),
        },
        // A definite refusal without Bootpay's error shape (a proxy, a load balancer, an
        // IP allow list): trying again will not change it.
        None => BootpayError::Rejected {
            status: status.as_u16(),
            code: "none".into(),
            message: String::from_utf8_lossy(body).chars().take(200).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_status_and_code() {
        let not_found = classify_error(
            StatusCode::NOT_FOUND,
            None,
            br#"{"error_code":"RC_NOT_FOUND","message":"x"}"#,
        );
        assert!(matches!(not_found, BootpayError::NotFound));
        let not_ready = classify_error(
            StatusCode::BAD_REQUEST,
            None,
            br#"{"error_code":"RC_NOT_CONFIRM_READY"}"#,
        );
        assert!(matches!(not_ready, BootpayError::NotConfirmReady));
        let throttled = classify_error(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(2)),
            b"",
        );
        assert!(throttled.is_transient());
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(2)));
        let html = classify_error(StatusCode::BAD_GATEWAY, None, b"<html>bad gateway</html>");
        assert!(html.is_transient());
        let other = classify_error(
            StatusCode::BAD_REQUEST,
            None,
            br#"{"error_code":"RC_SOMETHING","message":"nope"}"#,
        );
        assert!(!other.is_transient());
        // A refusal from something in front of Bootpay is definite, not transient.
        let proxy = classify_error(StatusCode::FORBIDDEN, None, b"<html>denied</html>");
        assert!(!proxy.is_transient());
        assert_eq!(proxy.label(), "rejected");
    }

    #[test]
    fn a_wire_receipt_becomes_a_dialect_neutral_one() {
        let wire: WireReceipt = serde_json::from_str(
            r#"{"receipt_id":"r","order_id":"o","price":3000,"status":-2,"extra":{"x":1}}"#,
        )
        .unwrap();
        let receipt = Receipt::from(wire);
        assert_eq!(receipt.status, PaymentStatus::Failed(-2));
        assert_eq!(receipt.currency, None);
    }
}

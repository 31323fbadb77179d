//! Bootpay's legacy v1 dialect: paths at the host's root, the raw token in
//! `Authorization` (no `Bearer`), `/submit` to confirm, and every answer in the envelope
//! `{status, code, message, data}`, whose `status` repeats the HTTP status (an old proxy or
//! API version may answer HTTP 200 with an error status in the body: the body's counts).

use std::time::Duration;

use receipt_verifier_core::{PaymentStatus, Receipt};
use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Number;

use super::error::BootpayError;

pub const TOKEN_PATH: &[&str] = &["request", "token"];
pub const CONFIRM_PATH: &[&str] = &["submit"];

pub fn receipt_path(receipt_id: &str) -> [&str; 2] {
    ["receipt", receipt_id]
}

#[derive(Deserialize)]
struct Envelope<T> {
    status: i64,
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
    data: Option<T>,
}

/// `data` of `POST /request/token`.
#[derive(Deserialize)]
struct TokenData {
    token: String,
    #[serde(default)]
    server_time: Option<i64>,
    #[serde(default)]
    expired_at: Option<i64>,
}

/// The parts of a v1 receipt (`data` of `GET /receipt/{id}`) the verifier relies on.
#[derive(Deserialize)]
struct WireReceipt {
    receipt_id: String,
    order_id: String,
    price: Number,
    status: i64,
    /// The currency, lowercased (`krw`); compared case-insensitively.
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    cancelled_price: Option<Number>,
    /// The PG's own data; a virtual account's deposit deadline is its `expiredate`. Kept
    /// loose: a shape we do not expect here must not make the receipt unreadable.
    #[serde(default)]
    payment_data: Option<serde_json::Value>,
}

impl From<WireReceipt> for Receipt {
    fn from(wire: WireReceipt) -> Self {
        Self {
            receipt_id: wire.receipt_id,
            order_id: wire.order_id,
            price: wire.price,
            status: PaymentStatus::from_code(wire.status),
            currency: wire.unit,
            cancelled_price: wire.cancelled_price,
            // v1 receipts do not say whether a test project made them.
            sandbox: None,
            deposit_due: wire
                .payment_data
                .as_ref()
                .and_then(|p| p.get("expiredate")?.as_str())
                .and_then(super::time::parse),
        }
    }
}

/// An access token and how long it lives, from `POST /request/token`.
///
/// # Errors
/// The envelope's error, classified; `Malformed` when there is no token.
pub fn token(status: StatusCode, body: &[u8]) -> Result<(String, Option<Duration>), BootpayError> {
    let data: TokenData = data(status, None, body, "token")?;
    // An expiry equal to the server's time is a token at its end (the current token,
    // handed back with no whole second left), due for renewal at once; only a missing or
    // backwards pair leaves the lifetime unstated.
    let ttl = match (data.server_time, data.expired_at) {
        (Some(now), Some(expiry)) if expiry >= now => Some(Duration::from_secs(
            u64::try_from(expiry - now).unwrap_or(0),
        )),
        _ => None,
    };
    Ok((data.token, ttl))
}

/// The receipt in `data`, from a lookup or a submit.
///
/// # Errors
/// The envelope's error, classified.
pub fn receipt(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    endpoint: &'static str,
) -> Result<Receipt, BootpayError> {
    data::<WireReceipt>(status, retry_after, body, endpoint).map(Receipt::from)
}

/// The envelope's `data` when it reports success, else its error classified.
fn data<T: DeserializeOwned>(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    endpoint: &'static str,
) -> Result<T, BootpayError> {
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Err(BootpayError::Unavailable {
            status: status.as_u16(),
            retry_after,
        });
    }
    let envelope: Envelope<T> = serde_json::from_slice(body)
        .map_err(|e| BootpayError::Malformed(format!("HTTP {status}: {e}")))?;
    let said = u16::try_from(envelope.status).unwrap_or(0);
    if status.is_success() && said == 200 {
        return envelope
            .data
            .ok_or_else(|| BootpayError::Malformed("a success envelope without data".into()));
    }
    // The body's status decides; an error the HTTP status alone reports counts too.
    let said = if said >= 400 { said } else { status.as_u16() };
    Err(classify(
        said,
        retry_after,
        envelope.code,
        envelope.message,
        endpoint,
    ))
}

/// A v1 error status onto the classes every dialect shares. v1's numeric codes are not
/// documented beyond their sign, so the status decides: 401 refused, 404 not found,
/// 429 and 5xx transient; a `/submit` refused for the receipt's state is "not ready".
fn classify(
    status: u16,
    retry_after: Option<Duration>,
    code: Option<serde_json::Value>,
    message: Option<String>,
    endpoint: &'static str,
) -> BootpayError {
    let code = code.map_or_else(|| "none".to_owned(), |c| c.to_string());
    match status {
        401 => BootpayError::CredentialsRefused { status, code },
        404 => BootpayError::NotFound,
        429 | 500..=599 => BootpayError::Unavailable {
            status,
            retry_after,
        },
        400 | 409 | 422 if endpoint == "confirm" => BootpayError::NotConfirmReady,
        _ => BootpayError::Rejected {
            status,
            code,
            message: message.unwrap_or_default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_and_its_life_come_out_of_the_envelope() {
        let body = br#"{"status":200,"code":0,"message":"","data":{"token":"t-1","server_time":1700000000,"expired_at":1700001800}}"#;
        let (token, ttl) = token(StatusCode::OK, body).unwrap();
        assert_eq!(token, "t-1");
        assert_eq!(ttl, Some(Duration::from_secs(1800)));
        let at_its_end = br#"{"status":200,"code":0,"message":"","data":{"token":"t-1","server_time":1700000000,"expired_at":1700000000}}"#;
        assert_eq!(
            super::token(StatusCode::OK, at_its_end).unwrap().1,
            Some(Duration::ZERO)
        );
        let refused = br#"{"status":401,"code":-2410,"message":"not found","data":null}"#;
        assert!(matches!(
            super::token(StatusCode::UNAUTHORIZED, refused),
            Err(BootpayError::CredentialsRefused { status: 401, .. })
        ));
    }

    #[test]
    fn receipts_and_errors_come_out_of_the_envelope() {
        let body = br#"{"status":200,"code":0,"message":"","data":{"receipt_id":"r","order_id":"o","name":"Gems","price":3000,"remain_price":3000,"cancelled_price":0,"unit":"krw","status":1,"status_en":"complete"}}"#;
        let r = receipt(StatusCode::OK, None, body, "receipt").unwrap();
        assert_eq!(r.status, PaymentStatus::Paid);
        assert_eq!(r.currency.as_deref(), Some("krw"));
        let missing = br#"{"status":404,"code":-404,"message":"not found","data":null}"#;
        assert!(matches!(
            receipt(StatusCode::NOT_FOUND, None, missing, "receipt"),
            Err(BootpayError::NotFound)
        ));
        // An error reported in the body of an HTTP 200 counts as the error it says.
        assert!(matches!(
            receipt(StatusCode::OK, None, missing, "receipt"),
            Err(BootpayError::NotFound)
        ));
        let not_ready = br#"{"status":400,"code":-1000,"message":"not ready","data":null}"#;
        assert!(matches!(
            receipt(StatusCode::BAD_REQUEST, None, not_ready, "confirm"),
            Err(BootpayError::NotConfirmReady)
        ));
        assert!(matches!(
            receipt(StatusCode::BAD_REQUEST, None, not_ready, "receipt"),
            Err(BootpayError::Rejected { status: 400, .. })
        ));
        assert!(
            receipt(StatusCode::BAD_GATEWAY, None, b"<html>", "receipt")
                .unwrap_err()
                .is_transient()
        );
        assert!(
            receipt(StatusCode::OK, None, b"{\"status\":200", "receipt")
                .unwrap_err()
                .is_transient()
        );
    }
}

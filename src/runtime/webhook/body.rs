//! What the ingress takes from a webhook's body: the receipt id, and `webhook_type` and
//! `status` as hints. Nothing else is read, kept or logged — a v1 body carries the
//! merchant's private key — and nothing in it is trusted: the worker re-fetches the
//! receipt.

use receipt_verifier_core::notification::Source;
use receipt_verifier_core::{DecodeError, Notification};
use serde_json::Value;

/// Which of Bootpay's webhooks a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// v2: JSON; answered with `{"success": true}`.
    V2,
    /// v1 "feedback": a form by default, or JSON; answered with `OK`.
    V1,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2 => "v2",
            Self::V1 => "v1",
        }
    }
}

/// Why a body is not a webhook we take. The texts are fixed: no part of the body is
/// echoed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("unsupported content type")]
    UnsupportedType,
    #[error("{0}")]
    Malformed(&'static str),
}

impl BodyError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnsupportedType => "unsupported_type",
            Self::Malformed(_) => "invalid",
        }
    }
}

enum Format {
    Json,
    Form,
}

fn format(content_type: Option<&str>) -> Option<Format> {
    let essence = content_type?.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Some(Format::Json),
        "application/x-www-form-urlencoded" => Some(Format::Form),
        _ => None,
    }
}

/// The notification a webhook body stands for.
///
/// # Errors
/// [`BodyError::UnsupportedType`] for a content type the dialect does not send (v2: JSON
/// only; v1: a form or JSON); [`BodyError::Malformed`] for a body without a valid
/// receipt id.
pub fn notification(
    dialect: Dialect,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Notification, BodyError> {
    let (receipt_id, webhook_type, status) = match (dialect, format(content_type)) {
        (_, Some(Format::Json)) => from_json(body)?,
        (Dialect::V1, Some(Format::Form)) => from_form(body),
        _ => return Err(BodyError::UnsupportedType),
    };
    let receipt_id = receipt_id.ok_or(BodyError::Malformed("no receipt_id"))?;
    let source = match dialect {
        Dialect::V2 => Source::Webhook,
        Dialect::V1 => Source::WebhookV1,
    };
    Notification::new(&receipt_id, source, webhook_type.as_deref(), status).map_err(|e| match e {
        DecodeError::InvalidField { .. } => BodyError::Malformed("receipt_id is not a receipt id"),
        _ => BodyError::Malformed("invalid body"),
    })
}

type Fields = (Option<String>, Option<String>, Option<i64>);

fn from_json(body: &[u8]) -> Result<Fields, BodyError> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Err(BodyError::Malformed("the body is not a JSON object"));
    };
    let text = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_owned);
    let status = fields.get("status").and_then(|s| match s {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    Ok((text("receipt_id"), text("webhook_type"), status))
}

fn from_form(body: &[u8]) -> Fields {
    let (mut receipt_id, mut webhook_type, mut status) = (None, None, None);
    for (name, value) in url::form_urlencoded::parse(body) {
        match name.as_ref() {
            "receipt_id" => receipt_id = Some(value.into_owned()),
            "webhook_type" => webhook_type = Some(value.into_owned()),
            "status" => status = value.trim().parse().ok(),
            // Everything else, the private key among it, is dropped unread.
            _ => {}
        }
    }
    (receipt_id, webhook_type, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json; charset=utf-8");
    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    #[test]
    fn a_v2_body_gives_its_receipt_id_and_hints() {
        let body = br#"{"receipt_id":"6500c8a1d01c7e0021b4c2f1","order_id":"o-1","price":3000,"status":1,"webhook_type":"PAYMENT_COMPLETED"}"#;
        let note = notification(Dialect::V2, JSON, body).unwrap();
        assert_eq!(note.receipt_id, "6500c8a1d01c7e0021b4c2f1");
        assert_eq!(note.source, Source::Webhook);
        assert_eq!(note.webhook_type.as_deref(), Some("PAYMENT_COMPLETED"));
        assert_eq!(note.status, Some(1));
    }

    #[test]
    fn a_v1_form_gives_its_receipt_id_and_nothing_of_its_private_key() {
        let body =
            b"receipt_id=r-1&status=1&application_id=app&private_key=pk-secret&retry_count=0";
        let note = notification(Dialect::V1, FORM, body).unwrap();
        assert_eq!(note.receipt_id, "r-1");
        assert_eq!(note.source, Source::WebhookV1);
        assert_eq!(note.status, Some(1));
        assert!(!format!("{note:?}{}", note.to_json()).contains("pk-secret"));
        let json = notification(Dialect::V1, JSON, br#"{"receipt_id":"r-1","status":"20"}"#);
        assert_eq!(json.unwrap().status, Some(20));
    }

    #[test]
    fn wrong_types_and_bodies_are_refused_without_echoing_them() {
        assert_eq!(
            notification(Dialect::V2, FORM, b"receipt_id=r-1"),
            Err(BodyError::UnsupportedType)
        );
        assert_eq!(
            notification(Dialect::V1, Some("text/plain"), b"receipt_id=r-1"),
            Err(BodyError::UnsupportedType)
        );
        assert_eq!(
            notification(Dialect::V2, None, b"{}"),
            Err(BodyError::UnsupportedType)
        );
        for body in [
            &b"[]"[..],
            b"{\"receipt_id\": 5}",
            b"{",
            b"{\"receipt_id\": \"a b\"}",
        ] {
            let error = notification(Dialect::V2, JSON, body).unwrap_err();
            assert!(matches!(error, BodyError::Malformed(_)), "{error:?}");
            let text = error.to_string();
            assert!(!text.contains("a b"), "{text}");
        }
        assert!(notification(Dialect::V1, FORM, b"status=1").is_err());
    }
}

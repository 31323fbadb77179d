//! The notification contract: a note, put on the purchase queue by the webhook ingress or
//! the reconciliation sweep, that a receipt may have changed.
//!
//! A notification is never trusted beyond its receipt id: the pipeline looks the receipt
//! up and acts on what Bootpay says. Its other fields are hints for logs and metrics, and
//! are kept only when they hold one of the few values they may hold.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{DecodeError, RECEIPT_ID_RULE, is_valid_receipt_id};

/// The message attribute (`String`) that marks a message on the purchase queue as a
/// notification, with the value [`NOTIFICATION_TYPE`]. Purchases carry no such attribute.
pub const TYPE_ATTRIBUTE: &str = "type";
pub const NOTIFICATION_TYPE: &str = "notification";

/// What told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Bootpay's v2 webhook.
    Webhook,
    /// Bootpay's v1 feedback.
    WebhookV1,
    /// The reconciliation sweep.
    Sweep,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::WebhookV1 => "webhook_v1",
            Self::Sweep => "sweep",
        }
    }
}

/// The `webhook_type`s Bootpay sends; anything else is dropped.
pub const WEBHOOK_TYPES: [&str; 4] = [
    "PAYMENT_COMPLETED",
    "PAYMENT_CANCELLED",
    "PAYMENT_PARTIAL_CANCELLED",
    "PAYMENT_VIRTUAL_ACCOUNT_ISSUED",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub receipt_id: String,
    pub source: Source,
    /// The webhook's `webhook_type`, when it is one Bootpay sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_type: Option<String>,
    /// The status the webhook claimed: a hint only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
}

impl Notification {
    /// A notification about `receipt_id`, with the hints kept only when they are valid.
    ///
    /// # Errors
    /// When `receipt_id` is not a receipt id.
    pub fn new(
        receipt_id: &str,
        source: Source,
        webhook_type: Option<&str>,
        status: Option<i64>,
    ) -> Result<Self, DecodeError> {
        if !is_valid_receipt_id(receipt_id) {
            return Err(DecodeError::InvalidField {
                field: "receipt_id",
                problem: RECEIPT_ID_RULE,
            });
        }
        Ok(Self {
            receipt_id: receipt_id.to_owned(),
            source,
            webhook_type: webhook_type
                .filter(|t| WEBHOOK_TYPES.contains(t))
                .map(str::to_owned),
            status: status.filter(|s| (-100..=100).contains(s)),
        })
    }

    /// Decodes a notification's body.
    ///
    /// # Errors
    /// A [`DecodeError`] when it is not one.
    pub fn parse(body: &str) -> Result<Self, DecodeError> {
        let value: Value =
            serde_json::from_str(body).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(DecodeError::NotAnObject("value"));
        };
        let receipt_id = match fields.get("receipt_id") {
            Some(Value::String(id)) => id,
            Some(_) => {
                return Err(DecodeError::InvalidField {
                    field: "receipt_id",
                    problem: "must be a string",
                });
            }
            None => return Err(DecodeError::MissingField("receipt_id")),
        };
        let source = fields
            .get("source")
            .cloned()
            .and_then(|s| serde_json::from_value(s).ok())
            .ok_or(DecodeError::InvalidField {
                field: "source",
                problem: "must be `webhook`, `webhook_v1` or `sweep`",
            })?;
        Self::new(
            receipt_id,
            source,
            fields.get("webhook_type").and_then(Value::as_str),
            fields.get("status").and_then(Value::as_i64),
        )
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_receipt_id_is_required_and_hints_are_kept_only_when_valid() {
        let note = Notification::parse(
            r#"{"receipt_id":"r-1","source":"webhook","webhook_type":"<script>","status":99999}"#,
        )
        .unwrap();
        assert_eq!(note.webhook_type, None);
        assert_eq!(note.status, None);
        let back = Notification::parse(&note.to_json()).unwrap();
        assert_eq!(back, note);
        assert!(Notification::parse(r#"{"receipt_id":"r 1","source":"sweep"}"#).is_err());
        assert!(Notification::parse(r#"{"receipt_id":"r-1","source":"other"}"#).is_err());
        assert!(Notification::parse(r#"{"source":"sweep"}"#).is_err());
    }
}

//! The decision contract: what a result consumer receives about a purchase
//! (`schemas/decision.schema.json`, version [`SCHEMA_VERSION`]).
//!
//! A [`DecisionMessage`] is built once, when the decision is made; with a ledger it is
//! recorded as it was published, so a repeat publishes the same message marked
//! `repeat: true`, never a second verdict.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use crate::event::PurchaseEvent;
use crate::receipt::PaymentStatus;

/// The version of the decision message's shape. 1 (unmarked) had no `revoke`, no
/// `expired` and no repeats; 2 adds them and the field itself.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Hand out the goods.
    Fulfill,
    /// Do not; the purchase is over.
    Reject,
    /// Goods handed out for this receipt should be taken back: the payment was cancelled,
    /// wholly or partly, after it was fulfilled.
    Revoke,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Verified,
    OrderMismatch,
    PriceMismatch,
    CurrencyMismatch,
    /// Rejected: the payment was cancelled before it was fulfilled. Revoked: fully
    /// cancelled after.
    Cancelled,
    /// Revoked: part of a fulfilled payment was cancelled.
    PartiallyCancelled,
    NotPaid,
    ReceiptNotFound,
    /// The virtual account's deposit deadline passed without a deposit.
    Expired,
    /// The ledger holds this receipt for another purchase (another order, price or
    /// currency): one receipt pays for one purchase.
    ReceiptReused,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fulfill => "fulfill",
            Self::Reject => "reject",
            Self::Revoke => "revoke",
        }
    }
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::OrderMismatch => "order_mismatch",
            Self::PriceMismatch => "price_mismatch",
            Self::CurrencyMismatch => "currency_mismatch",
            Self::Cancelled => "cancelled",
            Self::PartiallyCancelled => "partially_cancelled",
            Self::NotPaid => "not_paid",
            Self::ReceiptNotFound => "receipt_not_found",
            Self::Expired => "expired",
            Self::ReceiptReused => "receipt_reused",
        }
    }

    /// The decision a purchase gets for this reason (revocations are made apart, by
    /// [`DecisionMessage::revocation`]).
    pub fn decision(self) -> Decision {
        match self {
            Self::Verified => Decision::Fulfill,
            _ => Decision::Reject,
        }
    }

    /// Whether the reason is about the payment itself rather than about the event that
    /// named it. Only these are recorded in a ledger: a mismatch says the event was wrong
    /// (tampered, replayed), and must not keep the receipt from its real purchase.
    pub fn is_about_the_payment(self) -> bool {
        matches!(
            self,
            Self::Verified | Self::Cancelled | Self::NotPaid | Self::Expired
        )
    }
}

/// A final answer for a purchase, with what Bootpay said where it said anything.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub reason: Reason,
    pub paid_price: Option<Number>,
    pub payment_status: Option<PaymentStatus>,
}

impl Verdict {
    pub fn decision(&self) -> Decision {
        self.reason.decision()
    }
}

/// The body of a decision message, as published and as a ledger records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionMessage {
    pub decision: Decision,
    pub reason: Reason,
    pub receipt_id: String,
    pub order_id: String,
    /// What the event expected, as the event wrote it.
    pub price: Number,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_price: Option<Number>,
    /// On a revocation: the total cancelled so far, as Bootpay wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_price: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_status: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// RFC 3339, UTC, milliseconds: when the decision was made (a repeat keeps it).
    pub verified_at: String,
    /// Set on a decision published again from the ledger: the same decision, which the
    /// consumer may already have acted on.
    #[serde(default, skip_serializing_if = "is_false")]
    pub repeat: bool,
    pub schema_version: u32,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl DecisionMessage {
    pub fn new(event: &PurchaseEvent, verdict: &Verdict, at: SystemTime) -> Self {
        Self {
            decision: verdict.decision(),
            reason: verdict.reason,
            paid_price: verdict.paid_price.clone(),
            payment_status: verdict.payment_status.map(PaymentStatus::code),
            ..Self::about(event, at)
        }
    }

    /// A `revoke` for a fulfilled purchase whose payment was cancelled (`reason`
    /// [`Reason::Cancelled`] or [`Reason::PartiallyCancelled`]).
    pub fn revocation(
        event: &PurchaseEvent,
        reason: Reason,
        cancelled_price: Number,
        status: PaymentStatus,
        at: SystemTime,
    ) -> Self {
        Self {
            decision: Decision::Revoke,
            reason,
            cancelled_price: Some(cancelled_price),
            payment_status: Some(status.code()),
            ..Self::about(event, at)
        }
    }

    fn about(event: &PurchaseEvent, at: SystemTime) -> Self {
        Self {
            decision: Decision::Reject,
            reason: Reason::NotPaid,
            receipt_id: event.receipt_id.clone(),
            order_id: event.order_id.clone(),
            price: event.price.as_number().clone(),
            paid_price: None,
            cancelled_price: None,
            payment_status: None,
            metadata: event.metadata.clone(),
            event_id: event.event_id.clone(),
            verified_at: humantime::format_rfc3339_millis(at).to_string(),
            repeat: false,
            schema_version: SCHEMA_VERSION,
        }
    }

    /// The same decision, to publish again.
    pub fn repeated(mut self) -> Self {
        self.repeat = true;
        self
    }

    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        // Plain strings, numbers and an already-parsed `Value` always serialise.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_message_reads_back_the_same() {
        let event = PurchaseEvent::parse(
            r#"{"receipt_id":"r-1","order_id":"o-1","price":3000.5,"metadata":{"k":[1,2]},"event_id":"e-1"}"#,
        )
        .unwrap();
        let verdict = Verdict {
            reason: Reason::Verified,
            paid_price: Some(serde_json::from_str("3000.5").unwrap()),
            payment_status: Some(PaymentStatus::Paid),
        };
        let message = DecisionMessage::new(&event, &verdict, SystemTime::UNIX_EPOCH);
        let json = message.to_json();
        assert!(!json.contains("repeat"), "{json}");
        assert!(json.contains(r#""schema_version":2"#), "{json}");
        let back: DecisionMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, message);
        let again = back.repeated().to_json();
        assert!(again.contains(r#""repeat":true"#), "{again}");
        assert!(again.contains(r#""price":3000.5"#), "{again}");
    }
}

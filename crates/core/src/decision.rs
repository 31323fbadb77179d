//! The decision contract: what a result consumer receives for a purchase
//! (`schemas/decision.schema.json`).

use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Number, Value};

use crate::event::PurchaseEvent;
use crate::receipt::PaymentStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Fulfill,
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Verified,
    OrderMismatch,
    PriceMismatch,
    CurrencyMismatch,
    Cancelled,
    NotPaid,
    ReceiptNotFound,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fulfill => "fulfill",
            Self::Reject => "reject",
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
            Self::NotPaid => "not_paid",
            Self::ReceiptNotFound => "receipt_not_found",
        }
    }

    pub fn decision(self) -> Decision {
        match self {
            Self::Verified => Decision::Fulfill,
            _ => Decision::Reject,
        }
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

/// The body of a decision message.
#[derive(Debug, Serialize)]
pub struct DecisionMessage<'a> {
    pub decision: Decision,
    pub reason: Reason,
    pub receipt_id: &'a str,
    pub order_id: &'a str,
    /// What the event expected, as the event wrote it.
    pub price: &'a Number,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_price: Option<&'a Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_status: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<&'a str>,
    /// RFC 3339, UTC, milliseconds.
    pub verified_at: String,
}

impl<'a> DecisionMessage<'a> {
    pub fn new(event: &'a PurchaseEvent, verdict: &'a Verdict, at: SystemTime) -> Self {
        Self {
            decision: verdict.decision(),
            reason: verdict.reason,
            receipt_id: &event.receipt_id,
            order_id: &event.order_id,
            price: event.price.as_number(),
            paid_price: verdict.paid_price.as_ref(),
            payment_status: verdict.payment_status.map(PaymentStatus::code),
            metadata: event.metadata.as_ref(),
            event_id: event.event_id.as_deref(),
            verified_at: humantime::format_rfc3339_millis(at).to_string(),
        }
    }

    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        // Plain strings, numbers and an already-parsed `Value` always serialise.
        serde_json::to_string(self).unwrap_or_default()
    }
}

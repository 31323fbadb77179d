//! Publish stage: turns a verdict into the decision message on the result queue, and a
//! malformed purchase into a dead letter. Both go out before the purchase is deleted.

use std::collections::HashMap;

use aws_sdk_sqs::types::MessageAttributeValue;
use serde::Serialize;
use serde_json::{Number, Value};

use crate::batch::{Batcher, EntryError};
use crate::decode::{DecodeError, PurchaseEvent};
use crate::receive::Received;
use crate::sqs::{Outgoing, string_attribute};
use crate::verify::{Decision, Reason, Verdict};

/// W3C trace context, carried from the purchase onto its decision.
pub const TRACEPARENT: &str = "traceparent";

/// The body of a decision message (the contract with result consumers).
#[derive(Debug, Serialize)]
pub struct DecisionMessage<'a> {
    pub decision: Decision,
    pub reason: Reason,
    pub receipt_id: &'a str,
    pub order_id: &'a str,
    pub price: &'a Number,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_price: Option<&'a Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_status: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<&'a str>,
    pub verified_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("could not publish the decision: {0}")]
    Decision(#[source] EntryError),
    #[error("could not send the message to the dead-letter queue: {0}")]
    DeadLetter(#[source] EntryError),
}

pub struct Publisher {
    pub results: Batcher<Outgoing>,
    pub dead_letters: Batcher<Outgoing>,
    pub results_fifo: bool,
    pub dead_letters_fifo: bool,
}

impl Publisher {
    /// # Errors
    /// When SQS did not accept the decision; the purchase must then stay on its queue.
    pub async fn decision(
        &self,
        message: &Received,
        event: &PurchaseEvent,
        verdict: &Verdict,
    ) -> Result<(), PublishError> {
        let body = DecisionMessage {
            decision: verdict.reason.decision(),
            reason: verdict.reason,
            receipt_id: &event.receipt_id,
            order_id: &event.order_id,
            price: event.price.as_number(),
            paid_price: verdict.paid_price.as_ref(),
            payment_status: verdict.payment_status,
            metadata: event.metadata.as_ref(),
            event_id: event.event_id.as_deref(),
            verified_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        };
        let mut attributes = HashMap::from([
            (
                "decision".to_owned(),
                string_attribute(body.decision.as_str()),
            ),
            ("reason".to_owned(), string_attribute(body.reason.as_str())),
        ]);
        if let Some(trace) = message.attributes.get(TRACEPARENT) {
            attributes.insert(TRACEPARENT.to_owned(), trace.clone());
        }
        let outgoing = Outgoing {
            // Serialising plain strings, numbers and an already-parsed `Value` cannot fail.
            body: serde_json::to_string(&body).unwrap_or_default(),
            attributes,
            fifo: self
                .results_fifo
                .then(|| (event.receipt_id.clone(), message.message_id.clone())),
        };
        self.results
            .submit(outgoing)
            .await
            .map_err(PublishError::Decision)
    }

    /// Sends the body, unchanged, to the dead-letter queue with what was wrong with it.
    ///
    /// # Errors
    /// When SQS did not accept it; the purchase then stays on its queue, and SQS's own
    /// redrive moves it after `maxReceiveCount` receives.
    pub async fn dead_letter(
        &self,
        message: &Received,
        error: &DecodeError,
    ) -> Result<(), PublishError> {
        let mut attributes: HashMap<String, MessageAttributeValue> = message
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        attributes.insert("error_code".into(), string_attribute(error.code()));
        attributes.insert(
            "error".into(),
            string_attribute(truncate(&error.to_string(), 1024)),
        );
        attributes.insert(
            "source_message_id".into(),
            string_attribute(message.message_id.clone()),
        );
        // SQS allows ten attributes; ours are the ones an operator needs.
        while attributes.len() > 10 {
            let Some(extra) = attributes
                .keys()
                .find(|k| !matches!(k.as_str(), "error_code" | "error" | "source_message_id"))
                .cloned()
            else {
                break;
            };
            attributes.remove(&extra);
        }
        let outgoing = Outgoing {
            body: message.body.clone(),
            attributes,
            fifo: self
                .dead_letters_fifo
                .then(|| ("invalid-events".to_owned(), message.message_id.clone())),
        };
        self.dead_letters
            .submit(outgoing)
            .await
            .map_err(PublishError::DeadLetter)
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

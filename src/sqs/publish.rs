//! Publish stage: puts a decision message on the result queue, and a malformed message
//! into a dead letter. Both go out before the purchase is deleted:
//! a successful publish returns [`Published`], the proof an acknowledgement needs.

use std::collections::HashMap;

use aws_sdk_sqs::types::MessageAttributeValue;
use receipt_verifier_core::{DecisionMessage, DecodeError};

use super::batch::{Batcher, EntryError};
use super::calls::{Outgoing, refuses_the_message, string_attribute};
use super::message::PurchaseMessage;

/// Proof that SQS accepted a purchase's decision or dead letter. Only this module makes
/// one, so a [`Disposition::Ack`](super::Disposition::Ack) cannot be built without it.
#[derive(Debug)]
pub struct Published(());

/// W3C trace context, carried from the purchase onto its decision.
pub const TRACEPARENT: &str = "traceparent";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("could not publish the decision: {0}")]
    Decision(#[source] EntryError),
    #[error("could not send the message to the dead-letter queue: {0}")]
    DeadLetter(#[source] EntryError),
}

/// Sends decisions to the result queue and dead letters to the DLQ, through batchers.
pub struct Publisher {
    results: Batcher<Outgoing>,
    dead_letters: Batcher<Outgoing>,
    results_fifo: bool,
    dead_letters_fifo: bool,
}

impl PublishError {
    /// SQS refused the message itself, so sending it again cannot succeed.
    pub fn is_refusal(&self) -> bool {
        let (Self::Decision(e) | Self::DeadLetter(e)) = self;
        refuses_the_message(e)
    }
}

/// What a dead letter carries besides the purchase's own body and attributes.
pub struct DeadLetter<'a> {
    /// Bounded, for message attributes and metric labels.
    pub code: &'static str,
    pub error: String,
    /// Set when a decision was reached but could not be published.
    pub decision: Option<&'a DecisionMessage>,
}

impl Publisher {
    /// A publisher for these queues; a queue whose URL ends in `.fifo` gets group and
    /// deduplication ids.
    pub fn new(
        results: Batcher<Outgoing>,
        result_url: &str,
        dead_letters: Batcher<Outgoing>,
        dead_letter_url: &str,
    ) -> Self {
        let fifo = |url: &str| url.ends_with(".fifo");
        Self {
            results,
            dead_letters,
            results_fifo: fifo(result_url),
            dead_letters_fifo: fifo(dead_letter_url),
        }
    }

    /// # Errors
    /// When SQS did not accept the decision; the purchase must then stay on its queue.
    pub async fn decision(
        &self,
        message: &PurchaseMessage,
        body: &DecisionMessage,
    ) -> Result<Published, PublishError> {
        let mut attributes = HashMap::from([
            (
                "decision".to_owned(),
                string_attribute(body.decision.as_str()),
            ),
            ("reason".to_owned(), string_attribute(body.reason.as_str())),
        ]);
        if body.repeat {
            attributes.insert("repeat".to_owned(), string_attribute("true"));
        }
        if let Some(trace) = message.attributes.get(TRACEPARENT) {
            attributes.insert(TRACEPARENT.to_owned(), trace.clone());
        }
        let outgoing = Outgoing {
            body: sqs_safe(body.to_json()),
            attributes,
            fifo: self
                .results_fifo
                .then(|| (group_of(&body.receipt_id), message.message_id.clone())),
        };
        self.results
            .submit(outgoing)
            .await
            .map(|()| Published(()))
            .map_err(PublishError::Decision)
    }

    /// Sends the body, unchanged, to the dead-letter queue with what was wrong with it.
    ///
    /// # Errors
    /// When SQS did not accept it; the purchase then stays on its queue, and SQS's own
    /// redrive moves it after `maxReceiveCount` receives.
    pub async fn dead_letter(
        &self,
        message: &PurchaseMessage,
        letter: &DeadLetter<'_>,
    ) -> Result<Published, PublishError> {
        let mut attributes: HashMap<String, MessageAttributeValue> = message
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        attributes.insert("error_code".into(), string_attribute(letter.code));
        attributes.insert(
            "error".into(),
            string_attribute(truncate(&letter.error, 1024)),
        );
        attributes.insert(
            "source_message_id".into(),
            string_attribute(message.message_id.clone()),
        );
        if let Some(decision) = letter.decision {
            attributes.insert(
                "decision".into(),
                string_attribute(decision.decision.as_str()),
            );
            attributes.insert("reason".into(), string_attribute(decision.reason.as_str()));
        }
        // SQS allows ten attributes; ours are the ones an operator needs, then the trace
        // context. The purchase's own go last-named first, so the same ones always stay.
        let mut droppable: Vec<String> = attributes
            .keys()
            .filter(|k| !DEAD_LETTER_ATTRIBUTES.contains(&k.as_str()) && *k != TRACEPARENT)
            .cloned()
            .collect();
        droppable.sort_unstable();
        while attributes.len() > 10 {
            let Some(extra) = droppable.pop() else { break };
            attributes.remove(&extra);
        }
        let outgoing = Outgoing {
            body: message.body.clone(),
            attributes,
            fifo: self
                .dead_letters_fifo
                .then(|| (letter.code.to_owned(), message.message_id.clone())),
        };
        self.dead_letters
            .submit(outgoing)
            .await
            .map(|()| Published(()))
            .map_err(PublishError::DeadLetter)
    }
}

/// The attributes the worker puts on a dead letter (a redrive takes them off again).
pub const DEAD_LETTER_ATTRIBUTES: &[&str] = &[
    "error_code",
    "error",
    "source_message_id",
    "decision",
    "reason",
];

impl<'a> From<&'a DecodeError> for DeadLetter<'a> {
    fn from(error: &'a DecodeError) -> Self {
        Self {
            code: error.code(),
            error: error.to_string(),
            decision: None,
        }
    }
}

/// SQS refuses U+FFFE and U+FFFF in a body, and serde_json writes them as they are. In
/// JSON they can only stand inside strings, where their `\u` escapes mean the same.
fn sqs_safe(json: String) -> String {
    if json.contains(['\u{FFFE}', '\u{FFFF}']) {
        json.replace('\u{FFFE}', "\\ufffe")
            .replace('\u{FFFF}', "\\uffff")
    } else {
        json
    }
}

/// The FIFO message group of a receipt's decisions: the receipt id itself when SQS
/// accepts it as a group id (1–128 printable ASCII characters), else a digest of it, so
/// that an unusual id cannot make a decision unpublishable.
fn group_of(receipt_id: &str) -> String {
    let printable = |c: char| c.is_ascii_graphic();
    if (1..=128).contains(&receipt_id.len()) && receipt_id.chars().all(printable) {
        return receipt_id.to_owned();
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(receipt_id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("receipt-sha256-{hex}")
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::sqs::batch::Flush;

    /// Keeps what would have been sent.
    #[derive(Clone, Default)]
    struct Sent(Arc<Mutex<Vec<Outgoing>>>);

    impl Flush for Sent {
        type Entry = Outgoing;
        async fn flush(&self, entries: Vec<Outgoing>) -> Vec<Result<(), EntryError>> {
            let n = entries.len();
            self.0.lock().unwrap().extend(entries);
            vec![Ok(()); n]
        }
    }

    #[tokio::test]
    async fn a_dead_letter_keeps_its_own_attributes_and_the_trace_within_ten() {
        let sent = Sent::default();
        let linger = std::time::Duration::ZERO;
        let publisher = Publisher::new(
            Batcher::spawn(sent.clone(), linger).0,
            "https://sqs/1/results",
            Batcher::spawn(sent.clone(), linger).0,
            "https://sqs/1/dlq",
        );
        let mut attributes: HashMap<String, MessageAttributeValue> = (0..9)
            .map(|i| (format!("producer-{i}"), string_attribute("x")))
            .collect();
        attributes.insert(TRACEPARENT.into(), string_attribute("00-abc-def-01"));
        let message = PurchaseMessage {
            message_id: "m-1".into(),
            receipt_handle: "h-1".into(),
            body: "{\"receipt_id\": \"r-1\"}".into(),
            receive_count: 1,
            sent_at: None,
            received_at: std::time::Instant::now(),
            attributes,
            group_id: None,
        };
        let event = receipt_verifier_core::PurchaseEvent::parse(
            r#"{"receipt_id": "r-1", "order_id": "o-1", "price": 1}"#,
        )
        .unwrap();
        let verdict = receipt_verifier_core::Verdict {
            reason: receipt_verifier_core::Reason::Verified,
            paid_price: None,
            payment_status: Some(receipt_verifier_core::PaymentStatus::Paid),
        };
        let decision = DecisionMessage::new(&event, &verdict, std::time::SystemTime::now());
        let letter = DeadLetter {
            code: "decision_refused",
            error: "InvalidParameterValue: too long".into(),
            decision: Some(&decision),
        };
        publisher.dead_letter(&message, &letter).await.unwrap();

        let sent = sent.0.lock().unwrap();
        let names: Vec<&str> = sent[0].attributes.keys().map(String::as_str).collect();
        assert_eq!(names.len(), 10, "{names:?}");
        for kept in DEAD_LETTER_ATTRIBUTES.iter().chain([&TRACEPARENT]) {
            assert!(names.contains(kept), "{kept} in {names:?}");
        }
        for kept in ["producer-0", "producer-1", "producer-2", "producer-3"] {
            assert!(names.contains(&kept), "the first-named stay: {names:?}");
        }
        assert_eq!(sent[0].body, message.body, "byte for byte");
    }

    #[test]
    fn bodies_escape_the_characters_sqs_refuses_and_mean_the_same() {
        let value = serde_json::json!({"note": "a\u{FFFF}b\u{FFFE}c 영수증 \u{1F600}"});
        let body = sqs_safe(serde_json::to_string(&value).unwrap());
        assert!(!body.contains(['\u{FFFE}', '\u{FFFF}']), "{body}");
        assert!(body.contains("영수증"), "other text stays as it is: {body}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            value
        );
    }

    #[test]
    fn fifo_groups_are_receipt_ids_when_sqs_accepts_them_and_digests_otherwise() {
        assert_eq!(
            group_of("6500c8a1d01c7e0021b4c2f1"),
            "6500c8a1d01c7e0021b4c2f1"
        );
        assert_eq!(group_of("r-1/2:3"), "r-1/2:3");
        for odd in ["영수증-1", "with space", &"x".repeat(129), "tab\there"] {
            let group = group_of(odd);
            assert!(group.starts_with("receipt-sha256-"), "{odd} -> {group}");
            assert_eq!(group.len(), "receipt-sha256-".len() + 64);
            assert!(group.chars().all(|c| c.is_ascii_graphic()));
            assert_eq!(group, group_of(odd), "the same receipt, the same group");
        }
        assert_ne!(group_of("with space"), group_of("with  space"));
    }
}

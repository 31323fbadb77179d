//! One record of an SQS event, from the event's JSON to its fate: verified by the
//! pipeline, settled by its source queue's settler, its disposition applied.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::MessageAttributeValue;
use receipt_verifier_core::{Deadline, Decision, FailureKind, Outcome};
use tracing::{Instrument, field};

use super::sources::Source;
use super::{InvocationError, Settings};
use crate::runtime::Core;
use crate::sqs::{Disposition, PurchaseMessage};

/// The least time before the cutoff in which a record is started. Bootpay answers in
/// tens of milliseconds when it is well; every request is also cut at the cutoff.
pub(super) const MIN_TIME_TO_VERIFY: Duration = Duration::from_secs(1);

/// A record, converted, with the source queue it came from.
pub(super) struct Record {
    pub message: PurchaseMessage,
    pub source: Arc<Source>,
}

/// What became of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Its decision is published.
    Decided(Decision),
    /// Settled with nothing to publish (a parked virtual account, a notification that
    /// changed nothing).
    Settled,
    /// It went to the DLQ (an invalid body, or a decision the result queue refused).
    DeadLettered,
    /// Undecided: handed back with the requeue delay.
    Delayed,
    /// Left as it is (publishing failed): it comes back when its visibility runs out.
    Held,
    /// Not started, or stopped at the cutoff: handed back at once.
    OutOfTime,
    /// Not touched: an earlier record of its FIFO group is undecided.
    Skipped,
}

/// What a record says about Bootpay's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Health {
    /// Bootpay gave a definite answer.
    Answered,
    /// Bootpay gave no answer, for a reason that may pass.
    Unavailable(String),
    CredentialsRefused(String),
    /// Bootpay was not asked (an invalid body, no time, a skipped record).
    NotAsked,
}

impl Health {
    fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Decided(_)
            | Outcome::Revoked(_)
            | Outcome::Parked { .. }
            | Outcome::NotFinal { .. } => Self::Answered,
            // Bootpay may or may not have been asked; nothing is known of its health.
            Outcome::Redelivered(_)
            | Outcome::Unchanged(_)
            | Outcome::Invalid(_)
            | Outcome::LedgerUnavailable(_) => Self::NotAsked,
            Outcome::Unavailable(e) => match e.kind() {
                FailureKind::CredentialsRefused => Self::CredentialsRefused(crate::error_chain(e)),
                FailureKind::Transient => Self::Unavailable(crate::error_chain(e)),
                // A definite refusal shows Bootpay (or what is in front of it) is there.
                FailureKind::Rejected | FailureKind::NotFound | FailureKind::NotConfirmReady => {
                    Self::Answered
                }
            },
        }
    }
}

pub(super) struct RecordResult {
    pub message_id: String,
    pub fate: Fate,
    pub health: Health,
    /// For a settled record, what deleting it takes: its queue and receipt handle.
    pub settled: Option<(Arc<Source>, String)>,
}

impl RecordResult {
    /// Whether the record may be deleted (reported successful).
    pub fn succeeded(&self) -> bool {
        matches!(
            self.fate,
            Fate::Decided(_) | Fate::Settled | Fate::DeadLettered
        )
    }
}

impl Record {
    /// Converts an event record. Without a message id the record cannot be reported, and
    /// without a receipt handle it cannot be handed back: the event is malformed.
    ///
    /// # Errors
    /// [`InvocationError::MalformedEvent`].
    pub fn from_event(message: SqsMessage, source: Arc<Source>) -> Result<Self, InvocationError> {
        let missing =
            |what: &str| InvocationError::MalformedEvent(format!("a record has no {what}"));
        let message_id = message
            .message_id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| missing("messageId"))?;
        let receipt_handle = message
            .receipt_handle
            .filter(|h| !h.is_empty())
            .ok_or_else(|| missing("receiptHandle"))?;
        let system = &message.attributes;
        Ok(Self {
            message: PurchaseMessage {
                message_id,
                receipt_handle,
                body: message.body.unwrap_or_default(),
                receive_count: system
                    .get("ApproximateReceiveCount")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
                sent_at: system
                    .get("SentTimestamp")
                    .and_then(|ms| PurchaseMessage::parse_sent_at(ms)),
                received_at: Instant::now(),
                attributes: message
                    .message_attributes
                    .into_iter()
                    .filter_map(|(name, value)| Some((name, attribute(value)?)))
                    .collect::<HashMap<_, _>>(),
                group_id: system.get("MessageGroupId").cloned(),
            },
            source,
        })
    }

    /// Reported failed without being touched.
    pub fn skipped(self, why: &'static str) -> RecordResult {
        tracing::info!(
            message = "Record not verified; it is reported failed.",
            message_id = %self.message.message_id,
            why,
        );
        RecordResult {
            message_id: self.message.message_id,
            fate: Fate::Skipped,
            health: Health::NotAsked,
            settled: None,
        }
    }

    /// Verifies, settles and applies the disposition, inside the record's span.
    pub async fn verify(
        self,
        pipeline: &Core,
        settings: &Settings,
        cutoff: Instant,
    ) -> RecordResult {
        let span = tracing::info_span!(
            "purchase",
            message_id = %self.message.message_id,
            receipt_id = field::Empty,
            order_id = field::Empty,
            attempt = self.message.receive_count,
        );
        self.verify_in_span(pipeline, settings, cutoff)
            .instrument(span)
            .await
    }

    async fn verify_in_span(
        self,
        pipeline: &Core,
        settings: &Settings,
        cutoff: Instant,
    ) -> RecordResult {
        let Self { message, source } = self;
        let result = |fate, health, settled| RecordResult {
            message_id: message.message_id.clone(),
            fate,
            health,
            settled,
        };
        if Instant::now() + MIN_TIME_TO_VERIFY > cutoff {
            tracing::warn!(
                message = "Not enough time left before the deadline to verify this record; handing it back.",
                left_ms = cutoff.saturating_duration_since(Instant::now()).as_millis() as u64,
            );
            hand_back(&source, &message, Duration::ZERO).await;
            return result(Fate::OutOfTime, Health::NotAsked, None);
        }
        let deadline = Deadline::retrying_for(settings.retry_budget).hard_stop(cutoff);
        let handled = pipeline.handle(message.inbound(), &message.body, deadline);
        let Ok(outcome) = tokio::time::timeout_at(cutoff.into(), handled).await else {
            tracing::warn!(
                message = "The deadline came before the record was verified; handing it back."
            );
            hand_back(&source, &message, Duration::ZERO).await;
            return result(Fate::OutOfTime, Health::NotAsked, None);
        };
        let health = Health::of(&outcome);
        let disposition = match source.settler.settle(&message, &outcome).await {
            Ok(disposition) => disposition,
            Err(e) => {
                tracing::error!(
                    message = "Failed to publish a decision; the record is reported failed.",
                    error = %crate::error_chain(&e),
                );
                Disposition::Hold
            }
        };
        let fate = match disposition {
            Disposition::Ack(_) => {
                // A decision the result queue refused also goes to the DLQ; the settler
                // logs it, and it counts as decided here, as in `run`.
                let fate = match &outcome {
                    Outcome::Parked { .. } | Outcome::Unchanged(_) => Fate::Settled,
                    Outcome::Invalid(_) => Fate::DeadLettered,
                    _ => match outcome.message() {
                        Some(decision) => Fate::Decided(decision.decision),
                        None => Fate::DeadLettered,
                    },
                };
                let settled = Some((source.clone(), message.receipt_handle.clone()));
                return result(fate, health, settled);
            }
            Disposition::Delay { delay, .. } => {
                hand_back(&source, &message, delay).await;
                Fate::Delayed
            }
            Disposition::Release => {
                hand_back(&source, &message, Duration::ZERO).await;
                Fate::OutOfTime
            }
            Disposition::Hold => Fate::Held,
        };
        result(fate, health, None)
    }
}

/// Sets the record's visibility so it comes back after `delay`; a failure is logged (the
/// record then comes back when the visibility it got at receive runs out).
async fn hand_back(source: &Source, message: &PurchaseMessage, delay: Duration) {
    if let Err(e) = source.visibility.set(message, delay).await {
        tracing::warn!(
            message = "Failed to change the record's visibility.",
            error = %crate::error_chain(&e),
        );
    }
}

/// An event's message attribute as the SQS SDK's; `None` for one SQS itself would refuse.
fn attribute(value: SqsMessageAttribute) -> Option<MessageAttributeValue> {
    let builder = MessageAttributeValue::builder().set_data_type(value.data_type);
    let builder = match (value.string_value, value.binary_value) {
        (Some(text), _) => builder.string_value(text),
        (None, Some(bytes)) => builder.binary_value(Blob::new(bytes.0)),
        (None, None) => return None,
    };
    builder.build().ok()
}

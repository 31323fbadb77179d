//! From an [`Outcome`] to a [`Disposition`]: the one place where a purchase's decision or
//! dead letter is published and where it is decided whether the message may go.
//!
//! Invariant: [`Disposition::Ack`] comes only from a publish that SQS accepted (it holds
//! the [`Published`](super::Published) proof), or from an outcome the core has recorded
//! in full with nothing to publish (a parked virtual account, a notification that changed
//! nothing); every other path leaves the message on its queue.

use receipt_verifier_core::{DecisionMessage, DecodeError, Outcome};

use super::disposition::{Disposition, Requeue, Settled};
use super::message::PurchaseMessage;
use super::publish::{DeadLetter, PublishError, Publisher};
use crate::observability::metrics;

/// The result queue did not take a decision, for a reason that may pass (an outage,
/// throttling, permissions): the purchase must stay on its queue. The caller chooses
/// between waiting (the poller) and giving the purchase back (the Lambda).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Unpublished(#[from] PublishError);

pub struct Settler {
    publisher: Publisher,
    requeue: Requeue,
}

impl Settler {
    pub fn new(publisher: Publisher, requeue: Requeue) -> Self {
        Self { publisher, requeue }
    }

    /// Publishes what `outcome` calls for and says what becomes of `message`:
    ///
    /// - a decision (new, repeated from the ledger, or a revocation) is published, then
    ///   the message is acknowledged; a decision SQS refuses for its content (too large,
    ///   say) would be refused forever, so the message goes to the DLQ
    ///   (`decision_refused`) with the decision it got;
    /// - a parked virtual account or a notification that changed nothing is acknowledged;
    /// - an invalid body goes to the DLQ, byte for byte;
    /// - a payment that is not final, or no answer from Bootpay or the ledger, is handed
    ///   back after the requeue delay for its receive count.
    ///
    /// A dead letter SQS does not take leaves the message where it is ([`Disposition::Hold`]):
    /// SQS's own redrive moves it to the same DLQ in the end.
    ///
    /// # Errors
    /// [`Unpublished`] when the decision could not be published for a reason that may pass.
    pub async fn settle(
        &self,
        message: &PurchaseMessage,
        outcome: &Outcome,
    ) -> Result<Disposition, Unpublished> {
        match outcome {
            Outcome::Decided(decision)
            | Outcome::Redelivered(decision)
            | Outcome::Revoked(decision) => self.publish_decision(message, decision).await,
            Outcome::Parked { due } => {
                tracing::info!(
                    message = "Awaiting the virtual account's deposit; the ledger follows it from here.",
                    due = %humantime::format_rfc3339_seconds(*due),
                );
                metrics::parked();
                Ok(Disposition::Ack(Settled::with_nothing_to_publish()))
            }
            Outcome::Unchanged(why) => {
                tracing::info!(message = "The notification changes nothing.", why);
                metrics::notification_unchanged(why);
                Ok(Disposition::Ack(Settled::with_nothing_to_publish()))
            }
            Outcome::Invalid(error) => Ok(self.dead_letter_invalid(message, error).await),
            Outcome::NotFinal { status } => Ok(self.requeue(
                message,
                "not_final",
                &format!("payment status {status} is not final"),
            )),
            Outcome::Unavailable(error) => {
                Ok(self.requeue(message, "bootpay_error", &crate::error_chain(error)))
            }
            Outcome::LedgerUnavailable(error) => {
                Ok(self.requeue(message, "ledger_error", &crate::error_chain(error)))
            }
        }
    }

    /// The purchase goes back to its queue, to be tried again after the requeue delay.
    pub fn requeue(
        &self,
        message: &PurchaseMessage,
        why: &'static str,
        detail: &str,
    ) -> Disposition {
        let delay = self.requeue.delay(message.receive_count);
        tracing::info!(
            message = "No decision yet; the purchase will be tried again.",
            why = %detail,
            retry_in_secs = delay.as_secs(),
        );
        metrics::requeued(why);
        Disposition::Delay { delay, why }
    }

    async fn publish_decision(
        &self,
        message: &PurchaseMessage,
        decision: &DecisionMessage,
    ) -> Result<Disposition, Unpublished> {
        let published = with_retries(
            || self.publisher.decision(message, decision),
            |e: &PublishError| !e.is_refusal(),
        )
        .await;
        let proof = match published {
            Ok(proof) => proof,
            Err(e) if e.is_refusal() => {
                return Ok(self.decision_refused(message, decision, &e).await);
            }
            Err(e) => return Err(Unpublished(e)),
        };
        let processing = message.received_at.elapsed();
        let end_to_end = message.sent_at.and_then(|t| t.elapsed().ok());
        metrics::decided(
            decision.decision.as_str(),
            decision.reason.as_str(),
            decision.repeat,
            processing,
            end_to_end,
        );
        tracing::info!(
            message = "Decision published.",
            decision = decision.decision.as_str(),
            reason = decision.reason.as_str(),
            repeat = decision.repeat,
            receipt_id = %decision.receipt_id,
            order_id = %decision.order_id,
            latency_ms = processing.as_millis() as u64,
            end_to_end_ms = end_to_end.map(|d| d.as_millis() as u64),
        );
        Ok(Disposition::Ack(proof.into()))
    }

    async fn dead_letter_invalid(
        &self,
        message: &PurchaseMessage,
        error: &DecodeError,
    ) -> Disposition {
        tracing::warn!(
            message = "Invalid purchase event; sending it to the dead-letter queue.",
            error = %error,
            error_code = error.code(),
        );
        self.dead_letter(message, DeadLetter::from(error)).await
    }

    /// The decision was reached but SQS will not take it.
    async fn decision_refused(
        &self,
        message: &PurchaseMessage,
        decision: &DecisionMessage,
        error: &PublishError,
    ) -> Disposition {
        let error = crate::error_chain(error);
        tracing::error!(
            message = "The result queue refuses this decision; sending the purchase to the dead-letter queue.",
            decision = decision.decision.as_str(),
            reason = decision.reason.as_str(),
            error = %error,
        );
        let letter = DeadLetter {
            code: "decision_refused",
            error,
            decision: Some(decision),
        };
        self.dead_letter(message, letter).await
    }

    async fn dead_letter(&self, message: &PurchaseMessage, letter: DeadLetter<'_>) -> Disposition {
        let sent = with_retries(
            || self.publisher.dead_letter(message, &letter),
            |e: &PublishError| !e.is_refusal(),
        );
        match sent.await {
            Ok(proof) => {
                metrics::dead_lettered(letter.code);
                Disposition::Ack(proof.into())
            }
            Err(e) => {
                tracing::error!(
                    message = "Failed to dead-letter a purchase; it stays queued.",
                    error = %crate::error_chain(&e),
                );
                Disposition::Hold
            }
        }
    }
}

/// A few quick retries, of failures that `worth_retrying` admits, for SQS calls whose
/// failure would otherwise cost a redelivery.
pub async fn with_retries<T, E, F, Fut>(
    call: F,
    worth_retrying: impl FnMut(&E) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error,
{
    use backon::Retryable;
    call.retry(crate::backoff::sqs_call())
        .when(worth_retrying)
        .notify(|e, delay| {
            tracing::warn!(message = "SQS call failed; retrying.", error = %e, retry_in_ms = delay.as_millis() as u64);
        })
        .await
}

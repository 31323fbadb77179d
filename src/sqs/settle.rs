//! From an [`Outcome`] to a [`Disposition`]: the one place where a purchase's decision or
//! dead letter is published and where it is decided whether the purchase may go.
//!
//! Invariant: [`Disposition::Ack`] comes only from a publish that SQS accepted (it holds
//! the [`Published`](super::Published) proof); every other path leaves the purchase on
//! its queue.

use receipt_verifier_core::{DecodeError, Outcome, PurchaseEvent, Verdict};

use super::disposition::{Disposition, Requeue};
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
    /// - a decision is published, then the purchase is acknowledged; a decision SQS
    ///   refuses for its content (too large, say) would be refused forever, so the
    ///   purchase goes to the DLQ (`decision_refused`) with the decision it got;
    /// - an invalid body goes to the DLQ, byte for byte;
    /// - a payment that is not final, or no answer from Bootpay, is handed back after the
    ///   requeue delay for its receive count.
    ///
    /// A dead letter SQS does not take leaves the purchase where it is ([`Disposition::Hold`]):
    /// SQS's own redrive moves it to the same DLQ in the end.
    ///
    /// # Errors
    /// [`Unpublished`] when the decision could not be published for a reason that may pass.
    pub async fn settle(
        &self,
        message: &PurchaseMessage,
        event: Option<&PurchaseEvent>,
        outcome: &Outcome,
    ) -> Result<Disposition, Unpublished> {
        match (outcome, event) {
            (Outcome::Decided(verdict), Some(event)) => {
                self.publish_decision(message, event, verdict).await
            }
            (Outcome::Invalid(error), _) => Ok(self.dead_letter_invalid(message, error).await),
            (Outcome::NotFinal { status }, _) => Ok(self.requeue(
                message,
                "not_final",
                &format!("payment status {status} is not final"),
            )),
            (Outcome::Unavailable(error), _) => {
                Ok(self.requeue(message, "bootpay_error", &crate::error_chain(error)))
            }
            (Outcome::Decided(_), None) => {
                // The pipeline decides only decoded events; keep the purchase rather than
                // publish half a decision.
                tracing::error!(
                    message = "A decision without its event; leaving the purchase queued."
                );
                Ok(Disposition::Hold)
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
        event: &PurchaseEvent,
        verdict: &Verdict,
    ) -> Result<Disposition, Unpublished> {
        let published = with_retries(
            || self.publisher.decision(message, event, verdict),
            |e: &PublishError| !e.is_refusal(),
        )
        .await;
        let proof = match published {
            Ok(proof) => proof,
            Err(e) if e.is_refusal() => {
                return Ok(self.decision_refused(message, verdict, &e).await);
            }
            Err(e) => return Err(Unpublished(e)),
        };
        let processing = message.received_at.elapsed();
        let end_to_end = message.sent_at.and_then(|t| t.elapsed().ok());
        metrics::decided(
            verdict.decision().as_str(),
            verdict.reason.as_str(),
            processing,
            end_to_end,
        );
        tracing::info!(
            message = "Decision published.",
            decision = verdict.decision().as_str(),
            reason = verdict.reason.as_str(),
            receipt_id = %event.receipt_id,
            order_id = %event.order_id,
            latency_ms = processing.as_millis() as u64,
            end_to_end_ms = end_to_end.map(|d| d.as_millis() as u64),
        );
        Ok(Disposition::Ack(proof))
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
        verdict: &Verdict,
        error: &PublishError,
    ) -> Disposition {
        let error = crate::error_chain(error);
        tracing::error!(
            message = "The result queue refuses this decision; sending the purchase to the dead-letter queue.",
            decision = verdict.decision().as_str(),
            reason = verdict.reason.as_str(),
            error = %error,
        );
        let letter = DeadLetter {
            code: "decision_refused",
            error,
            verdict: Some(verdict),
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
                Disposition::Ack(proof)
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

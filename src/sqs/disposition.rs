//! What becomes of a purchase message once its outcome is known: deleted, handed back
//! after a delay, held, or released at once.

use std::time::Duration;

use super::batch::{Batcher, EntryError};
use super::calls::VisibilityChange;
use super::message::PurchaseMessage;
use super::publish::Published;

/// SQS's ceiling for a visibility timeout (12 hours).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(43_200);

/// Proof that a purchase message may be deleted: its decision or dead letter was
/// published, or the core recorded all there was to record and has nothing to publish (a
/// virtual account parked in the ledger, a notification that changed nothing).
#[derive(Debug)]
pub struct Settled(());

impl From<Published> for Settled {
    fn from(_: Published) -> Self {
        Self(())
    }
}

impl Settled {
    /// Only the settler decides that an outcome needs no publish.
    pub(super) fn with_nothing_to_publish() -> Self {
        Self(())
    }
}

/// The fate of one purchase message, shared by the poller and the Lambda.
#[derive(Debug)]
pub enum Disposition {
    /// Settled: delete it (the Lambda reports it successful and lets the event source
    /// mapping delete it).
    Ack(Settled),
    /// No decision yet: visible again after `delay`. `why` is a metric label.
    Delay { delay: Duration, why: &'static str },
    /// Left as it is, to come back when its visibility runs out (publishing failed).
    Hold,
    /// Handed back at once (shutting down, or out of time).
    Release,
}

impl Disposition {
    pub fn is_ack(&self) -> bool {
        matches!(self, Self::Ack(_))
    }
}

/// How long an undecided purchase waits before it is tried again: `base × 2^(count−1)`
/// for its receive count, at most `max`.
#[derive(Debug, Clone, Copy)]
pub struct Requeue {
    pub base: Duration,
    pub max: Duration,
}

impl Requeue {
    pub fn delay(&self, receive_count: u32) -> Duration {
        let exponent = receive_count.saturating_sub(1).min(20);
        self.base
            .saturating_mul(1 << exponent)
            .min(self.max)
            .min(MAX_VISIBILITY)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("could not delete the message: {0}")]
    Delete(#[source] EntryError),
    #[error("could not change the message's visibility: {0}")]
    Visibility(#[source] EntryError),
}

/// Changes purchase messages' visibility, through a batcher.
#[derive(Clone)]
pub struct VisibilityChanger {
    changes: Batcher<VisibilityChange>,
}

impl VisibilityChanger {
    pub fn new(changes: Batcher<VisibilityChange>) -> Self {
        Self { changes }
    }

    /// Makes the message visible again after `after` (zero releases it at once). SQS
    /// counts its 12-hour ceiling from the receive, so the delay is capped at what is left.
    ///
    /// # Errors
    /// SQS refused the change (e.g. the receipt handle expired).
    pub async fn set(&self, message: &PurchaseMessage, after: Duration) -> Result<(), AckError> {
        let left = MAX_VISIBILITY.saturating_sub(message.received_at.elapsed());
        let secs = after.min(left).as_secs() as i32;
        self.changes
            .submit((message.receipt_handle.clone(), secs))
            .await
            .map_err(AckError::Visibility)
    }
}

/// Deletes purchase messages and changes their visibility, through batchers.
#[derive(Clone)]
pub struct Acker {
    deletes: Batcher<String>,
    pub visibility: VisibilityChanger,
}

impl Acker {
    pub fn new(deletes: Batcher<String>, visibility: VisibilityChanger) -> Self {
        Self {
            deletes,
            visibility,
        }
    }

    /// Deletes a purchase whose outcome is published (`_proof`).
    ///
    /// # Errors
    /// SQS refused the delete; the message will be delivered again (at-least-once).
    pub async fn delete(
        &self,
        message: &PurchaseMessage,
        _proof: &Settled,
    ) -> Result<(), AckError> {
        self.deletes
            .submit(message.receipt_handle.clone())
            .await
            .map_err(AckError::Delete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_delay_doubles_per_receive_and_is_capped() {
        let requeue = Requeue {
            base: Duration::from_secs(10),
            max: Duration::from_secs(300),
        };
        let delays: Vec<u64> = (1..=7).map(|n| requeue.delay(n).as_secs()).collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(requeue.delay(0).as_secs(), 10);
        let unbounded = Requeue {
            max: Duration::MAX,
            ..requeue
        };
        assert_eq!(unbounded.delay(u32::MAX), MAX_VISIBILITY);
    }
}

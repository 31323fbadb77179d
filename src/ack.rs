//! Acknowledge stage: deletes a purchase once its outcome is safely elsewhere, or hands
//! it back to the queue with a visibility timeout.

use std::time::Duration;

use crate::batch::{Batcher, EntryError};
use crate::receive::Received;
use crate::sqs::VisibilityChange;

/// SQS's ceiling for a visibility timeout (12 hours).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(43_200);

#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("could not delete the message: {0}")]
    Delete(#[source] EntryError),
    #[error("could not change the message's visibility: {0}")]
    Visibility(#[source] EntryError),
}

#[derive(Clone)]
pub struct Acker {
    pub deletes: Batcher<String>,
    pub visibility: Batcher<VisibilityChange>,
}

impl Acker {
    /// # Errors
    /// SQS refused the delete; the message will be delivered again (at-least-once).
    pub async fn delete(&self, receipt_handle: &str) -> Result<(), AckError> {
        self.deletes
            .submit(receipt_handle.to_owned())
            .await
            .map_err(AckError::Delete)
    }

    /// Makes the message visible again after `after` (zero releases it at once). SQS
    /// counts its 12-hour ceiling from the receive, so the delay is capped at what is left.
    ///
    /// # Errors
    /// SQS refused the change (e.g. the receipt handle expired).
    pub async fn set_visibility(
        &self,
        message: &Received,
        after: Duration,
    ) -> Result<(), AckError> {
        let left = MAX_VISIBILITY.saturating_sub(message.received_at.elapsed());
        let secs = after.min(left).as_secs() as i32;
        self.visibility
            .submit((message.receipt_handle.clone(), secs))
            .await
            .map_err(AckError::Visibility)
    }
}

/// The delay before a message that got no decision is tried again, growing with its
/// receive count: `base × 2^(count−1)`, at most `max`.
pub fn requeue_delay(receive_count: u32, base: Duration, max: Duration) -> Duration {
    let exponent = receive_count.saturating_sub(1).min(20);
    base.saturating_mul(1 << exponent)
        .min(max)
        .min(MAX_VISIBILITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_delay_doubles_per_receive_and_is_capped() {
        let base = Duration::from_secs(10);
        let max = Duration::from_secs(300);
        let delays: Vec<u64> = (1..=7)
            .map(|n| requeue_delay(n, base, max).as_secs())
            .collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(requeue_delay(0, base, max).as_secs(), 10);
        assert_eq!(requeue_delay(u32::MAX, base, Duration::MAX), MAX_VISIBILITY);
    }
}

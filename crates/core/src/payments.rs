//! The `Payments` port: how the core reaches the payment service. Bootpay's client (either
//! dialect, either kind of credentials) implements it in the root package; an in-memory
//! stub implements it for tests.

use std::time::Instant;

use crate::receipt::Receipt;

/// How long a payment call may go on: the runtime that calls knows how much time it has
/// (a purchase kept invisible by a heartbeat; a Lambda invocation's deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// Transient failures are retried until then; an attempt already started may finish.
    pub retry_until: Instant,
    /// Nothing is waited for past this, not even an attempt in progress. `None`: each
    /// attempt is bounded by the adapter's own request timeout only.
    pub hard: Option<Instant>,
}

impl Deadline {
    /// Retries for `budget` from now; attempts bounded by their request timeout only.
    pub fn retrying_for(budget: std::time::Duration) -> Self {
        Self {
            retry_until: Instant::now() + budget,
            hard: None,
        }
    }

    /// Nothing past `cutoff`, retries included.
    pub fn hard_stop(self, cutoff: Instant) -> Self {
        Self {
            retry_until: self.retry_until.min(cutoff),
            hard: Some(self.hard.map_or(cutoff, |h| h.min(cutoff))),
        }
    }
}

/// Looks receipts up and confirms them. Implementations retry transient failures
/// themselves, within the caller's [`Deadline`].
pub trait Payments: Send + Sync {
    /// The receipt as the payment service has it now.
    ///
    /// # Errors
    /// [`FailureKind::NotFound`] for an unknown receipt; any other kind when there is no
    /// answer about the payment.
    fn receipt(
        &self,
        receipt_id: &str,
        deadline: Deadline,
    ) -> impl Future<Output = Result<Receipt, PaymentsError>> + Send;

    /// Captures a payment awaiting confirmation and returns the receipt after it.
    ///
    /// # Errors
    /// [`FailureKind::NotConfirmReady`] when the payment is not awaiting confirmation (an
    /// earlier confirm whose answer was lost, a change meanwhile); as [`Payments::receipt`]
    /// otherwise.
    fn confirm(
        &self,
        receipt_id: &str,
        deadline: Deadline,
    ) -> impl Future<Output = Result<Receipt, PaymentsError>> + Send;
}

impl<P: Payments> Payments for std::sync::Arc<P> {
    fn receipt(
        &self,
        receipt_id: &str,
        deadline: Deadline,
    ) -> impl Future<Output = Result<Receipt, PaymentsError>> + Send {
        (**self).receipt(receipt_id, deadline)
    }

    fn confirm(
        &self,
        receipt_id: &str,
        deadline: Deadline,
    ) -> impl Future<Output = Result<Receipt, PaymentsError>> + Send {
        (**self).confirm(receipt_id, deadline)
    }
}

/// What kind of failure a payment call ended in: all the core needs to choose what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The service has no such receipt: a definite answer about the payment.
    NotFound,
    /// The receipt is not awaiting confirmation.
    NotConfirmReady,
    /// The service refuses the credentials: nothing will pass until a person acts.
    CredentialsRefused,
    /// It may pass if tried again: timeouts, 429, 5xx, garbled answers.
    Transient,
    /// A definite refusal that says nothing about the payment (a 4xx from a proxy, an
    /// error code the rules do not know).
    Rejected,
}

impl FailureKind {
    /// Whether trying again may succeed.
    pub fn is_transient(self) -> bool {
        self == Self::Transient
    }
}

/// A failed payment call: its kind, and the adapter's own error with its whole cause
/// chain. `Display` and `source` are the adapter error's, so logs read as before.
#[derive(Debug)]
pub struct PaymentsError {
    kind: FailureKind,
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl PaymentsError {
    pub fn new(
        kind: FailureKind,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            error: error.into(),
        }
    }

    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// The adapter's error, for callers that know which adapter they hold.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.error.as_ref()
    }
}

impl std::fmt::Display for PaymentsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for PaymentsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_hard_stop_bounds_retries_too() {
        let soft = Deadline::retrying_for(Duration::from_secs(20));
        assert_eq!(soft.hard, None);
        let cutoff = Instant::now() + Duration::from_secs(5);
        let hard = soft.hard_stop(cutoff);
        assert_eq!(hard.hard, Some(cutoff));
        assert_eq!(hard.retry_until, cutoff);
        let later = hard.hard_stop(cutoff + Duration::from_secs(1));
        assert_eq!(later.hard, Some(cutoff), "the earlier stop stands");
    }
}

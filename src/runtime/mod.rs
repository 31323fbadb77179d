//! The runtimes: each turns its input into the core's types and applies the outcome in
//! its own terms.
//!
//! - [`poller`]: `receipt-verifier run`, a long-running SQS poller;
//! - [`lambda`]: `receipt-verifier-lambda`, an SQS-triggered AWS Lambda function;
//! - [`webhook`]: `receipt-verifier webhook`, Bootpay's webhooks in, notifications queued.

pub mod lambda;
pub mod poller;
pub mod webhook;

/// The core as the poller and the Lambda run it: Bootpay behind the `Payments` port, the
/// configured ledger (or none) behind the `Ledger` port.
pub type Core = receipt_verifier_core::Pipeline<
    std::sync::Arc<crate::bootpay::BootpayClient>,
    crate::ledger::AnyLedger,
>;

/// Waits for a task and re-raises its panic, so a bug in a background task is not
/// swallowed. A cancelled task is fine: it was asked to stop.
pub async fn join(task: tokio::task::JoinHandle<()>) {
    if let Err(e) = task.await
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
}

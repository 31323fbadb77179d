//! receipt-verifier: verifies Bootpay receipts for purchases queued on SQS and publishes
//! a `fulfill` or `reject` decision for each.
//!
//! A purchase's path, one module per stage: [`receive`] → decode and verify (the
//! verification core, `receipt_verifier_core`, over [`bootpay`]) → [`publish`] → [`ack`].
//! [`worker`] runs the stages; [`intake`] pauses receiving while Bootpay cannot answer;
//! [`batch`] and [`sqs`] group SQS calls by ten; [`backoff`] names every retry schedule.

pub mod ack;
pub mod backoff;
pub mod batch;
pub mod bootpay;
pub mod config;
pub mod health;
pub mod intake;
pub mod metrics;
pub mod ops;
pub mod publish;
pub mod queues;
pub mod receive;
pub mod sqs;
pub mod telemetry;
pub mod worker;

pub use receipt_verifier_core::{Decision, DecodeError, PurchaseEvent, Reason};

/// Formats an error with all its sources, `outer: inner: root`.
///
/// AWS SDK errors need this: their `Display` alone says only "service error".
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

//! receipt-verifier: verifies Bootpay receipts for purchases queued on SQS and publishes
//! a `fulfill` or `reject` decision for each.
//!
//! # Layout
//!
//! The decisions themselves are made by the verification core, the
//! `receipt_verifier_core` crate (the event contract, the rules, the decision contract
//! and a `Pipeline` over a `Payments` port). This crate holds what the core does not:
//!
//! - adapters: [`bootpay`] (the `Payments` port over Bootpay's API) and [`sqs`]
//!   (receiving, publishing, batching, acknowledging);
//! - runtimes: [`runtime::poller`] (`receipt-verifier run`);
//! - operator commands: [`ops`];
//! - plumbing shared by all: [`config`], [`observability`], [`backoff`], [`shutdown`].

pub mod backoff;
pub mod bootpay;
pub mod config;
pub mod observability;
pub mod ops;
pub mod runtime;
pub mod shutdown;
pub mod sqs;

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

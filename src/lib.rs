//! receipt-verifier: verifies Bootpay receipts for purchases queued on SQS and publishes
//! a `fulfill`, `reject` or `revoke` decision for each, following each receipt's life in a
//! ledger.
//!
//! # Layout
//!
//! The decisions themselves are made by the verification core, the
//! `receipt_verifier_core` crate (the event contract, the rules, the decision contract
//! and a `Pipeline` over the `Payments` and `Ledger` ports). This crate holds what the
//! core does not:
//!
//! - adapters: [`bootpay`] (the `Payments` port over Bootpay's API), [`ledger`] (the
//!   `Ledger` port over DynamoDB, and the reconciliation sweep) and [`sqs`] (receiving,
//!   publishing, batching, acknowledging);
//! - runtimes: [`runtime::poller`] (`receipt-verifier run`), [`runtime::lambda`]
//!   (`receipt-verifier-lambda`) and [`runtime::webhook`] (`receipt-verifier webhook`);
//! - operator commands: [`ops`];
//! - plumbing shared by all: [`config`], [`observability`], [`backoff`], [`shutdown`],
//!   [`aws_config`].

pub mod backoff;
pub mod bootpay;
pub mod config;
pub mod ledger;
pub mod observability;
pub mod ops;
pub mod runtime;
pub mod shutdown;
pub mod sqs;

pub use receipt_verifier_core::{Decision, DecodeError, PurchaseEvent, Reason};

/// The AWS configuration of every client here, from the standard chain (environment,
/// profile, role; `AWS_ENDPOINT_URL` for an emulator), with timeouts so that a stalled
/// connection cannot hold a runtime up: `connect` for a connection, `attempt` for one
/// attempt of a call.
pub async fn aws_config(
    connect: std::time::Duration,
    attempt: std::time::Duration,
) -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(connect)
        .operation_attempt_timeout(attempt)
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .load()
        .await
}

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

//! The Bootpay adapter: implements the core's [`Payments`] port over Bootpay's server API.
//!
//! - [`client`]: HTTP, in-process retries (`backon`, exponential with jitter, bounded by
//!   the caller's deadline), and the classification of every answer;
//! - [`token`]: the one access token every verification shares;
//! - [`v2`]: v2's wire types, paths and error shape;
//! - [`error`]: [`BootpayError`], one error type for the stage;
//! - `redact`: keeps the key and tokens out of the text an answer puts in an error.
//!
//! Invariants:
//! - the private key and tokens live in [`secrecy::SecretString`]s and are never formatted;
//! - response bodies are read with a size cap and every request has a timeout, so a slow,
//!   endless or huge answer becomes an error instead of a stuck task;
//! - redirects are never followed (the token request carries the private key);
//! - text taken from an answer is redacted of every secret and capped before it reaches
//!   an error, so a proxy that quotes the request cannot put a token in the log.

mod client;
mod error;
mod redact;
mod token;
mod v2;

use std::time::Duration;

use receipt_verifier_core::{Deadline, Payments, PaymentsError, Receipt};
use secrecy::SecretString;
use url::Url;

pub use client::BootpayClient;
pub use error::BootpayError;

/// How in-process retries of one call are spaced. How long they may go on is the
/// caller's: each call carries its own deadline.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
}

#[derive(Debug, Clone)]
pub struct BootpayConfig {
    /// Base URL ending in `/v2`.
    pub api_url: Url,
    pub application_id: String,
    pub private_key: SecretString,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

/// What happened to one HTTP call, reported to whoever watches Bootpay's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Success,
    TransientFailure,
    CredentialsRefused,
}

impl From<BootpayError> for PaymentsError {
    fn from(error: BootpayError) -> Self {
        Self::new(error.kind(), error)
    }
}

/// The port over the client's own calls (inherent methods, which keep [`BootpayError`]).
impl Payments for BootpayClient {
    async fn receipt(
        &self,
        receipt_id: &str,
        deadline: Deadline,
    ) -> Result<Receipt, PaymentsError> {
        Ok(BootpayClient::receipt(self, receipt_id, deadline).await?)
    }

    async fn confirm(
        &self,
        receipt_id: &str,
        deadline: Deadline,
    ) -> Result<Receipt, PaymentsError> {
        Ok(BootpayClient::confirm(self, receipt_id, deadline).await?)
    }
}

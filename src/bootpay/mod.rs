//! The Bootpay adapter: implements the core's [`Payments`] port over Bootpay's server API.
//!
//! - [`client`]: HTTP, authentication, in-process retries (`backon`, exponential with
//!   jitter, bounded by the caller's deadline), and the classification of every answer;
//! - [`token`]: the one access token every verification shares (application id and
//!   private key); with client and secret keys there is no token, only HTTP Basic;
//! - [`v2`] and [`v1`]: each dialect's wire types, paths and error shape;
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
mod time;
mod token;
mod v1;
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

/// Which of Bootpay's APIs is spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    /// The legacy API (until about 2022): envelopes, the raw token in `Authorization`,
    /// `/submit` to confirm.
    V1,
    /// The API since 2022: bare objects, `Bearer` tokens or HTTP Basic, `/confirm`.
    V2,
}

impl Dialect {
    /// Bootpay's production base URL for the dialect.
    pub fn default_url(self) -> Url {
        let url = match self {
            Self::V1 => "https://api.bootpay.co.kr",
            Self::V2 => "https://api.bootpay.co.kr/v2",
        };
        #[allow(clippy::expect_used, reason = "a constant URL")]
        Url::parse(url).expect("a valid URL")
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

/// How the client proves who it is.
#[derive(Clone)]
pub enum Credentials {
    /// A client key and a secret key, sent as HTTP Basic on every call; no token (v2).
    Basic {
        client_key: String,
        secret_key: SecretString,
    },
    /// An application id and a private key, exchanged for an access token.
    Token {
        application_id: String,
        private_key: SecretString,
    },
}

impl Credentials {
    /// The secrets, for redaction.
    fn secrets(&self) -> Vec<SecretString> {
        match self {
            Self::Basic { secret_key, .. } => vec![secret_key.clone()],
            Self::Token { private_key, .. } => vec![private_key.clone()],
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Basic { .. } => "client and secret keys",
            Self::Token { .. } => "application id and private key",
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { client_key, .. } => f
                .debug_struct("Basic")
                .field("client_key", client_key)
                .finish_non_exhaustive(),
            Self::Token { application_id, .. } => f
                .debug_struct("Token")
                .field("application_id", application_id)
                .finish_non_exhaustive(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BootpayConfig {
    /// The dialect's base URL (`…/v2` for v2, the host for v1).
    pub api_url: Url,
    pub dialect: Dialect,
    pub credentials: Credentials,
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

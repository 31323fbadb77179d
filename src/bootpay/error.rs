//! The Bootpay stage's error type.

use std::time::Duration;

use receipt_verifier_core::FailureKind;

#[derive(Debug, thiserror::Error)]
pub enum BootpayError {
    #[error("Bootpay refused the credentials (HTTP {status}, {code})")]
    CredentialsRefused { status: u16, code: String },
    #[error("Bootpay has no such receipt")]
    NotFound,
    #[error("the receipt is not awaiting confirmation")]
    NotConfirmReady,
    #[error("Bootpay answered HTTP {status} ({code}): {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    #[error("Bootpay is unavailable (HTTP {status})")]
    Unavailable {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("request to Bootpay failed")]
    Transport(#[source] reqwest::Error),
    #[error("Bootpay sent a malformed response: {0}")]
    Malformed(String),
    #[error("no Bootpay token: the latest request for one failed ({0})")]
    TokenUnavailable(String),
    /// The request's path would not hold exactly the receipt id (a URL layer rewrote it);
    /// nothing was sent.
    #[error("refusing to send a request whose path would not name receipt {0}")]
    UnsafeReceiptId(String),
}

impl BootpayError {
    /// The kind the core acts on. Transient: connection problems, timeouts, 429, 5xx and
    /// garbled bodies (a truncated answer or a proxy's HTML page).
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::NotFound => FailureKind::NotFound,
            Self::NotConfirmReady => FailureKind::NotConfirmReady,
            Self::CredentialsRefused { .. } => FailureKind::CredentialsRefused,
            Self::Rejected { .. } | Self::UnsafeReceiptId(_) => FailureKind::Rejected,
            Self::Unavailable { .. }
            | Self::Transport(_)
            | Self::Malformed(_)
            | Self::TokenUnavailable(_) => FailureKind::Transient,
        }
    }

    /// Whether trying again may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind().is_transient()
    }

    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::CredentialsRefused { .. } => "credentials_refused",
            Self::NotFound => "not_found",
            Self::NotConfirmReady => "not_confirm_ready",
            Self::Rejected { .. } => "rejected",
            Self::Unavailable { status: 429, .. } => "throttled",
            Self::Unavailable { .. } => "unavailable",
            Self::Transport(e) if e.is_timeout() => "timeout",
            Self::Transport(_) => "transport",
            Self::Malformed(_) => "malformed",
            Self::TokenUnavailable(_) => "token_unavailable",
            Self::UnsafeReceiptId(_) => "unsafe_receipt_id",
        }
    }

    pub(super) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

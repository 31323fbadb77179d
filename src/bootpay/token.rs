//! The one access token every verification shares.
//!
//! Invariants: it is fetched once (one fetch in flight at a time), renewed before it
//! expires, and renewed once more when Bootpay answers 401; a fetch that failed moments
//! ago answers the tasks queued behind it, so they do not each repeat a slow, failing
//! request.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use secrecy::SecretString;

use super::error::BootpayError;

/// How long a failed token fetch answers for the tasks queued behind it.
const FAILURE_MEMORY: Duration = Duration::from_secs(1);

/// A token as Bootpay issued it.
pub(super) struct Issued {
    pub value: SecretString,
    pub ttl: Duration,
    /// When the request for it was sent: its life is counted from there.
    pub requested_at: Instant,
}

/// Why a fetch is made, for metrics and logs.
pub(super) type Trigger = &'static str;

/// Whoever asks Bootpay for a token (the client).
pub(super) trait Issuer: Sync {
    fn issue(&self, trigger: Trigger) -> impl Future<Output = Result<Issued, BootpayError>> + Send;
}

#[derive(Clone)]
struct Token {
    value: SecretString,
    renew_at: Instant,
    expires_at: Instant,
    /// Identifies this token so that many tasks seeing the same 401 renew it only once.
    generation: u64,
}

#[derive(Default)]
struct Cache {
    current: Option<Token>,
    generation: u64,
    last_failure: Option<(Instant, FetchFailure)>,
}

#[derive(Clone)]
enum FetchFailure {
    Refused { status: u16, code: String },
    Unavailable(String),
}

impl FetchFailure {
    fn of(error: &BootpayError) -> Self {
        match error {
            BootpayError::CredentialsRefused { status, code } => Self::Refused {
                status: *status,
                code: code.clone(),
            },
            other => Self::Unavailable(crate::error_chain(other)),
        }
    }

    fn to_error(&self) -> BootpayError {
        match self {
            Self::Refused { status, code } => BootpayError::CredentialsRefused {
                status: *status,
                code: code.clone(),
            },
            Self::Unavailable(text) => BootpayError::TokenUnavailable(text.clone()),
        }
    }
}

/// A token and its generation.
pub(super) type Current = (SecretString, u64);

#[derive(Default)]
pub(super) struct TokenStore {
    /// Never held across an `.await`.
    cache: Mutex<Cache>,
    /// Held by the one task fetching a token.
    refresh: tokio::sync::Mutex<()>,
}

impl TokenStore {
    fn cache(&self) -> MutexGuard<'_, Cache> {
        // The cache holds plain data; a panic elsewhere cannot leave it half-written.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A token to send: the cached one while it is fresh; once it is due for renewal, one
    /// task renews it while the others keep using it; without a valid one, a fetch.
    pub async fn current(&self, issuer: &impl Issuer) -> Result<Current, BootpayError> {
        let now = Instant::now();
        let still_valid = match &self.cache().current {
            Some(t) if now < t.renew_at => return Ok((t.value.clone(), t.generation)),
            Some(t) if now < t.expires_at => Some((t.value.clone(), t.generation)),
            _ => None,
        };
        if let Some(valid) = still_valid {
            // A failed renewal costs nothing until the token expires.
            if let Ok(_flight) = self.refresh.try_lock() {
                match self.fetch_and_store(issuer, "expiry").await {
                    Ok(fresh) => return Ok(fresh),
                    Err(e) => tracing::warn!(
                        message = "Token renewal failed; the current token is used until it expires.",
                        error = %crate::error_chain(&e),
                    ),
                }
            }
            return Ok(valid);
        }
        self.refresh_once(issuer, "expiry", None).await
    }

    /// A token other than generation `seen`, which Bootpay just refused.
    pub async fn renew_after_401(
        &self,
        issuer: &impl Issuer,
        seen: u64,
    ) -> Result<SecretString, BootpayError> {
        self.refresh_once(issuer, "unauthorized", Some(seen))
            .await
            .map(|(value, _)| value)
    }

    /// Fetches a fresh token whatever the cache holds.
    pub async fn renew_now(&self, issuer: &impl Issuer) -> Result<(), BootpayError> {
        let _flight = self.refresh.lock().await;
        self.fetch_and_store(issuer, "forced").await.map(|_| ())
    }

    /// Whether an unexpired token is cached.
    pub fn has_valid(&self) -> bool {
        let now = Instant::now();
        self.cache()
            .current
            .as_ref()
            .is_some_and(|t| now < t.expires_at)
    }

    /// How long until the cached token is due for renewal; `None` without a token.
    pub fn renewal_due_in(&self) -> Option<Duration> {
        let now = Instant::now();
        self.cache()
            .current
            .as_ref()
            .map(|t| t.renew_at.saturating_duration_since(now))
    }

    /// Fetches a token, unless another task fetched a usable one (or failed to, moments
    /// ago) while this one waited its turn.
    async fn refresh_once(
        &self,
        issuer: &impl Issuer,
        trigger: Trigger,
        refused_generation: Option<u64>,
    ) -> Result<Current, BootpayError> {
        let _flight = self.refresh.lock().await;
        {
            let cache = self.cache();
            let now = Instant::now();
            if let Some(t) = &cache.current {
                let usable = match refused_generation {
                    Some(seen) => t.generation != seen && now < t.expires_at,
                    None => now < t.renew_at,
                };
                if usable {
                    return Ok((t.value.clone(), t.generation));
                }
            }
            if let Some((at, failure)) = &cache.last_failure
                && at.elapsed() < FAILURE_MEMORY
            {
                return Err(failure.to_error());
            }
        }
        self.fetch_and_store(issuer, trigger).await
    }

    /// Fetches a token and caches it. Callers hold `refresh`.
    async fn fetch_and_store(
        &self,
        issuer: &impl Issuer,
        trigger: Trigger,
    ) -> Result<Current, BootpayError> {
        let result = issuer.issue(trigger).await;
        let mut cache = self.cache();
        match result {
            Ok(issued) => {
                cache.generation += 1;
                let ttl = issued.ttl;
                let token = Token {
                    value: issued.value,
                    // Renew with a sixth of the lifetime left: Bootpay hands out a new
                    // token only in the last five of its thirty minutes, and in-flight
                    // calls need the margin.
                    renew_at: issued.requested_at + ttl - ttl / 6,
                    expires_at: issued.requested_at + ttl,
                    generation: cache.generation,
                };
                let out = (token.value.clone(), token.generation);
                cache.current = Some(token);
                cache.last_failure = None;
                Ok(out)
            }
            Err(e) => {
                cache.last_failure = Some((Instant::now(), FetchFailure::of(&e)));
                Err(e)
            }
        }
    }
}

//! Bootpay v2 client: token cache, receipt lookup and server confirm, with transient
//! failures retried in process (`backon`, exponential with jitter, bounded by a deadline).
//!
//! Invariants:
//! - one access token is shared by every in-flight verification; it is fetched once,
//!   renewed before it expires, and renewed once more when Bootpay answers 401;
//! - the private key and tokens live in [`SecretString`]s and are never formatted;
//! - response bodies are read with a size cap and every request has a timeout, so a slow,
//!   endless or huge answer becomes an error instead of a stuck task.

use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use reqwest::{StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Number;
use tokio::sync::Mutex;
use url::Url;

/// Largest Bootpay response body read; a receipt is a few KiB.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Bootpay's documented token lifetime, used when an answer omits `expire_in`.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(1800);
/// Bounds on a lifetime Bootpay states, so an absurd `expire_in` cannot overflow a clock.
const MIN_TOKEN_TTL_SECS: f64 = 1.0;
const MAX_TOKEN_TTL_SECS: f64 = 86_400.0;

/// The parts of a v2 receipt the verifier relies on. Everything else is ignored, so
/// Bootpay can add fields freely.
#[derive(Debug, Clone, Deserialize)]
pub struct Receipt {
    pub receipt_id: String,
    pub order_id: String,
    pub price: Number,
    pub status: i64,
    #[serde(default)]
    pub currency: Option<String>,
    /// Cumulative amount cancelled; partial cancels can leave the status untouched.
    #[serde(default)]
    pub cancelled_price: Option<Number>,
    /// Set on payments made with a test project.
    #[serde(default)]
    pub sandbox: Option<bool>,
}

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
}

impl BootpayError {
    /// Whether trying again may succeed: connection problems, timeouts, 429, 5xx and
    /// garbled bodies (a truncated answer or a proxy's HTML page).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. }
                | Self::Transport(_)
                | Self::Malformed(_)
                | Self::TokenUnavailable(_)
        )
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
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// How long in-process retries of one call may go on.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Retries stop once this much time has passed since the first attempt.
    pub budget: Duration,
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

#[derive(Clone)]
struct Token {
    value: SecretString,
    renew_at: Instant,
    expires_at: Instant,
    /// Identifies this token so that many tasks seeing the same 401 renew it only once.
    generation: u64,
}

/// The shared token, and what the latest attempt to get one said.
#[derive(Default)]
struct TokenCache {
    current: Option<Token>,
    generation: u64,
    /// A fetch that failed moments ago answers the tasks that queued behind it, so they
    /// do not each repeat a slow, failing request.
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

/// A receipt id no payment has, looked up to learn whether Bootpay answers.
const PROBE_RECEIPT_ID: &str = "receipt-verifier-probe";

/// How long a failed token fetch answers for the tasks queued behind it.
const FAILURE_MEMORY: Duration = Duration::from_secs(1);

pub struct BootpayClient {
    http: reqwest::Client,
    config: BootpayConfig,
    /// Never held across an `.await`.
    token: std::sync::Mutex<TokenCache>,
    /// Held by the one task fetching a token, so there is only ever one fetch in flight.
    refresh: Mutex<()>,
    observer: Box<dyn Fn(CallOutcome) + Send + Sync>,
}

/// What happened to one HTTP call, reported to whoever watches Bootpay's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Success,
    TransientFailure,
    CredentialsRefused,
}

impl std::fmt::Debug for BootpayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootpayClient")
            .field("api_url", &self.config.api_url.as_str())
            .field("application_id", &self.config.application_id)
            .finish_non_exhaustive()
    }
}

impl BootpayClient {
    /// # Errors
    /// When the HTTP client cannot be built (TLS roots unavailable).
    pub fn new(
        config: BootpayConfig,
        observer: impl Fn(CallOutcome) + Send + Sync + 'static,
    ) -> Result<Self, BootpayError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("receipt-verifier/", env!("CARGO_PKG_VERSION")))
            // A redirect would re-send the token request's body, private key included,
            // wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(BootpayError::Transport)?;
        Ok(Self {
            http,
            config,
            token: std::sync::Mutex::new(TokenCache::default()),
            refresh: Mutex::new(()),
            observer: Box::new(observer),
        })
    }

    /// `GET /receipt/{id}`, retried while the failure is transient.
    ///
    /// # Errors
    /// [`BootpayError::NotFound`] for an unknown receipt; a transient error once the retry
    /// budget is spent; any other error at once.
    pub async fn receipt(&self, receipt_id: &str) -> Result<Receipt, BootpayError> {
        self.with_retries("receipt", || self.receipt_once(receipt_id))
            .await
    }

    /// `POST /confirm`: captures a payment waiting in status 2. Retried like
    /// [`Self::receipt`]; a retry after a lost answer gets `NotConfirmReady`.
    ///
    /// # Errors
    /// As [`Self::receipt`], plus [`BootpayError::NotConfirmReady`].
    pub async fn confirm(&self, receipt_id: &str) -> Result<Receipt, BootpayError> {
        self.with_retries("confirm", || self.confirm_once(receipt_id))
            .await
    }

    /// Fetches a fresh token, bypassing the cache: the probe used to learn whether
    /// Bootpay accepts the credentials again.
    ///
    /// # Errors
    /// [`BootpayError::CredentialsRefused`] or a transport/availability error.
    pub async fn renew_token(&self) -> Result<(), BootpayError> {
        let _flight = self.refresh.lock().await;
        self.fetch_and_store("forced").await.map(|_| ())
    }

    /// Asks Bootpay whether it works again: a fresh token, then one lookup of a receipt
    /// that does not exist (any definite answer will do), without retries.
    ///
    /// # Errors
    /// What either call failed with.
    pub async fn probe(&self) -> Result<(), BootpayError> {
        self.renew_token().await?;
        match self.receipt_once(PROBE_RECEIPT_ID).await {
            Ok(_) | Err(BootpayError::NotFound | BootpayError::Rejected { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether an unexpired token is cached (for readiness).
    pub fn has_token(&self) -> bool {
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

    fn cache(&self) -> std::sync::MutexGuard<'_, TokenCache> {
        // The cache holds plain data; a panic elsewhere cannot leave it half-written.
        self.token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn with_retries<T, F, Fut>(
        &self,
        endpoint: &'static str,
        call: F,
    ) -> Result<T, BootpayError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, BootpayError>>,
    {
        let policy = self.config.retry;
        let deadline = Instant::now() + policy.budget;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_jitter()
            .without_max_times();
        call.retry(backoff)
            .when(|e: &BootpayError| e.is_transient() && Instant::now() < deadline)
            .adjust(|e, delay| {
                let delay = delay?.max(e.retry_after().unwrap_or_default());
                let left = deadline.saturating_duration_since(Instant::now());
                (!left.is_zero()).then(|| delay.min(left))
            })
            .notify(|e, delay| {
                crate::metrics::bootpay_retry(endpoint);
                tracing::warn!(
                    message = "Bootpay call failed; retrying.",
                    error = %crate::error_chain(e),
                    retry_in_ms = delay.as_millis() as u64,
                );
            })
            .await
    }

    async fn receipt_once(&self, receipt_id: &str) -> Result<Receipt, BootpayError> {
        let mut url = self.endpoint(&["receipt", receipt_id])?;
        url.query_pairs_mut()
            .append_pair("lookup_user_data", "false");
        self.authorized("receipt", |token| {
            self.http
                .get(url.clone())
                .bearer_auth(token.expose_secret())
        })
        .await
    }

    async fn confirm_once(&self, receipt_id: &str) -> Result<Receipt, BootpayError> {
        let url = self.endpoint(&["confirm"])?;
        let body = serde_json::json!({ "receipt_id": receipt_id });
        self.authorized("confirm", |token| {
            self.http
                .post(url.clone())
                .json(&body)
                .bearer_auth(token.expose_secret())
        })
        .await
    }

    /// Sends an authenticated request; on 401 renews the token once and sends it again.
    async fn authorized<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &'static str,
        build: impl Fn(&SecretString) -> reqwest::RequestBuilder,
    ) -> Result<T, BootpayError> {
        let (token, generation) = self.current_token().await?;
        match self.send(endpoint, build(&token)).await {
            Err(Unauthorized) => {
                let token = self.renew_after_401(generation).await?;
                match self.send(endpoint, build(&token)).await {
                    Err(Unauthorized) => {
                        self.observe(CallOutcome::CredentialsRefused);
                        Err(BootpayError::CredentialsRefused {
                            status: 401,
                            code: "token rejected right after issue".into(),
                        })
                    }
                    Ok(result) => result,
                }
            }
            Ok(result) => result,
        }
    }

    async fn current_token(&self) -> Result<(SecretString, u64), BootpayError> {
        let now = Instant::now();
        let still_valid = match &self.cache().current {
            Some(t) if now < t.renew_at => return Ok((t.value.clone(), t.generation)),
            Some(t) if now < t.expires_at => Some((t.value.clone(), t.generation)),
            _ => None,
        };
        if let Some(valid) = still_valid {
            // Due for renewal but still valid: one task renews it while the others keep
            // using it, and a failed renewal costs nothing until the token expires.
            if let Ok(_flight) = self.refresh.try_lock() {
                match self.fetch_and_store("expiry").await {
                    Ok(fresh) => return Ok(fresh),
                    Err(e) => tracing::warn!(
                        message = "Token renewal failed; the current token is used until it expires.",
                        error = %crate::error_chain(&e),
                    ),
                }
            }
            return Ok(valid);
        }
        self.refresh_once("expiry", None).await
    }

    async fn renew_after_401(&self, seen: u64) -> Result<SecretString, BootpayError> {
        self.refresh_once("unauthorized", Some(seen))
            .await
            .map(|(value, _)| value)
    }

    /// Fetches a token, unless another task fetched a usable one (or failed to, moments
    /// ago) while this one waited its turn.
    async fn refresh_once(
        &self,
        trigger: &'static str,
        refused_generation: Option<u64>,
    ) -> Result<(SecretString, u64), BootpayError> {
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
        self.fetch_and_store(trigger).await
    }

    /// Fetches a token and caches it. Callers hold `refresh`.
    async fn fetch_and_store(
        &self,
        trigger: &'static str,
    ) -> Result<(SecretString, u64), BootpayError> {
        let generation = self.cache().generation + 1;
        let result = self.fetch_token(generation, trigger).await;
        let mut cache = self.cache();
        match result {
            Ok(token) => {
                let out = (token.value.clone(), token.generation);
                cache.generation = generation;
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

    async fn fetch_token(
        &self,
        generation: u64,
        trigger: &'static str,
    ) -> Result<Token, BootpayError> {
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            #[serde(default)]
            expire_in: Option<f64>,
        }
        let url = self.endpoint(&["request", "token"])?;
        let body = serde_json::json!({
            "application_id": self.config.application_id,
            "private_key": self.config.private_key.expose_secret(),
        });
        let started = Instant::now();
        let refused = |status: u16, code: String| {
            self.observe(CallOutcome::CredentialsRefused);
            BootpayError::CredentialsRefused { status, code }
        };
        let response: TokenResponse =
            match self.send("token", self.http.post(url).json(&body)).await {
                Ok(Ok(response)) => response,
                // The token call carries nothing but the credentials: any definite
                // refusal (a 4xx, whatever its code) is about them.
                Ok(Err(BootpayError::Rejected { status, code, .. })) => {
                    return Err(refused(status, code));
                }
                Ok(Err(e)) => return Err(e),
                Err(Unauthorized) => return Err(refused(401, "unauthorized".into())),
            };
        let ttl = response
            .expire_in
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(DEFAULT_TOKEN_TTL, |s| {
                Duration::from_secs_f64(s.clamp(MIN_TOKEN_TTL_SECS, MAX_TOKEN_TTL_SECS))
            });
        crate::metrics::token_refreshed(trigger);
        tracing::info!(
            message = "Obtained a Bootpay access token.",
            trigger,
            expires_in_secs = ttl.as_secs()
        );
        Ok(Token {
            value: SecretString::from(response.access_token),
            // Renew with a sixth of the lifetime left: Bootpay hands out a new token only
            // in the last five of its thirty minutes, and in-flight calls need the margin.
            renew_at: started + ttl - ttl / 6,
            expires_at: started + ttl,
            generation,
        })
    }

    fn endpoint(&self, segments: &[&str]) -> Result<Url, BootpayError> {
        let mut url = self.config.api_url.clone();
        url.path_segments_mut()
            .map_err(|()| BootpayError::Malformed("Bootpay URL cannot be a base".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Sends one request and classifies the answer. The outer `Err(Unauthorized)` is kept
    /// apart so callers decide whether a 401 means "renew the token" or "refused".
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Result<T, BootpayError>, Unauthorized> {
        let started = Instant::now();
        let result = self.send_inner(request).await;
        let outcome = match &result {
            Err(Unauthorized) => "unauthorized",
            Ok(Ok(_)) => "ok",
            Ok(Err(e)) => e.label(),
        };
        crate::metrics::bootpay_request(endpoint, outcome, started.elapsed());
        match &result {
            Err(Unauthorized) => {}
            Ok(Ok(_)) => self.observe(CallOutcome::Success),
            Ok(Err(e)) if e.is_transient() => self.observe(CallOutcome::TransientFailure),
            Ok(Err(BootpayError::CredentialsRefused { .. })) => {
                self.observe(CallOutcome::CredentialsRefused);
            }
            // A definite answer (not found, not ready, a 4xx) shows Bootpay is up.
            Ok(Err(_)) => self.observe(CallOutcome::Success),
        }
        result
    }

    async fn send_inner<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Result<T, BootpayError>, Unauthorized> {
        let response = match request
            .header(header::ACCEPT, "application/json")
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(Err(BootpayError::Transport(e))),
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(Unauthorized);
        }
        let retry_after = retry_after(response.headers());
        let body = match read_capped(response).await {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        if status.is_success() {
            return Ok(serde_json::from_slice(&body)
                .map_err(|e| BootpayError::Malformed(format!("HTTP {status}: {e}"))));
        }
        Ok(Err(classify_error(status, retry_after, &body)))
    }

    fn observe(&self, outcome: CallOutcome) {
        (self.observer)(outcome);
    }
}

/// A 401 from Bootpay, before the caller decides what it means.
struct Unauthorized;

fn classify_error(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> BootpayError {
    #[derive(Deserialize)]
    struct ErrorBody {
        error_code: Option<serde_json::Value>,
        #[serde(default)]
        message: Option<String>,
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return BootpayError::Unavailable {
            status: status.as_u16(),
            retry_after,
        };
    }
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|b| b.error_code.as_ref())
        .map(|c| match c {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    match code.as_deref() {
        Some("RC_NOT_FOUND") => BootpayError::NotFound,
        Some("RC_NOT_CONFIRM_READY") => BootpayError::NotConfirmReady,
        Some("TOKEN_KEY_INVALID") => BootpayError::CredentialsRefused {
            status: status.as_u16(),
            code: "TOKEN_KEY_INVALID".into(),
        },
        Some(code) => BootpayError::Rejected {
            status: status.as_u16(),
            code: code.to_owned(),
            message: parsed
                .and_then(|b| b.message)
                .map(|m| m.chars().take(200).collect())
                .unwrap_or_default(),
        },
        // A definite refusal without Bootpay's error shape (a proxy, a load balancer, an
        // IP allow list): trying again will not change it.
        None => BootpayError::Rejected {
            status: status.as_u16(),
            code: "none".into(),
            message: String::from_utf8_lossy(body).chars().take(200).collect(),
        },
    }
}

fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs.min(300)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let wait = at.duration_since(std::time::SystemTime::now()).ok()?;
    Some(wait.min(Duration::from_secs(300)))
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, BootpayError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BootpayError::Transport)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(BootpayError::Malformed(format!(
                "body larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_status_and_code() {
        let not_found = classify_error(
            StatusCode::NOT_FOUND,
            None,
            br#"{"error_code":"RC_NOT_FOUND","message":"x"}"#,
        );
        assert!(matches!(not_found, BootpayError::NotFound));
        let not_ready = classify_error(
            StatusCode::BAD_REQUEST,
            None,
            br#"{"error_code":"RC_NOT_CONFIRM_READY"}"#,
        );
        assert!(matches!(not_ready, BootpayError::NotConfirmReady));
        let throttled = classify_error(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(2)),
            b"",
        );
        assert!(throttled.is_transient());
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(2)));
        let html = classify_error(StatusCode::BAD_GATEWAY, None, b"<html>bad gateway</html>");
        assert!(html.is_transient());
        let other = classify_error(
            StatusCode::BAD_REQUEST,
            None,
            br#"{"error_code":"RC_SOMETHING","message":"nope"}"#,
        );
        assert!(!other.is_transient());
        // A refusal from something in front of Bootpay is definite, not transient.
        let proxy = classify_error(StatusCode::FORBIDDEN, None, b"<html>denied</html>");
        assert!(!proxy.is_transient());
        assert_eq!(proxy.label(), "rejected");
    }

    #[test]
    fn retry_after_accepts_seconds_and_caps_them() {
        let mut headers = header::HeaderMap::new();
        headers.insert(header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(header::RETRY_AFTER, "999999".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(300)));
        headers.insert(header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn debug_output_never_shows_the_private_key() {
        let config = BootpayConfig {
            api_url: Url::parse("http://127.0.0.1:1/v2").unwrap(),
            application_id: "app".into(),
            private_key: SecretString::from("super-secret-key"),
            request_timeout: Duration::from_secs(1),
            retry: RetryPolicy {
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(1),
                budget: Duration::from_millis(1),
            },
        };
        assert!(!format!("{config:?}").contains("super-secret-key"));
        let client = BootpayClient::new(config, |_| {}).unwrap();
        assert!(!format!("{client:?}").contains("super-secret-key"));
    }
}

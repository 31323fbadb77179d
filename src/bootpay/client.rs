//! The Bootpay client: HTTP calls, their retries, and what each answer means.

use std::time::{Duration, Instant};

use backon::Retryable;
use receipt_verifier_core::{Deadline, Receipt};
use reqwest::{StatusCode, header};
use secrecy::{ExposeSecret, SecretString};

use super::error::BootpayError;
use super::redact::Redactor;
use super::token::{Issued, Issuer, TokenStore, Trigger};
use super::{BootpayConfig, CallOutcome, v2};

/// Largest Bootpay response body read; a receipt is a few KiB.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Bootpay's documented token lifetime, used when an answer omits `expire_in`.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(1800);
/// Bounds on a lifetime Bootpay states, so an absurd `expire_in` cannot overflow a clock.
const MIN_TOKEN_TTL_SECS: f64 = 1.0;
const MAX_TOKEN_TTL_SECS: f64 = 86_400.0;
/// The least time an attempt is given, however close its deadline.
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(100);
/// A receipt id no payment has, looked up to learn whether Bootpay answers.
const PROBE_RECEIPT_ID: &str = "receipt-verifier-probe";

pub struct BootpayClient {
    http: reqwest::Client,
    config: BootpayConfig,
    tokens: TokenStore,
    /// Keeps the key and tokens out of whatever an answer's text puts in an error.
    redactor: Redactor,
    observer: Box<dyn Fn(CallOutcome) + Send + Sync>,
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
    /// `observer` hears the outcome of every HTTP call (the poller's intake gate).
    ///
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
            redactor: Redactor::new(vec![config.private_key.clone()]),
            config,
            tokens: TokenStore::default(),
            observer: Box::new(observer),
        })
    }

    /// `GET /receipt/{id}`, retried while the failure is transient and the deadline allows.
    ///
    /// # Errors
    /// [`BootpayError::NotFound`] for an unknown receipt; a transient error once the time
    /// for retries is spent; any other error at once.
    pub async fn receipt(
        &self,
        receipt_id: &str,
        deadline: Deadline,
    ) -> Result<Receipt, BootpayError> {
        self.with_retries("receipt", deadline, || {
            self.receipt_once(receipt_id, deadline)
        })
        .await
    }

    /// `POST /confirm`: captures a payment waiting in status 2. Retried like
    /// [`Self::receipt`]; a retry after a lost answer gets `NotConfirmReady`.
    ///
    /// # Errors
    /// As [`Self::receipt`], plus [`BootpayError::NotConfirmReady`].
    pub async fn confirm(
        &self,
        receipt_id: &str,
        deadline: Deadline,
    ) -> Result<Receipt, BootpayError> {
        self.with_retries("confirm", deadline, || {
            self.confirm_once(receipt_id, deadline)
        })
        .await
    }

    /// Fetches a fresh token, bypassing the cache: the probe used to learn whether
    /// Bootpay accepts the credentials again.
    ///
    /// # Errors
    /// [`BootpayError::CredentialsRefused`] or a transport/availability error.
    pub async fn renew_token(&self) -> Result<(), BootpayError> {
        self.tokens.renew_now(self).await
    }

    /// Asks Bootpay whether it works again: a fresh token, then one lookup of a receipt
    /// that does not exist (any definite answer will do), without retries.
    ///
    /// # Errors
    /// What either call failed with.
    pub async fn probe(&self) -> Result<(), BootpayError> {
        self.renew_token().await?;
        let once = Deadline::retrying_for(Duration::ZERO);
        match self.receipt_once(PROBE_RECEIPT_ID, once).await {
            Ok(_) | Err(BootpayError::NotFound | BootpayError::Rejected { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether an unexpired token is cached (for readiness).
    pub fn has_token(&self) -> bool {
        self.tokens.has_valid()
    }

    /// How long until the cached token is due for renewal; `None` without a token.
    pub fn renewal_due_in(&self) -> Option<Duration> {
        self.tokens.renewal_due_in()
    }

    async fn with_retries<T, F, Fut>(
        &self,
        endpoint: &'static str,
        deadline: Deadline,
        call: F,
    ) -> Result<T, BootpayError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, BootpayError>>,
    {
        call.retry(crate::backoff::bootpay_call(self.config.retry))
            .when(|e: &BootpayError| e.is_transient() && Instant::now() < deadline.retry_until)
            .adjust(|e, delay| {
                let delay = delay?.max(e.retry_after().unwrap_or_default());
                let left = deadline
                    .retry_until
                    .saturating_duration_since(Instant::now());
                (!left.is_zero()).then(|| delay.min(left))
            })
            .notify(|e, delay| {
                crate::observability::metrics::bootpay_retry(endpoint);
                tracing::warn!(
                    message = "Bootpay call failed; retrying.",
                    error = %crate::error_chain(e),
                    retry_in_ms = delay.as_millis() as u64,
                );
            })
            .await
    }

    async fn receipt_once(
        &self,
        receipt_id: &str,
        deadline: Deadline,
    ) -> Result<Receipt, BootpayError> {
        let mut url = self.receipt_url(receipt_id)?;
        url.query_pairs_mut()
            .append_pair("lookup_user_data", "false");
        let wire: v2::WireReceipt = self
            .authorized("receipt", deadline, |token| {
                self.http
                    .get(url.clone())
                    .bearer_auth(token.expose_secret())
            })
            .await?;
        Ok(wire.into())
    }

    async fn confirm_once(
        &self,
        receipt_id: &str,
        deadline: Deadline,
    ) -> Result<Receipt, BootpayError> {
        let url = self.endpoint(v2::CONFIRM_PATH)?;
        let body = serde_json::json!({ "receipt_id": receipt_id });
        let wire: v2::WireReceipt = self
            .authorized("confirm", deadline, |token| {
                self.http
                    .post(url.clone())
                    .json(&body)
                    .bearer_auth(token.expose_secret())
            })
            .await?;
        Ok(wire.into())
    }

    /// Sends an authenticated request, given its request timeout to answer (less, near a
    /// hard deadline); on 401 renews the token once and sends it again.
    async fn authorized<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &'static str,
        deadline: Deadline,
        build: impl Fn(&SecretString) -> reqwest::RequestBuilder,
    ) -> Result<T, BootpayError> {
        let build = |token: &SecretString| build(token).timeout(self.attempt_timeout(deadline));
        let (token, generation) = self.tokens.current(self).await?;
        match self.send(endpoint, build(&token)).await {
            Err(Unauthorized) => {
                let token = self.tokens.renew_after_401(self, generation).await?;
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

    async fn fetch_token(&self, trigger: Trigger) -> Result<Issued, BootpayError> {
        let url = self.endpoint(v2::TOKEN_PATH)?;
        let body = serde_json::json!({
            "application_id": self.config.application_id,
            "private_key": self.config.private_key.expose_secret(),
        });
        let requested_at = Instant::now();
        let refused = |status: u16, code: String| {
            self.observe(CallOutcome::CredentialsRefused);
            BootpayError::CredentialsRefused { status, code }
        };
        let response: v2::TokenResponse =
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
        let value = SecretString::from(response.access_token);
        self.redactor.remember(&value);
        crate::observability::metrics::token_refreshed(trigger);
        tracing::info!(
            message = "Obtained a Bootpay access token.",
            trigger,
            expires_in_secs = ttl.as_secs()
        );
        Ok(Issued {
            value,
            ttl,
            requested_at,
        })
    }

    /// An attempt never outlives a hard deadline: the request timeout, or what is left
    /// until the hard deadline if that is less (never below a floor that lets a fast
    /// answer in).
    fn attempt_timeout(&self, deadline: Deadline) -> Duration {
        let timeout = self.config.request_timeout;
        match deadline.hard {
            Some(hard) => {
                let left = hard.saturating_duration_since(Instant::now());
                timeout.min(left).max(MIN_ATTEMPT_TIMEOUT)
            }
            None => timeout,
        }
    }

    /// The lookup URL, checked to end in exactly the receipt id as one path segment: the
    /// URL rules drop tabs and line breaks and resolve `.` and `..`, so an id the event
    /// contract lets through must still never become another path or another receipt.
    fn receipt_url(&self, receipt_id: &str) -> Result<url::Url, BootpayError> {
        let path = v2::receipt_path(receipt_id);
        let url = self.endpoint(&path)?;
        let base = self
            .config
            .api_url
            .path_segments()
            .map_or(0, |s| s.filter(|s| !s.is_empty()).count());
        let segments: Vec<&str> = url
            .path_segments()
            .map(Iterator::collect)
            .unwrap_or_default();
        let last = segments
            .last()
            .map(|s| percent_encoding::percent_decode_str(s).decode_utf8());
        let exact = segments.len() == base + path.len()
            && matches!(last, Some(Ok(ref decoded)) if decoded == receipt_id);
        if exact {
            Ok(url)
        } else {
            let shown: String = receipt_id
                .chars()
                .take(64)
                .flat_map(char::escape_debug)
                .collect();
            Err(BootpayError::UnsafeReceiptId(shown))
        }
    }

    fn endpoint(&self, segments: &[&str]) -> Result<url::Url, BootpayError> {
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
        crate::observability::metrics::bootpay_request(endpoint, outcome, started.elapsed());
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
            // A parse error can quote a value of the body.
            return Ok(serde_json::from_slice(&body).map_err(|e| {
                BootpayError::Malformed(self.redactor.redact(&format!("HTTP {status}: {e}")))
            }));
        }
        Ok(Err(self.redacted(v2::classify_error(
            status,
            retry_after,
            &body,
        ))))
    }

    /// The error with what it quotes of an answer redacted.
    fn redacted(&self, error: BootpayError) -> BootpayError {
        let redact = |text: &str| self.redactor.redact(text);
        match error {
            BootpayError::Rejected {
                status,
                code,
                message,
            } => BootpayError::Rejected {
                status,
                code: redact(&code),
                message: redact(&message),
            },
            BootpayError::CredentialsRefused { status, code } => BootpayError::CredentialsRefused {
                status,
                code: redact(&code),
            },
            BootpayError::Malformed(text) => BootpayError::Malformed(redact(&text)),
            other => other,
        }
    }

    fn observe(&self, outcome: CallOutcome) {
        (self.observer)(outcome);
    }
}

impl Issuer for BootpayClient {
    async fn issue(&self, trigger: Trigger) -> Result<Issued, BootpayError> {
        self.fetch_token(trigger).await
    }
}

/// A 401 from Bootpay, before the caller decides what it means.
struct Unauthorized;

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
    use super::super::RetryPolicy;
    use super::*;

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

    fn client(request_timeout: Duration) -> BootpayClient {
        let config = BootpayConfig {
            api_url: url::Url::parse("http://127.0.0.1:1/v2").unwrap(),
            application_id: "app".into(),
            private_key: SecretString::from("super-secret-key"),
            request_timeout,
            retry: RetryPolicy {
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(1),
            },
        };
        BootpayClient::new(config, |_| {}).unwrap()
    }

    #[test]
    fn an_attempt_never_outlives_a_hard_deadline() {
        let client = client(Duration::from_secs(10));
        let soft = Deadline::retrying_for(Duration::from_secs(1));
        assert_eq!(client.attempt_timeout(soft), Duration::from_secs(10));
        let near = soft.hard_stop(Instant::now() + Duration::from_secs(2));
        let timeout = client.attempt_timeout(near);
        assert!(
            timeout <= Duration::from_secs(2) && timeout > Duration::from_millis(1900),
            "{timeout:?}"
        );
        let past = soft.hard_stop(Instant::now());
        assert_eq!(client.attempt_timeout(past), MIN_ATTEMPT_TIMEOUT);
    }

    #[test]
    fn a_request_path_holds_exactly_the_receipt_id() {
        let client = client(Duration::from_secs(1));
        for id in [
            "6500c8a1d01c7e0021b4c2f1",
            "r/1?x#y",
            "%2F..%2F",
            "영수증",
            "r 1",
            "...",
        ] {
            let url = client.receipt_url(id).unwrap();
            assert!(url.path().starts_with("/v2/receipt/"), "{id}: {url}");
            assert_eq!(url.path_segments().unwrap().count(), 3, "{id}: {url}");
        }
        for id in [".", "..", "r-1\t", "r-1\r\n", "\n"] {
            assert!(
                matches!(
                    client.receipt_url(id),
                    Err(BootpayError::UnsafeReceiptId(_))
                ),
                "{id:?}"
            );
        }
    }

    #[test]
    fn debug_output_never_shows_the_private_key() {
        let config = BootpayConfig {
            api_url: url::Url::parse("http://127.0.0.1:1/v2").unwrap(),
            application_id: "app".into(),
            private_key: SecretString::from("super-secret-key"),
            request_timeout: Duration::from_secs(1),
            retry: RetryPolicy {
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(1),
            },
        };
        assert!(!format!("{config:?}").contains("super-secret-key"));
        let client = BootpayClient::new(config, |_| {}).unwrap();
        assert!(!format!("{client:?}").contains("super-secret-key"));
    }
}

//! The Bootpay client: HTTP calls in either dialect, with either kind of credentials,
//! their retries, and what each answer means.

use std::time::{Duration, Instant};

use backon::Retryable;
use receipt_verifier_core::{Deadline, Receipt};
use reqwest::{StatusCode, header};
use secrecy::{ExposeSecret, SecretString};

use super::error::BootpayError;
use super::redact::Redactor;
use super::token::{Issued, Issuer, TokenStore, Trigger};
use super::{BootpayConfig, CallOutcome, Credentials, Dialect, v1, v2};

/// Largest Bootpay response body read; a receipt is a few KiB.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Bootpay's documented token lifetime, used when an answer does not say.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(1800);
/// A bound on a lifetime Bootpay states, so an absurd one cannot overflow a clock.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(86_400);
/// The least time an attempt is given, however close its deadline.
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(100);
/// A receipt id no payment has, looked up to learn whether Bootpay answers.
const PROBE_RECEIPT_ID: &str = "receipt-verifier-probe";

pub struct BootpayClient {
    http: reqwest::Client,
    config: BootpayConfig,
    /// The shared access token (application id and private key only).
    tokens: TokenStore,
    /// Keeps the keys and tokens out of whatever an answer's text puts in an error.
    redactor: Redactor,
    observer: Box<dyn Fn(CallOutcome) + Send + Sync>,
}

impl std::fmt::Debug for BootpayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootpayClient")
            .field("api_url", &self.config.api_url.as_str())
            .field("dialect", &self.config.dialect)
            .field("credentials", &self.config.credentials)
            .finish_non_exhaustive()
    }
}

/// An answer as it came: its status, `Retry-After`, and its body (read with a cap).
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Vec<u8>,
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
            // A redirect would re-send the credentials wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(BootpayError::Transport)?;
        Ok(Self {
            http,
            redactor: Redactor::new(config.credentials.secrets()),
            config,
            tokens: TokenStore::default(),
            observer: Box::new(observer),
        })
    }

    /// Whether calls carry an access token (application id and private key) rather than
    /// HTTP Basic.
    pub fn uses_tokens(&self) -> bool {
        matches!(self.config.credentials, Credentials::Token { .. })
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

    /// Captures a payment waiting in status 2 (v2 `POST /confirm`, v1 `POST /submit`).
    /// Retried like [`Self::receipt`]; a retry after a lost answer gets `NotConfirmReady`.
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

    /// Fetches a fresh token, bypassing the cache (nothing to do with client and secret
    /// keys, which need no token).
    ///
    /// # Errors
    /// [`BootpayError::CredentialsRefused`] or a transport/availability error.
    pub async fn renew_token(&self) -> Result<(), BootpayError> {
        if !self.uses_tokens() {
            return Ok(());
        }
        self.tokens.renew_now(self).await
    }

    /// Learns whether Bootpay takes the credentials: a fresh token, or, with client and
    /// secret keys, a probe.
    ///
    /// # Errors
    /// What the call failed with.
    pub async fn check_credentials(&self) -> Result<(), BootpayError> {
        if self.uses_tokens() {
            self.renew_token().await
        } else {
            self.probe().await
        }
    }

    /// Asks Bootpay whether it works again: a fresh token (when there is one to have),
    /// then one lookup of a receipt that does not exist (any definite answer will do),
    /// without retries.
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

    /// Whether calls can be authorised now (for readiness): an unexpired token is cached,
    /// or the credentials need none.
    pub fn is_authorised(&self) -> bool {
        !self.uses_tokens() || self.tokens.has_valid()
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
        if self.config.dialect == Dialect::V2 {
            url.query_pairs_mut()
                .append_pair("lookup_user_data", "false");
        }
        self.authorized(
            "receipt",
            deadline,
            || self.http.get(url.clone()),
            |a| self.parse_receipt(a, "receipt"),
        )
        .await
    }

    async fn confirm_once(
        &self,
        receipt_id: &str,
        deadline: Deadline,
    ) -> Result<Receipt, BootpayError> {
        let path = match self.config.dialect {
            Dialect::V1 => v1::CONFIRM_PATH,
            Dialect::V2 => v2::CONFIRM_PATH,
        };
        let url = self.endpoint(path)?;
        let body = serde_json::json!({ "receipt_id": receipt_id });
        self.authorized(
            "confirm",
            deadline,
            || self.http.post(url.clone()).json(&body),
            |a| self.parse_receipt(a, "confirm"),
        )
        .await
    }

    fn parse_receipt(
        &self,
        answer: &Answer,
        endpoint: &'static str,
    ) -> Result<Receipt, BootpayError> {
        match self.config.dialect {
            Dialect::V1 => v1::receipt(answer.status, answer.retry_after, &answer.body, endpoint),
            Dialect::V2 => v2::receipt(answer.status, answer.retry_after, &answer.body),
        }
    }

    /// Sends a request with the credentials and reads what it means. A 401 under a token
    /// renews the token once and sends again; under HTTP Basic there is nothing to renew,
    /// so it means the keys are refused. Each attempt is given its request timeout (less,
    /// near a hard deadline).
    async fn authorized<T>(
        &self,
        endpoint: &'static str,
        deadline: Deadline,
        build: impl Fn() -> reqwest::RequestBuilder,
        parse: impl Fn(&Answer) -> Result<T, BootpayError>,
    ) -> Result<T, BootpayError> {
        let timeout = self.attempt_timeout(deadline);
        let request =
            |token: Option<&SecretString>| self.authenticate(build(), token).timeout(timeout);
        let started = Instant::now();
        let answer = match &self.config.credentials {
            Credentials::Basic { .. } => {
                let answer = self.send(request(None)).await;
                self.unless_refused(endpoint, started, answer)?
            }
            Credentials::Token { .. } => {
                let (token, generation) = self.tokens.current(self).await?;
                let answer = self.send(request(Some(&token))).await;
                match answer {
                    Ok(a) if a.status == StatusCode::UNAUTHORIZED => {
                        crate::observability::metrics::bootpay_request(
                            endpoint,
                            "unauthorized",
                            started.elapsed(),
                        );
                        let token = self.tokens.renew_after_401(self, generation).await?;
                        let started = Instant::now();
                        let answer = self.send(request(Some(&token))).await;
                        self.unless_refused(endpoint, started, answer)?
                    }
                    other => other.inspect_err(|e| self.record(endpoint, started, Err(e)))?,
                }
            }
        };
        let result = parse(&answer).map_err(|e| self.redacted(e));
        self.record(endpoint, started, result.as_ref().map(|_| ()));
        result
    }

    /// The answer, unless it is a 401 (the credentials, refused) or no answer at all.
    fn unless_refused(
        &self,
        endpoint: &'static str,
        started: Instant,
        answer: Result<Answer, BootpayError>,
    ) -> Result<Answer, BootpayError> {
        match answer {
            Ok(a) if a.status == StatusCode::UNAUTHORIZED => {
                let error = BootpayError::CredentialsRefused {
                    status: 401,
                    code: match self.config.credentials {
                        Credentials::Basic { .. } => "client and secret keys refused".into(),
                        Credentials::Token { .. } => "token refused right after issue".into(),
                    },
                };
                self.record(endpoint, started, Err(&error));
                Err(error)
            }
            Ok(a) => Ok(a),
            Err(e) => {
                self.record(endpoint, started, Err(&e));
                Err(e)
            }
        }
    }

    /// Adds the `Authorization` header the dialect and the credentials call for, marked
    /// sensitive so that no `Debug` of the request shows it.
    fn authenticate(
        &self,
        request: reqwest::RequestBuilder,
        token: Option<&SecretString>,
    ) -> reqwest::RequestBuilder {
        match (&self.config.credentials, token) {
            (
                Credentials::Basic {
                    client_key,
                    secret_key,
                },
                _,
            ) => request.basic_auth(client_key, Some(secret_key.expose_secret())),
            (Credentials::Token { .. }, Some(token)) => match self.config.dialect {
                Dialect::V2 => request.bearer_auth(token.expose_secret()),
                // v1 sends the token itself, without a scheme.
                Dialect::V1 => match header::HeaderValue::from_str(token.expose_secret()) {
                    Ok(mut value) => {
                        value.set_sensitive(true);
                        request.header(header::AUTHORIZATION, value)
                    }
                    // A token that cannot be a header value is refused by Bootpay as absent.
                    Err(_) => request,
                },
            },
            (Credentials::Token { .. }, None) => request,
        }
    }

    async fn fetch_token(&self, trigger: Trigger) -> Result<Issued, BootpayError> {
        let Credentials::Token {
            application_id,
            private_key,
        } = &self.config.credentials
        else {
            return Err(BootpayError::TokenUnavailable(
                "client and secret keys need no token".into(),
            ));
        };
        let path = match self.config.dialect {
            Dialect::V1 => v1::TOKEN_PATH,
            Dialect::V2 => v2::TOKEN_PATH,
        };
        let url = self.endpoint(path)?;
        let body = serde_json::json!({
            "application_id": application_id,
            "private_key": private_key.expose_secret(),
        });
        let requested_at = Instant::now();
        let answer = self.send(self.http.post(url).json(&body)).await;
        let parsed = answer.and_then(|a| match self.config.dialect {
            Dialect::V1 => v1::token(a.status, &a.body),
            Dialect::V2 => v2::token(a.status, a.retry_after, &a.body)
                .map(|(token, secs)| (token, stated_lifetime(secs))),
        });
        let parsed = parsed.map_err(|e| match e {
            // The token call carries nothing but the credentials: any definite refusal
            // (a 4xx, whatever its code) is about them.
            BootpayError::Rejected { status, code, .. }
            | BootpayError::CredentialsRefused { status, code } => {
                BootpayError::CredentialsRefused { status, code }
            }
            other => other,
        });
        let parsed = parsed.map_err(|e| self.redacted(e));
        self.record("token", requested_at, parsed.as_ref().map(|_| ()));
        let (token, ttl) = parsed?;
        let ttl = ttl.unwrap_or(DEFAULT_TOKEN_TTL).min(MAX_TOKEN_TTL);
        let value = SecretString::from(token);
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
        let path = match self.config.dialect {
            Dialect::V1 => v1::receipt_path(receipt_id),
            Dialect::V2 => v2::receipt_path(receipt_id),
        };
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

    /// Sends one request and reads its answer; `Err` only when there is none (a
    /// connection failure, a timeout, a body too large or cut off).
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, BootpayError> {
        let response = request
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(BootpayError::Transport)?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = read_capped(response).await?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    /// Counts the call and tells the observer how Bootpay fared.
    fn record(&self, endpoint: &'static str, started: Instant, result: Result<(), &BootpayError>) {
        let outcome = match result {
            Ok(()) => "ok",
            Err(e) => e.label(),
        };
        crate::observability::metrics::bootpay_request(endpoint, outcome, started.elapsed());
        self.observe(match result {
            Ok(()) => CallOutcome::Success,
            Err(e) if e.is_transient() => CallOutcome::TransientFailure,
            Err(BootpayError::CredentialsRefused { .. }) => CallOutcome::CredentialsRefused,
            // A definite answer (not found, not ready, a 4xx) shows Bootpay is up.
            Err(_) => CallOutcome::Success,
        });
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

/// The lifetime a v2 token answer states in `expire_in`, when it states one that makes
/// sense. Bootpay hands back the current token while it has more than five minutes left,
/// with what is left in whole seconds, so `0` is a token at its end: it is taken as due
/// for renewal at once, not as "unstated" (which would mean thirty minutes).
fn stated_lifetime(secs: Option<f64>) -> Option<Duration> {
    secs.filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(MAX_TOKEN_TTL.as_secs_f64())))
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
            dialect: Dialect::V2,
            credentials: Credentials::Token {
                application_id: "app".into(),
                private_key: SecretString::from("super-secret-key"),
            },
            request_timeout,
            retry: RetryPolicy {
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(1),
            },
        };
        BootpayClient::new(config, |_| {}).unwrap()
    }

    #[test]
    fn a_token_with_no_time_left_is_due_at_once_and_an_unstated_lifetime_is_bootpays() {
        assert_eq!(stated_lifetime(Some(0.0)), Some(Duration::ZERO));
        assert_eq!(
            stated_lifetime(Some(1799.0)),
            Some(Duration::from_secs(1799))
        );
        assert_eq!(stated_lifetime(Some(1e300)), Some(MAX_TOKEN_TTL));
        for absurd in [None, Some(-1.0), Some(f64::NAN), Some(f64::INFINITY)] {
            assert_eq!(stated_lifetime(absurd), None, "{absurd:?}");
        }
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
    fn debug_output_never_shows_a_key() {
        let client = client(Duration::from_secs(1));
        assert!(!format!("{:?}", client.config).contains("super-secret-key"));
        assert!(!format!("{client:?}").contains("super-secret-key"));
        let basic = Credentials::Basic {
            client_key: "client".into(),
            secret_key: SecretString::from("the-secret-key"),
        };
        assert!(!format!("{basic:?}").contains("the-secret-key"));
        // The Basic header is marked sensitive, so a request's Debug hides it.
        let request = client
            .http
            .get("http://127.0.0.1:1/")
            .basic_auth("client", Some("the-secret-key"))
            .build()
            .unwrap();
        let value = request.headers().get(header::AUTHORIZATION).unwrap();
        assert!(value.is_sensitive());
        assert!(!format!("{request:?}").contains("dGhlLXNlY3JldC1rZXk"));
    }
}

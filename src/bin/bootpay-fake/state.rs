//! The fake's whole mutable state: accepted credentials, issued tokens, receipts with their
//! fault counters, the outage and chaos switches, and request counters.
//!
//! Pure and synchronous so it can sit behind a `std::sync::Mutex`; callers pass the current
//! time in, which keeps token expiry testable without waiting.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::clock;
use crate::fixture::{Fault, ReceiptSpec};
use crate::reply::ApiError;

/// Bootpay status codes the fake moves receipts between.
const STATUS_PAID: i64 = 1;
const STATUS_AWAITING_CONFIRM: i64 = 2;
const STATUS_CANCELLED: i64 = 20;

/// The `application_id`/`private_key` pair the token endpoint accepts.
// NOTE: no `Debug` derive, so the private key cannot be logged by accident.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub application_id: String,
    pub private_key: String,
}

/// Request counters served by `GET /_fake/stats`. Each counts every request that reached its
/// handler, whatever the answer: faults, 401s and outage pages included.
#[derive(Debug, Default, Serialize)]
pub struct Counters {
    pub token_requests: u64,
    /// New tokens minted; a token handed out again under the reuse rule is not counted.
    pub tokens_issued: u64,
    /// Token requests refused for wrong or missing credentials.
    pub token_rejected: u64,
    pub receipt_requests: u64,
    pub confirm_requests: u64,
    pub cancel_requests: u64,
    /// Calls refused for a missing, unknown, expired or revoked access token.
    pub unauthorized: u64,
}

struct Receipt {
    body: Map<String, Value>,
    fault: Fault,
    /// Lookups and confirms that passed authentication, for `fault.fail_first`.
    fault_calls: u32,
    lookups: u64,
    confirms: u64,
    cancels: u64,
}

impl Receipt {
    fn status(&self) -> Option<i64> {
        self.body.get("status").and_then(Value::as_i64)
    }
}

/// A token handed out by [`State::request_token`].
pub struct IssuedToken {
    pub access_token: String,
    /// Lifetime left: the full ttl for a new token, less for a reused one.
    pub remaining: Duration,
}

/// A per-receipt failure to answer instead of the receipt.
pub struct Failure {
    pub status: StatusCode,
    pub retry_after_secs: Option<u64>,
}

/// The faults `--chaos-rate` draws from, with equal odds.
#[derive(Debug, Clone, Copy)]
pub enum Chaos {
    /// 503 with a JSON error body.
    Unavailable,
    /// 429 with `Retry-After: 1`.
    RateLimited,
    /// Waits `--chaos-timeout-ms`, then 503.
    Slow,
    /// 200 with a cut-off JSON body.
    Truncated,
    /// 502 with an HTML page.
    BadGateway,
}

pub struct State {
    credentials: Credentials,
    token_ttl: Duration,
    /// Every live token and when it expires. Older tokens stay valid after a newer one is
    /// issued, as on Bootpay.
    tokens: HashMap<String, Instant>,
    /// The most recent token, handed out again while enough of its lifetime is left.
    latest_token: Option<String>,
    receipts: HashMap<String, Receipt>,
    pub outage: bool,
    /// While set, every `/v2` call is refused with a body that quotes the request, as some
    /// proxies and WAFs do.
    pub echo: bool,
    pub chaos_rate: f64,
    pub counters: Counters,
    /// Method and path (as sent, still percent-encoded) of the latest requests.
    requests: VecDeque<String>,
}

/// How many requests `GET /_fake/requests` remembers.
const REQUEST_LOG: usize = 10_000;

impl State {
    pub fn new(credentials: Credentials, token_ttl: Duration, chaos_rate: f64) -> Self {
        Self {
            credentials,
            token_ttl,
            tokens: HashMap::new(),
            latest_token: None,
            receipts: HashMap::new(),
            outage: false,
            echo: false,
            chaos_rate,
            counters: Counters::default(),
            requests: VecDeque::new(),
        }
    }

    /// Records a request's method and path.
    pub fn log_request(&mut self, method: &str, path: &str) {
        if self.requests.len() == REQUEST_LOG {
            self.requests.pop_front();
        }
        self.requests.push_back(format!("{method} {path}"));
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.iter().cloned().collect()
    }

    pub fn set_credentials(&mut self, credentials: Credentials) {
        self.credentials = credentials;
    }

    /// Issues a token for matching credentials, or `None` for wrong or missing ones.
    ///
    /// Like Bootpay, the latest token is returned again while more than a sixth of its
    /// lifetime is left (25 of 30 minutes); after that a new one is minted.
    pub fn request_token(
        &mut self,
        application_id: Option<&str>,
        private_key: Option<&str>,
        now: Instant,
    ) -> Option<IssuedToken> {
        if application_id != Some(self.credentials.application_id.as_str())
            || private_key != Some(self.credentials.private_key.as_str())
        {
            self.counters.token_rejected += 1;
            return None;
        }
        if let Some(token) = &self.latest_token
            && let Some(expires_at) = self.tokens.get(token)
        {
            let remaining = expires_at.saturating_duration_since(now);
            if remaining > self.token_ttl / 6 {
                return Some(IssuedToken {
                    access_token: token.clone(),
                    remaining,
                });
            }
        }
        self.tokens.retain(|_, expires_at| *expires_at > now);
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        self.tokens.insert(token.clone(), now + self.token_ttl);
        self.latest_token = Some(token.clone());
        self.counters.tokens_issued += 1;
        Some(IssuedToken {
            access_token: token,
            remaining: self.token_ttl,
        })
    }

    /// Whether `token` was issued, has not expired and has not been revoked.
    pub fn token_valid(&self, token: &str, now: Instant) -> bool {
        self.tokens
            .get(token)
            .is_some_and(|expires_at| *expires_at > now)
    }

    /// Invalidates every token issued so far; returns how many were live.
    pub fn revoke_tokens(&mut self) -> usize {
        self.latest_token = None;
        self.tokens.drain().count()
    }

    /// Inserts or replaces a receipt; returns whether it is new. A replaced receipt keeps its
    /// request counters but starts its `fail_first` count afresh.
    pub fn upsert(&mut self, spec: ReceiptSpec) -> bool {
        match self.receipts.get_mut(&spec.id) {
            Some(receipt) => {
                receipt.body = spec.body;
                receipt.fault = spec.fault;
                receipt.fault_calls = 0;
                false
            }
            None => {
                self.receipts.insert(
                    spec.id,
                    Receipt {
                        body: spec.body,
                        fault: spec.fault,
                        fault_calls: 0,
                        lookups: 0,
                        confirms: 0,
                        cancels: 0,
                    },
                );
                true
            }
        }
    }

    pub fn count_lookup(&mut self, id: &str) {
        self.counters.receipt_requests += 1;
        if let Some(receipt) = self.receipts.get_mut(id) {
            receipt.lookups += 1;
        }
    }

    /// Counts a confirm; `id` is `None` when the body could not be read.
    pub fn count_confirm(&mut self, id: Option<&str>) {
        self.counters.confirm_requests += 1;
        if let Some(receipt) = id.and_then(|id| self.receipts.get_mut(id)) {
            receipt.confirms += 1;
        }
    }

    /// Counts a cancel; `id` is `None` when the body could not be read.
    pub fn count_cancel(&mut self, id: Option<&str>) {
        self.counters.cancel_requests += 1;
        if let Some(receipt) = id.and_then(|id| self.receipts.get_mut(id)) {
            receipt.cancels += 1;
        }
    }

    /// Records an authenticated lookup or confirm of `id` and returns the delay and the
    /// failure, if any, its fixture asks for. Unknown ids have no faults.
    pub fn receipt_fault(&mut self, id: &str) -> (Duration, Option<Failure>) {
        let Some(receipt) = self.receipts.get_mut(id) else {
            return (Duration::ZERO, None);
        };
        receipt.fault_calls = receipt.fault_calls.saturating_add(1);
        let fault = &receipt.fault;
        let failure = (receipt.fault_calls <= fault.fail_first).then(|| {
            let status =
                StatusCode::from_u16(fault.fail_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            Failure {
                status,
                retry_after_secs: (status == StatusCode::TOO_MANY_REQUESTS)
                    .then_some(fault.retry_after_secs),
            }
        });
        (Duration::from_millis(fault.latency_ms), failure)
    }

    /// Draws whether this call gets a chaos fault, and which.
    pub fn roll_chaos(&self) -> Option<Chaos> {
        if self.chaos_rate <= 0.0 || fastrand::f64() >= self.chaos_rate {
            return None;
        }
        const ALL: [Chaos; 5] = [
            Chaos::Unavailable,
            Chaos::RateLimited,
            Chaos::Slow,
            Chaos::Truncated,
            Chaos::BadGateway,
        ];
        Some(ALL[fastrand::usize(..ALL.len())])
    }

    pub fn receipt(&self, id: &str) -> Option<&Map<String, Value>> {
        self.receipts.get(id).map(|receipt| &receipt.body)
    }

    /// Server confirm: moves a receipt from "awaiting confirm" (2) to paid (1).
    ///
    /// # Errors
    /// `RC_NOT_FOUND` for an unknown id, `RC_NOT_CONFIRM_READY` unless the status is 2.
    pub fn confirm(&mut self, id: &str, now: SystemTime) -> Result<Map<String, Value>, ApiError> {
        let receipt = self
            .receipts
            .get_mut(id)
            .ok_or_else(ApiError::receipt_not_found)?;
        if receipt.status() != Some(STATUS_AWAITING_CONFIRM) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "RC_NOT_CONFIRM_READY",
                "승인 대기 상태의 결제가 아닙니다.",
            ));
        }
        let body = &mut receipt.body;
        body.insert("status".into(), STATUS_PAID.into());
        body.insert("status_locale".into(), "결제완료".into());
        body.insert("purchased_at".into(), clock::kst_rfc3339(now).into());
        Ok(body.clone())
    }

    /// Cancels a receipt in full, or by `cancel_price` when given. `cancelled_price` is
    /// cumulative, as on Bootpay.
    ///
    /// # Errors
    /// `RC_NOT_FOUND` for an unknown id, `RC_ALREADY_CANCELLED` when the status is already 20.
    pub fn cancel(
        &mut self,
        id: &str,
        cancel_price: Option<&Number>,
        now: SystemTime,
    ) -> Result<Map<String, Value>, ApiError> {
        let receipt = self
            .receipts
            .get_mut(id)
            .ok_or_else(ApiError::receipt_not_found)?;
        if receipt.status() == Some(STATUS_CANCELLED) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "RC_ALREADY_CANCELLED",
                "이미 취소된 결제입니다.",
            ));
        }
        let body = &mut receipt.body;
        let amount = match cancel_price {
            Some(price) => Value::Number(price.clone()),
            None => body.get("price").cloned().unwrap_or_else(|| 0.into()),
        };
        let cancelled = add_amounts(body.get("cancelled_price"), &amount);
        body.insert("status".into(), STATUS_CANCELLED.into());
        body.insert("status_locale".into(), "결제취소완료".into());
        body.insert("cancelled_price".into(), cancelled);
        body.insert("cancelled_at".into(), clock::kst_rfc3339(now).into());
        Ok(body.clone())
    }

    pub fn stats(&self) -> Value {
        #[derive(Serialize)]
        struct ReceiptStats<'a> {
            lookups: u64,
            confirms: u64,
            cancels: u64,
            status: Option<&'a Value>,
        }
        #[derive(Serialize)]
        struct Stats<'a> {
            #[serde(flatten)]
            counters: &'a Counters,
            receipts: BTreeMap<&'a str, ReceiptStats<'a>>,
        }
        let receipts = self
            .receipts
            .iter()
            .map(|(id, receipt)| {
                let stats = ReceiptStats {
                    lookups: receipt.lookups,
                    confirms: receipt.confirms,
                    cancels: receipt.cancels,
                    status: receipt.body.get("status"),
                };
                (id.as_str(), stats)
            })
            .collect();
        let stats = Stats {
            counters: &self.counters,
            receipts,
        };
        serde_json::to_value(stats).unwrap_or(Value::Null)
    }
}

/// Adds two JSON amounts, in integers when both are integers (prices are KRW won).
fn add_amounts(current: Option<&Value>, amount: &Value) -> Value {
    let current = current.filter(|value| !value.is_null());
    let Some(current) = current else {
        return amount.clone();
    };
    match (current.as_i64(), amount.as_i64()) {
        (Some(a), Some(b)) => a.saturating_add(b).into(),
        _ => match (current.as_f64(), amount.as_f64()) {
            (Some(a), Some(b)) => (a + b).into(),
            _ => amount.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TTL: Duration = Duration::from_secs(1800);

    fn state() -> State {
        let credentials = Credentials {
            application_id: "app".into(),
            private_key: "key".into(),
        };
        State::new(credentials, TTL, 0.0)
    }

    fn token(state: &mut State, now: Instant) -> IssuedToken {
        state
            .request_token(Some("app"), Some("key"), now)
            .expect("credentials match")
    }

    #[test]
    fn reuses_the_latest_token_until_a_sixth_of_its_life_is_left() {
        let mut state = state();
        let t0 = Instant::now();
        let first = token(&mut state, t0);
        assert_eq!(first.remaining, TTL);

        let again = token(&mut state, t0 + Duration::from_secs(1499));
        assert_eq!(again.access_token, first.access_token);
        assert_eq!(again.remaining, Duration::from_secs(301));

        let late = t0 + Duration::from_secs(1500);
        let second = token(&mut state, late);
        assert_ne!(second.access_token, first.access_token);
        assert_eq!(state.counters.tokens_issued, 2);

        // The old token lives out its own lifetime.
        assert!(state.token_valid(&first.access_token, t0 + Duration::from_secs(1799)));
        assert!(!state.token_valid(&first.access_token, t0 + TTL));
        assert!(state.token_valid(&second.access_token, t0 + TTL));
    }

    #[test]
    fn refuses_wrong_credentials_and_revokes() {
        let mut state = state();
        let now = Instant::now();
        assert!(
            state
                .request_token(Some("app"), Some("nope"), now)
                .is_none()
        );
        assert!(state.request_token(None, None, now).is_none());
        assert_eq!(state.counters.token_rejected, 2);

        let issued = token(&mut state, now);
        assert_eq!(state.revoke_tokens(), 1);
        assert!(!state.token_valid(&issued.access_token, now));
        assert_ne!(token(&mut state, now).access_token, issued.access_token);
    }

    #[test]
    fn cancelled_price_accumulates() {
        assert_eq!(add_amounts(None, &json!(3000)), json!(3000));
        assert_eq!(add_amounts(Some(&json!(500)), &json!(1000)), json!(1500));
        assert_eq!(add_amounts(Some(&Value::Null), &json!(10)), json!(10));
        assert_eq!(add_amounts(Some(&json!(0.5)), &json!(1)), json!(1.5));
    }
}

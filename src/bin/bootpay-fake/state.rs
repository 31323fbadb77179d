//! The fake's whole mutable state: accepted credentials, issued tokens, receipts with their
//! fault counters and cancel history, the outage and chaos switches, and request counters.
//! Every change of a receipt (confirm, deposit, cancel, expiry) goes through here and says
//! what it changed, so the caller can send the webhooks Bootpay would send for it.
//!
//! Pure and synchronous so it can sit behind a `std::sync::Mutex`; callers pass the current
//! time in, which keeps token expiry and cancels testable without waiting.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value, json};

use crate::clock;
use crate::fixture::{Fault, ReceiptSpec};
use crate::reply::ApiError;

/// Bootpay status codes the fake moves receipts between.
pub const STATUS_PAID: i64 = 1;
const STATUS_AWAITING_CONFIRM: i64 = 2;
/// A virtual account issued and waiting for the buyer's deposit.
pub const STATUS_VBANK_ISSUED: i64 = 5;
/// Bootpay's status after a partial cancel as well as after a full one.
const STATUS_CANCELLED: i64 = 20;

/// The credentials the fake accepts: `application_id`/`private_key` for tokens, and
/// `client_key`/`secret_key` for `Authorization: Basic` on v2 calls.
// NOTE: no `Debug` derive, so the keys cannot be logged by accident.
#[derive(Clone)]
pub struct Credentials {
    pub application_id: String,
    pub private_key: String,
    pub client_key: String,
    pub secret_key: String,
}

/// A change from `PUT /_fake/credentials`: the fields given replace the current ones, the
/// others stay.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsUpdate {
    application_id: Option<String>,
    private_key: Option<String>,
    client_key: Option<String>,
    secret_key: Option<String>,
}

/// Request counters served by `GET /_fake/stats`, shared by both dialects. Each counts every
/// request that reached its handler, whatever the answer: faults, 401s and outage pages
/// included.
#[derive(Debug, Default, Serialize)]
pub struct Counters {
    pub token_requests: u64,
    /// New tokens minted; a token handed out again under the reuse rule is not counted.
    pub tokens_issued: u64,
    /// Token requests refused for wrong or missing credentials.
    pub token_rejected: u64,
    /// Lookups; v1's `GET /receipt/{id}` included.
    pub receipt_requests: u64,
    /// Confirms; v1's `POST /submit` included.
    pub confirm_requests: u64,
    pub cancel_requests: u64,
    /// Calls refused for a missing, unknown, expired or revoked access token, or a wrong
    /// Basic key pair.
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
    /// The v1 cancel data of every cancel made with a `cancel_id`, by that id.
    cancels_by_id: HashMap<String, Value>,
}

impl Receipt {
    fn status(&self) -> Option<i64> {
        self.body.get("status").and_then(Value::as_i64)
    }
}

/// A live access token.
struct Token {
    /// When it stops being accepted.
    expires: Instant,
    /// The same moment in Unix seconds, fixed at issue so every answer repeats it.
    expired_at: u64,
}

/// A token handed out by [`State::request_token`].
pub struct IssuedToken {
    pub access_token: String,
    /// Lifetime left: the full ttl for a new token, less for a reused one.
    pub remaining: Duration,
    /// Expiry in Unix seconds, the same for every answer that hands this token out.
    pub expired_at: u64,
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

/// A cancel as either dialect asks for it.
#[derive(Debug, Default)]
pub struct CancelRequest {
    /// The amount to cancel; `None` cancels what remains.
    pub amount: Option<Amount>,
    /// The tax-free part of `amount`.
    pub tax_free: Option<Amount>,
    /// The merchant's id for this cancel; a repeated one is answered without cancelling again.
    pub cancel_id: Option<String>,
}

/// What a cancel did to the receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Something remains to be cancelled.
    Partial,
    /// Nothing remains.
    Full,
    /// A `cancel_id` the receipt already saw: nothing changed.
    Repeated,
}

/// A cancel that was made, or one repeated under a `cancel_id` the receipt already saw.
pub struct Cancelled {
    pub outcome: CancelOutcome,
    /// The receipt as it is now (v2's answer).
    pub receipt: Map<String, Value>,
    /// v1's cancel data: `receipt_id, request_cancel_price, remain_price, remain_tax_free,
    /// cancelled_price, cancelled_tax_free, revoked_at, tid`; for a repeated `cancel_id`,
    /// the data of the first cancel.
    pub data: Value,
}

pub struct State {
    credentials: Credentials,
    token_ttl: Duration,
    /// Every live token. Older tokens stay valid after a newer one is issued, as on Bootpay.
    tokens: HashMap<String, Token>,
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

    pub fn update_credentials(&mut self, update: CredentialsUpdate) {
        let credentials = &mut self.credentials;
        let fields = [
            (update.application_id, &mut credentials.application_id),
            (update.private_key, &mut credentials.private_key),
            (update.client_key, &mut credentials.client_key),
            (update.secret_key, &mut credentials.secret_key),
        ];
        for (new, current) in fields {
            if let Some(new) = new {
                *current = new;
            }
        }
    }

    /// Whether `encoded` (the part after `Basic `) is `base64(client_key:secret_key)`.
    /// Padding is optional, as some encoders leave it out.
    pub fn basic_valid(&self, encoded: &str) -> bool {
        let expected = base64(
            format!(
                "{}:{}",
                self.credentials.client_key, self.credentials.secret_key
            )
            .as_bytes(),
        );
        encoded.trim_end_matches('=') == expected.trim_end_matches('=')
    }

    /// Issues a token for matching credentials, or `None` for wrong or missing ones.
    ///
    /// Like Bootpay, the latest token is returned again while more than a sixth of its
    /// lifetime is left (25 of 30 minutes); after that a new one is minted. `now` decides
    /// expiry; `wall` is the same moment on the wall clock, for `expired_at`.
    pub fn request_token(
        &mut self,
        application_id: Option<&str>,
        private_key: Option<&str>,
        now: Instant,
        wall: SystemTime,
    ) -> Option<IssuedToken> {
        if application_id != Some(self.credentials.application_id.as_str())
            || private_key != Some(self.credentials.private_key.as_str())
        {
            self.counters.token_rejected += 1;
            return None;
        }
        if let Some(access_token) = &self.latest_token
            && let Some(token) = self.tokens.get(access_token)
        {
            let remaining = token.expires.saturating_duration_since(now);
            if remaining > self.token_ttl / 6 {
                return Some(IssuedToken {
                    access_token: access_token.clone(),
                    remaining,
                    expired_at: token.expired_at,
                });
            }
        }
        self.tokens.retain(|_, token| token.expires > now);
        let access_token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let expired_at = clock::unix_secs(wall).saturating_add(self.token_ttl.as_secs());
        self.tokens.insert(
            access_token.clone(),
            Token {
                expires: now + self.token_ttl,
                expired_at,
            },
        );
        self.latest_token = Some(access_token.clone());
        self.counters.tokens_issued += 1;
        Some(IssuedToken {
            access_token,
            remaining: self.token_ttl,
            expired_at,
        })
    }

    /// Whether `token` was issued, has not expired and has not been revoked.
    pub fn token_valid(&self, token: &str, now: Instant) -> bool {
        self.tokens
            .get(token)
            .is_some_and(|token| token.expires > now)
    }

    /// Invalidates every token issued so far; returns how many were live.
    pub fn revoke_tokens(&mut self) -> usize {
        self.latest_token = None;
        self.tokens.drain().count()
    }

    /// Inserts or replaces a receipt; returns whether it is new. A replaced receipt keeps its
    /// request counters but starts its `fail_first` count and its cancel history afresh.
    pub fn upsert(&mut self, spec: ReceiptSpec) -> bool {
        match self.receipts.get_mut(&spec.id) {
            Some(receipt) => {
                receipt.body = spec.body;
                receipt.fault = spec.fault;
                receipt.fault_calls = 0;
                receipt.cancels_by_id.clear();
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
                        cancels_by_id: HashMap::new(),
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
            return Err(ApiError::not_confirm_ready());
        }
        let body = &mut receipt.body;
        body.insert("status".into(), STATUS_PAID.into());
        body.insert("status_locale".into(), "결제완료".into());
        body.insert("purchased_at".into(), clock::kst_rfc3339(now).into());
        Ok(body.clone())
    }

    /// Cancels what remains of a paid receipt, or `request.amount` of it. Partial cancels add
    /// up in `cancelled_price`; every cancel, partial or full, leaves status 20, as on
    /// Bootpay. A `cancel_id` the receipt already saw is answered as before, without
    /// cancelling again.
    ///
    /// # Errors
    /// `RC_NOT_FOUND` for an unknown id; `RC_NOT_CANCELLABLE` for a payment that was never
    /// paid (any status but 1 and 20); `RC_ALREADY_CANCELLED` when nothing remains;
    /// `RC_CANCEL_PRICE_EXCEEDED` for an amount that is not positive or is above what remains.
    pub fn cancel(
        &mut self,
        id: &str,
        request: &CancelRequest,
        now: SystemTime,
    ) -> Result<Cancelled, ApiError> {
        let receipt = self
            .receipts
            .get_mut(id)
            .ok_or_else(ApiError::receipt_not_found)?;
        let cancel_id = request.cancel_id.as_deref().filter(|id| !id.is_empty());
        if let Some(data) = cancel_id.and_then(|id| receipt.cancels_by_id.get(id)) {
            return Ok(Cancelled {
                outcome: CancelOutcome::Repeated,
                receipt: receipt.body.clone(),
                data: data.clone(),
            });
        }
        if !matches!(receipt.status(), Some(STATUS_PAID | STATUS_CANCELLED)) {
            return Err(ApiError::not_cancellable());
        }
        let ledger = Ledger::of(&receipt.body);
        let remaining = ledger.remaining();
        if !remaining.is_positive() {
            return Err(ApiError::already_cancelled());
        }
        let amount = match request.amount {
            None => remaining,
            Some(amount) if !amount.is_positive() => {
                return Err(ApiError::cancel_price_exceeded(
                    "취소 금액은 0보다 커야 합니다.",
                ));
            }
            Some(amount) if amount.compare(remaining) == Ordering::Greater => {
                return Err(ApiError::cancel_price_exceeded(
                    "취소 금액이 취소 가능 금액을 초과했습니다.",
                ));
            }
            Some(amount) => amount,
        };
        // A full cancel takes the tax-free part that remains with it.
        let tax_free = match (request.tax_free, request.amount) {
            (Some(tax_free), _) => tax_free,
            (None, None) => ledger.remaining_tax_free(),
            (None, Some(_)) => Amount::Int(0),
        };
        let cancelled = ledger.cancelled.add(amount);
        let cancelled_tax_free = ledger.cancelled_tax_free.add(tax_free);
        let body = &mut receipt.body;
        body.insert("status".into(), STATUS_CANCELLED.into());
        body.insert("status_locale".into(), "결제취소완료".into());
        body.insert("cancelled_price".into(), cancelled.to_json());
        body.insert("cancelled_tax_free".into(), cancelled_tax_free.to_json());
        body.insert("cancelled_at".into(), clock::kst_rfc3339(now).into());
        let data = json!({
            "receipt_id": id,
            "request_cancel_price": amount.to_json(),
            "remain_price": ledger.price.sub(cancelled).to_json(),
            "remain_tax_free": ledger.tax_free.sub(cancelled_tax_free).to_json(),
            "cancelled_price": cancelled.to_json(),
            "cancelled_tax_free": cancelled_tax_free.to_json(),
            "revoked_at": clock::kst_v1(now),
            "tid": transaction_id(body),
        });
        if let Some(cancel_id) = cancel_id {
            receipt
                .cancels_by_id
                .insert(cancel_id.to_owned(), data.clone());
        }
        let outcome = if ledger.price.sub(cancelled).is_positive() {
            CancelOutcome::Partial
        } else {
            CancelOutcome::Full
        };
        Ok(Cancelled {
            outcome,
            receipt: receipt.body.clone(),
            data,
        })
    }

    /// The buyer's deposit into an issued virtual account: status 5 becomes paid (1), paid at
    /// `now`. A due date already passed does not stop it, so tests can play a late deposit
    /// against an expiry sweep.
    ///
    /// # Errors
    /// `RC_NOT_FOUND` for an unknown id, 409 `RC_NOT_AWAITING_DEPOSIT` unless the status is 5.
    pub fn deposit(&mut self, id: &str, now: SystemTime) -> Result<Map<String, Value>, ApiError> {
        let body = self.issued_vbank(id)?;
        body.insert("status".into(), STATUS_PAID.into());
        body.insert("status_locale".into(), "결제완료".into());
        body.insert("purchased_at".into(), clock::kst_rfc3339(now).into());
        Ok(body.clone())
    }

    /// The virtual account's due date passes: `vbank_data.expired_at` becomes one second
    /// before `now`; the status stays 5, as on Bootpay, which changes nothing and sends
    /// nothing when a deadline passes.
    ///
    /// # Errors
    /// `RC_NOT_FOUND` for an unknown id, 409 `RC_NOT_AWAITING_DEPOSIT` unless the status is 5.
    pub fn expire(&mut self, id: &str, now: SystemTime) -> Result<Map<String, Value>, ApiError> {
        let body = self.issued_vbank(id)?;
        let past = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        let expired_at = Value::from(clock::kst_rfc3339(past));
        match body.get_mut("vbank_data") {
            Some(Value::Object(vbank)) => {
                vbank.insert("expired_at".into(), expired_at);
            }
            // Fixtures always give a status-5 receipt its `vbank_data`; this only keeps the
            // rule whole.
            _ => {
                body.insert("vbank_data".into(), json!({ "expired_at": expired_at }));
            }
        }
        Ok(body.clone())
    }

    fn issued_vbank(&mut self, id: &str) -> Result<&mut Map<String, Value>, ApiError> {
        let receipt = self
            .receipts
            .get_mut(id)
            .ok_or_else(ApiError::receipt_not_found)?;
        if receipt.status() != Some(STATUS_VBANK_ISSUED) {
            return Err(ApiError::not_awaiting_deposit());
        }
        Ok(&mut receipt.body)
    }

    /// The application id and private key the fake accepts now; v1 feedback carries both, as
    /// Bootpay's does.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
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

/// The PG's transaction id, from whichever payment-method object the receipt carries.
fn transaction_id(body: &Map<String, Value>) -> Value {
    ["card_data", "phone_data", "bank_data", "vbank_data"]
        .iter()
        .find_map(|key| body.get(*key)?.get("tid").cloned())
        .unwrap_or(Value::Null)
}

/// An amount of money: integer arithmetic while every operand is an integer (KRW has no
/// minor unit), 64-bit floats otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Int(i64),
    Float(f64),
}

impl Amount {
    pub fn from_number(number: &Number) -> Option<Self> {
        match number.as_i64() {
            Some(int) => Some(Self::Int(int)),
            None => number.as_f64().filter(|f| f.is_finite()).map(Self::Float),
        }
    }

    /// A JSON number, or a string holding one (form bodies carry only strings).
    pub fn from_json(value: &Value) -> Option<Self> {
        match value {
            Value::Number(number) => Self::from_number(number),
            Value::String(text) => Self::parse(text),
            _ => None,
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if let Ok(int) = text.parse::<i64>() {
            return Some(Self::Int(int));
        }
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Self::Float)
    }

    fn as_f64(self) -> f64 {
        match self {
            // Exact for any amount of money; rounding only beyond 2^53.
            Self::Int(int) => int as f64,
            Self::Float(float) => float,
        }
    }

    pub fn is_positive(self) -> bool {
        match self {
            Self::Int(int) => int > 0,
            Self::Float(float) => float > 0.0,
        }
    }

    pub fn compare(self, other: Self) -> Ordering {
        match (self, other) {
            (Self::Int(a), Self::Int(b)) => a.cmp(&b),
            _ => self.as_f64().total_cmp(&other.as_f64()),
        }
    }

    pub fn add(self, other: Self) -> Self {
        match (self, other) {
            (Self::Int(a), Self::Int(b)) => a
                .checked_add(b)
                .map_or_else(|| Self::Float(self.as_f64() + other.as_f64()), Self::Int),
            _ => Self::Float(self.as_f64() + other.as_f64()),
        }
    }

    pub fn sub(self, other: Self) -> Self {
        match (self, other) {
            (Self::Int(a), Self::Int(b)) => a
                .checked_sub(b)
                .map_or_else(|| Self::Float(self.as_f64() - other.as_f64()), Self::Int),
            _ => Self::Float(self.as_f64() - other.as_f64()),
        }
    }

    pub fn to_json(self) -> Value {
        match self {
            Self::Int(int) => int.into(),
            Self::Float(float) => float.into(),
        }
    }
}

/// A receipt's amounts as the cancel rules read them. A missing amount is 0, except that a
/// cancelled receipt (status 20) without `cancelled_price` counts as cancelled in full, as
/// fixtures written before partial cancels mean it.
pub struct Ledger {
    pub price: Amount,
    pub tax_free: Amount,
    pub cancelled: Amount,
    pub cancelled_tax_free: Amount,
}

impl Ledger {
    pub fn of(body: &Map<String, Value>) -> Self {
        let amount = |key: &str| body.get(key).and_then(Amount::from_json);
        let price = amount("price").unwrap_or(Amount::Int(0));
        let tax_free = amount("tax_free").unwrap_or(Amount::Int(0));
        let cancelled_in_full =
            body.get("status").and_then(Value::as_i64) == Some(STATUS_CANCELLED);
        let or_in_full = |whole: Amount| {
            if cancelled_in_full {
                whole
            } else {
                Amount::Int(0)
            }
        };
        Self {
            price,
            tax_free,
            cancelled: amount("cancelled_price").unwrap_or_else(|| or_in_full(price)),
            cancelled_tax_free: amount("cancelled_tax_free")
                .unwrap_or_else(|| or_in_full(tax_free)),
        }
    }

    pub fn remaining(&self) -> Amount {
        self.price.sub(self.cancelled)
    }

    pub fn remaining_tax_free(&self) -> Amount {
        self.tax_free.sub(self.cancelled_tax_free)
    }
}

/// Standard base64 with padding (RFC 4648 §4), for comparing Basic credentials.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
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
            client_key: "ck".into(),
            secret_key: "sk".into(),
        };
        State::new(credentials, TTL, 0.0)
    }

    fn token(state: &mut State, now: Instant) -> IssuedToken {
        token_at(state, now, SystemTime::UNIX_EPOCH)
    }

    fn token_at(state: &mut State, now: Instant, wall: SystemTime) -> IssuedToken {
        state
            .request_token(Some("app"), Some("key"), now, wall)
            .expect("credentials match")
    }

    fn with_receipt(body: Value) -> State {
        let mut state = state();
        let spec =
            crate::fixture::parse_receipt(body, SystemTime::UNIX_EPOCH).expect("valid receipt");
        state.upsert(spec);
        state
    }

    fn paid(price: i64) -> State {
        with_receipt(json!({ "receipt_id": "r", "price": price, "tax_free": 0, "status": 1 }))
    }

    fn cancel(
        state: &mut State,
        amount: Option<i64>,
        cancel_id: Option<&str>,
    ) -> Result<Cancelled, ApiError> {
        let request = CancelRequest {
            amount: amount.map(Amount::Int),
            tax_free: None,
            cancel_id: cancel_id.map(str::to_owned),
        };
        state.cancel("r", &request, SystemTime::UNIX_EPOCH)
    }

    fn refusal(result: Result<Cancelled, ApiError>) -> &'static str {
        match result {
            Ok(cancelled) => panic!("cancel accepted: {:?}", cancelled.receipt),
            Err(error) => error.code(),
        }
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
    fn a_reused_token_keeps_its_expiry() {
        let mut state = state();
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let first = token_at(&mut state, t0, wall);
        assert_eq!(first.expired_at, 1_700_001_800);
        let later = Duration::from_millis(61_500);
        let again = token_at(&mut state, t0 + later, wall + later);
        assert_eq!(again.access_token, first.access_token);
        assert_eq!(again.expired_at, first.expired_at);
    }

    #[test]
    fn refuses_wrong_credentials_and_revokes() {
        let mut state = state();
        let now = Instant::now();
        let wall = SystemTime::now();
        assert!(
            state
                .request_token(Some("app"), Some("nope"), now, wall)
                .is_none()
        );
        assert!(state.request_token(None, None, now, wall).is_none());
        assert_eq!(state.counters.token_rejected, 2);

        let issued = token(&mut state, now);
        assert_eq!(state.revoke_tokens(), 1);
        assert!(!state.token_valid(&issued.access_token, now));
        assert_ne!(token(&mut state, now).access_token, issued.access_token);
    }

    #[test]
    fn basic_credentials_are_base64_of_the_key_pair() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64("키:값".as_bytes()), "7YKkOuqwkg==");

        let mut state = state();
        assert!(state.basic_valid("Y2s6c2s="));
        assert!(state.basic_valid("Y2s6c2s"));
        assert!(!state.basic_valid("Y2s6eHg="));
        state.update_credentials(CredentialsUpdate {
            application_id: None,
            private_key: None,
            client_key: None,
            secret_key: Some("other".into()),
        });
        assert!(!state.basic_valid("Y2s6c2s="));
        assert!(state.basic_valid(&base64(b"ck:other")));
        assert!(
            state
                .request_token(Some("app"), Some("key"), Instant::now(), SystemTime::now())
                .is_some()
        );
    }

    #[test]
    fn a_cancel_without_an_amount_cancels_what_remains() {
        let mut state = paid(3000);
        let full = cancel(&mut state, None, None).expect("cancelled");
        assert_eq!(full.receipt["status"], 20);
        assert_eq!(full.receipt["status_locale"], "결제취소완료");
        assert_eq!(full.receipt["cancelled_price"], 3000);
        assert_eq!(full.receipt["cancelled_at"], "1970-01-01T09:00:00+09:00");
        assert_eq!(full.data["request_cancel_price"], 3000);
        assert_eq!(full.data["remain_price"], 0);
        assert_eq!(full.data["revoked_at"], "1970-01-01 09:00:00");
        assert_eq!(
            refusal(cancel(&mut state, None, None)),
            "RC_ALREADY_CANCELLED"
        );
        assert_eq!(
            refusal(cancel(&mut state, Some(1), None)),
            "RC_ALREADY_CANCELLED"
        );
    }

    #[test]
    fn partial_cancels_add_up_to_the_price() {
        let mut state = paid(3000);
        let first = cancel(&mut state, Some(1000), Some("c-1")).expect("cancelled");
        assert_eq!(first.receipt["status"], 20);
        assert_eq!(first.receipt["cancelled_price"], 1000);
        assert_eq!(first.data["remain_price"], 2000);
        let second = cancel(&mut state, Some(500), Some("c-2")).expect("cancelled");
        assert_eq!(second.receipt["cancelled_price"], 1500);
        assert_eq!(second.data["request_cancel_price"], 500);

        assert_eq!(
            refusal(cancel(&mut state, Some(1501), Some("c-3"))),
            "RC_CANCEL_PRICE_EXCEEDED"
        );
        assert_eq!(
            refusal(cancel(&mut state, Some(0), Some("c-3"))),
            "RC_CANCEL_PRICE_EXCEEDED"
        );
        assert_eq!(
            refusal(cancel(&mut state, Some(-5), Some("c-3"))),
            "RC_CANCEL_PRICE_EXCEEDED"
        );
        // The rest, exactly, is allowed; a cancel without an amount takes what remains.
        let rest = cancel(&mut state, None, Some("c-3")).expect("cancelled");
        assert_eq!(rest.data["request_cancel_price"], 1500);
        assert_eq!(rest.receipt["cancelled_price"], 3000);
        assert_eq!(
            refusal(cancel(&mut state, Some(1), Some("c-4"))),
            "RC_ALREADY_CANCELLED"
        );
    }

    #[test]
    fn cancels_say_what_they_did() {
        let mut state = paid(3000);
        let outcome = |result: Result<Cancelled, ApiError>| result.expect("cancelled").outcome;
        assert_eq!(
            outcome(cancel(&mut state, Some(1000), Some("c-1"))),
            CancelOutcome::Partial
        );
        assert_eq!(
            outcome(cancel(&mut state, Some(1000), Some("c-1"))),
            CancelOutcome::Repeated
        );
        // The cancel that takes what remains is the full one, with or without an amount.
        assert_eq!(
            outcome(cancel(&mut state, Some(2000), Some("c-2"))),
            CancelOutcome::Full
        );
        assert_eq!(
            outcome(cancel(&mut state, None, Some("c-2"))),
            CancelOutcome::Repeated
        );
        let mut state = paid(3000);
        assert_eq!(outcome(cancel(&mut state, None, None)), CancelOutcome::Full);
    }

    #[test]
    fn deposits_and_expiry_need_an_issued_virtual_account() {
        let mut state = with_receipt(json!({ "receipt_id": "r", "price": 9000, "status": 5 }));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_525_230);
        let expired = state.expire("r", now).expect("expired");
        assert_eq!(expired["status"], 5);
        assert_eq!(
            expired["vbank_data"]["expired_at"],
            "2024-05-01T10:00:29+09:00"
        );
        assert_eq!(expired["vbank_data"]["bank_code"], "088");
        let paid = state.deposit("r", now).expect("deposited");
        assert_eq!(paid["status"], 1);
        assert_eq!(paid["status_locale"], "결제완료");
        assert_eq!(paid["purchased_at"], "2024-05-01T10:00:30+09:00");
        for result in [state.deposit("r", now), state.expire("r", now)] {
            assert!(matches!(result, Err(error) if error.code() == "RC_NOT_AWAITING_DEPOSIT"));
        }
        assert!(matches!(
            state.deposit("nope", now),
            Err(error) if error.code() == "RC_NOT_FOUND"
        ));
        // Paid by deposit, it cancels like any payment.
        let cancelled = cancel(&mut state, None, None).expect("cancelled");
        assert_eq!(cancelled.receipt["cancelled_price"], 9000);
    }

    #[test]
    fn a_repeated_cancel_id_cancels_once() {
        let mut state = paid(3000);
        let first = cancel(&mut state, Some(1000), Some("c-1")).expect("cancelled");
        let again = cancel(&mut state, Some(1000), Some("c-1")).expect("answered");
        assert_eq!(again.data, first.data);
        assert_eq!(again.receipt["cancelled_price"], 1000);
        // Even with another amount, and after the receipt changed meanwhile.
        cancel(&mut state, None, Some("c-2")).expect("cancelled");
        let late = cancel(&mut state, Some(7), Some("c-1")).expect("answered");
        assert_eq!(late.data, first.data);
        assert_eq!(late.receipt["cancelled_price"], 3000);
        // An empty cancel_id (python's default) is no id at all.
        let mut state = paid(3000);
        cancel(&mut state, Some(1000), Some("")).expect("cancelled");
        let other = cancel(&mut state, Some(1000), Some("")).expect("cancelled");
        assert_eq!(other.receipt["cancelled_price"], 2000);
    }

    #[test]
    fn only_paid_receipts_can_be_cancelled() {
        for status in [0, 2, 5, -1, -20, -30] {
            let mut state =
                with_receipt(json!({ "receipt_id": "r", "price": 1, "status": status }));
            assert_eq!(
                refusal(cancel(&mut state, None, None)),
                "RC_NOT_CANCELLABLE"
            );
        }
        let mut state = with_receipt(json!({ "receipt_id": "r", "price": 1 }));
        assert_eq!(
            refusal(cancel(&mut state, None, None)),
            "RC_NOT_CANCELLABLE"
        );
        // A cancelled receipt without `cancelled_price` was cancelled in full.
        let mut state = with_receipt(json!({ "receipt_id": "r", "price": 10, "status": 20 }));
        assert_eq!(
            refusal(cancel(&mut state, None, None)),
            "RC_ALREADY_CANCELLED"
        );
        assert!(matches!(
            state.cancel("nope", &CancelRequest::default(), SystemTime::UNIX_EPOCH),
            Err(error) if error.code() == "RC_NOT_FOUND"
        ));
    }

    #[test]
    fn tax_free_and_fractional_amounts() {
        let mut state = with_receipt(json!({
            "receipt_id": "r", "price": 10.5, "tax_free": 4, "status": 1,
            "card_data": { "tid": "T-9" }
        }));
        let request = CancelRequest {
            amount: Some(Amount::Float(0.5)),
            tax_free: Some(Amount::Int(1)),
            cancel_id: None,
        };
        let partial = state
            .cancel("r", &request, SystemTime::UNIX_EPOCH)
            .expect("cancelled");
        assert_eq!(partial.data["remain_price"], 10.0);
        assert_eq!(partial.data["remain_tax_free"], 3);
        assert_eq!(partial.data["tid"], "T-9");
        let rest = state
            .cancel("r", &CancelRequest::default(), SystemTime::UNIX_EPOCH)
            .expect("cancelled");
        assert_eq!(rest.data["request_cancel_price"], 10.0);
        assert_eq!(rest.receipt["cancelled_tax_free"], 4);
        assert_eq!(rest.data["remain_tax_free"], 0);
    }

    #[test]
    fn amounts_stay_integers_while_they_can() {
        assert_eq!(Amount::Int(500).add(Amount::Int(1000)), Amount::Int(1500));
        assert_eq!(Amount::Float(0.5).add(Amount::Int(1)), Amount::Float(1.5));
        assert_eq!(
            Amount::Int(i64::MAX).add(Amount::Int(1)),
            Amount::Float(9.223_372_036_854_776e18)
        );
        assert_eq!(Amount::parse(" 1000 "), Some(Amount::Int(1000)));
        assert_eq!(Amount::parse("1.5"), Some(Amount::Float(1.5)));
        assert_eq!(Amount::parse("NaN"), None);
        assert_eq!(Amount::parse("free"), None);
        assert_eq!(Amount::from_json(&json!("12")), Some(Amount::Int(12)));
        assert_eq!(Amount::from_json(&json!(null)), None);
        assert_eq!(Amount::Int(2).compare(Amount::Float(2.5)), Ordering::Less);
    }
}

//! Bootpay's webhooks: every change of a receipt becomes one delivery to each configured
//! target, v2's JSON webhook and v1's "feedback" notification, sent and retried in background
//! tasks so no API answer waits for a receiver.
//!
//! Invariants, as Bootpay: a v2 delivery succeeds only on HTTP 200 with a JSON body equal to
//! `{"success": true}`; a v1 delivery only on HTTP 200 with the body `OK` (trimmed). Anything
//! else (another body or status, a 3xx, which is never followed, a connection error, no
//! answer within 5 s) is retried after a delay that doubles from the retry base up to 30 s,
//! until the attempts run out. Each delivery sends the receipt as the change left it; retries
//! repeat it (v1 with `retry_count` one higher). Every attempt is recorded for
//! `GET /_fake/webhooks`. v1 bodies carry the merchant's private key, so neither payloads nor
//! target URLs are ever logged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::v1;

/// How long Bootpay waits for a receiver's answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between two attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// How much of a receiver's answer is read; a longer one cannot be a success anyway.
const ANSWER_READ_LIMIT: usize = 64 * 1024;
/// How much of an answer (or error) an attempt records.
const ANSWER_RECORD_CHARS: usize = 200;
/// How many deliveries the log keeps; the oldest go first, and a pending one dropped from the
/// log stops retrying.
const DELIVERY_LOG: usize = 10_000;

/// v2's `webhook_type`: which change a webhook reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookType {
    /// Paid: a confirm, a virtual-account deposit, or a paid receipt put in place.
    PaymentCompleted,
    /// A cancel that left nothing to cancel.
    PaymentCancelled,
    /// A cancel that left part of the price.
    PaymentPartialCancelled,
    /// A virtual account issued and waiting for the deposit.
    VirtualAccountIssued,
}

impl WebhookType {
    pub fn name(self) -> &'static str {
        match self {
            Self::PaymentCompleted => "PAYMENT_COMPLETED",
            Self::PaymentCancelled => "PAYMENT_CANCELLED",
            Self::PaymentPartialCancelled => "PAYMENT_PARTIAL_CANCELLED",
            Self::VirtualAccountIssued => "PAYMENT_VIRTUAL_ACCOUNT_ISSUED",
        }
    }

    /// Whether v1's feedback reports it: Bootpay's v1 says nothing when an account is issued.
    fn sent_to_v1(self) -> bool {
        self != Self::VirtualAccountIssued
    }
}

/// How v1 feedback bodies are encoded; Bootpay's default is a form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum V1ContentType {
    #[default]
    Form,
    Json,
}

/// Where deliveries go; a target left out gets nothing.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub v2_url: Option<Url>,
    pub v1_url: Option<Url>,
    pub v1_content_type: V1ContentType,
}

impl Targets {
    /// As `PUT /_fake/webhooks` takes them.
    pub fn to_json(&self) -> Value {
        json!({
            "v2_url": self.v2_url.as_ref().map(Url::as_str),
            "v1_url": self.v1_url.as_ref().map(Url::as_str),
            "v1_content_type": self.v1_content_type,
        })
    }
}

/// A change from `PUT /_fake/webhooks`: a field left out stays, `null` removes a target.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsUpdate {
    #[serde(default, deserialize_with = "present")]
    v2_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    v1_url: Option<Option<String>>,
    #[serde(default)]
    v1_content_type: Option<V1ContentType>,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`, the default).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A webhook target: an absolute `http` or `https` URL.
///
/// # Errors
/// A message saying what is wrong with `raw`.
pub fn parse_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|error| format!("{raw:?} is not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{raw:?} is not an http or https URL"));
    }
    Ok(url)
}

/// One try at a delivery, as `GET /_fake/webhooks` shows it.
#[derive(Debug, Clone, Serialize)]
struct Attempt {
    /// When it started, in milliseconds since the Unix epoch.
    at_ms: u64,
    /// `null` when no answer came (a connection error or a timeout).
    http_status: Option<u16>,
    /// The first 200 characters of the answer's body, or the error.
    answer: String,
    ok: bool,
}

#[derive(Debug, Clone, Serialize)]
struct Delivery {
    id: u64,
    receipt_id: String,
    dialect: &'static str,
    /// v2 only; `null` for v1.
    webhook_type: Option<&'static str>,
    /// The receipt's status in the payload.
    status: Value,
    url: String,
    attempts: Vec<Attempt>,
    delivered: bool,
    gave_up: bool,
}

/// A body ready to send. No `Debug`: v1's holds the private key.
enum Payload {
    /// The serialized v2 webhook.
    V2(Vec<u8>),
    /// v1's fields without `retry_count`, which each attempt adds.
    V1 {
        fields: Map<String, Value>,
        content_type: V1ContentType,
    },
}

impl Payload {
    fn dialect(&self) -> &'static str {
        match self {
            Self::V2(_) => "v2",
            Self::V1 { .. } => "v1",
        }
    }

    /// The body of the attempt after `retries` failed ones, with its content type.
    fn body(&self, retries: u32) -> (&'static str, Vec<u8>) {
        match self {
            Self::V2(body) => ("application/json", body.clone()),
            Self::V1 {
                fields,
                content_type,
            } => {
                let mut fields = fields.clone();
                fields.insert("retry_count".into(), retries.into());
                match content_type {
                    V1ContentType::Json => (
                        "application/json",
                        Value::Object(fields).to_string().into_bytes(),
                    ),
                    V1ContentType::Form => {
                        let mut form = url::form_urlencoded::Serializer::new(String::new());
                        for (key, value) in &fields {
                            form.append_pair(key, &form_value(value));
                        }
                        (
                            "application/x-www-form-urlencoded",
                            form.finish().into_bytes(),
                        )
                    }
                }
            }
        }
    }

    /// Whether the receiver's answer acknowledges the delivery.
    fn accepted(&self, http_status: u16, answer: &[u8]) -> bool {
        if http_status != 200 {
            return false;
        }
        match self {
            Self::V2(_) => {
                serde_json::from_slice::<Value>(answer).is_ok_and(|v| v == json!({"success": true}))
            }
            Self::V1 { .. } => answer.trim_ascii() == b"OK",
        }
    }
}

/// A form field's text: strings as they are, `null` as nothing, anything else as JSON.
fn form_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

struct Outbox {
    targets: Targets,
    deliveries: BTreeMap<u64, Delivery>,
    next_id: u64,
}

/// The targets, the delivery log and the sender; shared by the handlers and the delivery
/// tasks.
pub struct Webhooks {
    /// Never held across an `.await`. Taken after the receipt store's lock, never before it.
    outbox: Mutex<Outbox>,
    http: reqwest::Client,
    retry_base: Duration,
    max_attempts: u32,
    /// Cancelled on shutdown so pending retries end at once.
    shutdown: CancellationToken,
}

impl Webhooks {
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(
        targets: Targets,
        retry_base: Duration,
        max_attempts: u32,
        shutdown: CancellationToken,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            // Bootpay counts a 3xx as a failure; following it would hide that.
            .redirect(reqwest::redirect::Policy::none())
            // Receivers are test servers, usually on loopback; a proxy from the environment
            // must not stand between.
            .no_proxy()
            .user_agent("bootpay-fake")
            .build()?;
        Ok(Self {
            outbox: Mutex::new(Outbox {
                targets,
                deliveries: BTreeMap::new(),
                next_id: 1,
            }),
            http,
            retry_base,
            max_attempts: max_attempts.max(1),
            shutdown,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Outbox> {
        // Every update leaves the outbox consistent, so a panic elsewhere does not taint it.
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `update` and answers the targets now in force.
    ///
    /// # Errors
    /// A URL that is not an absolute `http` or `https` one; nothing changes then.
    pub fn update_targets(&self, update: TargetsUpdate) -> Result<Targets, String> {
        let parse = |url: Option<Option<String>>| match url {
            None => Ok(None),
            Some(None) => Ok(Some(None)),
            Some(Some(raw)) => parse_url(&raw).map(|url| Some(Some(url))),
        };
        let v2_url = parse(update.v2_url)?;
        let v1_url = parse(update.v1_url)?;
        let mut outbox = self.lock();
        let targets = &mut outbox.targets;
        if let Some(url) = v2_url {
            targets.v2_url = url;
        }
        if let Some(url) = v1_url {
            targets.v1_url = url;
        }
        if let Some(content_type) = update.v1_content_type {
            targets.v1_content_type = content_type;
        }
        Ok(targets.clone())
    }

    /// The delivery log, oldest first.
    pub fn log(&self) -> Value {
        let outbox = self.lock();
        let deliveries: Vec<&Delivery> = outbox.deliveries.values().collect();
        json!({ "deliveries": deliveries })
    }

    /// Empties the delivery log; deliveries still retrying stop. The targets stay.
    pub fn clear(&self) -> usize {
        let mut outbox = self.lock();
        let cleared = outbox.deliveries.len();
        outbox.deliveries.clear();
        cleared
    }

    /// Queues the webhooks for a change of `receipt` (v2's shape, as the change left it) to
    /// every target that reports `kind`, and starts sending them.
    pub fn send(
        self: &Arc<Self>,
        kind: WebhookType,
        receipt: &Map<String, Value>,
        application_id: &str,
        private_key: &str,
    ) {
        let mut outbox = self.lock();
        let targets = outbox.targets.clone();
        let mut queued = Vec::new();
        if let Some(url) = targets.v2_url {
            let mut webhook = receipt.clone();
            webhook.insert("webhook_type".into(), kind.name().into());
            let body = Value::Object(webhook).to_string().into_bytes();
            queued.push((url, Payload::V2(body), Some(kind.name())));
        }
        if let Some(url) = targets.v1_url.filter(|_| kind.sent_to_v1()) {
            let payload = Payload::V1 {
                fields: v1::feedback(receipt, application_id, private_key),
                content_type: targets.v1_content_type,
            };
            queued.push((url, payload, None));
        }
        let receipt_id = match receipt.get("receipt_id") {
            Some(Value::String(id)) => id.clone(),
            _ => String::new(),
        };
        let status = receipt.get("status").cloned().unwrap_or(Value::Null);
        for (url, payload, webhook_type) in queued {
            let id = outbox.next_id;
            outbox.next_id += 1;
            if outbox.deliveries.len() >= DELIVERY_LOG {
                outbox.deliveries.pop_first();
            }
            outbox.deliveries.insert(
                id,
                Delivery {
                    id,
                    receipt_id: receipt_id.clone(),
                    dialect: payload.dialect(),
                    webhook_type,
                    status: status.clone(),
                    url: url.to_string(),
                    attempts: Vec::new(),
                    delivered: false,
                    gave_up: false,
                },
            );
            tracing::debug!(
                delivery = id,
                receipt_id,
                dialect = payload.dialect(),
                webhook_type,
                "Webhook queued."
            );
            tokio::spawn(Arc::clone(self).deliver(id, url, payload));
        }
    }

    /// Sends one delivery until it is acknowledged, its attempts run out, it leaves the log
    /// or the fake shuts down.
    async fn deliver(self: Arc<Self>, id: u64, url: Url, payload: Payload) {
        for retries in 0..self.max_attempts {
            if retries > 0 {
                tokio::select! {
                    () = tokio::time::sleep(retry_delay(self.retry_base, retries)) => {}
                    () = self.shutdown.cancelled() => return,
                }
            }
            if !self.lock().deliveries.contains_key(&id) {
                return;
            }
            let at_ms = epoch_ms(SystemTime::now());
            let (http_status, answer, ok) = self.attempt(&url, &payload, retries).await;
            let last = retries + 1 == self.max_attempts;
            let mut outbox = self.lock();
            let Some(delivery) = outbox.deliveries.get_mut(&id) else {
                return;
            };
            delivery.attempts.push(Attempt {
                at_ms,
                http_status,
                answer,
                ok,
            });
            delivery.delivered = ok;
            delivery.gave_up = !ok && last;
            let attempts = delivery.attempts.len();
            if ok {
                tracing::info!(delivery = id, attempts, "Webhook delivered.");
                return;
            }
            if last {
                tracing::warn!(delivery = id, attempts, "Webhook given up.");
                return;
            }
            tracing::debug!(delivery = id, attempts, http_status, "Webhook refused.");
        }
    }

    /// One attempt: its HTTP status (if an answer came), what it recorded, and whether the
    /// receiver acknowledged it.
    async fn attempt(
        &self,
        url: &Url,
        payload: &Payload,
        retries: u32,
    ) -> (Option<u16>, String, bool) {
        let (content_type, body) = payload.body(retries);
        let sent = self
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => return (None, describe(&error), false),
        };
        let http_status = response.status().as_u16();
        let mut answer = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    answer.extend_from_slice(&chunk);
                    if answer.len() > ANSWER_READ_LIMIT {
                        break;
                    }
                }
                Ok(None) => break,
                Err(error) => return (Some(http_status), describe(&error), false),
            }
        }
        let ok = payload.accepted(http_status, &answer);
        let text: String = String::from_utf8_lossy(&answer)
            .chars()
            .take(ANSWER_RECORD_CHARS)
            .collect();
        (Some(http_status), text, ok)
    }
}

/// The pause before retry number `retries` (1 for the first): the base, doubled for each
/// further retry, at most [`MAX_RETRY_DELAY`].
fn retry_delay(base: Duration, retries: u32) -> Duration {
    let factor = 1_u32
        .checked_shl(retries.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(MAX_RETRY_DELAY)
}

fn epoch_ms(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    })
}

/// A failed attempt's error with its causes, cut to what an attempt records.
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return format!("timed out after {} s", ATTEMPT_TIMEOUT.as_secs());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(ANSWER_RECORD_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_thirty_seconds() {
        let base = Duration::from_secs(1);
        let delays: Vec<u64> = (1..=9)
            .map(|retries| retry_delay(base, retries).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30, 30]);
        assert_eq!(
            retry_delay(Duration::from_millis(20), 3),
            Duration::from_millis(80)
        );
        assert_eq!(retry_delay(base, 200), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(Duration::MAX, 1), MAX_RETRY_DELAY);
    }

    #[test]
    fn only_bootpays_acknowledgements_count() {
        let v2 = Payload::V2(Vec::new());
        assert!(v2.accepted(200, br#"{"success": true}"#));
        assert!(v2.accepted(200, b" {\n  \"success\" : true }\n"));
        assert!(!v2.accepted(201, br#"{"success": true}"#));
        assert!(!v2.accepted(302, br#"{"success": true}"#));
        assert!(!v2.accepted(200, br#"{"status": 200}"#));
        assert!(!v2.accepted(200, br#"{"success": true, "id": 1}"#));
        assert!(!v2.accepted(200, br#"{"success": "true"}"#));
        assert!(!v2.accepted(200, b"OK"));

        let v1 = Payload::V1 {
            fields: Map::new(),
            content_type: V1ContentType::Form,
        };
        assert!(v1.accepted(200, b"OK"));
        assert!(v1.accepted(200, b" OK\r\n"));
        assert!(!v1.accepted(200, b"ok"));
        assert!(!v1.accepted(200, br#"{"success": true}"#));
        assert!(!v1.accepted(500, b"OK"));
    }

    #[test]
    fn v1_bodies_count_their_retries() {
        let mut fields = Map::new();
        fields.insert("receipt_id".into(), "r-1".into());
        fields.insert("price".into(), 3000.into());
        fields.insert("purchased_at".into(), Value::Null);
        fields.insert("name".into(), "보석 & 금".into());
        let form = Payload::V1 {
            fields: fields.clone(),
            content_type: V1ContentType::Form,
        };
        let (content_type, body) = form.body(2);
        assert_eq!(content_type, "application/x-www-form-urlencoded");
        let parsed: Vec<(String, String)> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        let field = |name: &str| {
            parsed
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        assert_eq!(field("retry_count"), Some("2"));
        assert_eq!(field("price"), Some("3000"));
        assert_eq!(field("purchased_at"), Some(""));
        assert_eq!(field("name"), Some("보석 & 금"));

        let json = Payload::V1 {
            fields,
            content_type: V1ContentType::Json,
        };
        let (content_type, body) = json.body(0);
        assert_eq!(content_type, "application/json");
        let body: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["retry_count"], 0);
        assert_eq!(body["price"], 3000);
    }

    #[test]
    fn target_updates_keep_what_they_leave_out() {
        let webhooks = Webhooks::new(
            Targets::default(),
            Duration::from_secs(1),
            10,
            CancellationToken::new(),
        )
        .expect("client");
        let update = |body: Value| {
            let update: TargetsUpdate = serde_json::from_value(body).expect("update");
            webhooks
                .update_targets(update)
                .map(|targets| targets.to_json())
        };
        let both = json!({ "v2_url": "http://127.0.0.1:9/v2", "v1_url": "http://127.0.0.1:9/v1" });
        assert_eq!(
            update(both),
            Ok(json!({
                "v2_url": "http://127.0.0.1:9/v2", "v1_url": "http://127.0.0.1:9/v1",
                "v1_content_type": "form"
            }))
        );
        assert_eq!(
            update(json!({ "v2_url": null, "v1_content_type": "json" })),
            Ok(json!({
                "v2_url": null, "v1_url": "http://127.0.0.1:9/v1", "v1_content_type": "json"
            }))
        );
        // A bad URL changes nothing, not even the fields given beside it.
        assert!(update(json!({ "v2_url": "http://127.0.0.1:9/", "v1_url": "mailto:x" })).is_err());
        assert_eq!(update(json!({})).expect("targets")["v2_url"], Value::Null);
        assert!(serde_json::from_value::<TargetsUpdate>(json!({ "url": "x" })).is_err());
    }

    #[test]
    fn targets_are_http_urls() {
        assert!(parse_url("http://127.0.0.1:9/hook").is_ok());
        assert!(parse_url("https://example.com/bootpay").is_ok());
        assert!(parse_url("ftp://example.com/").is_err());
        assert!(parse_url("/relative").is_err());
        assert!(parse_url("").is_err());
    }
}

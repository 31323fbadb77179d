//! The webhook ingress (`receipt-verifier webhook`): Bootpay's webhooks in, a notification
//! durably queued on the purchase queue, then the dialect's acknowledgement out.
//!
//! Invariants:
//! - a webhook is acknowledged (v2: `200 {"success": true}`, v1: `OK`) only after SQS
//!   accepted its notification, or accepted an identical one moments ago; when queueing
//!   fails the answer is a 503, so Bootpay retries;
//! - nothing in a body is trusted: only the receipt id (checked against the receipt-id
//!   rule) and two hints go on; the worker re-fetches the receipt and acts on what Bootpay
//!   says;
//! - no body is ever logged (a v1 body carries the merchant's private key);
//! - the sender is checked on the socket's peer address, or the address our own trusted
//!   proxies appended ([`source`]), before the body is read; bodies are capped, content
//!   types checked, and requests beyond the concurrency limit turned away with a 503.

mod body;
mod recent;
pub mod source;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_sdk_sqs::Client;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use metrics::{counter, histogram};
use receipt_verifier_core::Notification;
use receipt_verifier_core::notification::{NOTIFICATION_TYPE, TYPE_ATTRIBUTE};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use self::body::{BodyError, Dialect};
use self::recent::Recent;
use self::source::{Refusal, SourceRules};
use crate::observability::health::{self, Ready};
use crate::sqs::string_attribute;

/// The v2 webhook's path.
pub const V2_PATH: &str = "/webhooks/bootpay";
/// The v1 feedback's path.
pub const V1_PATH: &str = "/webhooks/bootpay/v1";
/// Largest body taken; Bootpay's are a few KiB.
pub const MAX_BODY: usize = 64 * 1024;
/// How long queueing may take: Bootpay waits 5 s for the answer.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(3);
/// An identical notification queued this recently is not queued again (Bootpay retries
/// an answer it did not get in time; forged floods repeat themselves).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(60);
/// How many recently queued notifications are remembered, at most.
const RECENT_CAPACITY: usize = 10_000;

pub const WEBHOOKS: &str = "receipt_verifier_webhooks_total";
pub const WEBHOOK_DURATION: &str = "receipt_verifier_webhook_duration_seconds";

/// The ingress's settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub addr: SocketAddr,
    pub rules: SourceRules,
    pub purchase_queue_url: String,
    pub max_concurrency: usize,
    pub metrics_addr: Option<SocketAddr>,
}

struct Ingress {
    sqs: Client,
    queue_url: String,
    fifo: bool,
    rules: SourceRules,
    slots: Semaphore,
    recent: Recent,
    /// Whether the latest send to the purchase queue worked; `/readyz` reports it.
    queueing: AtomicBool,
    stopping: AtomicBool,
}

/// Serves until `shutdown` completes, then finishes the requests in progress.
///
/// # Errors
/// When an address cannot be bound or the metrics recorder cannot be installed.
pub async fn run(
    sqs: Client,
    config: WebhookConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ingress = Arc::new(Ingress {
        sqs,
        fifo: config.purchase_queue_url.ends_with(".fifo"),
        queue_url: config.purchase_queue_url.clone(),
        rules: config.rules.clone(),
        slots: Semaphore::new(config.max_concurrency.max(1)),
        recent: Recent::new(DUPLICATE_WINDOW, RECENT_CAPACITY),
        queueing: AtomicBool::new(true),
        stopping: AtomicBool::new(false),
    });
    let stop = CancellationToken::new();
    let health = match config.metrics_addr {
        Some(addr) => Some(serve_health(addr, &ingress, &stop).await?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on WEBHOOK_ADDR {}", config.addr))?;
    let local = listener.local_addr().unwrap_or(config.addr);
    tracing::info!(
        message = "Webhook ingress started.",
        addr = %local,
        v2_path = V2_PATH,
        v1_path = V1_PATH,
        purchase_queue = %config.purchase_queue_url,
        allowed_sources = %join(&config.rules.allowed),
        trusted_proxies = %join(&config.rules.trusted_proxies),
    );
    let app = Router::new()
        .route(V2_PATH, post(v2))
        .route(V1_PATH, post(v1))
        .with_state(ingress.clone());
    let stopping = {
        let ingress = ingress.clone();
        async move {
            shutdown.await;
            ingress.stopping.store(true, Ordering::Relaxed);
            tracing::info!(message = "Shutdown requested: finishing the webhooks in progress.");
        }
    };
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopping)
    .await;
    stop.cancel();
    if let Some(task) = health {
        crate::runtime::join(task).await;
    }
    served.context("the webhook server failed")?;
    tracing::info!(message = "Webhook ingress stopped.");
    Ok(())
}

fn join(nets: &[ipnet::IpNet]) -> String {
    let names: Vec<String> = nets.iter().map(ToString::to_string).collect();
    names.join(",")
}

async fn v2(
    state: State<Arc<Ingress>>,
    peer: ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    handle(Dialect::V2, state, peer, request).await
}

async fn v1(
    state: State<Arc<Ingress>>,
    peer: ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    handle(Dialect::V1, state, peer, request).await
}

async fn handle(
    dialect: Dialect,
    State(ingress): State<Arc<Ingress>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let (outcome, response) = ingress.take(dialect, peer, request).await;
    counter!(WEBHOOKS, "dialect" => dialect.as_str(), "outcome" => outcome).increment(1);
    histogram!(WEBHOOK_DURATION, "dialect" => dialect.as_str())
        .record(started.elapsed().as_secs_f64());
    response
}

impl Ingress {
    /// Checks, reads, queues and answers one webhook; the outcome is a bounded label.
    async fn take(
        &self,
        dialect: Dialect,
        peer: SocketAddr,
        request: Request,
    ) -> (&'static str, Response) {
        let (parts, body) = request.into_parts();
        let sender = match self.rules.sender(peer.ip(), &parts.headers) {
            Ok(sender) => sender,
            Err(refusal) => {
                tracing::warn!(
                    message = "Webhook refused: not from an allowed source.",
                    dialect = dialect.as_str(),
                    peer = %peer.ip(),
                    why = match refusal {
                        Refusal::NotAllowed => "sender outside WEBHOOK_ALLOWED_SOURCES",
                        Refusal::NoForwardedFor => "a trusted proxy sent no usable X-Forwarded-For",
                    },
                );
                return ("forbidden", plain(StatusCode::FORBIDDEN, "forbidden"));
            }
        };
        let Ok(_slot) = self.slots.try_acquire() else {
            tracing::warn!(message = "Webhook turned away: too many in progress.");
            return ("busy", failure(dialect, StatusCode::SERVICE_UNAVAILABLE));
        };
        let body = match read_body(body, &parts.headers).await {
            Ok(body) => body,
            Err(status) => {
                tracing::warn!(
                    message = "Webhook refused: body too large.",
                    dialect = dialect.as_str(),
                    %sender,
                    limit_bytes = MAX_BODY,
                );
                return ("too_large", plain(status, "body too large"));
            }
        };
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let note = match body::notification(dialect, content_type, &body) {
            Ok(note) => note,
            Err(error) => {
                tracing::warn!(
                    message = "Webhook refused.",
                    dialect = dialect.as_str(),
                    %sender,
                    error = %error,
                );
                let status = match error {
                    BodyError::UnsupportedType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    BodyError::Malformed(_) => StatusCode::BAD_REQUEST,
                };
                return (error.code(), plain(status, &error.to_string()));
            }
        };
        let key = recent::key(&note);
        if self.recent.contains(&key) {
            tracing::info!(
                message = "Webhook answered: the same notification was queued moments ago.",
                dialect = dialect.as_str(),
                receipt_id = %note.receipt_id,
                webhook_type = note.webhook_type.as_deref(),
                status = note.status,
            );
            return ("duplicate", success(dialect));
        }
        match tokio::time::timeout(QUEUE_TIMEOUT, self.queue(&note)).await {
            Ok(Ok(())) => {
                self.queueing.store(true, Ordering::Relaxed);
                self.recent.insert(key);
                tracing::info!(
                    message = "Webhook queued.",
                    dialect = dialect.as_str(),
                    %sender,
                    receipt_id = %note.receipt_id,
                    webhook_type = note.webhook_type.as_deref(),
                    status = note.status,
                );
                ("queued", success(dialect))
            }
            failed => {
                self.queueing.store(false, Ordering::Relaxed);
                let error = match failed {
                    Ok(Err(e)) => e,
                    _ => format!("no answer from SQS within {QUEUE_TIMEOUT:?}"),
                };
                tracing::error!(
                    message = "Could not queue the webhook's notification; answering 503 so Bootpay retries.",
                    dialect = dialect.as_str(),
                    receipt_id = %note.receipt_id,
                    error = %error,
                );
                (
                    "queue_error",
                    failure(dialect, StatusCode::SERVICE_UNAVAILABLE),
                )
            }
        }
    }

    /// Sends the notification to the purchase queue.
    async fn queue(&self, note: &Notification) -> Result<(), String> {
        let mut send = self
            .sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(note.to_json())
            .message_attributes(TYPE_ATTRIBUTE, string_attribute(NOTIFICATION_TYPE));
        if self.fifo {
            // One group per receipt keeps its notifications in order; every webhook is
            // its own message (the ingress deduplicates repeats itself).
            send = send
                .message_group_id(&note.receipt_id)
                .message_deduplication_id(format!(
                    "{:016x}{:016x}",
                    fastrand::u64(..),
                    fastrand::u64(..)
                ));
        }
        let sent = send.send().await;
        crate::observability::metrics::sqs_request("SendMessage", sent.is_ok());
        sent.map(|_| ()).map_err(|e| crate::error_chain(&e))
    }
}

/// Reads the body, at most [`MAX_BODY`] bytes; a larger one is a 413, refused as soon as
/// its `Content-Length` says so.
async fn read_body(body: Body, headers: &HeaderMap) -> Result<axum::body::Bytes, StatusCode> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE)
}

/// The answer Bootpay counts as delivered.
fn success(dialect: Dialect) -> Response {
    match dialect {
        Dialect::V2 => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"success":true}"#,
        )
            .into_response(),
        Dialect::V1 => plain(StatusCode::OK, "OK"),
    }
}

/// An answer Bootpay counts as failed, so it sends the webhook again.
fn failure(dialect: Dialect, status: StatusCode) -> Response {
    match dialect {
        Dialect::V2 => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"success":false}"#,
        )
            .into_response(),
        Dialect::V1 => plain(status, "RETRY"),
    }
}

fn plain(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.to_owned(),
    )
        .into_response()
}

/// What the ingress's `/readyz` checks.
struct IngressReadiness(Arc<Ingress>);

impl Ready for IngressReadiness {
    fn not_ready(&self) -> Option<String> {
        if self.0.stopping.load(Ordering::Relaxed) {
            return Some("shutting down".into());
        }
        if !self.0.queueing.load(Ordering::Relaxed) {
            return Some("queueing to the purchase queue fails".into());
        }
        None
    }
}

async fn serve_health(
    addr: SocketAddr,
    ingress: &Arc<Ingress>,
    stop: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (listener, metrics) = health::listen(addr).await?;
    metrics::describe_counter!(WEBHOOKS, "Webhooks received, by dialect and outcome.");
    metrics::describe_histogram!(
        WEBHOOK_DURATION,
        metrics::Unit::Seconds,
        "From a webhook's arrival to its answer, by dialect."
    );
    let ready = Arc::new(IngressReadiness(ingress.clone()));
    Ok(tokio::spawn(health::serve(
        listener,
        metrics,
        ready,
        stop.clone(),
    )))
}

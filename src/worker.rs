//! The worker: receive → decode → verify → publish → acknowledge, for up to
//! `concurrency` purchases at once.
//!
//! Invariants:
//! - a purchase is deleted only after its decision (or, for a malformed body, its dead
//!   letter) has been accepted by SQS; every other path leaves it on the queue;
//! - verification concurrency is a semaphore, not the receive batch: a new receive is
//!   issued as soon as ten slots are free, so one slow receipt holds up nobody;
//! - while a purchase is being worked on, a heartbeat keeps it invisible;
//! - on shutdown, receiving stops at once (the long poll is dropped) and in-flight
//!   purchases finish, or are released with visibility 0, within the grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_sdk_sqs::Client;
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, field};

use crate::ack::{Acker, requeue_delay};
use crate::batch::{Batcher, MAX_BATCH};
use crate::bootpay::{BootpayClient, BootpayConfig, BootpayError};
use crate::decode::PurchaseEvent;
use crate::health::Readiness;
use crate::intake::Intake;
use crate::publish::Publisher;
use crate::queues::Queues;
use crate::receive::{Received, receive};
use crate::sqs::{DeleteFlush, SendFlush, VisibilityFlush};
use crate::verify::{Outcome, Verdict, verify};

/// Tuning for one worker process. See `receipt-verifier run --help` for each field.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub concurrency: usize,
    pub receive_wait: Duration,
    pub requeue_base_delay: Duration,
    pub requeue_max_delay: Duration,
    pub shutdown_grace: Duration,
    pub batch_linger: Duration,
    pub outage_threshold: u32,
    pub probe_min_delay: Duration,
    pub probe_max_delay: Duration,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`; none when `None`.
    pub metrics_addr: Option<SocketAddr>,
}

struct Context {
    bootpay: Arc<BootpayClient>,
    intake: Arc<Intake>,
    publisher: Publisher,
    acker: Acker,
    config: WorkerConfig,
    visibility_timeout: Duration,
    /// Cancelled on SIGTERM/SIGINT: stop receiving, release held purchases.
    stop_intake: CancellationToken,
    /// Cancelled when the grace period is over: abandon verification and release.
    hard_stop: CancellationToken,
    readiness: Arc<Readiness>,
}

/// Runs the worker until `shutdown` completes and in-flight work is finished or released.
///
/// # Errors
/// When the Bootpay client cannot be built or the metrics address cannot be bound.
pub async fn run(
    sqs: Client,
    queues: Queues,
    bootpay: BootpayConfig,
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let intake = Arc::new(Intake::new(config.outage_threshold));
    let observer = intake.clone();
    let bootpay = Arc::new(BootpayClient::new(bootpay, move |o| observer.observe(o))?);
    let readiness = Arc::new(Readiness::default());
    let health_stop = CancellationToken::new();
    let health = match config.metrics_addr {
        Some(addr) => {
            let metrics = crate::metrics::install()
                .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
            let listener = crate::health::bind(addr)
                .await
                .with_context(|| format!("cannot listen on METRICS_ADDR {addr}"))?;
            tracing::info!(
                message = "Serving /metrics, /healthz and /readyz.",
                addr = %listener.local_addr().unwrap_or(addr),
            );
            Some(tokio::spawn(crate::health::serve(
                listener,
                metrics,
                readiness.clone(),
                intake.clone(),
                bootpay.clone(),
                health_stop.clone(),
            )))
        }
        None => None,
    };
    let linger = config.batch_linger;
    let fifo = |url: &str| url.ends_with(".fifo");
    let (results, results_task) = Batcher::spawn(
        SendFlush {
            sqs: sqs.clone(),
            queue_url: queues.result_url.clone(),
        },
        linger,
    );
    let (dead_letters, dead_letters_task) = Batcher::spawn(
        SendFlush {
            sqs: sqs.clone(),
            queue_url: queues.dead_letter_url.clone(),
        },
        linger,
    );
    let (deletes, deletes_task) = Batcher::spawn(
        DeleteFlush {
            sqs: sqs.clone(),
            queue_url: queues.purchase_url.clone(),
        },
        linger,
    );
    let (visibility, visibility_task) = Batcher::spawn(
        VisibilityFlush {
            sqs: sqs.clone(),
            queue_url: queues.purchase_url.clone(),
        },
        linger,
    );
    let stop_intake = CancellationToken::new();
    let ctx = Arc::new(Context {
        bootpay: bootpay.clone(),
        intake: intake.clone(),
        publisher: Publisher {
            results,
            dead_letters,
            results_fifo: fifo(&queues.result_url),
            dead_letters_fifo: fifo(&queues.dead_letter_url),
        },
        acker: Acker {
            deletes,
            visibility,
        },
        config: config.clone(),
        visibility_timeout: queues.visibility_timeout,
        stop_intake: stop_intake.clone(),
        hard_stop: CancellationToken::new(),
        readiness: readiness.clone(),
    });

    tokio::spawn({
        let stop = stop_intake.clone();
        async move {
            shutdown.await;
            readiness.stopping();
            tracing::info!(
                message = "Shutdown requested: no more receives; finishing in-flight purchases."
            );
            stop.cancel();
        }
    });
    let prober = tokio::spawn({
        let (intake, bootpay, stop) = (intake.clone(), bootpay.clone(), stop_intake.clone());
        let (min, max) = (config.probe_min_delay, config.probe_max_delay);
        async move { intake.probe_while_paused(&bootpay, min, max, stop).await }
    });

    // Learn at once whether Bootpay takes the credentials; a refusal pauses intake.
    if let Err(e) = bootpay.renew_token().await {
        tracing::error!(message = "Bootpay did not issue a token at start-up.", error = %crate::error_chain(&e));
    }
    tracing::info!(
        message = "Worker started.",
        purchase_queue = %queues.purchase_url,
        result_queue = %queues.result_url,
        dead_letter_queue = %queues.dead_letter_url,
        visibility_timeout_secs = queues.visibility_timeout.as_secs(),
        max_receive_count = queues.max_receive_count,
        concurrency = config.concurrency,
    );

    let tracker = TaskTracker::new();
    receive_loop(&ctx, &sqs, &queues.purchase_url, &tracker).await;

    tracker.close();
    let in_flight = tracker.len();
    if in_flight > 0 {
        tracing::info!(message = "Waiting for in-flight purchases.", in_flight);
    }
    if tokio::time::timeout(config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            message = "Grace period over: releasing purchases still being verified.",
            remaining = tracker.len(),
        );
        ctx.hard_stop.cancel();
        // Publishes and deletes already under way finish within the SDK's timeouts.
        if tokio::time::timeout(Duration::from_secs(35), tracker.wait())
            .await
            .is_err()
        {
            tracing::error!(
                message = "Purchases still unfinished at exit; SQS redelivers them.",
                remaining = tracker.len(),
            );
        }
    }
    let _ = prober.await;
    drop(ctx);
    for task in [
        results_task,
        dead_letters_task,
        deletes_task,
        visibility_task,
    ] {
        let _ = task.await;
    }
    health_stop.cancel();
    if let Some(task) = health {
        let _ = task.await;
    }
    tracing::info!(message = "Worker stopped.");
    Ok(())
}

async fn receive_loop(ctx: &Arc<Context>, sqs: &Client, queue_url: &str, tracker: &TaskTracker) {
    let stop = &ctx.stop_intake;
    let slots = Arc::new(Semaphore::new(ctx.config.concurrency));
    let batch = ctx.config.concurrency.clamp(1, MAX_BATCH) as u32;
    let error_backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times();
    let mut delays = error_backoff.build();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            () = ctx.intake.opened() => {}
        }
        let mut permits = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            p = slots.clone().acquire_many_owned(batch) => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let received = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = receive(sqs, queue_url, batch as i32, ctx.config.receive_wait) => r,
        };
        ctx.readiness.receive_succeeded(received.is_ok());
        match received {
            Ok(messages) => {
                delays = error_backoff.build();
                for message in messages {
                    let Some(permit) = permits.split(1) else {
                        break;
                    };
                    tracker.spawn(handle(ctx.clone(), message, permit));
                }
            }
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                tracing::error!(
                    message = "Failed to receive purchases; backing off.",
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                );
                tokio::select! {
                    _ = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Counts a purchase in flight for as long as it lives.
struct InFlight;

impl InFlight {
    fn start() -> Self {
        crate::metrics::in_flight(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        crate::metrics::in_flight(-1.0);
    }
}

async fn handle(ctx: Arc<Context>, message: Received, _slot: OwnedSemaphorePermit) {
    let _in_flight = InFlight::start();
    let span = tracing::info_span!(
        "purchase",
        message_id = %message.message_id,
        receipt_id = field::Empty,
        order_id = field::Empty,
        attempt = message.receive_count,
    );
    let work = process(&ctx, &message).instrument(span.clone());
    let heartbeat = heartbeat(&ctx, &message.receipt_handle).instrument(span);
    tokio::select! {
        biased;
        () = work => {}
        () = heartbeat => {}
    }
}

/// Keeps the message invisible while it is worked on. Never returns.
async fn heartbeat(ctx: &Context, receipt_handle: &str) {
    let every = (ctx.visibility_timeout / 3).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        crate::metrics::visibility_changed("heartbeat");
        if let Err(e) = ctx
            .acker
            .set_visibility(receipt_handle, ctx.visibility_timeout)
            .await
        {
            tracing::warn!(message = "Failed to extend the purchase's visibility.", error = %e);
        }
    }
}

/// Where verification left a purchase.
enum Step {
    Decided(Verdict),
    /// No decision yet; `why` is a metric label, `detail` the log text.
    RetryLater {
        why: &'static str,
        detail: String,
    },
    Release,
}

async fn process(ctx: &Context, message: &Received) {
    let started = Instant::now();
    let event = match PurchaseEvent::parse(&message.body) {
        Ok(event) => event,
        Err(error) => return dead_letter(ctx, message, &error).await,
    };
    let span = tracing::Span::current();
    span.record("receipt_id", event.receipt_id.as_str());
    span.record("order_id", event.order_id.as_str());

    let step = tokio::select! {
        biased;
        _ = ctx.hard_stop.cancelled() => Step::Release,
        step = verify_patiently(ctx, &event) => step,
    };
    match step {
        Step::Decided(verdict) => {
            if let Err(e) = retry_sqs(|| ctx.publisher.decision(message, &event, &verdict)).await {
                // Not deleted: the purchase comes back once its visibility runs out.
                tracing::error!(message = "Failed to publish a decision; the purchase stays queued.", error = %crate::error_chain(&e));
                return;
            }
            let end_to_end = message.sent_at.and_then(|t| t.elapsed().ok());
            let end_to_end_ms = end_to_end.map(|d| d.as_millis() as u64);
            crate::metrics::decided(
                verdict.reason.decision().as_str(),
                verdict.reason.as_str(),
                started.elapsed(),
                end_to_end,
            );
            tracing::info!(
                message = "Decision published.",
                decision = verdict.reason.decision().as_str(),
                reason = verdict.reason.as_str(),
                receipt_id = %event.receipt_id,
                order_id = %event.order_id,
                latency_ms = started.elapsed().as_millis() as u64,
                end_to_end_ms,
            );
            acknowledge(ctx, message).await;
        }
        Step::RetryLater { why, detail } => {
            let delay = requeue_delay(
                message.receive_count,
                ctx.config.requeue_base_delay,
                ctx.config.requeue_max_delay,
            );
            crate::metrics::requeued(why);
            crate::metrics::visibility_changed("requeue");
            tracing::info!(
                message = "No decision yet; the purchase will be tried again.",
                why = %detail,
                retry_in_secs = delay.as_secs(),
            );
            if let Err(e) = ctx
                .acker
                .set_visibility(&message.receipt_handle, delay)
                .await
            {
                tracing::warn!(message = "Failed to delay the purchase.", error = %e);
            }
        }
        Step::Release => {
            crate::metrics::visibility_changed("release");
            tracing::info!(message = "Releasing the purchase for another worker.");
            if let Err(e) = ctx
                .acker
                .set_visibility(&message.receipt_handle, Duration::ZERO)
                .await
            {
                tracing::warn!(message = "Failed to release the purchase.", error = %e);
            }
        }
    }
}

/// Verifies until there is an answer. While Bootpay refuses the credentials or is down,
/// the purchase is held (its heartbeat keeps it invisible, so its receive count does not
/// grow) until intake reopens or the worker stops.
async fn verify_patiently(ctx: &Context, event: &PurchaseEvent) -> Step {
    loop {
        let error = match verify(&ctx.bootpay, event).await {
            Ok(Outcome::Decided(verdict)) => return Step::Decided(verdict),
            Ok(Outcome::NotFinal { status }) => {
                return Step::RetryLater {
                    why: "not_final",
                    detail: format!("payment status {status} is not final"),
                };
            }
            Err(error) => error,
        };
        let hold = matches!(error, BootpayError::CredentialsRefused { .. })
            || (error.is_transient() && ctx.intake.is_paused());
        if !hold {
            return Step::RetryLater {
                why: "bootpay_error",
                detail: crate::error_chain(&error),
            };
        }
        tracing::warn!(
            message = "Holding the purchase until Bootpay answers again.",
            error = %crate::error_chain(&error),
        );
        tokio::select! {
            biased;
            _ = ctx.stop_intake.cancelled() => return Step::Release,
            () = ctx.intake.opened() => {}
        }
    }
}

async fn dead_letter(ctx: &Context, message: &Received, error: &crate::decode::DecodeError) {
    tracing::warn!(
        message = "Invalid purchase event; sending it to the dead-letter queue.",
        error = %error,
        error_code = error.code(),
    );
    match retry_sqs(|| ctx.publisher.dead_letter(message, error)).await {
        Ok(()) => {
            crate::metrics::dead_lettered(error.code());
            acknowledge(ctx, message).await;
        }
        Err(e) => tracing::error!(
            message = "Failed to dead-letter an invalid purchase; it stays queued.",
            error = %crate::error_chain(&e),
        ),
    }
}

async fn acknowledge(ctx: &Context, message: &Received) {
    if let Err(e) = retry_sqs(|| ctx.acker.delete(&message.receipt_handle)).await {
        tracing::warn!(
            message = "Failed to delete a handled purchase; it will be decided again.",
            error = %crate::error_chain(&e),
        );
    }
}

/// A few quick retries for SQS calls whose failure would otherwise cost a redelivery.
async fn retry_sqs<T, E, F, Fut>(call: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error,
{
    call.retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_jitter()
            .with_max_times(3),
    )
    .notify(|e, delay| {
        tracing::warn!(message = "SQS call failed; retrying.", error = %e, retry_in_ms = delay.as_millis() as u64);
    })
    .await
}

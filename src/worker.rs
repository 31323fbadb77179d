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
use backon::{BackoffBuilder, Retryable};
use receipt_verifier_core::{FailureKind, Outcome, Pipeline, Policy, PurchaseEvent, Verdict};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, field};

use crate::ack::{Acker, requeue_delay};
use crate::batch::{Batcher, MAX_BATCH};
use crate::bootpay::{BootpayClient, BootpayConfig};
use crate::health::Readiness;
use crate::intake::Intake;
use crate::intake::PauseReason;
use crate::publish::{DeadLetter, PublishError, Publisher};
use crate::queues::Queues;
use crate::receive::{Received, receive};
use crate::sqs::{DeleteFlush, SendFlush, VisibilityFlush};

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
    pub policy: Policy,
    /// How long one purchase's transient Bootpay failures are retried in process.
    pub retry_budget: Duration,
}

/// How long releasing in-flight purchases may take once the grace period is over.
const RELEASE_WAIT: Duration = Duration::from_secs(10);
/// How many times one purchase is held through a Bootpay outage before it is handed back
/// to the queue instead: a receipt that fails on its own must not be held forever.
const MAX_HOLDS: u32 = 3;

struct Context {
    pipeline: Pipeline<Arc<BootpayClient>>,
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
        pipeline: Pipeline::new(bootpay.clone(), config.policy),
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
        if tokio::time::timeout(RELEASE_WAIT, tracker.wait())
            .await
            .is_err()
        {
            // Whatever is left is dropped with the runtime; its purchases come back
            // when their visibility runs out. Nothing was deleted without a decision.
            tracing::error!(
                message = "Exiting with purchases unfinished; SQS will redeliver them.",
                remaining = tracker.len(),
            );
            return Ok(());
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
    let error_backoff = crate::backoff::receive_errors();
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
    async {
        let stop_heartbeat = CancellationToken::new();
        let work = async {
            let finish = process(&ctx, &message).await;
            stop_heartbeat.cancel();
            finish
        };
        // The heartbeat's last change has landed before the final one is sent, so a late
        // extension cannot undo a release or shorten a requeue delay.
        let ((), finish) = tokio::join!(heartbeat(&ctx, &message, &stop_heartbeat), work);
        complete(&ctx, &message, finish).await;
    }
    .instrument(span)
    .await;
}

/// Keeps the message invisible while it is worked on, until `stop`.
async fn heartbeat(ctx: &Context, message: &Received, stop: &CancellationToken) {
    let every = (ctx.visibility_timeout / 3).max(Duration::from_secs(1));
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        crate::metrics::visibility_changed("heartbeat");
        if let Err(e) = ctx
            .acker
            .set_visibility(message, ctx.visibility_timeout)
            .await
        {
            tracing::warn!(message = "Failed to extend the purchase's visibility.", error = %e);
        }
    }
}

/// What is left to do with a purchase once its decision (if any) is published.
enum Finish {
    /// Its decision or dead letter is published: delete it.
    Delete,
    /// No decision yet: hand it back after this delay.
    Requeue { delay: Duration, why: &'static str },
    /// Shutting down: hand it back at once.
    Release,
    /// Publishing failed: leave it to come back when its visibility runs out.
    Leave,
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

async fn process(ctx: &Context, message: &Received) -> Finish {
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
        Step::Decided(verdict) => publish(ctx, message, &event, &verdict).await,
        Step::RetryLater { why, detail } => {
            let delay = requeue_delay(
                message.receive_count,
                ctx.config.requeue_base_delay,
                ctx.config.requeue_max_delay,
            );
            tracing::info!(
                message = "No decision yet; the purchase will be tried again.",
                why = %detail,
                retry_in_secs = delay.as_secs(),
            );
            Finish::Requeue { delay, why }
        }
        Step::Release => Finish::Release,
    }
}

/// Publishes the decision. While the result queue is unavailable, intake pauses and the
/// purchase is kept (its verification, and any confirm, is not repeated) until the queue
/// accepts it or the worker stops. A decision SQS refuses for its content (too large for
/// the result queue, say) would be refused forever: the purchase goes to the DLQ instead,
/// with the decision it got, so one odd purchase cannot stall the worker.
async fn publish(
    ctx: &Context,
    message: &Received,
    event: &PurchaseEvent,
    verdict: &Verdict,
) -> Finish {
    let mut waits = crate::backoff::result_queue_outage().build();
    loop {
        let attempt = || ctx.publisher.decision(message, event, verdict);
        match retry_sqs(attempt, |e: &PublishError| !e.is_refusal()).await {
            Ok(()) => break,
            Err(e) if e.is_refusal() => {
                // SQS answered, so the result queue is there; only this message is not.
                ctx.intake.resume_from(PauseReason::ResultQueueUnavailable);
                return refused(ctx, message, verdict, &e).await;
            }
            Err(e) => {
                tracing::error!(
                    message = "Failed to publish a decision; holding the purchase and pausing intake.",
                    error = %crate::error_chain(&e),
                );
                ctx.intake.pause(PauseReason::ResultQueueUnavailable);
                let wait = waits.next().unwrap_or(Duration::from_secs(30));
                tokio::select! {
                    biased;
                    _ = ctx.stop_intake.cancelled() => return Finish::Release,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    ctx.intake.resume_from(PauseReason::ResultQueueUnavailable);
    let processing = message.received_at.elapsed();
    let end_to_end = message.sent_at.and_then(|t| t.elapsed().ok());
    crate::metrics::decided(
        verdict.reason.decision().as_str(),
        verdict.reason.as_str(),
        processing,
        end_to_end,
    );
    tracing::info!(
        message = "Decision published.",
        decision = verdict.reason.decision().as_str(),
        reason = verdict.reason.as_str(),
        receipt_id = %event.receipt_id,
        order_id = %event.order_id,
        latency_ms = processing.as_millis() as u64,
        end_to_end_ms = end_to_end.map(|d| d.as_millis() as u64),
    );
    Finish::Delete
}

/// Verifies until there is an answer. While Bootpay refuses the credentials or is down,
/// the purchase is held (its heartbeat keeps it invisible, so its receive count does not
/// grow) until intake reopens or the worker stops.
async fn verify_patiently(ctx: &Context, event: &PurchaseEvent) -> Step {
    let mut holds = 0;
    loop {
        let retry_until = Instant::now() + ctx.config.retry_budget;
        let error = match ctx.pipeline.verify(event, retry_until).await {
            Outcome::Decided(verdict) => return Step::Decided(verdict),
            Outcome::NotFinal { status } => {
                return Step::RetryLater {
                    why: "not_final",
                    detail: format!("payment status {status} is not final"),
                };
            }
            Outcome::Unavailable(error) => error,
            Outcome::Invalid(_) => unreachable!("verify never decodes"),
        };
        let refused = error.kind() == FailureKind::CredentialsRefused;
        let outage = error.kind().is_transient() && ctx.intake.is_paused() && holds < MAX_HOLDS;
        if !refused && !outage {
            return Step::RetryLater {
                why: "bootpay_error",
                detail: crate::error_chain(&error),
            };
        }
        holds += 1;
        tracing::warn!(
            message = "Holding the purchase until Bootpay answers again.",
            error = %crate::error_chain(&error),
            holds,
        );
        tokio::select! {
            biased;
            _ = ctx.stop_intake.cancelled() => return Step::Release,
            () = ctx.intake.opened() => {}
        }
    }
}

async fn dead_letter(
    ctx: &Context,
    message: &Received,
    error: &receipt_verifier_core::DecodeError,
) -> Finish {
    tracing::warn!(
        message = "Invalid purchase event; sending it to the dead-letter queue.",
        error = %error,
        error_code = error.code(),
    );
    send_to_dlq(ctx, message, error.into()).await
}

/// The decision was reached but SQS will not take it.
async fn refused(
    ctx: &Context,
    message: &Received,
    verdict: &Verdict,
    error: &PublishError,
) -> Finish {
    let error = crate::error_chain(error);
    tracing::error!(
        message = "The result queue refuses this decision; sending the purchase to the dead-letter queue.",
        decision = verdict.reason.decision().as_str(),
        reason = verdict.reason.as_str(),
        error = %error,
    );
    let letter = DeadLetter {
        code: "decision_refused",
        error,
        verdict: Some(verdict),
    };
    send_to_dlq(ctx, message, letter).await
}

async fn send_to_dlq(ctx: &Context, message: &Received, letter: DeadLetter<'_>) -> Finish {
    let sent = retry_sqs(
        || ctx.publisher.dead_letter(message, &letter),
        |e: &PublishError| !e.is_refusal(),
    );
    match sent.await {
        Ok(()) => {
            crate::metrics::dead_lettered(letter.code);
            Finish::Delete
        }
        Err(e) => {
            // Left on the queue, SQS's own redrive moves it to the same DLQ in the end.
            tracing::error!(
                message = "Failed to dead-letter a purchase; it stays queued.",
                error = %crate::error_chain(&e),
            );
            Finish::Leave
        }
    }
}

async fn complete(ctx: &Context, message: &Received, finish: Finish) {
    let result = match finish {
        Finish::Delete => retry_sqs(|| ctx.acker.delete(&message.receipt_handle), |_| true)
            .await
            .map_err(|e| {
                (
                    "Failed to delete a handled purchase; it will be decided again.",
                    e,
                )
            }),
        Finish::Requeue { delay, why } => {
            crate::metrics::requeued(why);
            crate::metrics::visibility_changed("requeue");
            ctx.acker
                .set_visibility(message, delay)
                .await
                .map_err(|e| ("Failed to delay the purchase.", e))
        }
        Finish::Release => {
            crate::metrics::visibility_changed("release");
            tracing::info!(message = "Releasing the purchase for another worker.");
            ctx.acker
                .set_visibility(message, Duration::ZERO)
                .await
                .map_err(|e| ("Failed to release the purchase.", e))
        }
        Finish::Leave => Ok(()),
    };
    if let Err((what, e)) = result {
        tracing::warn!(message = what, error = %crate::error_chain(&e));
    }
}

/// A few quick retries, of failures that `worth_retrying` admits, for SQS calls whose
/// failure would otherwise cost a redelivery.
async fn retry_sqs<T, E, F, Fut>(call: F, worth_retrying: impl FnMut(&E) -> bool) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error,
{
    call.retry(crate::backoff::sqs_call())
    .when(worth_retrying)
    .notify(|e, delay| {
        tracing::warn!(message = "SQS call failed; retrying.", error = %e, retry_in_ms = delay.as_millis() as u64);
    })
    .await
}

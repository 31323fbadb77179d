//! The poller (`receipt-verifier run`): receive → decode → verify → publish →
//! acknowledge, for up to `concurrency` purchases at once.
//!
//! Invariants:
//! - a purchase is deleted only after its decision (or, for a malformed body, its dead
//!   letter) has been accepted by SQS; every other path leaves it on the queue;
//! - verification concurrency is a semaphore (the slots), not the receive batch, and
//!   receives run a little ahead of it: received purchases wait for a slot (heartbeated
//!   like the rest), so a slot that frees is refilled at once, and a slot is given back
//!   once the purchase is decided, before its publish; one slow receipt holds up nobody;
//! - while a purchase is being worked on, a heartbeat keeps it invisible;
//! - on shutdown, receiving stops at once (the long poll is dropped) and in-flight
//!   purchases finish, or are released with visibility 0, within the grace period.
//!
//! [`Start::begin`] installs the metrics recorder, builds the Bootpay client and checks
//! its credentials while the caller looks up the queues and the ledger, [`Poller::build`]
//! wires it up, [`Poller::run_until_stopped`] receives until the shutdown signal,
//! [`Poller::shutdown`] drains what is in flight.

mod intake;
mod purchase;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use backon::BackoffBuilder;
use metrics_exporter_prometheus::PrometheusHandle;
use receipt_verifier_core::{Pipeline, Policy};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use self::intake::{Intake, IntakeState};
use self::purchase::Context;
use crate::bootpay::{BootpayClient, BootpayConfig, BootpayError};
use crate::ledger::AnyLedger;
use crate::observability::health::{self, Readiness};
use crate::runtime::join;
use crate::sqs::batch::{Batcher, MAX_BATCH};
use crate::sqs::message::receive;
use crate::sqs::{
    Acker, DeleteFlush, Publisher, Queues, Requeue, SendFlush, Settler, VisibilityChanger,
    VisibilityFlush,
};

pub use self::intake::PauseReason;

/// Tuning for one worker process. See `receipt-verifier run --help` for each field.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub concurrency: usize,
    pub receive_wait: Duration,
    pub requeue: Requeue,
    pub shutdown_grace: Duration,
    pub batch_linger: Duration,
    pub probe_min_delay: Duration,
    pub probe_max_delay: Duration,
    pub policy: Policy,
    /// How long one purchase's transient Bootpay failures are retried in process.
    pub retry_budget: Duration,
    /// With a ledger: how often to sweep it, and how far back.
    pub sweep: Option<(Duration, Duration)>,
}

/// How long releasing in-flight purchases may take once the grace period is over.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Runs the worker until `shutdown` completes and in-flight work is finished or released.
///
/// # Errors
/// When the Bootpay client could not be built.
pub async fn run(
    sqs: Client,
    queues: Queues,
    start: Start,
    ledger: AnyLedger,
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let poller = Poller::build(sqs, queues, start, ledger, config).await?;
    let in_flight = poller.run_until_stopped(shutdown).await;
    poller.shutdown(in_flight).await;
    Ok(())
}

/// What the poller starts before the queues and the ledger are looked up, since none of
/// it needs them: the metrics recorder and the health address (first, so that what
/// follows is counted), the Bootpay client (which loads the TLS roots) and its credentials
/// check (a round trip to Bootpay). The first receive still waits for the check, so a
/// worker whose credentials are refused takes nothing off the queue.
pub struct Start {
    health: Option<(tokio::net::TcpListener, PrometheusHandle)>,
    intake: Arc<Intake>,
    client: oneshot::Receiver<Result<Arc<BootpayClient>, BootpayError>>,
    /// Turns `true` once the credentials check has an answer.
    checked: watch::Receiver<bool>,
}

impl Start {
    /// Installs the metrics recorder and binds `metrics_addr`, then builds the Bootpay
    /// client and checks the credentials in a task of their own.
    ///
    /// # Errors
    /// When the recorder cannot be installed or the address cannot be bound.
    pub async fn begin(
        metrics_addr: Option<SocketAddr>,
        bootpay: BootpayConfig,
        outage_threshold: u32,
    ) -> anyhow::Result<Self> {
        let health = match metrics_addr {
            Some(addr) => Some(health::listen(addr).await?),
            None => None,
        };
        let intake = Arc::new(Intake::new(outage_threshold));
        let observer = intake.clone();
        let (client_tx, client) = oneshot::channel();
        let (checked_tx, checked) = watch::channel(false);
        tokio::spawn(async move {
            let bootpay = match BootpayClient::new(bootpay, move |o| observer.observe(o)) {
                Ok(bootpay) => Arc::new(bootpay),
                Err(e) => {
                    let _ = client_tx.send(Err(e));
                    return;
                }
            };
            let _ = client_tx.send(Ok(bootpay.clone()));
            // Learn at once whether Bootpay takes the credentials; a refusal pauses intake.
            if let Err(e) = bootpay.check_credentials().await {
                let what = if bootpay.uses_tokens() {
                    "Bootpay did not issue a token at start-up."
                } else {
                    "Bootpay did not answer a probe at start-up."
                };
                tracing::error!(message = what, error = %crate::error_chain(&e));
            }
            let _ = checked_tx.send(true);
        });
        Ok(Self {
            health,
            intake,
            client,
            checked,
        })
    }
}

/// A built poller and the tasks it owns.
pub struct Poller {
    ctx: Arc<Context>,
    sqs: Client,
    queues: Queues,
    config: WorkerConfig,
    bootpay: Arc<BootpayClient>,
    /// Turns `true` once Bootpay has answered the start-up credentials check.
    bootpay_checked: watch::Receiver<bool>,
    intake: Arc<Intake>,
    readiness: Arc<Readiness>,
    /// The four batchers' tasks; they end once every handle to them is dropped.
    batchers: Vec<JoinHandle<()>>,
    health: Option<(JoinHandle<()>, CancellationToken)>,
}

impl Poller {
    /// Takes the Bootpay client once it is built, and starts the batchers and, with a
    /// metrics address, the health server.
    ///
    /// # Errors
    /// When the Bootpay client could not be built.
    pub async fn build(
        sqs: Client,
        queues: Queues,
        start: Start,
        ledger: AnyLedger,
        config: WorkerConfig,
    ) -> anyhow::Result<Self> {
        let Start {
            health,
            intake,
            client,
            checked,
        } = start;
        let bootpay = client
            .await
            .map_err(|_| anyhow::anyhow!("the Bootpay client was not built"))??;
        let readiness = Arc::new(Readiness::default());
        let health = health.map(|listening| serve_health(listening, &readiness, &intake, &bootpay));
        let linger = config.batch_linger;
        let send = |queue_url: &str| SendFlush {
            sqs: sqs.clone(),
            queue_url: queue_url.to_owned(),
        };
        let (results, results_task) = Batcher::spawn(send(&queues.result_url), linger);
        let (dead_letters, dead_letters_task) =
            Batcher::spawn(send(&queues.dead_letter_url), linger);
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
        let publisher = Publisher::new(
            results,
            &queues.result_url,
            dead_letters,
            &queues.dead_letter_url,
        );
        let ctx = Arc::new(Context {
            pipeline: Pipeline::with_ledger(bootpay.clone(), ledger, config.policy),
            intake: intake.clone(),
            settler: Settler::new(publisher, config.requeue),
            acker: Acker::new(deletes, VisibilityChanger::new(visibility)),
            retry_budget: config.retry_budget,
            visibility_timeout: queues.visibility_timeout,
            stop_intake: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            slots: Arc::new(Semaphore::new(config.concurrency)),
        });
        Ok(Self {
            ctx,
            sqs,
            queues,
            config,
            bootpay,
            bootpay_checked: checked,
            intake,
            readiness,
            batchers: vec![
                results_task,
                dead_letters_task,
                deletes_task,
                visibility_task,
            ],
            health,
        })
    }

    /// Receives and verifies purchases until `shutdown` completes; returns the purchases
    /// still in flight.
    pub async fn run_until_stopped(
        &self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> InFlight {
        let stop = self.ctx.stop_intake.clone();
        let watcher = tokio::spawn({
            let (stop, readiness) = (stop.clone(), self.readiness.clone());
            async move {
                tokio::select! {
                    () = shutdown => {
                        readiness.stopping();
                        tracing::info!(
                            message = "Shutdown requested: no more receives; finishing in-flight purchases."
                        );
                        stop.cancel();
                    }
                    // Stopped some other way: nothing to watch for.
                    () = stop.cancelled() => {}
                }
            }
        });
        let prober = tokio::spawn({
            let (intake, bootpay, stop) = (self.intake.clone(), self.bootpay.clone(), stop.clone());
            let (min, max) = (self.config.probe_min_delay, self.config.probe_max_delay);
            async move { intake.probe_while_paused(&bootpay, min, max, stop).await }
        });

        let sweeper = self.spawn_sweeps(&stop);
        // The first receive waits for the credentials check (a refusal has paused intake
        // by then). Err: the check's task ended without an answer; intake decides.
        let mut checked = self.bootpay_checked.clone();
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = checked.wait_for(|done| *done) => {}
        }
        tracing::info!(
            message = "Worker started.",
            purchase_queue = %self.queues.purchase_url,
            result_queue = %self.queues.result_url,
            dead_letter_queue = %self.queues.dead_letter_url,
            visibility_timeout_secs = self.queues.visibility_timeout.as_secs(),
            max_receive_count = self.queues.max_receive_count,
            concurrency = self.config.concurrency,
            ledger_table = self.ctx.pipeline.ledger().dynamodb().map(|l| l.table()),
        );
        let mut tasks = JoinSet::new();
        self.receive_loop(&mut tasks).await;
        stop.cancel();
        InFlight {
            tasks,
            background: [watcher, prober].into_iter().chain(sweeper).collect(),
        }
    }

    /// With a ledger and a sweep interval, sweeps the ledger periodically until `stop`.
    fn spawn_sweeps(&self, stop: &CancellationToken) -> Option<JoinHandle<()>> {
        let (interval, window) = self.config.sweep?;
        self.ctx.pipeline.ledger().dynamodb()?;
        let (ctx, sqs, url, stop) = (
            self.ctx.clone(),
            self.sqs.clone(),
            self.queues.purchase_url.clone(),
            stop.clone(),
        );
        Some(tokio::spawn(async move {
            if let Some(ledger) = ctx.pipeline.ledger().dynamodb() {
                crate::ledger::sweep::every(ledger, &sqs, &url, interval, window, stop).await;
            }
        }))
    }

    async fn receive_loop(&self, tasks: &mut JoinSet<()>) {
        let ctx = &self.ctx;
        let stop = &ctx.stop_intake;
        let batch = self.config.concurrency.clamp(1, MAX_BATCH);
        // Purchases held at once: verifying (at most `concurrency`), waiting for a slot, or
        // being published and acknowledged. A receive for `batch` more is issued while
        // the last ones still wait, so the slots never wait on a receive's round trip;
        // receives stay full, so SQS requests per decision stay where they were.
        let held = Arc::new(Semaphore::new(self.config.concurrency + 3 * batch));
        let batch = batch as u32;
        let error_backoff = crate::backoff::receive_errors();
        let mut delays = error_backoff.build();
        loop {
            reap(tasks);
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                () = ctx.intake.opened() => {}
            }
            let mut permits = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                p = held.clone().acquire_many_owned(batch) => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let received = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                r = receive(&self.sqs, &self.queues.purchase_url, batch as i32, self.config.receive_wait) => r,
            };
            self.readiness.receive_succeeded(received.is_ok());
            match received {
                Ok(messages) => {
                    delays = error_backoff.build();
                    for message in messages {
                        let Some(permit) = permits.split(1) else {
                            break;
                        };
                        // Boxed: a purchase's future is several KiB, and the runtime
                        // moves a task's future by value when it spawns, polls to the
                        // end and reaps it; a box is moved as a pointer.
                        tasks.spawn(Box::pin(purchase::handle(ctx.clone(), message, permit)));
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

    /// Waits for in-flight purchases (releasing those still being verified when the
    /// grace period ends), then stops the batchers and the health server.
    pub async fn shutdown(self, mut in_flight: InFlight) {
        let remaining = in_flight.tasks.len();
        if remaining > 0 {
            tracing::info!(
                message = "Waiting for in-flight purchases.",
                in_flight = remaining
            );
        }
        if tokio::time::timeout(self.config.shutdown_grace, drain(&mut in_flight.tasks))
            .await
            .is_err()
        {
            tracing::warn!(
                message = "Grace period over: releasing purchases still being verified.",
                remaining = in_flight.tasks.len(),
            );
            self.ctx.hard_stop.cancel();
            if tokio::time::timeout(RELEASE_WAIT, drain(&mut in_flight.tasks))
                .await
                .is_err()
            {
                // The rest are aborted; their purchases come back when their visibility
                // runs out. Nothing was deleted without a decision.
                tracing::error!(
                    message = "Exiting with purchases unfinished; SQS will redeliver them.",
                    remaining = in_flight.tasks.len(),
                );
                return;
            }
        }
        for task in in_flight.background {
            join(task).await;
        }
        // The batchers end once the last handle (in the context) is dropped and what was
        // submitted has been sent.
        drop(self.ctx);
        for task in self.batchers {
            join(task).await;
        }
        if let Some((task, stop)) = self.health {
            stop.cancel();
            join(task).await;
        }
        tracing::info!(message = "Worker stopped.");
    }
}

/// The purchases being worked on when receiving stopped, and the poller's own tasks.
pub struct InFlight {
    tasks: JoinSet<()>,
    background: Vec<JoinHandle<()>>,
}

/// Collects finished purchase tasks, re-raising a panic.
fn reap(tasks: &mut JoinSet<()>) {
    while let Some(done) = tasks.try_join_next() {
        resume_panic(done);
    }
}

async fn drain(tasks: &mut JoinSet<()>) {
    while let Some(done) = tasks.join_next().await {
        resume_panic(done);
    }
}

fn resume_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// What the poller's `/readyz` checks.
struct PollerReadiness {
    readiness: Arc<Readiness>,
    intake: Arc<Intake>,
    bootpay: Arc<BootpayClient>,
}

impl health::Ready for PollerReadiness {
    fn not_ready(&self) -> Option<String> {
        if self.readiness.is_stopping() {
            return Some("shutting down".into());
        }
        if let IntakeState::Paused(reason) = self.intake.state() {
            return Some(format!("intake paused ({})", reason.as_str()));
        }
        if !self.readiness.is_receiving() {
            return Some("receiving from the purchase queue fails".into());
        }
        if !self.bootpay.is_authorised() {
            return Some("no valid Bootpay token".into());
        }
        None
    }
}

fn serve_health(
    (listener, metrics): (tokio::net::TcpListener, PrometheusHandle),
    readiness: &Arc<Readiness>,
    intake: &Arc<Intake>,
    bootpay: &Arc<BootpayClient>,
) -> (JoinHandle<()>, CancellationToken) {
    let stop = CancellationToken::new();
    let ready = Arc::new(PollerReadiness {
        readiness: readiness.clone(),
        intake: intake.clone(),
        bootpay: bootpay.clone(),
    });
    let task = tokio::spawn(health::serve(listener, metrics, ready, stop.clone()));
    (task, stop)
}

//! One purchase in the poller, from receive to acknowledgement: a heartbeat keeps it
//! invisible while the pipeline decides it; the outcome is settled (published, or turned
//! into a delay); the disposition is applied.
//!
//! While Bootpay refuses the credentials or is down, the purchase is held (its receive
//! count does not grow) until intake reopens; while the result queue is unavailable, its
//! decision is held (verification, and any confirm, is not repeated) until the queue
//! takes it. On shutdown a held purchase is released at once.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use receipt_verifier_core::{Deadline, FailureKind, Outcome};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field};

use super::intake::{Intake, PauseReason};
use crate::observability::metrics;
use crate::sqs::settle::with_retries;
use crate::sqs::{Acker, Disposition, PurchaseMessage, Settler};

/// How many times one purchase is held through a Bootpay outage before it is handed back
/// to the queue instead: a receipt that fails on its own must not be held forever.
const MAX_HOLDS: u32 = 3;

/// What every purchase task shares.
pub(super) struct Context {
    pub pipeline: crate::runtime::Core,
    pub intake: Arc<Intake>,
    pub settler: Settler,
    pub acker: Acker,
    pub retry_budget: Duration,
    pub visibility_timeout: Duration,
    /// Cancelled on SIGTERM/SIGINT: stop receiving, release held purchases.
    pub stop_intake: CancellationToken,
    /// Cancelled when the grace period is over: abandon verification and release.
    pub hard_stop: CancellationToken,
    /// One per purchase being decided (`WORKER_CONCURRENCY`).
    pub slots: Arc<Semaphore>,
}

/// Counts a purchase in flight for as long as it lives.
struct InFlight;

impl InFlight {
    fn start() -> Self {
        metrics::in_flight(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::in_flight(-1.0);
    }
}

/// Handles one received purchase; `_held` counts it among the purchases the poller holds
/// until it is acknowledged.
pub(super) async fn handle(
    ctx: Arc<Context>,
    message: PurchaseMessage,
    _held: OwnedSemaphorePermit,
) {
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
            let disposition = match wait_for_slot(&ctx).await {
                Some(slot) => decide_and_settle(&ctx, &message, slot).await,
                // Stopping before it started: another worker takes it at once.
                None => Disposition::Release,
            };
            stop_heartbeat.cancel();
            disposition
        };
        // The heartbeat's last change has landed before the final one is sent, so a late
        // extension cannot undo a release or shorten a requeue delay.
        let ((), disposition) = tokio::join!(heartbeat(&ctx, &message, &stop_heartbeat), work);
        apply(&ctx, &message, disposition).await;
    }
    .instrument(span)
    .await;
}

/// A slot to decide the purchase in, once intake is open, or `None` when the worker stops
/// first. A purchase received ahead must not start while intake is paused: that is when
/// Bootpay, the ledger or the result queue is not answering.
async fn wait_for_slot(ctx: &Context) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        biased;
        _ = ctx.stop_intake.cancelled() => None,
        slot = async {
            let slot = ctx.slots.clone().acquire_owned().await.ok()?;
            ctx.intake.opened().await;
            Some(slot)
        } => slot,
    }
}

/// Keeps the message invisible while it is worked on, until `stop`.
async fn heartbeat(ctx: &Context, message: &PurchaseMessage, stop: &CancellationToken) {
    let every = (ctx.visibility_timeout / 3).max(Duration::from_secs(1));
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        metrics::visibility_changed("heartbeat");
        if let Err(e) = ctx
            .acker
            .visibility
            .set(message, ctx.visibility_timeout)
            .await
        {
            tracing::warn!(message = "Failed to extend the purchase's visibility.", error = %e);
        }
    }
}

/// Decides in `slot`, and gives the slot back before publishing: a slot bounds the
/// purchases being verified, and waiting for a publish batch to fill is not verifying.
async fn decide_and_settle(
    ctx: &Context,
    message: &PurchaseMessage,
    slot: OwnedSemaphorePermit,
) -> Disposition {
    let in_flight = InFlight::start();
    let decided = tokio::select! {
        biased;
        _ = ctx.hard_stop.cancelled() => None,
        decided = decide_patiently(ctx, message) => decided,
    };
    drop((in_flight, slot));
    match decided {
        Some(outcome) => settle_patiently(ctx, message, &outcome).await,
        None => Disposition::Release,
    }
}

/// Runs the pipeline. While Bootpay refuses the credentials or is down, or the ledger
/// does not answer, holds the message until intake reopens (or, for the ledger, after a
/// growing wait), then tries again. `None` when the worker stops meanwhile.
async fn decide_patiently(ctx: &Context, message: &PurchaseMessage) -> Option<Outcome> {
    // A slow answer may take its whole request timeout: the heartbeat keeps the message
    // invisible meanwhile, so only retries are bounded.
    let deadline = || Deadline::retrying_for(ctx.retry_budget);
    let inbound = message.inbound();
    let mut outcome = ctx
        .pipeline
        .handle(inbound, &message.body, deadline())
        .await;
    let mut holds = 0;
    let mut ledger_waits = crate::backoff::result_queue_outage().build();
    loop {
        match &outcome {
            Outcome::Unavailable(error) => {
                let kind = error.kind();
                let refused = kind == FailureKind::CredentialsRefused;
                let outage = kind.is_transient() && ctx.intake.is_paused() && holds < MAX_HOLDS;
                if !refused && !outage {
                    break;
                }
                holds += 1;
                tracing::warn!(
                    message = "Holding the purchase until Bootpay answers again.",
                    error = %crate::error_chain(error),
                    holds,
                );
                tokio::select! {
                    biased;
                    _ = ctx.stop_intake.cancelled() => return None,
                    () = ctx.intake.opened() => {}
                }
            }
            Outcome::LedgerUnavailable(error) => {
                tracing::error!(
                    message = "The ledger does not answer; holding the message and pausing intake.",
                    error = %crate::error_chain(error),
                );
                ctx.intake.pause(PauseReason::LedgerUnavailable);
                let wait = ledger_waits.next().unwrap_or(Duration::from_secs(30));
                tokio::select! {
                    biased;
                    _ = ctx.stop_intake.cancelled() => return None,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            _ => break,
        }
        outcome = ctx
            .pipeline
            .handle(inbound, &message.body, deadline())
            .await;
    }
    if !matches!(outcome, Outcome::LedgerUnavailable(_)) {
        ctx.intake.resume_from(PauseReason::LedgerUnavailable);
    }
    Some(outcome)
}

/// Settles the outcome. While the result queue is unavailable, intake pauses and the
/// message is kept until the queue accepts its decision or the worker stops.
async fn settle_patiently(
    ctx: &Context,
    message: &PurchaseMessage,
    outcome: &Outcome,
) -> Disposition {
    let mut waits = crate::backoff::result_queue_outage().build();
    loop {
        match ctx.settler.settle(message, outcome).await {
            Ok(disposition) => {
                if outcome.message().is_some() {
                    // The result queue answered, so it is there.
                    ctx.intake.resume_from(PauseReason::ResultQueueUnavailable);
                }
                return disposition;
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
                    _ = ctx.stop_intake.cancelled() => return Disposition::Release,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

async fn apply(ctx: &Context, message: &PurchaseMessage, disposition: Disposition) {
    let result = match disposition {
        Disposition::Ack(proof) => with_retries(|| ctx.acker.delete(message, &proof), |_| true)
            .await
            .map_err(|e| {
                (
                    "Failed to delete a handled purchase; it will be decided again.",
                    e,
                )
            }),
        Disposition::Delay { delay, .. } => {
            metrics::visibility_changed("requeue");
            ctx.acker
                .visibility
                .set(message, delay)
                .await
                .map_err(|e| ("Failed to delay the purchase.", e))
        }
        Disposition::Release => {
            metrics::visibility_changed("release");
            tracing::info!(message = "Releasing the purchase for another worker.");
            ctx.acker
                .visibility
                .set(message, Duration::ZERO)
                .await
                .map_err(|e| ("Failed to release the purchase.", e))
        }
        Disposition::Hold => Ok(()),
    };
    if let Err((what, e)) = result {
        tracing::warn!(message = what, error = %crate::error_chain(&e));
    }
}

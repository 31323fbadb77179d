//! The reconciliation sweep: re-checks the receipts no webhook may report on. A cancel
//! made in the PG's own console sends nothing, neither does a deposit deadline that
//! passes, and Bootpay gives up on a webhook after ten failed deliveries.
//!
//! The sweep decides nothing itself: it finds candidates in the ledger's state index
//! (every receipt awaiting a deposit; fulfilled and revoked receipts changed within the
//! look-back window) and queues a notification for each on the purchase queue. Workers
//! handle them like a webhook's: re-fetch the receipt, then fulfil, expire or revoke
//! through the ledger's compare-and-set.
//!
//! Inside `run`, a lease item in the ledger lets one worker sweep per interval, however
//! many are running. Its key holds a space, which no receipt id may, so it can never be
//! a receipt's entry.

use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use receipt_verifier_core::notification::{NOTIFICATION_TYPE, Source, TYPE_ATTRIBUTE};
use receipt_verifier_core::{LedgerState, Notification};
use tokio_util::sync::CancellationToken;

use super::DynamoLedger;
use crate::sqs::{EntryError, Flush, MAX_BATCH, Outgoing, SendFlush, string_attribute};

/// The key of the item that holds the sweep lease.
pub const LEASE_KEY: &str = "sweep lease";
/// Most receipts one sweep queues notifications for (the rest wait for the next sweep).
const MAX_PER_SWEEP: usize = 100_000;

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub awaiting_deposit: usize,
    pub fulfilled: usize,
    pub revoked: usize,
    pub queued: usize,
    pub failed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("reading the ledger failed: {0}")]
    Ledger(#[from] receipt_verifier_core::LedgerError),
    #[error("the sweep lease could not be taken: {0}")]
    Lease(String),
}

/// Finds the receipts to re-check and queues a notification for each.
///
/// # Errors
/// When the ledger cannot be read. Notifications SQS refused are counted, not errors:
/// the next sweep tries them again.
pub async fn sweep(
    ledger: &DynamoLedger,
    sqs: &aws_sdk_sqs::Client,
    purchase_queue_url: &str,
    window: Duration,
) -> Result<SweepReport, SweepError> {
    let now = SystemTime::now();
    let since = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
    let awaiting = ledger
        .list(
            LedgerState::AwaitingDeposit,
            SystemTime::UNIX_EPOCH,
            MAX_PER_SWEEP,
        )
        .await?;
    let fulfilled = ledger
        .list(LedgerState::Fulfilled, since, MAX_PER_SWEEP)
        .await?;
    let revoked = ledger
        .list(LedgerState::Revoked, since, MAX_PER_SWEEP)
        .await?;
    let mut report = SweepReport {
        awaiting_deposit: awaiting.len(),
        fulfilled: fulfilled.len(),
        revoked: revoked.len(),
        ..SweepReport::default()
    };
    let fifo = purchase_queue_url.ends_with(".fifo");
    let started = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let outgoing: Vec<Outgoing> = awaiting
        .iter()
        .chain(&fulfilled)
        .chain(&revoked)
        .filter_map(|entry| Notification::new(&entry.receipt_id, Source::Sweep, None, None).ok())
        .map(|note| Outgoing {
            attributes: [(
                TYPE_ATTRIBUTE.to_owned(),
                string_attribute(NOTIFICATION_TYPE),
            )]
            .into(),
            // On a FIFO queue, one group per receipt; a sweep's notification is
            // deduplicated within that sweep only.
            fifo: fifo.then(|| {
                (
                    note.receipt_id.clone(),
                    format!("sweep-{started}-{}", short_hash(&note.receipt_id)),
                )
            }),
            body: note.to_json(),
        })
        .collect();
    let sender = SendFlush {
        sqs: sqs.clone(),
        queue_url: purchase_queue_url.to_owned(),
    };
    let mut outgoing = outgoing.into_iter().peekable();
    while outgoing.peek().is_some() {
        let chunk: Vec<Outgoing> = outgoing.by_ref().take(MAX_BATCH).collect();
        let results: Vec<Result<(), EntryError>> = sender.flush(chunk).await;
        for result in results {
            match result {
                Ok(()) => report.queued += 1,
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(
                        message = "Could not queue a sweep notification; the next sweep tries again.",
                        error = %e,
                    );
                }
            }
        }
    }
    tracing::info!(
        message = "Sweep done.",
        awaiting_deposit = report.awaiting_deposit,
        fulfilled = report.fulfilled,
        revoked = report.revoked,
        queued = report.queued,
        failed = report.failed,
        window_secs = window.as_secs(),
    );
    Ok(report)
}

fn short_hash(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Takes the sweep lease for `hold` unless another holder's lease is still running.
/// Returns whether this holder may sweep now.
///
/// # Errors
/// When DynamoDB does not answer.
pub async fn take_lease(
    ledger: &DynamoLedger,
    holder: &str,
    hold: Duration,
) -> Result<bool, SweepError> {
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let until = now_ms + hold.as_millis();
    let put = ledger
        .client()
        .put_item()
        .table_name(ledger.table())
        .item(super::dynamodb::KEY, AttributeValue::S(LEASE_KEY.into()))
        .item("lease_holder", AttributeValue::S(holder.into()))
        .item("lease_until", AttributeValue::N(until.to_string()))
        .condition_expression("attribute_not_exists(receipt_id) OR lease_until < :now")
        .expression_attribute_values(":now", AttributeValue::N(now_ms.to_string()))
        .send()
        .await;
    match put {
        Ok(_) => Ok(true),
        Err(SdkError::ServiceError(e))
            if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
        {
            Ok(false)
        }
        Err(e) => Err(SweepError::Lease(crate::error_chain(&e))),
    }
}

/// Sweeps every `interval` until `stop`, taking the lease first so that one worker of
/// many sweeps each time. The first sweep comes one interval after start-up.
pub async fn every(
    ledger: &DynamoLedger,
    sqs: &aws_sdk_sqs::Client,
    purchase_queue_url: &str,
    interval: Duration,
    window: Duration,
    stop: CancellationToken,
) {
    let holder = format!(
        "{}-{}-{:08x}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into()),
        std::process::id(),
        fastrand::u32(..)
    );
    // Jitter spreads the workers' attempts at the lease.
    let first = interval
        + Duration::from_millis(fastrand::u64(
            ..=interval.as_millis().min(60_000) as u64 / 10,
        ));
    let mut wait = first;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = interval;
        // A lease a little shorter than the interval, so the next sweep is never blocked
        // by this one's.
        match take_lease(ledger, &holder, interval.mul_f64(0.9)).await {
            Ok(true) => {
                if let Err(e) = sweep(ledger, sqs, purchase_queue_url, window).await {
                    tracing::error!(message = "Sweep failed; trying again next interval.", error = %e);
                }
            }
            Ok(false) => tracing::debug!(message = "Another worker holds the sweep lease."),
            Err(e) => tracing::warn!(message = "Could not take the sweep lease.", error = %e),
        }
    }
}

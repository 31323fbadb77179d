//! The Lambda runtime (`receipt-verifier-lambda`): the records of an SQS event in,
//! `batchItemFailures` out.
//!
//! Invariants:
//! - a record is reported successful only after its decision or dead letter was accepted
//!   by SQS (its disposition is [`Disposition::Ack`], which only a publish can make);
//! - an undecided record is handed back with the same growing delay `run` uses
//!   (`ChangeMessageVisibility`, then reported failed);
//! - verification stops at the cutoff — the invocation's deadline less
//!   [`Settings::deadline_reserve`] — so publishing and reporting always have their time:
//!   no record starts with less than a second left, no Bootpay request or retry outlives
//!   the cutoff, and a record still being verified there is handed back;
//! - when Bootpay refuses the credentials, or answers none of the records it was asked
//!   about, the invocation fails (the event source mapping then backs off), after the
//!   records already settled are deleted; nothing is rejected or dead-lettered for it;
//! - on a FIFO queue, the records of one message group are verified in order, and after
//!   the first one left undecided the rest of its group are reported failed untouched.
//!
//! There is no intake gate and no heartbeat: the event source mapping is the brake, and
//! the purchase queue's visibility timeout (at least six times the function's timeout)
//! outlasts any invocation.

mod record;
mod report;
mod sources;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::Client;
use lambda_runtime::{Diagnostic, LambdaEvent};
use receipt_verifier_core::{Pipeline, Policy};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use self::record::{Health, Record, RecordResult};
use self::report::Invocation;
use self::sources::Sources;
use crate::bootpay::{BootpayClient, BootpayConfig};
use crate::observability::counters::Counters;
use crate::sqs::batch::Batcher;
use crate::sqs::{Requeue, SendFlush};

/// The function's tuning, from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most records of one invocation verified at once.
    pub concurrency: usize,
    pub policy: Policy,
    pub retry_budget: Duration,
    /// Kept back before the deadline for publishing and reporting.
    pub deadline_reserve: Duration,
    pub requeue: Requeue,
    pub batch_linger: Duration,
}

/// What one execution environment keeps between invocations: the Bootpay client (and
/// its token), the SQS client, the result-queue batcher and the resolved source queues.
pub struct Function {
    pipeline: crate::runtime::Core,
    sources: Sources,
    settings: Settings,
    counters: Option<Counters>,
    function_name: String,
}

/// Why an invocation failed as a whole. Each has a stable `errorType`.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error("Bootpay refused the credentials: {0}")]
    CredentialsRefused(String),
    #[error("Bootpay answered none of the {records} records it was asked about: {detail}")]
    BootpayUnavailable { records: usize, detail: String },
    #[error(transparent)]
    SourceQueue(#[from] sources::SourceError),
    #[error("the event is not an SQS event this function can handle: {0}")]
    MalformedEvent(String),
}

impl InvocationError {
    fn error_type(&self) -> &'static str {
        match self {
            Self::CredentialsRefused(_) => "CredentialsRefused",
            Self::BootpayUnavailable { .. } => "BootpayUnavailable",
            Self::SourceQueue(_) => "SourceQueueUnusable",
            Self::MalformedEvent(_) => "MalformedEvent",
        }
    }
}

impl From<InvocationError> for Diagnostic {
    fn from(error: InvocationError) -> Self {
        Self {
            error_type: error.error_type().to_owned(),
            error_message: crate::error_chain(&error),
        }
    }
}

impl Function {
    /// Builds what every invocation of this execution environment shares.
    ///
    /// # Errors
    /// When the Bootpay client cannot be built.
    pub fn new(
        sqs: Client,
        result_url: &str,
        bootpay: BootpayConfig,
        ledger: crate::ledger::AnyLedger,
        settings: Settings,
        counters: Option<Counters>,
    ) -> anyhow::Result<Self> {
        let bootpay = Arc::new(BootpayClient::new(bootpay, |_| {})?);
        let (results, _task) = Batcher::spawn(
            SendFlush {
                sqs: sqs.clone(),
                queue_url: result_url.to_owned(),
            },
            settings.batch_linger,
        );
        Ok(Self {
            pipeline: Pipeline::with_ledger(bootpay, ledger, settings.policy),
            sources: Sources::new(sqs, results, result_url.to_owned(), settings.clone()),
            settings,
            counters,
            function_name: std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default(),
        })
    }

    /// Handles one invocation.
    ///
    /// # Errors
    /// An [`InvocationError`] fails the whole batch: nothing is deleted by the event
    /// source mapping, and it backs off.
    pub async fn handle(
        self: Arc<Self>,
        event: LambdaEvent<SqsEvent>,
    ) -> Result<SqsBatchResponse, InvocationError> {
        let started = Instant::now();
        let cutoff = cutoff(event.context.deadline, self.settings.deadline_reserve);
        let mut invocation = Invocation::start(self.counters.as_ref(), event.payload.records.len());
        let result = self
            .clone()
            .verify_all(event.payload, cutoff, &mut invocation)
            .await;
        invocation.finish(
            &self.function_name,
            started.elapsed(),
            result.as_ref().err(),
        );
        result
    }

    async fn verify_all(
        self: Arc<Self>,
        event: SqsEvent,
        cutoff: Instant,
        invocation: &mut Invocation,
    ) -> Result<SqsBatchResponse, InvocationError> {
        let mut lanes: Vec<Vec<Record>> = Vec::new();
        let mut group_lane: HashMap<(String, String), usize> = HashMap::new();
        for message in event.records {
            let arn = message.event_source_arn.clone().unwrap_or_default();
            let source = self.sources.get(&arn).await?;
            let record = Record::from_event(message, source.clone())?;
            match (source.fifo, record.message.group_id.clone()) {
                (true, Some(group)) => {
                    let lane = *group_lane.entry((arn, group)).or_insert_with(|| {
                        lanes.push(Vec::new());
                        lanes.len() - 1
                    });
                    lanes[lane].push(record);
                }
                _ => lanes.push(vec![record]),
            }
        }

        let slots = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        for lane in lanes {
            let (function, slots) = (self.clone(), slots.clone());
            // Boxed: a lane's future holds the whole pipeline (KiBs) and the runtime
            // moves a task's future by value.
            tasks.spawn(Box::pin(async move {
                function.verify_lane(lane, &slots, cutoff).await
            }));
        }
        let mut results: Vec<RecordResult> = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(lane) => results.extend(lane),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => {
                    return Err(InvocationError::MalformedEvent(format!(
                        "a record's task ended: {e}"
                    )));
                }
            }
        }
        invocation.count(&results);

        if let Some(error) = whole_batch_failure(&results) {
            // The event source mapping deletes nothing when the invocation fails: delete
            // what is settled here, so it is not decided (or dead-lettered) twice.
            self.sources.delete_settled(&results).await;
            return Err(error);
        }
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = results
            .iter()
            .filter(|r| !r.succeeded())
            .map(|r| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = r.message_id.clone();
                failure
            })
            .collect();
        Ok(response)
    }

    /// Verifies a lane's records in order (a lane is one record, or one FIFO group);
    /// after the first record left undecided, the rest are reported failed untouched.
    async fn verify_lane(
        &self,
        lane: Vec<Record>,
        slots: &Semaphore,
        cutoff: Instant,
    ) -> Vec<RecordResult> {
        let mut results = Vec::with_capacity(lane.len());
        let mut blocked = false;
        for record in lane {
            if blocked {
                results.push(record.skipped("an earlier record of its message group is undecided"));
                continue;
            }
            let result = match slots.acquire().await {
                Ok(_slot) => record.verify(&self.pipeline, &self.settings, cutoff).await,
                Err(_) => record.skipped("no slot"),
            };
            blocked = !result.succeeded();
            results.push(result);
        }
        results
    }
}

/// Lambda's longest function timeout, assumed when an invocation's deadline is unusable.
const LONGEST_TIMEOUT: Duration = Duration::from_secs(900);

/// The instant verification must stop: the invocation's deadline (epoch milliseconds)
/// less the reserve. Lambda's deadline is always ahead; one already past comes from an
/// emulator that sends a constant (cargo-lambda's is 600000, ten minutes after 1970), and
/// is taken as Lambda's longest timeout instead of leaving no time at all.
fn cutoff(deadline_ms: u64, reserve: Duration) -> Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let left = match deadline_ms.checked_sub(now_ms) {
        Some(left) => Duration::from_millis(left),
        None => {
            tracing::warn!(
                message =
                    "The invocation's deadline is already past; assuming Lambda's longest timeout.",
                deadline_ms,
            );
            LONGEST_TIMEOUT
        }
    };
    Instant::now() + left.saturating_sub(reserve)
}

/// Whether Bootpay's state should fail the whole invocation: it refused the credentials,
/// or it answered none of the records it was asked about.
fn whole_batch_failure(results: &[RecordResult]) -> Option<InvocationError> {
    let mut answered = 0;
    let mut unanswered = Vec::new();
    for result in results {
        match &result.health {
            Health::CredentialsRefused(detail) => {
                return Some(InvocationError::CredentialsRefused(detail.clone()));
            }
            Health::Answered => answered += 1,
            Health::Unavailable(detail) => unanswered.push(detail),
            Health::NotAsked => {}
        }
    }
    match unanswered.first() {
        Some(detail) if answered == 0 => Some(InvocationError::BootpayUnavailable {
            records: unanswered.len(),
            detail: (*detail).clone(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(health: Health) -> RecordResult {
        RecordResult {
            message_id: "m".into(),
            fate: record::Fate::Delayed,
            health,
            settled: None,
        }
    }

    #[test]
    fn the_batch_fails_only_when_bootpay_answered_nothing_or_refused_the_credentials() {
        assert!(whole_batch_failure(&[]).is_none());
        assert!(whole_batch_failure(&[result(Health::NotAsked)]).is_none());
        let down = [
            result(Health::Unavailable("HTTP 503".into())),
            result(Health::NotAsked),
            result(Health::Unavailable("timeout".into())),
        ];
        assert!(matches!(
            whole_batch_failure(&down),
            Some(InvocationError::BootpayUnavailable { records: 2, .. })
        ));
        let partly = [
            result(Health::Unavailable("HTTP 503".into())),
            result(Health::Answered),
        ];
        assert!(whole_batch_failure(&partly).is_none());
        let refused = [
            result(Health::Answered),
            result(Health::CredentialsRefused("401".into())),
        ];
        assert!(matches!(
            whole_batch_failure(&refused),
            Some(InvocationError::CredentialsRefused(_))
        ));
    }

    #[test]
    fn the_cutoff_keeps_the_reserve_back() {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let cut = cutoff(now_ms + 10_000, Duration::from_secs(2));
        let left = cut.saturating_duration_since(Instant::now());
        assert!(
            left > Duration::from_millis(7_500) && left <= Duration::from_secs(8),
            "{left:?}"
        );
        let constant = cutoff(600_000, Duration::from_secs(2));
        assert!(
            constant > Instant::now() + Duration::from_secs(800),
            "an emulator's constant"
        );
    }
}

//! What one invocation did, told once at its end: a log line with the counts, and the
//! same counts as a CloudWatch embedded-metric-format (EMF) document on standard output,
//! which CloudWatch turns into metrics without a scrape endpoint or an API call.

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use receipt_verifier_core::Decision;
use serde_json::json;

use super::InvocationError;
use super::record::{Fate, RecordResult};
use crate::observability::counters::Counters;
use crate::observability::metrics::{BOOTPAY_REQUESTS, SQS_REQUESTS};

/// The CloudWatch namespace of the function's metrics.
pub const NAMESPACE: &str = "ReceiptVerifier";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Counts {
    pub records: usize,
    pub fulfilled: usize,
    pub rejected: usize,
    pub revoked: usize,
    /// Settled with nothing to publish: parked virtual accounts, notifications that
    /// changed nothing.
    pub settled: usize,
    pub dead_lettered: usize,
    pub delayed: usize,
    pub held: usize,
    pub out_of_time: usize,
    pub skipped: usize,
    pub failed: usize,
    pub sqs_requests: u64,
    pub bootpay_requests: u64,
}

pub(super) struct Invocation {
    counts: Counts,
    /// The process's request counters when the invocation started.
    counters: Option<(Counters, u64, u64)>,
}

impl Invocation {
    pub fn start(counters: Option<&Counters>, records: usize) -> Self {
        Self {
            counts: Counts {
                records,
                ..Counts::default()
            },
            counters: counters
                .map(|c| (c.clone(), c.total(SQS_REQUESTS), c.total(BOOTPAY_REQUESTS))),
        }
    }

    pub fn count(&mut self, results: &[RecordResult]) {
        let counts = &mut self.counts;
        for result in results {
            match result.fate {
                Fate::Decided(Decision::Fulfill) => counts.fulfilled += 1,
                Fate::Decided(Decision::Reject) => counts.rejected += 1,
                Fate::Decided(Decision::Revoke) => counts.revoked += 1,
                Fate::Settled => counts.settled += 1,
                Fate::DeadLettered => counts.dead_lettered += 1,
                Fate::Delayed => counts.delayed += 1,
                Fate::Held => counts.held += 1,
                Fate::OutOfTime => counts.out_of_time += 1,
                Fate::Skipped => counts.skipped += 1,
            }
            if !result.succeeded() {
                counts.failed += 1;
            }
        }
    }

    /// Logs the counts and writes the EMF document.
    pub fn finish(mut self, function_name: &str, took: Duration, error: Option<&InvocationError>) {
        if let Some((counters, sqs, bootpay)) = &self.counters {
            self.counts.sqs_requests = counters.total(SQS_REQUESTS).saturating_sub(*sqs);
            self.counts.bootpay_requests =
                counters.total(BOOTPAY_REQUESTS).saturating_sub(*bootpay);
        }
        let c = &self.counts;
        if let Some(error) = error {
            // Every record is retried: the whole batch counts as failed.
            tracing::error!(
                message = "Invocation failed as a whole; the event source mapping will retry the batch.",
                error_type = error.error_type(),
                error = %crate::error_chain(error),
                records = c.records,
            );
        }
        tracing::info!(
            message = "Invocation finished.",
            records = c.records,
            fulfilled = c.fulfilled,
            rejected = c.rejected,
            revoked = c.revoked,
            settled = c.settled,
            dead_lettered = c.dead_lettered,
            delayed = c.delayed,
            held = c.held,
            out_of_time = c.out_of_time,
            skipped = c.skipped,
            failed = c.failed,
            sqs_requests = c.sqs_requests,
            bootpay_requests = c.bootpay_requests,
            duration_ms = took.as_millis() as u64,
            invocation_failed = error.is_some(),
        );
        let document = emf(function_name, c, took, error.is_some(), SystemTime::now());
        // One write of one line, so the document is one log event.
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{document}").and_then(|()| stdout.flush());
    }
}

/// The counts as a CloudWatch EMF document.
fn emf(
    function_name: &str,
    c: &Counts,
    took: Duration,
    invocation_failed: bool,
    at: SystemTime,
) -> serde_json::Value {
    let count = |name: &str| json!({"Name": name, "Unit": "Count"});
    let timestamp = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!({
        "_aws": {
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["FunctionName"]],
                "Metrics": [
                    count("Records"), count("Fulfilled"), count("Rejected"),
                    count("Revoked"), count("Settled"), count("DeadLettered"), count("Requeued"), count("FailedRecords"),
                    count("OutOfTime"), count("InvocationFailed"), count("SqsRequests"),
                    count("BootpayRequests"),
                    {"Name": "DurationMs", "Unit": "Milliseconds"},
                ],
            }],
        },
        "FunctionName": function_name,
        "Records": c.records,
        "Fulfilled": c.fulfilled,
        "Rejected": c.rejected,
        "Revoked": c.revoked,
        "Settled": c.settled,
        "DeadLettered": c.dead_lettered,
        "Requeued": c.delayed,
        "FailedRecords": if invocation_failed { c.records } else { c.failed },
        "OutOfTime": c.out_of_time,
        "InvocationFailed": u8::from(invocation_failed),
        "SqsRequests": c.sqs_requests,
        "BootpayRequests": c.bootpay_requests,
        "DurationMs": took.as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_emf_document_declares_every_value_it_carries() {
        let counts = Counts {
            records: 10,
            fulfilled: 7,
            rejected: 1,
            dead_lettered: 1,
            delayed: 1,
            failed: 1,
            sqs_requests: 3,
            bootpay_requests: 10,
            ..Counts::default()
        };
        let doc = emf("fn", &counts, Duration::from_millis(120), false, UNIX_EPOCH);
        let declared = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(declared["Namespace"], NAMESPACE);
        assert_eq!(declared["Dimensions"], json!([["FunctionName"]]));
        for metric in declared["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(doc[name].is_number(), "{name} has no value in {doc}");
        }
        assert_eq!(doc["Fulfilled"], 7);
        assert_eq!(doc["FailedRecords"], 1);
        assert_eq!(doc["DurationMs"], 120);
        let failed = emf("fn", &counts, Duration::ZERO, true, UNIX_EPOCH);
        assert_eq!(
            failed["FailedRecords"], 10,
            "a failed invocation fails every record"
        );
        assert_eq!(failed["InvocationFailed"], 1);
    }
}

//! Every metric the worker exports, in one place. Labels are bounded: they hold stage,
//! endpoint, outcome, decision and reason names, never receipt or order ids.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const MESSAGES_RECEIVED: &str = "receipt_verifier_messages_received_total";
pub const DECISIONS: &str = "receipt_verifier_decisions_total";
pub const DEAD_LETTERS: &str = "receipt_verifier_dead_letters_total";
pub const REQUEUES: &str = "receipt_verifier_requeues_total";
pub const BOOTPAY_REQUESTS: &str = "receipt_verifier_bootpay_requests_total";
pub const BOOTPAY_DURATION: &str = "receipt_verifier_bootpay_request_duration_seconds";
pub const BOOTPAY_RETRIES: &str = "receipt_verifier_bootpay_retries_total";
pub const TOKEN_REFRESHES: &str = "receipt_verifier_token_refreshes_total";
pub const SQS_REQUESTS: &str = "receipt_verifier_sqs_requests_total";
pub const SQS_ENTRY_FAILURES: &str = "receipt_verifier_sqs_batch_entry_failures_total";
pub const VISIBILITY_CHANGES: &str = "receipt_verifier_visibility_changes_total";
pub const IN_FLIGHT: &str = "receipt_verifier_messages_in_flight";
pub const DECISION_LATENCY: &str = "receipt_verifier_decision_latency_seconds";
pub const PROCESSING_DURATION: &str = "receipt_verifier_processing_duration_seconds";
pub const INTAKE_PAUSED: &str = "receipt_verifier_intake_paused";
pub const PARKED: &str = "receipt_verifier_parked_total";
pub const NOTIFICATIONS_UNCHANGED: &str = "receipt_verifier_notifications_unchanged_total";
pub const LEDGER_REQUESTS: &str = "receipt_verifier_ledger_requests_total";

/// Installs the Prometheus recorder for this process and returns the handle that
/// renders `/metrics`.
///
/// # Errors
/// When a recorder is already installed.
pub fn install() -> Result<PrometheusHandle, String> {
    let latency_buckets = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency_buckets)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(MESSAGES_RECEIVED, "Purchase messages received from SQS.");
    describe_counter!(DECISIONS, "Decisions published, by decision and reason.");
    describe_counter!(DEAD_LETTERS, "Invalid events sent to the DLQ, by cause.");
    describe_counter!(REQUEUES, "Purchases handed back undecided, by why.");
    describe_counter!(
        BOOTPAY_REQUESTS,
        "Bootpay HTTP requests, by endpoint and outcome."
    );
    describe_histogram!(
        BOOTPAY_DURATION,
        Unit::Seconds,
        "Bootpay request latency, by endpoint."
    );
    describe_counter!(
        BOOTPAY_RETRIES,
        "In-process retries of Bootpay calls, by endpoint."
    );
    describe_counter!(
        TOKEN_REFRESHES,
        "Bootpay access tokens fetched, by trigger."
    );
    describe_counter!(SQS_REQUESTS, "SQS API requests, by operation and outcome.");
    describe_counter!(
        SQS_ENTRY_FAILURES,
        "Failed entries inside successful SQS batch calls."
    );
    describe_counter!(
        VISIBILITY_CHANGES,
        "Visibility changes, by kind (heartbeat, requeue, release)."
    );
    describe_gauge!(IN_FLIGHT, "Purchases being worked on now.");
    describe_histogram!(
        DECISION_LATENCY,
        Unit::Seconds,
        "From the purchase's SentTimestamp to its decision."
    );
    describe_histogram!(
        PROCESSING_DURATION,
        Unit::Seconds,
        "From receive to decision published."
    );
    describe_gauge!(INTAKE_PAUSED, "1 while intake is paused, by reason.");
    describe_counter!(
        PARKED,
        "Purchases parked in the ledger to await a virtual-account deposit."
    );
    describe_counter!(
        NOTIFICATIONS_UNCHANGED,
        "Notifications that changed nothing, by why."
    );
    describe_counter!(
        LEDGER_REQUESTS,
        "Ledger (DynamoDB) requests, by operation and outcome."
    );
}

pub fn received(count: usize) {
    counter!(MESSAGES_RECEIVED).increment(count as u64);
}

pub fn decided(
    decision: &'static str,
    reason: &'static str,
    repeat: bool,
    processing: Duration,
    end_to_end: Option<Duration>,
) {
    let repeat = if repeat { "true" } else { "false" };
    counter!(DECISIONS, "decision" => decision, "reason" => reason, "repeat" => repeat)
        .increment(1);
    histogram!(PROCESSING_DURATION).record(processing.as_secs_f64());
    if let Some(latency) = end_to_end {
        histogram!(DECISION_LATENCY).record(latency.as_secs_f64());
    }
}

pub fn parked() {
    counter!(PARKED).increment(1);
}

pub fn notification_unchanged(why: &'static str) {
    counter!(NOTIFICATIONS_UNCHANGED, "why" => why).increment(1);
}

pub fn ledger_request(operation: &'static str, outcome: &'static str) {
    counter!(LEDGER_REQUESTS, "operation" => operation, "outcome" => outcome).increment(1);
}

pub fn dead_lettered(cause: &'static str) {
    counter!(DEAD_LETTERS, "cause" => cause).increment(1);
}

pub fn requeued(why: &'static str) {
    counter!(REQUEUES, "why" => why).increment(1);
}

pub fn bootpay_request(endpoint: &'static str, outcome: &'static str, took: Duration) {
    counter!(BOOTPAY_REQUESTS, "endpoint" => endpoint, "outcome" => outcome).increment(1);
    histogram!(BOOTPAY_DURATION, "endpoint" => endpoint).record(took.as_secs_f64());
}

pub fn bootpay_retry(endpoint: &'static str) {
    counter!(BOOTPAY_RETRIES, "endpoint" => endpoint).increment(1);
}

pub fn token_refreshed(trigger: &'static str) {
    counter!(TOKEN_REFRESHES, "trigger" => trigger).increment(1);
}

pub fn sqs_request(operation: &'static str, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    counter!(SQS_REQUESTS, "operation" => operation, "outcome" => outcome).increment(1);
}

pub fn sqs_entry_failures(operation: &'static str, count: usize) {
    if count > 0 {
        counter!(SQS_ENTRY_FAILURES, "operation" => operation).increment(count as u64);
    }
}

pub fn visibility_changed(kind: &'static str) {
    counter!(VISIBILITY_CHANGES, "kind" => kind).increment(1);
}

pub fn in_flight(delta: f64) {
    gauge!(IN_FLIGHT).increment(delta);
}

pub fn intake_paused(reason: &'static str, paused: bool) {
    gauge!(INTAKE_PAUSED, "reason" => reason).set(if paused { 1.0 } else { 0.0 });
}

//! Every retry and wait schedule, named, in one place: exponential, with jitter so that
//! many purchases (or many workers) failing together do not retry in step.

use std::time::Duration;

use backon::ExponentialBuilder;

use crate::bootpay::RetryPolicy;

/// Between attempts of one Bootpay call; how long attempts go on is the caller's deadline.
pub fn bootpay_call(retry: RetryPolicy) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(retry.min_delay)
        .with_max_delay(retry.max_delay)
        .with_jitter()
        .without_max_times()
}

/// Between probes of Bootpay while intake is paused.
pub fn intake_probe(min: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
}

/// Between receives from the purchase queue that failed.
pub fn receive_errors() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
}

/// Between attempts to publish a decision while the result queue is unavailable (the
/// purchase is held meanwhile).
pub fn result_queue_outage() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
}

/// A few quick retries of an SQS call whose failure would otherwise cost a redelivery.
pub fn sqs_call() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .with_max_times(3)
}

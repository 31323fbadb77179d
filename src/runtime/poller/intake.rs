//! The intake gate: whether the worker takes new purchases from the queue.
//!
//! When Bootpay refuses the credentials or stops answering, verifying more purchases
//! would only turn good payments into retries and, after `maxReceiveCount`, dead
//! letters. So intake pauses, messages already received are held (their visibility kept
//! extended, which does not raise their receive count), and a probe asks Bootpay for a
//! fresh token with a growing delay until it answers again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::bootpay::{BootpayClient, CallOutcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseReason {
    CredentialsRefused,
    BootpayUnavailable,
    /// The result queue refuses decisions; cleared by the next decision it accepts.
    ResultQueueUnavailable,
    /// The ledger does not answer; cleared by the next answer it gives.
    LedgerUnavailable,
}

impl PauseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CredentialsRefused => "credentials_refused",
            Self::BootpayUnavailable => "bootpay_unavailable",
            Self::ResultQueueUnavailable => "result_queue_unavailable",
            Self::LedgerUnavailable => "ledger_unavailable",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntakeState {
    Open,
    Paused(PauseReason),
}

pub struct Intake {
    state: watch::Sender<IntakeState>,
    consecutive_failures: AtomicU32,
    /// Transient failures in a row, with no success between them, that mean Bootpay is
    /// down rather than one receipt misbehaving.
    outage_threshold: u32,
}

impl Intake {
    pub fn new(outage_threshold: u32) -> Self {
        Self {
            state: watch::Sender::new(IntakeState::Open),
            consecutive_failures: AtomicU32::new(0),
            outage_threshold: outage_threshold.max(1),
        }
    }

    /// Feeds the outcome of every Bootpay call in.
    pub fn observe(&self, outcome: CallOutcome) {
        match outcome {
            CallOutcome::Success => self.consecutive_failures.store(0, Ordering::Relaxed),
            CallOutcome::TransientFailure => {
                let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= self.outage_threshold {
                    self.pause(PauseReason::BootpayUnavailable);
                }
            }
            CallOutcome::CredentialsRefused => self.pause(PauseReason::CredentialsRefused),
        }
    }

    pub fn state(&self) -> IntakeState {
        *self.state.borrow()
    }

    pub fn is_paused(&self) -> bool {
        self.state() != IntakeState::Open
    }

    /// Waits until intake is open.
    pub async fn opened(&self) {
        let mut rx = self.state.subscribe();
        // The sender lives as long as `self`, so this cannot fail while awaited.
        let _ = rx.wait_for(|s| *s == IntakeState::Open).await;
    }

    async fn paused(&self) -> PauseReason {
        let mut rx = self.state.subscribe();
        loop {
            if let IntakeState::Paused(reason) = *rx.borrow_and_update() {
                return reason;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn pause(&self, reason: PauseReason) {
        self.state.send_if_modified(|state| {
            // Refused credentials outrank an outage: they need a person, not patience.
            let replace = match *state {
                IntakeState::Open => true,
                IntakeState::Paused(current) => {
                    current != reason && reason == PauseReason::CredentialsRefused
                }
            };
            if replace {
                if let IntakeState::Paused(previous) = *state {
                    crate::observability::metrics::intake_paused(previous.as_str(), false);
                }
                crate::observability::metrics::intake_paused(reason.as_str(), true);
                *state = IntakeState::Paused(reason);
                tracing::error!(
                    message = "Intake paused: no new purchases are taken until the cause clears.",
                    reason = reason.as_str(),
                );
            }
            replace
        });
    }

    /// Reopens intake if it is paused for `reason`.
    pub fn resume_from(&self, reason: PauseReason) {
        if self.state() == IntakeState::Paused(reason) {
            self.resume();
        }
    }

    fn resume(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.state.send_if_modified(|state| {
            let IntakeState::Paused(reason) = *state else {
                return false;
            };
            crate::observability::metrics::intake_paused(reason.as_str(), false);
            *state = IntakeState::Open;
            tracing::info!(message = "Intake resumed.", after = reason.as_str());
            true
        });
    }

    /// Runs until `stop`. While intake is open it renews the Bootpay token (if the
    /// credentials use one) ahead of its expiry, so an idle worker still holds one.
    /// Whenever intake is paused for Bootpay's sake, it probes Bootpay (a fresh token if
    /// any, then a receipt lookup) after a growing, jittered delay, and reopens intake once
    /// it answers.
    pub async fn probe_while_paused(
        &self,
        bootpay: &BootpayClient,
        min_delay: Duration,
        max_delay: Duration,
        stop: CancellationToken,
    ) {
        loop {
            // With client and secret keys there is no token to keep fresh.
            let renew_in = if bootpay.uses_tokens() {
                bootpay
                    .renewal_due_in()
                    .unwrap_or(IDLE_TOKEN_RETRY)
                    .max(Duration::from_secs(1))
            } else {
                Duration::MAX
            };
            let reason = tokio::select! {
                _ = stop.cancelled() => return,
                reason = self.paused() => reason,
                () = tokio::time::sleep(renew_in) => {
                    // A token stored meanwhile (the start-up one) may not be due yet.
                    if bootpay.renewal_due_in().is_some_and(|d| !d.is_zero()) {
                        continue;
                    }
                    if let Err(e) = bootpay.renew_token().await {
                        tracing::warn!(
                            message = "Could not renew the Bootpay token ahead of time.",
                            error = %crate::error_chain(&e),
                        );
                    }
                    continue;
                }
            };
            if matches!(
                reason,
                PauseReason::ResultQueueUnavailable | PauseReason::LedgerUnavailable
            ) {
                // Not Bootpay's doing: the held purchases reopen intake when their
                // publish, or their ledger call, goes through.
                tokio::select! {
                    _ = stop.cancelled() => return,
                    () = self.changed_from(IntakeState::Paused(reason)) => continue,
                }
            }
            let mut delays = crate::backoff::intake_probe(min_delay, max_delay).build();
            let mut reason = reason;
            while self.state() == IntakeState::Paused(reason) {
                let delay = delays.next().unwrap_or(max_delay);
                tracing::info!(
                    message = "Probing Bootpay before resuming intake.",
                    reason = reason.as_str(),
                    in_ms = delay.as_millis() as u64,
                );
                tokio::select! {
                    _ = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                match bootpay.probe().await {
                    Ok(()) => self.resume(),
                    Err(e) => {
                        tracing::warn!(
                            message = "Bootpay probe failed; intake stays paused.",
                            error = %crate::error_chain(&e),
                        );
                        if let IntakeState::Paused(now) = self.state() {
                            reason = now;
                        }
                    }
                }
            }
        }
    }

    async fn changed_from(&self, state: IntakeState) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| *s != state).await;
    }
}

/// How soon to try for a token again when there is none and intake is open.
const IDLE_TOKEN_RETRY: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_transient_failures_pauses_and_a_success_resets_the_run() {
        let intake = Intake::new(3);
        intake.observe(CallOutcome::TransientFailure);
        intake.observe(CallOutcome::TransientFailure);
        intake.observe(CallOutcome::Success);
        intake.observe(CallOutcome::TransientFailure);
        intake.observe(CallOutcome::TransientFailure);
        assert_eq!(intake.state(), IntakeState::Open);
        intake.observe(CallOutcome::TransientFailure);
        assert_eq!(
            intake.state(),
            IntakeState::Paused(PauseReason::BootpayUnavailable)
        );
        intake.observe(CallOutcome::CredentialsRefused);
        assert_eq!(
            intake.state(),
            IntakeState::Paused(PauseReason::CredentialsRefused)
        );
        intake.resume();
        assert_eq!(intake.state(), IntakeState::Open);
    }
}

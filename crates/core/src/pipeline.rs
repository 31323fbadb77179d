//! The pipeline: one inbound purchase in, one [`Outcome`] out. It decodes the body, looks
//! the receipt up through the [`Payments`] port, applies the rules, and confirms a payment
//! that awaits confirmation only after it has passed every check.
//!
//! Invariant: `confirm` is called only on a receipt [`judge`] found
//! [`Judgement::Confirm`], so no money is captured for a tampered purchase.

use crate::decision::{Reason, Verdict};
use crate::event::{DecodeError, PurchaseEvent};
use crate::payments::{Deadline, FailureKind, Payments, PaymentsError};
use crate::receipt::{PaymentStatus, Receipt};
use crate::rules::{Judgement, Policy, judge};

/// What became of one purchase. The runtime applies it in its own terms (publish and
/// delete, requeue with a delay, hold, or report a failed record).
#[derive(Debug)]
pub enum Outcome {
    /// A final decision: publish it, then acknowledge the purchase.
    Decided(Verdict),
    /// The body breaks the event contract: dead-letter it; trying again cannot help.
    Invalid(DecodeError),
    /// The payment is not final yet (pending, awaiting a deposit, …): ask again later.
    NotFinal { status: PaymentStatus },
    /// The payment service gave no answer about the payment.
    Unavailable(PaymentsError),
}

/// An inbound purchase after the pipeline: its event, when the body kept the contract,
/// and its outcome.
#[derive(Debug)]
pub struct Processed {
    pub event: Option<PurchaseEvent>,
    pub outcome: Outcome,
}

/// The verification core, generic over how payments are reached.
#[derive(Debug)]
pub struct Pipeline<P> {
    payments: P,
    policy: Policy,
}

impl<P: Payments> Pipeline<P> {
    pub fn new(payments: P, policy: Policy) -> Self {
        Self { payments, policy }
    }

    pub fn payments(&self) -> &P {
        &self.payments
    }

    /// Decodes and verifies one inbound body. Once decoded, the event's `receipt_id` and
    /// `order_id` are recorded on the current tracing span (where it declares them), so
    /// every later log line about the purchase carries them.
    pub async fn process(&self, body: &str, deadline: Deadline) -> Processed {
        let event = match PurchaseEvent::parse(body) {
            Ok(event) => event,
            Err(error) => {
                return Processed {
                    event: None,
                    outcome: Outcome::Invalid(error),
                };
            }
        };
        let span = tracing::Span::current();
        span.record("receipt_id", event.receipt_id.as_str());
        span.record("order_id", event.order_id.as_str());
        let outcome = self.verify(&event, deadline).await;
        Processed {
            event: Some(event),
            outcome,
        }
    }

    /// Verifies a decoded event; never [`Outcome::Invalid`].
    pub async fn verify(&self, event: &PurchaseEvent, deadline: Deadline) -> Outcome {
        let id = event.receipt_id.as_str();
        let receipt = match self.payments.receipt(id, deadline).await {
            Ok(receipt) => receipt,
            Err(e) if e.kind() == FailureKind::NotFound => {
                return Outcome::Decided(Verdict {
                    reason: Reason::ReceiptNotFound,
                    paid_price: None,
                    payment_status: None,
                });
            }
            Err(e) => return Outcome::Unavailable(e),
        };
        match judge(event, &receipt, self.policy) {
            Judgement::Decide(reason) => Outcome::Decided(verdict(reason, &receipt)),
            Judgement::NotFinal => Outcome::NotFinal {
                status: receipt.status,
            },
            Judgement::Confirm => self.confirm(event, deadline).await,
        }
    }

    async fn confirm(&self, event: &PurchaseEvent, deadline: Deadline) -> Outcome {
        let id = event.receipt_id.as_str();
        let confirmed = match self.payments.confirm(id, deadline).await {
            // Already confirmed (by an earlier delivery of this purchase whose answer was
            // lost) or changed meanwhile: look again and judge what is there now.
            Err(e) if e.kind() == FailureKind::NotConfirmReady => {
                self.payments.receipt(id, deadline).await
            }
            other => other,
        };
        let confirmed = match confirmed {
            Ok(receipt) => receipt,
            // The service just showed this receipt: "not found" now is the service
            // misbehaving, not an answer about the payment.
            Err(e) if e.kind() == FailureKind::NotFound => {
                return Outcome::Unavailable(PaymentsError::new(FailureKind::Transient, Vanished));
            }
            Err(e) => return Outcome::Unavailable(e),
        };
        match judge(event, &confirmed, self.policy) {
            Judgement::Decide(reason) => Outcome::Decided(verdict(reason, &confirmed)),
            Judgement::Confirm | Judgement::NotFinal => Outcome::NotFinal {
                status: confirmed.status,
            },
        }
    }
}

fn verdict(reason: Reason, receipt: &Receipt) -> Verdict {
    Verdict {
        reason,
        paid_price: Some(receipt.price.clone()),
        payment_status: Some(receipt.status),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the receipt vanished while being confirmed")]
struct Vanished;

#[cfg(test)]
mod tests {
    //! The decision table in process, against the in-memory [`StubPayments`].

    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::stub::{Call, StubPayments};

    fn receipt(id: &str, order: &str, price: serde_json::Value, status: i64) -> Receipt {
        let serde_json::Value::Number(price) = price else {
            panic!("a number")
        };
        Receipt {
            receipt_id: id.into(),
            order_id: order.into(),
            price,
            status: PaymentStatus::from_code(status),
            currency: Some("KRW".into()),
            cancelled_price: None,
            sandbox: Some(true),
        }
    }

    fn until() -> Deadline {
        Deadline::retrying_for(Duration::from_secs(5))
    }

    async fn decide(pipeline: &Pipeline<StubPayments>, body: serde_json::Value) -> Outcome {
        pipeline.process(&body.to_string(), until()).await.outcome
    }

    fn reason_of(outcome: &Outcome) -> Option<(&'static str, &'static str)> {
        match outcome {
            Outcome::Decided(v) => Some((v.decision().as_str(), v.reason.as_str())),
            _ => None,
        }
    }

    #[tokio::test]
    async fn every_row_of_the_decision_table() {
        let stub = StubPayments::default();
        for r in [
            receipt("r-paid", "o-paid", json!(3000), 1),
            receipt("r-replayed", "o-original", json!(3000), 1),
            receipt("r-cheap", "o-cheap", json!(100), 1),
            receipt("r-usd", "o-usd", json!(3000), 1),
            receipt("r-cancelled", "o-cancelled", json!(3000), 20),
            receipt("r-cancelling", "o-cancelling", json!(3000), -30),
            receipt("r-failed", "o-failed", json!(3000), -1),
            receipt("r-declined", "o-declined", json!(3000), -2),
            receipt("r-confirm", "o-confirm", json!(12000), 2),
            receipt("r-confirm-tampered", "o-confirm-tampered", json!(12000), 2),
            receipt("r-float", "o-float", json!(3000.0), 1),
        ] {
            stub.insert(r);
        }
        let mut partial = receipt("r-partial", "o-partial", json!(3000), 1);
        partial.cancelled_price = Some(1000.into());
        stub.insert(partial);
        let pipeline = Pipeline::new(stub, Policy::default());
        let rows = [
            (
                json!({"receipt_id": "r-paid", "order_id": "o-paid", "price": 3000, "currency": "krw"}),
                ("fulfill", "verified"),
            ),
            (
                json!({"receipt_id": "r-replayed", "order_id": "o-attacker", "price": 3000}),
                ("reject", "order_mismatch"),
            ),
            (
                json!({"receipt_id": "r-cheap", "order_id": "o-cheap", "price": 3000}),
                ("reject", "price_mismatch"),
            ),
            (
                json!({"receipt_id": "r-usd", "order_id": "o-usd", "price": 3000, "currency": "USD"}),
                ("reject", "currency_mismatch"),
            ),
            (
                json!({"receipt_id": "r-cancelled", "order_id": "o-cancelled", "price": 3000}),
                ("reject", "cancelled"),
            ),
            (
                json!({"receipt_id": "r-cancelling", "order_id": "o-cancelling", "price": 3000}),
                ("reject", "cancelled"),
            ),
            (
                json!({"receipt_id": "r-partial", "order_id": "o-partial", "price": 3000}),
                ("reject", "cancelled"),
            ),
            (
                json!({"receipt_id": "r-failed", "order_id": "o-failed", "price": 3000}),
                ("reject", "not_paid"),
            ),
            (
                json!({"receipt_id": "r-declined", "order_id": "o-declined", "price": 3000}),
                ("reject", "not_paid"),
            ),
            (
                json!({"receipt_id": "r-missing", "order_id": "o-missing", "price": 3000}),
                ("reject", "receipt_not_found"),
            ),
            (
                json!({"receipt_id": "r-confirm", "order_id": "o-confirm", "price": 12000}),
                ("fulfill", "verified"),
            ),
            (
                json!({"receipt_id": "r-confirm-tampered", "order_id": "o-confirm-tampered", "price": 1200}),
                ("reject", "price_mismatch"),
            ),
            (
                json!({"receipt_id": "r-float", "order_id": "o-float", "price": 3000}),
                ("fulfill", "verified"),
            ),
        ];
        for (event, expected) in rows {
            let outcome = decide(&pipeline, event.clone()).await;
            assert_eq!(reason_of(&outcome), Some(expected), "{event}: {outcome:?}");
        }
        let stub = pipeline.payments();
        assert_eq!(stub.calls_of("r-confirm"), [Call::Receipt, Call::Confirm]);
        assert_eq!(
            stub.calls_of("r-confirm-tampered"),
            [Call::Receipt],
            "a tampered payment must never be confirmed"
        );
        assert_eq!(
            stub.status_of("r-confirm-tampered"),
            Some(PaymentStatus::AwaitingConfirm)
        );
    }

    #[tokio::test]
    async fn a_decision_carries_what_the_service_said() {
        let stub = StubPayments::default();
        stub.insert(receipt("r-cheap", "o-cheap", json!(100), 1));
        let pipeline = Pipeline::new(stub, Policy::default());
        let Outcome::Decided(verdict) = decide(
            &pipeline,
            json!({"receipt_id": "r-cheap", "order_id": "o-cheap", "price": 3000}),
        )
        .await
        else {
            panic!("decided")
        };
        assert_eq!(verdict.paid_price, Some(100.into()));
        assert_eq!(verdict.payment_status, Some(PaymentStatus::Paid));
    }

    #[tokio::test]
    async fn a_body_that_breaks_the_contract_is_invalid_and_costs_no_call() {
        let pipeline = Pipeline::new(StubPayments::default(), Policy::default());
        let processed = pipeline
            .process(r#"{"receipt_id": "r-1", "price": "free"}"#, until())
            .await;
        assert!(processed.event.is_none());
        let Outcome::Invalid(error) = processed.outcome else {
            panic!("invalid")
        };
        assert_eq!(error.code(), "missing_field");
        assert!(pipeline.payments().calls().is_empty());
    }

    #[tokio::test]
    async fn statuses_that_are_not_final_get_no_decision() {
        let stub = StubPayments::default();
        for (i, status) in [0, 3, 5, -20, 11, 99].into_iter().enumerate() {
            stub.insert(receipt(&format!("r-{i}"), "o", json!(1), status));
        }
        let pipeline = Pipeline::new(stub, Policy::default());
        for (i, status) in [0, 3, 5, -20, 11, 99].into_iter().enumerate() {
            let outcome = decide(
                &pipeline,
                json!({"receipt_id": format!("r-{i}"), "order_id": "o", "price": 1}),
            )
            .await;
            let Outcome::NotFinal { status: seen } = outcome else {
                panic!("{status}: {outcome:?}")
            };
            assert_eq!(seen.code(), status);
        }
    }

    #[tokio::test]
    async fn a_failure_without_an_answer_is_unavailable_with_its_kind() {
        let stub = StubPayments::default();
        stub.insert(receipt("r-1", "o-1", json!(1), 1));
        let pipeline = Pipeline::new(stub, Policy::default());
        let event = json!({"receipt_id": "r-1", "order_id": "o-1", "price": 1});
        for kind in [
            FailureKind::Transient,
            FailureKind::CredentialsRefused,
            FailureKind::Rejected,
        ] {
            pipeline.payments().fail_next("r-1", Call::Receipt, kind);
            let Outcome::Unavailable(error) = decide(&pipeline, event.clone()).await else {
                panic!("unavailable")
            };
            assert_eq!(error.kind(), kind);
        }
        assert_eq!(
            reason_of(&decide(&pipeline, event).await),
            Some(("fulfill", "verified"))
        );
    }

    #[tokio::test]
    async fn a_confirm_whose_answer_was_lost_is_decided_on_the_next_try() {
        let stub = StubPayments::default();
        stub.insert(receipt("r-1", "o-1", json!(12000), 2));
        // The confirm goes through, but its answer never arrives.
        stub.lose_next_confirm_answer("r-1");
        let pipeline = Pipeline::new(stub, Policy::default());
        let event = json!({"receipt_id": "r-1", "order_id": "o-1", "price": 12000});
        let first = decide(&pipeline, event.clone()).await;
        assert!(matches!(first, Outcome::Unavailable(ref e) if e.kind().is_transient()));
        assert_eq!(
            reason_of(&decide(&pipeline, event).await),
            Some(("fulfill", "verified"))
        );
        assert_eq!(
            pipeline.payments().calls_of("r-1"),
            [Call::Receipt, Call::Confirm, Call::Receipt],
            "once paid, it is not confirmed again"
        );
    }

    #[tokio::test]
    async fn a_payment_confirmed_meanwhile_is_looked_up_again() {
        let stub = StubPayments::default();
        stub.insert(receipt("r-1", "o-1", json!(12000), 2));
        stub.confirm_elsewhere_before_next_confirm("r-1");
        let pipeline = Pipeline::new(stub, Policy::default());
        let outcome = decide(
            &pipeline,
            json!({"receipt_id": "r-1", "order_id": "o-1", "price": 12000}),
        )
        .await;
        assert_eq!(reason_of(&outcome), Some(("fulfill", "verified")));
        assert_eq!(
            pipeline.payments().calls_of("r-1"),
            [Call::Receipt, Call::Confirm, Call::Receipt]
        );
    }

    #[tokio::test]
    async fn a_receipt_that_vanishes_while_being_confirmed_is_no_answer() {
        let stub = StubPayments::default();
        stub.insert(receipt("r-1", "o-1", json!(12000), 2));
        stub.fail_next("r-1", Call::Confirm, FailureKind::NotFound);
        let pipeline = Pipeline::new(stub, Policy::default());
        let outcome = decide(
            &pipeline,
            json!({"receipt_id": "r-1", "order_id": "o-1", "price": 12000}),
        )
        .await;
        let Outcome::Unavailable(error) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(error.kind(), FailureKind::Transient);
        assert_eq!(
            error.to_string(),
            "the receipt vanished while being confirmed"
        );
    }

    #[tokio::test]
    async fn sandbox_payments_follow_the_policy() {
        let stub = StubPayments::default();
        stub.insert(receipt("r-1", "o-1", json!(1), 1));
        let event = json!({"receipt_id": "r-1", "order_id": "o-1", "price": 1});
        let lenient = Pipeline::new(stub, Policy::default());
        assert_eq!(
            reason_of(&decide(&lenient, event.clone()).await),
            Some(("fulfill", "verified"))
        );
        let strict = Pipeline::new(
            lenient.payments,
            Policy {
                reject_sandbox: true,
            },
        );
        assert_eq!(
            reason_of(&decide(&strict, event).await),
            Some(("reject", "not_paid"))
        );
    }
}

//! The pipeline: one inbound message in (a purchase, or a notification that a receipt may
//! have changed), one [`Outcome`] out. It decodes the body, consults the [`Ledger`], looks
//! the receipt up through the [`Payments`] port, applies the rules, confirms a payment
//! that awaits confirmation only after it has passed every check, and records what it
//! decided before the runtime publishes it.
//!
//! Invariants:
//! - `confirm` is called only on a receipt [`judge`] found [`Judgement::Confirm`], so no
//!   money is captured for a tampered purchase;
//! - with a ledger, a receipt is fulfilled at most once, ever: a `fulfill` is published
//!   only after a compare-and-set moved its entry out of a state that had none, and a
//!   receipt the ledger has decided is answered with the recorded decision, marked as a
//!   repeat;
//! - only reasons about the payment itself are recorded: a mismatch says the event was
//!   wrong (tampered or replayed) and must not keep the receipt from its real purchase.

use std::time::{Duration, SystemTime};

use serde_json::Number;

use crate::decision::{DecisionMessage, Reason, Verdict};
use crate::event::{Amount, DecodeError, PurchaseEvent};
use crate::ledger::{Ledger, LedgerEntry, LedgerError, LedgerState, NoLedger, Written};
use crate::notification::Notification;
use crate::payments::{Deadline, FailureKind, Payments, PaymentsError};
use crate::receipt::{PaymentStatus, Receipt};
use crate::rules::{Judgement, Policy, judge};

/// How long a virtual account is waited for when Bootpay gives no deadline: the longest a
/// PG allows (Toss: 7 days by default, at most 30).
pub const DEFAULT_DEPOSIT_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

/// Lost compare-and-set races on one entry before giving up for now.
const MAX_RACES: usize = 4;

/// What became of one inbound message. The runtime applies it in its own terms (publish
/// and delete, requeue with a delay, hold, or report a failed record).
#[derive(Debug)]
pub enum Outcome {
    /// A new decision (recorded first when there is a ledger): publish it, then
    /// acknowledge.
    Decided(DecisionMessage),
    /// The ledger already holds a decision for this purchase: publish it again, marked
    /// as a repeat, then acknowledge.
    Redelivered(DecisionMessage),
    /// A fulfilled payment was cancelled, wholly or partly (recorded): publish the
    /// `revoke`, then acknowledge.
    Revoked(DecisionMessage),
    /// The payment awaits a virtual-account deposit, and the ledger now follows it:
    /// acknowledge without a decision; the deposit (a webhook or the sweep) brings one.
    Parked { due: SystemTime },
    /// A notification that changes nothing (the why is a bounded label): acknowledge.
    Unchanged(&'static str),
    /// The body breaks the contract: dead-letter it; trying again cannot help.
    Invalid(DecodeError),
    /// The payment is not final yet (pending, awaiting a deposit, …): ask again later.
    NotFinal { status: PaymentStatus },
    /// The payment service gave no answer about the payment.
    Unavailable(PaymentsError),
    /// The ledger gave no answer: nothing may be decided until it does.
    LedgerUnavailable(LedgerError),
}

impl Outcome {
    /// The decision to publish, if the outcome has one.
    pub fn message(&self) -> Option<&DecisionMessage> {
        match self {
            Self::Decided(m) | Self::Redelivered(m) | Self::Revoked(m) => Some(m),
            _ => None,
        }
    }
}

/// What a message on the purchase queue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    Purchase,
    Notification,
}

/// The verification core, generic over how payments are reached and where decisions are
/// remembered.
#[derive(Debug)]
pub struct Pipeline<P, L = NoLedger> {
    payments: P,
    ledger: L,
    policy: Policy,
}

/// What the payment service says about a purchase, before the ledger.
enum Finding {
    Decided(Verdict),
    NotFinal(Receipt),
    Failed(Outcome),
}

/// One try at an entry: done, or the entry changed under us (here it is now).
enum Attempt {
    Done(Outcome),
    Raced(Option<Box<LedgerEntry>>),
}

impl<P: Payments> Pipeline<P> {
    /// A pipeline without a ledger.
    pub fn new(payments: P, policy: Policy) -> Self {
        Self::with_ledger(payments, NoLedger, policy)
    }
}

impl<P: Payments, L: Ledger> Pipeline<P, L> {
    pub fn with_ledger(payments: P, ledger: L, policy: Policy) -> Self {
        Self {
            payments,
            ledger,
            policy,
        }
    }

    pub fn payments(&self) -> &P {
        &self.payments
    }

    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    /// Handles one message from the purchase queue.
    pub async fn handle(&self, inbound: Inbound, body: &str, deadline: Deadline) -> Outcome {
        match inbound {
            Inbound::Purchase => self.process(body, deadline).await,
            Inbound::Notification => self.process_notification(body, deadline).await,
        }
    }

    /// Decodes and decides one purchase. Once decoded, the event's `receipt_id` and
    /// `order_id` are recorded on the current tracing span (where it declares them), so
    /// every later log line about the purchase carries them.
    pub async fn process(&self, body: &str, deadline: Deadline) -> Outcome {
        let event = match PurchaseEvent::parse(body) {
            Ok(event) => event,
            Err(error) => return Outcome::Invalid(error),
        };
        let span = tracing::Span::current();
        span.record("receipt_id", event.receipt_id.as_str());
        span.record("order_id", event.order_id.as_str());
        self.purchase(&event, deadline).await
    }

    /// Decides a decoded purchase; never [`Outcome::Invalid`].
    pub async fn purchase(&self, event: &PurchaseEvent, deadline: Deadline) -> Outcome {
        let mut lookup = Some(self.payments.receipt(&event.receipt_id, deadline).await);
        let unread = lookup
            .as_ref()
            .and_then(|l| l.as_ref().ok())
            .filter(|receipt| self.ledger.keeps_records() && self.writes_first(event, receipt))
            .cloned();
        let mut entry = if let Some(receipt) = unread {
            // Most purchases name a receipt the ledger has never seen: its first entry is
            // written create-only, and that condition stands in for the read (one ledger
            // request per purchase, not two). A receipt the ledger holds comes back with
            // the refused write; it is then decided over what the ledger holds, with the
            // same lookup.
            match self
                .purchase_once(event, None, lookup.take(), deadline)
                .await
            {
                Attempt::Done(outcome) => return outcome,
                Attempt::Raced(now) => {
                    lookup = Some(Ok(receipt));
                    now.map(|e| *e)
                }
            }
        } else {
            match self.ledger.get(&event.receipt_id).await {
                Ok(entry) => entry,
                Err(e) => return Outcome::LedgerUnavailable(e),
            }
        };
        for _ in 0..MAX_RACES {
            // After a lost race the receipt is looked up again: it may have changed too.
            match self
                .purchase_once(event, entry, lookup.take(), deadline)
                .await
            {
                Attempt::Done(outcome) => return outcome,
                Attempt::Raced(now) => entry = now.map(|e| *e),
            }
        }
        Outcome::LedgerUnavailable(LedgerError::new(KeptChanging))
    }

    /// Whether `event` may be decided on `receipt` before its ledger entry is read: when the
    /// decision is one the ledger records, so a create-only write checks that the receipt
    /// is new. Never before a confirm (it captures the money, and the entry may say the
    /// receipt belongs to another purchase), nor for a reject the ledger does not record (a
    /// mismatch may be a receipt reused for another purchase, with a reason of its own).
    fn writes_first(&self, event: &PurchaseEvent, receipt: &Receipt) -> bool {
        match judge(event, receipt, self.policy) {
            Judgement::Decide(reason) => reason.is_about_the_payment(),
            Judgement::NotFinal => true,
            Judgement::Confirm => false,
        }
    }

    /// Decodes a notification and acts on what the payment service now says about its
    /// receipt: fulfils (or rejects, or expires) a purchase waiting for it, revokes a
    /// fulfilled one that was cancelled, records a receipt no purchase named yet.
    pub async fn process_notification(&self, body: &str, deadline: Deadline) -> Outcome {
        let note = match Notification::parse(body) {
            Ok(note) => note,
            Err(error) => return Outcome::Invalid(error),
        };
        tracing::Span::current().record("receipt_id", note.receipt_id.as_str());
        if !self.ledger.keeps_records() {
            return Outcome::Unchanged("no_ledger");
        }
        let mut entry = match self.ledger.get(&note.receipt_id).await {
            Ok(entry) => entry,
            Err(e) => return Outcome::LedgerUnavailable(e),
        };
        for _ in 0..MAX_RACES {
            match self.notified_once(&note, entry, deadline).await {
                Attempt::Done(outcome) => return outcome,
                Attempt::Raced(now) => entry = now.map(|e| *e),
            }
        }
        Outcome::LedgerUnavailable(LedgerError::new(KeptChanging))
    }

    /// One try at deciding `event` over `entry`, with the receipt's lookup if it was
    /// already made.
    async fn purchase_once(
        &self,
        event: &PurchaseEvent,
        entry: Option<LedgerEntry>,
        lookup: Option<Result<Receipt, PaymentsError>>,
        deadline: Deadline,
    ) -> Attempt {
        let now = SystemTime::now();
        if let Some(held) = &entry {
            if held.purchase.is_some() && !held.is_for(event) {
                let verdict = Verdict {
                    reason: Reason::ReceiptReused,
                    paid_price: None,
                    payment_status: None,
                };
                return Attempt::Done(Outcome::Decided(DecisionMessage::new(event, &verdict, now)));
            }
            if held.state.is_decided() {
                return Attempt::Done(match &held.decision {
                    Some(decision) => Outcome::Redelivered(decision.clone().repeated()),
                    // Never decide again over a decided entry.
                    None => Outcome::LedgerUnavailable(LedgerError::new(Undecided(held.state))),
                });
            }
        }
        match self.find(event, lookup, deadline).await {
            Finding::Failed(outcome) => Attempt::Done(outcome),
            Finding::Decided(verdict) => {
                let message = DecisionMessage::new(event, &verdict, now);
                let state = match verdict.reason {
                    Reason::Verified => LedgerState::Fulfilled,
                    _ => LedgerState::Rejected,
                };
                if !self.ledger.keeps_records() || !verdict.reason.is_about_the_payment() {
                    return Attempt::Done(Outcome::Decided(message));
                }
                let mut next = owned_entry(entry, event, state, now);
                next.payment_status = message.payment_status;
                next.decision = Some(message.clone());
                self.write(next, Outcome::Decided(message)).await
            }
            Finding::NotFinal(receipt) => {
                let status = receipt.status;
                if !self.ledger.keeps_records() {
                    return Attempt::Done(Outcome::NotFinal { status });
                }
                if status == PaymentStatus::AwaitingDeposit {
                    return self.await_deposit(event, entry, &receipt, now).await;
                }
                if entry
                    .as_ref()
                    .is_some_and(|e| e.state == LedgerState::Pending)
                {
                    return Attempt::Done(Outcome::NotFinal { status });
                }
                let mut next = owned_entry(entry, event, LedgerState::Pending, now);
                next.payment_status = Some(status.code());
                self.write(next, Outcome::NotFinal { status }).await
            }
        }
    }

    /// A virtual account awaits its deposit: park the purchase until it comes, or expire
    /// it when the deadline has passed.
    async fn await_deposit(
        &self,
        event: &PurchaseEvent,
        entry: Option<LedgerEntry>,
        receipt: &Receipt,
        now: SystemTime,
    ) -> Attempt {
        let due = receipt
            .deposit_due
            .or_else(|| entry.as_ref().and_then(|e| e.deposit_due))
            .unwrap_or(now + DEFAULT_DEPOSIT_WINDOW);
        if due <= now {
            let verdict = Verdict {
                reason: Reason::Expired,
                paid_price: Some(receipt.price.clone()),
                payment_status: Some(receipt.status),
            };
            let message = DecisionMessage::new(event, &verdict, now);
            let mut next = owned_entry(entry, event, LedgerState::Expired, now);
            next.payment_status = Some(receipt.status.code());
            next.decision = Some(message.clone());
            return self.write(next, Outcome::Decided(message)).await;
        }
        let parked = entry
            .as_ref()
            .is_some_and(|e| e.state == LedgerState::AwaitingDeposit && e.deposit_due == Some(due));
        if parked {
            return Attempt::Done(Outcome::Parked { due });
        }
        let mut next = owned_entry(entry, event, LedgerState::AwaitingDeposit, now);
        next.payment_status = Some(receipt.status.code());
        next.deposit_due = Some(due);
        self.write(next, Outcome::Parked { due }).await
    }

    async fn notified_once(
        &self,
        note: &Notification,
        entry: Option<LedgerEntry>,
        deadline: Deadline,
    ) -> Attempt {
        let Some(entry) = entry else {
            return self.first_seen(note, deadline).await;
        };
        let Some(event) = entry.purchase.clone() else {
            return Attempt::Done(Outcome::Unchanged("no_purchase_yet"));
        };
        tracing::Span::current().record("order_id", event.order_id.as_str());
        match entry.state {
            LedgerState::Seen => Attempt::Done(Outcome::Unchanged("no_purchase_yet")),
            LedgerState::Rejected | LedgerState::Expired => {
                Attempt::Done(Outcome::Unchanged("already_decided"))
            }
            LedgerState::Pending | LedgerState::AwaitingDeposit => {
                match self
                    .purchase_once(&event, Some(entry), None, deadline)
                    .await
                {
                    // The purchase itself is requeued, or the sweep comes back.
                    Attempt::Done(Outcome::NotFinal { .. }) => {
                        Attempt::Done(Outcome::Unchanged("not_final"))
                    }
                    other => other,
                }
            }
            LedgerState::Fulfilled | LedgerState::Revoked => {
                self.revoke_if_cancelled(&event, entry, deadline).await
            }
        }
    }

    /// A notification about a receipt no purchase named yet: record it as seen, if the
    /// payment service knows it, so an operator can find it. The purchase, when it comes,
    /// is decided as any other.
    async fn first_seen(&self, note: &Notification, deadline: Deadline) -> Attempt {
        let receipt = match self.payments.receipt(&note.receipt_id, deadline).await {
            Ok(receipt) => receipt,
            Err(e) if e.kind() == FailureKind::NotFound => {
                return Attempt::Done(Outcome::Unchanged("unknown_receipt"));
            }
            Err(e) => return Attempt::Done(Outcome::Unavailable(e)),
        };
        let mut seen = LedgerEntry::new(&note.receipt_id, LedgerState::Seen, SystemTime::now());
        seen.payment_status = Some(receipt.status.code());
        seen.cancelled_price = receipt.cancelled_price;
        seen.deposit_due = receipt.deposit_due;
        self.write(seen, Outcome::Unchanged("no_purchase_yet"))
            .await
    }

    /// A fulfilled purchase: revoke it when more of its payment was cancelled than when
    /// last looked at; once per change of the cancelled amount.
    async fn revoke_if_cancelled(
        &self,
        event: &PurchaseEvent,
        entry: LedgerEntry,
        deadline: Deadline,
    ) -> Attempt {
        let receipt = match self.payments.receipt(&entry.receipt_id, deadline).await {
            Ok(receipt) => receipt,
            Err(e) if e.kind() == FailureKind::NotFound => {
                return Attempt::Done(Outcome::Unchanged("unknown_receipt"));
            }
            Err(e) => return Attempt::Done(Outcome::Unavailable(e)),
        };
        let Some(cancelled) = cancelled_amount(&receipt) else {
            return Attempt::Done(Outcome::Unchanged("not_cancelled"));
        };
        let before = entry.cancelled_price.as_ref().map_or(0.0, amount_value);
        if amount_value(&cancelled) <= before {
            return Attempt::Done(Outcome::Unchanged("no_new_cancel"));
        }
        let reason = if amount_value(&cancelled) >= amount_value(&receipt.price) {
            Reason::Cancelled
        } else {
            Reason::PartiallyCancelled
        };
        let now = SystemTime::now();
        let message =
            DecisionMessage::revocation(event, reason, cancelled.clone(), receipt.status, now);
        let mut next = entry;
        next.state = LedgerState::Revoked;
        next.payment_status = Some(receipt.status.code());
        next.cancelled_price = Some(cancelled);
        next.decision = Some(message.clone());
        next.updated_at = now;
        self.write(next, Outcome::Revoked(message)).await
    }

    /// Writes `next`; `then` is the outcome once it is written.
    async fn write(&self, next: LedgerEntry, then: Outcome) -> Attempt {
        match self.ledger.write(&next).await {
            Ok(Written::Done) => Attempt::Done(then),
            Ok(Written::Conflict(now)) => {
                if next.version == 0 {
                    // A create-only write: the ledger already holds the receipt (a repeat,
                    // a redelivery, a reuse); routine.
                    tracing::debug!(
                        message = "The ledger holds this receipt; deciding from what it holds.",
                    );
                } else {
                    tracing::info!(
                        message = "The ledger entry changed meanwhile; deciding again from what it holds now.",
                        state = next.state.as_str(),
                    );
                }
                match now {
                    Some(now) => Attempt::Raced(Some(now)),
                    None => match self.ledger.get(&next.receipt_id).await {
                        Ok(now) => Attempt::Raced(now.map(Box::new)),
                        Err(e) => Attempt::Done(Outcome::LedgerUnavailable(e)),
                    },
                }
            }
            Err(e) => Attempt::Done(Outcome::LedgerUnavailable(e)),
        }
    }

    /// What the payment service says about `event`'s receipt (`lookup`, or a fresh
    /// lookup), confirming the payment if it awaits confirmation and passes every check.
    async fn find(
        &self,
        event: &PurchaseEvent,
        lookup: Option<Result<Receipt, PaymentsError>>,
        deadline: Deadline,
    ) -> Finding {
        let lookup = match lookup {
            Some(lookup) => lookup,
            None => self.payments.receipt(&event.receipt_id, deadline).await,
        };
        let receipt = match lookup {
            Ok(receipt) => receipt,
            Err(e) if e.kind() == FailureKind::NotFound => {
                return Finding::Decided(Verdict {
                    reason: Reason::ReceiptNotFound,
                    paid_price: None,
                    payment_status: None,
                });
            }
            Err(e) => return Finding::Failed(Outcome::Unavailable(e)),
        };
        match judge(event, &receipt, self.policy) {
            Judgement::Decide(reason) => Finding::Decided(verdict(reason, &receipt)),
            Judgement::NotFinal => Finding::NotFinal(receipt),
            Judgement::Confirm => self.confirm(event, deadline).await,
        }
    }

    async fn confirm(&self, event: &PurchaseEvent, deadline: Deadline) -> Finding {
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
                return Finding::Failed(Outcome::Unavailable(PaymentsError::new(
                    FailureKind::Transient,
                    Vanished,
                )));
            }
            Err(e) => return Finding::Failed(Outcome::Unavailable(e)),
        };
        match judge(event, &confirmed, self.policy) {
            Judgement::Decide(reason) => Finding::Decided(verdict(reason, &confirmed)),
            Judgement::Confirm | Judgement::NotFinal => Finding::NotFinal(confirmed),
        }
    }
}

/// The entry that records `event`'s purchase in `state`: the one read (keeping its version
/// for the compare-and-set), or a new one.
fn owned_entry(
    entry: Option<LedgerEntry>,
    event: &PurchaseEvent,
    state: LedgerState,
    now: SystemTime,
) -> LedgerEntry {
    let mut next = entry.unwrap_or_else(|| LedgerEntry::new(&event.receipt_id, state, now));
    next.state = state;
    next.purchase = Some(event.clone());
    next.updated_at = now;
    next
}

/// How much of the payment was cancelled, when any was: the cumulative `cancelled_price`,
/// or the whole price for a cancelled receipt that gives none.
fn cancelled_amount(receipt: &Receipt) -> Option<Number> {
    match &receipt.cancelled_price {
        Some(c) if amount_value(c) > 0.0 => Some(c.clone()),
        _ if receipt.status == PaymentStatus::Cancelled => Some(receipt.price.clone()),
        _ => None,
    }
}

fn amount_value(n: &Number) -> f64 {
    Amount::new(n.clone()).map_or(0.0, |a| a.value())
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

#[derive(Debug, thiserror::Error)]
#[error("the ledger entry kept changing while it was being written")]
struct KeptChanging;

#[derive(Debug, thiserror::Error)]
#[error("the ledger entry is {0} but holds no decision")]
struct Undecided(LedgerState);

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
            deposit_due: None,
        }
    }

    fn until() -> Deadline {
        Deadline::retrying_for(Duration::from_secs(5))
    }

    async fn decide(pipeline: &Pipeline<StubPayments>, body: serde_json::Value) -> Outcome {
        pipeline.process(&body.to_string(), until()).await
    }

    fn reason_of(outcome: &Outcome) -> Option<(&'static str, &'static str)> {
        match outcome {
            Outcome::Decided(m) => Some((m.decision.as_str(), m.reason.as_str())),
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
        assert_eq!(verdict.payment_status, Some(1));
    }

    #[tokio::test]
    async fn a_body_that_breaks_the_contract_is_invalid_and_costs_no_call() {
        let pipeline = Pipeline::new(StubPayments::default(), Policy::default());
        let outcome = pipeline
            .process(r#"{"receipt_id": "r-1", "price": "free"}"#, until())
            .await;
        let Outcome::Invalid(error) = outcome else {
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

    mod with_a_ledger {
        //! The ledger's rules in process: at most one fulfilment, repeats, reuse, virtual
        //! accounts, revocations, notifications, and a ledger that does not answer.

        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        use super::*;
        use crate::ledger::MemoryLedger;

        type Tested = Pipeline<StubPayments, Arc<MemoryLedger>>;

        fn pipeline(receipts: impl IntoIterator<Item = Receipt>) -> Tested {
            let stub = StubPayments::default();
            for r in receipts {
                stub.insert(r);
            }
            Pipeline::with_ledger(stub, Arc::default(), Policy::default())
        }

        fn purchase(id: &str, order: &str, price: i64) -> String {
            json!({"receipt_id": id, "order_id": order, "price": price}).to_string()
        }

        fn note(id: &str) -> String {
            Notification::new(id, crate::notification::Source::Webhook, None, None)
                .unwrap()
                .to_json()
        }

        fn published(outcome: &Outcome) -> (&'static str, &'static str, bool) {
            let m = outcome.message().unwrap_or_else(|| panic!("{outcome:?}"));
            (m.decision.as_str(), m.reason.as_str(), m.repeat)
        }

        fn vbank(id: &str, due_in: Duration) -> Receipt {
            let mut r = receipt(id, "o-1", json!(3000), 5);
            r.deposit_due = Some(SystemTime::now() + due_in);
            r
        }

        fn state_of(p: &Tested, id: &str) -> Option<LedgerState> {
            p.ledger().entry(id).map(|e| e.state)
        }

        #[tokio::test]
        async fn the_same_purchase_five_times_is_fulfilled_once_and_repeated_four_times() {
            let p = pipeline([receipt("r-1", "o-1", json!(3000), 1)]);
            let body = purchase("r-1", "o-1", 3000);
            let first = p.process(&body, until()).await;
            assert_eq!(published(&first), ("fulfill", "verified", false));
            for _ in 0..4 {
                let again = p.process(&body, until()).await;
                assert_eq!(published(&again), ("fulfill", "verified", true));
                assert_eq!(
                    again.message().map(|m| &m.verified_at),
                    first.message().map(|m| &m.verified_at),
                    "a repeat is the recorded decision"
                );
            }
            let entry = p.ledger().entry("r-1").unwrap();
            assert_eq!(entry.state, LedgerState::Fulfilled);
            assert_eq!(entry.version, 1, "written once");
            // Each delivery looks the receipt up; its create-only write is refused, and the
            // recorded decision is published again.
            assert_eq!(p.payments().calls_of("r-1"), [Call::Receipt; 5]);
        }

        #[tokio::test]
        async fn another_purchase_for_a_recorded_receipt_is_rejected_as_reused() {
            let p = pipeline([receipt("r-1", "o-1", json!(3000), 1)]);
            p.process(&purchase("r-1", "o-1", 3000), until()).await;
            for body in [
                purchase("r-1", "o-2", 3000),
                purchase("r-1", "o-1", 2999),
                json!({"receipt_id": "r-1", "order_id": "o-1", "price": 3000, "currency": "USD"})
                    .to_string(),
            ] {
                let outcome = p.process(&body, until()).await;
                assert_eq!(
                    published(&outcome),
                    ("reject", "receipt_reused", false),
                    "{body}"
                );
            }
            assert_eq!(
                p.payments().calls_of("r-1"),
                [Call::Receipt; 4],
                "a reuse is looked up, never confirmed"
            );
            assert_eq!(state_of(&p, "r-1"), Some(LedgerState::Fulfilled));
        }

        #[tokio::test]
        async fn a_new_receipt_and_its_repeat_cost_one_ledger_request_each() {
            let p = pipeline([receipt("r-1", "o-1", json!(3000), 1)]);
            let first = p.process(&purchase("r-1", "o-1", 3000), until()).await;
            assert_eq!(published(&first), ("fulfill", "verified", false));
            assert_eq!(p.ledger().requests(), 1, "a create-only write, no read");
            let again = p.process(&purchase("r-1", "o-1", 3000), until()).await;
            assert_eq!(published(&again), ("fulfill", "verified", true));
            assert_eq!(
                p.ledger().requests(),
                2,
                "the refused write brings the entry"
            );
            let tampered = p.process(&purchase("r-1", "o-1", 30), until()).await;
            assert_eq!(published(&tampered), ("reject", "receipt_reused", false));
            assert_eq!(p.ledger().requests(), 3, "a read, and nothing written");
        }

        #[tokio::test]
        async fn a_receipt_held_by_another_purchase_is_never_confirmed_for_a_reuse() {
            // Awaiting confirmation, and followed by the ledger for order o-1.
            let p = pipeline([receipt("r-1", "o-1", json!(3000), 2)]);
            let mut held = LedgerEntry::new("r-1", LedgerState::Pending, SystemTime::now());
            held.purchase = Some(PurchaseEvent::parse(&purchase("r-1", "o-1", 3000)).unwrap());
            p.ledger().write(&held).await.unwrap();
            let outcome = p.process(&purchase("r-1", "o-2", 3000), until()).await;
            assert_eq!(published(&outcome), ("reject", "receipt_reused", false));
            assert_eq!(p.payments().calls_of("r-1"), [Call::Receipt], "no confirm");
            assert_eq!(state_of(&p, "r-1"), Some(LedgerState::Pending));
        }

        #[tokio::test]
        async fn a_replay_that_comes_first_does_not_keep_the_receipt_from_its_purchase() {
            let p = pipeline([receipt("r-1", "o-1", json!(3000), 1)]);
            let replay = p
                .process(&purchase("r-1", "o-attacker", 3000), until())
                .await;
            assert_eq!(published(&replay), ("reject", "order_mismatch", false));
            let tampered = p.process(&purchase("r-1", "o-1", 10), until()).await;
            assert_eq!(published(&tampered), ("reject", "price_mismatch", false));
            assert_eq!(state_of(&p, "r-1"), None, "mismatches are not recorded");
            let genuine = p.process(&purchase("r-1", "o-1", 3000), until()).await;
            assert_eq!(published(&genuine), ("fulfill", "verified", false));
        }

        #[tokio::test]
        async fn a_virtual_account_is_parked_then_fulfilled_on_its_deposit() {
            let p = pipeline([vbank("r-1", Duration::from_secs(3600))]);
            let body = purchase("r-1", "o-1", 3000);
            let parked = p.process(&body, until()).await;
            assert!(matches!(parked, Outcome::Parked { .. }), "{parked:?}");
            assert_eq!(state_of(&p, "r-1"), Some(LedgerState::AwaitingDeposit));
            let waiting = p.process_notification(&note("r-1"), until()).await;
            assert!(matches!(waiting, Outcome::Parked { .. }), "{waiting:?}");
            assert_eq!(p.ledger().entry("r-1").unwrap().version, 1, "parked once");

            p.payments().insert(receipt("r-1", "o-1", json!(3000), 1));
            let deposited = p.process_notification(&note("r-1"), until()).await;
            assert_eq!(published(&deposited), ("fulfill", "verified", false));
            let repeat = p.process(&body, until()).await;
            assert_eq!(published(&repeat), ("fulfill", "verified", true));
        }

        #[tokio::test]
        async fn a_deposit_deadline_that_passed_expires_the_purchase() {
            let p = pipeline([vbank("r-1", Duration::from_secs(3600))]);
            p.process(&purchase("r-1", "o-1", 3000), until()).await;
            let mut late = vbank("r-1", Duration::ZERO);
            late.deposit_due = Some(SystemTime::now() - Duration::from_secs(1));
            p.payments().insert(late);
            let expired = p.process_notification(&note("r-1"), until()).await;
            assert_eq!(published(&expired), ("reject", "expired", false));
            assert_eq!(state_of(&p, "r-1"), Some(LedgerState::Expired));
            let after = p.process_notification(&note("r-1"), until()).await;
            assert!(
                matches!(after, Outcome::Unchanged("already_decided")),
                "{after:?}"
            );
        }

        #[tokio::test]
        async fn cancels_after_fulfilment_revoke_once_per_change_of_the_amount() {
            let p = pipeline([receipt("r-1", "o-1", json!(3000), 1)]);
            p.process(&purchase("r-1", "o-1", 3000), until()).await;
            let nothing = p.process_notification(&note("r-1"), until()).await;
            assert!(
                matches!(nothing, Outcome::Unchanged("not_cancelled")),
                "{nothing:?}"
            );

            let mut partly = receipt("r-1", "o-1", json!(3000), 20);
            partly.cancelled_price = Some(1000.into());
            p.payments().insert(partly);
            let first = p.process_notification(&note("r-1"), until()).await;
            assert_eq!(published(&first), ("revoke", "partially_cancelled", false));
            assert_eq!(
                first.message().and_then(|m| m.cancelled_price.clone()),
                Some(1000.into())
            );
            let same = p.process_notification(&note("r-1"), until()).await;
            assert!(
                matches!(same, Outcome::Unchanged("no_new_cancel")),
                "{same:?}"
            );

            let mut wholly = receipt("r-1", "o-1", json!(3000), 20);
            wholly.cancelled_price = Some(3000.into());
            p.payments().insert(wholly);
            let second = p.process_notification(&note("r-1"), until()).await;
            assert_eq!(published(&second), ("revoke", "cancelled", false));
            let repeat = p.process(&purchase("r-1", "o-1", 3000), until()).await;
            assert_eq!(
                published(&repeat),
                ("revoke", "cancelled", true),
                "a repeat gets the latest decision"
            );
        }

        #[tokio::test]
        async fn a_notification_before_its_purchase_is_recorded_as_seen() {
            let p = pipeline([receipt("r-1", "o-1", json!(3000), 1)]);
            let unknown = p.process_notification(&note("r-unknown"), until()).await;
            assert!(
                matches!(unknown, Outcome::Unchanged("unknown_receipt")),
                "{unknown:?}"
            );
            assert_eq!(
                state_of(&p, "r-unknown"),
                None,
                "nothing kept for a forgery"
            );
            let early = p.process_notification(&note("r-1"), until()).await;
            assert!(
                matches!(early, Outcome::Unchanged("no_purchase_yet")),
                "{early:?}"
            );
            assert_eq!(state_of(&p, "r-1"), Some(LedgerState::Seen));
            let again = p.process_notification(&note("r-1"), until()).await;
            assert!(matches!(again, Outcome::Unchanged("no_purchase_yet")));
            assert_eq!(
                p.payments().calls_of("r-1").len(),
                1,
                "one lookup per receipt"
            );
            let outcome = p.process(&purchase("r-1", "o-1", 3000), until()).await;
            assert_eq!(published(&outcome), ("fulfill", "verified", false));
        }

        #[tokio::test]
        async fn a_ledger_that_does_not_answer_holds_everything() {
            let p = pipeline([receipt("r-1", "o-1", json!(3000), 1)]);
            p.ledger().set_failing(true);
            let outcome = p.process(&purchase("r-1", "o-1", 3000), until()).await;
            assert!(
                matches!(outcome, Outcome::LedgerUnavailable(_)),
                "{outcome:?}"
            );
            let noted = p.process_notification(&note("r-1"), until()).await;
            assert!(matches!(noted, Outcome::LedgerUnavailable(_)), "{noted:?}");
            assert_eq!(
                p.payments().calls(),
                [("r-1".to_owned(), Call::Receipt)],
                "the purchase's lookup only: nothing confirmed, nothing decided"
            );
            p.ledger().set_failing(false);
            let outcome = p.process(&purchase("r-1", "o-1", 3000), until()).await;
            assert_eq!(published(&outcome), ("fulfill", "verified", false));
        }

        /// A ledger where another worker fulfils the receipt just before our first write.
        #[derive(Default)]
        struct Racing {
            inner: MemoryLedger,
            raced: AtomicBool,
        }

        impl Ledger for Racing {
            async fn get(&self, id: &str) -> Result<Option<LedgerEntry>, LedgerError> {
                self.inner.get(id).await
            }

            async fn write(&self, entry: &LedgerEntry) -> Result<Written, LedgerError> {
                if !self.raced.swap(true, Ordering::Relaxed) {
                    let mut theirs = entry.clone();
                    if let Some(d) = theirs.decision.as_mut() {
                        d.event_id = Some("theirs".into());
                    }
                    assert!(matches!(self.inner.write(&theirs).await, Ok(Written::Done)));
                }
                self.inner.write(entry).await
            }
        }

        #[tokio::test]
        async fn a_lost_race_publishes_the_winners_decision_as_a_repeat() {
            let stub = StubPayments::default();
            stub.insert(receipt("r-1", "o-1", json!(3000), 1));
            let p = Pipeline::with_ledger(stub, Racing::default(), Policy::default());
            let outcome = p.process(&purchase("r-1", "o-1", 3000), until()).await;
            assert_eq!(published(&outcome), ("fulfill", "verified", true));
            assert_eq!(
                outcome.message().and_then(|m| m.event_id.as_deref()),
                Some("theirs")
            );
            assert_eq!(p.ledger().inner.entry("r-1").unwrap().version, 1);
        }

        #[tokio::test]
        async fn without_a_ledger_a_virtual_account_is_requeued_and_notifications_ignored() {
            let stub = StubPayments::default();
            stub.insert(vbank("r-1", Duration::from_secs(3600)));
            let p = Pipeline::new(stub, Policy::default());
            let outcome = p.process(&purchase("r-1", "o-1", 3000), until()).await;
            assert!(matches!(outcome, Outcome::NotFinal { .. }), "{outcome:?}");
            let noted = p.process_notification(&note("r-1"), until()).await;
            assert!(
                matches!(noted, Outcome::Unchanged("no_ledger")),
                "{noted:?}"
            );
        }
    }
}

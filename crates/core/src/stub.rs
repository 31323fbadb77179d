//! An in-memory [`Payments`] for tests: receipts held in a map, a confirm that moves a
//! receipt from awaiting confirmation to paid, every call recorded, and failures scripted
//! per receipt.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::payments::{Deadline, FailureKind, Payments, PaymentsError};
use crate::receipt::{PaymentStatus, Receipt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Receipt,
    Confirm,
}

#[derive(Debug)]
enum Script {
    Fail(Call, FailureKind),
    /// The next confirm goes through but its answer is lost.
    LoseConfirmAnswer,
    /// Someone else confirms the receipt just before the next confirm arrives.
    ConfirmElsewhere,
}

#[derive(Debug, Default)]
struct State {
    receipts: HashMap<String, Receipt>,
    scripts: HashMap<String, VecDeque<Script>>,
    calls: Vec<(String, Call)>,
}

#[derive(Debug, Default)]
pub struct StubPayments {
    state: Mutex<State>,
}

#[derive(Debug, thiserror::Error)]
#[error("stub payments: {0}")]
struct StubError(&'static str);

impl StubPayments {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn insert(&self, receipt: Receipt) {
        self.state()
            .receipts
            .insert(receipt.receipt_id.clone(), receipt);
    }

    pub fn status_of(&self, receipt_id: &str) -> Option<PaymentStatus> {
        self.state().receipts.get(receipt_id).map(|r| r.status)
    }

    /// Makes the next `call` about `receipt_id` fail with `kind`.
    pub fn fail_next(&self, receipt_id: &str, call: Call, kind: FailureKind) {
        self.script(receipt_id, Script::Fail(call, kind));
    }

    pub fn lose_next_confirm_answer(&self, receipt_id: &str) {
        self.script(receipt_id, Script::LoseConfirmAnswer);
    }

    pub fn confirm_elsewhere_before_next_confirm(&self, receipt_id: &str) {
        self.script(receipt_id, Script::ConfirmElsewhere);
    }

    fn script(&self, receipt_id: &str, script: Script) {
        self.state()
            .scripts
            .entry(receipt_id.to_owned())
            .or_default()
            .push_back(script);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<(String, Call)> {
        self.state().calls.clone()
    }

    pub fn calls_of(&self, receipt_id: &str) -> Vec<Call> {
        self.state()
            .calls
            .iter()
            .filter(|(id, _)| id == receipt_id)
            .map(|(_, call)| *call)
            .collect()
    }

    fn answer(&self, receipt_id: &str, call: Call) -> Result<Receipt, PaymentsError> {
        let mut state = self.state();
        state.calls.push((receipt_id.to_owned(), call));
        let script = state.scripts.get_mut(receipt_id).and_then(|s| {
            let applies = match s.front() {
                Some(Script::Fail(on, _)) => *on == call,
                Some(Script::LoseConfirmAnswer | Script::ConfirmElsewhere) => call == Call::Confirm,
                None => false,
            };
            if applies { s.pop_front() } else { None }
        });
        let fail = |kind, text| Err(PaymentsError::new(kind, StubError(text)));
        let mut lose_answer = false;
        match script {
            Some(Script::Fail(_, kind)) => return fail(kind, "scripted failure"),
            Some(Script::LoseConfirmAnswer) => lose_answer = true,
            Some(Script::ConfirmElsewhere) => {
                if let Some(r) = state.receipts.get_mut(receipt_id) {
                    r.status = PaymentStatus::Paid;
                }
            }
            None => {}
        }
        let Some(receipt) = state.receipts.get_mut(receipt_id) else {
            return fail(FailureKind::NotFound, "no such receipt");
        };
        if call == Call::Confirm {
            if receipt.status != PaymentStatus::AwaitingConfirm {
                return fail(FailureKind::NotConfirmReady, "not awaiting confirmation");
            }
            receipt.status = PaymentStatus::Paid;
        }
        if lose_answer {
            return fail(FailureKind::Transient, "the answer was lost");
        }
        Ok(receipt.clone())
    }
}

impl Payments for StubPayments {
    async fn receipt(&self, receipt_id: &str, _: Deadline) -> Result<Receipt, PaymentsError> {
        self.answer(receipt_id, Call::Receipt)
    }

    async fn confirm(&self, receipt_id: &str, _: Deadline) -> Result<Receipt, PaymentsError> {
        self.answer(receipt_id, Call::Confirm)
    }
}

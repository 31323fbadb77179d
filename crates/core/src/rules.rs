//! The decision rules: what a receipt means for the purchase that names it.
//!
//! Invariant: a payment whose order, amount or currency differs from the event is never
//! judged [`Judgement::Confirm`], so no money is captured for a tampered purchase.

use crate::decision::Reason;
use crate::event::{Amount, PurchaseEvent};
use crate::receipt::{PaymentStatus, Receipt};

/// Deployment choices that change the rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Reject (`not_paid`) receipts Bootpay marks `sandbox`: payments made with a test
    /// project's keys, which move no money.
    pub reject_sandbox: bool,
}

/// What the rules say about a receipt, before any call that changes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    Decide(Reason),
    /// Awaiting confirmation and every check passed: capture it.
    Confirm,
    /// Not final yet (pending, awaiting a deposit, a cancel that failed, an unknown
    /// status): ask again later.
    NotFinal,
}

/// The decision rules. Identity checks come first, so a receipt replayed against
/// another order is reported as such whatever its state; then the payment's state; then
/// amount and currency.
pub fn judge(event: &PurchaseEvent, receipt: &Receipt, policy: Policy) -> Judgement {
    if receipt.order_id != event.order_id || receipt.receipt_id != event.receipt_id {
        return Judgement::Decide(Reason::OrderMismatch);
    }
    let partly_cancelled = receipt
        .cancelled_price
        .as_ref()
        .and_then(serde_json::Number::as_f64)
        .is_some_and(|c| c != 0.0);
    let cancelled = matches!(
        receipt.status,
        PaymentStatus::Cancelled | PaymentStatus::CancelInProgress
    );
    if cancelled || partly_cancelled {
        return Judgement::Decide(Reason::Cancelled);
    }
    if matches!(receipt.status, PaymentStatus::Failed(_)) {
        return Judgement::Decide(Reason::NotPaid);
    }
    if policy.reject_sandbox && receipt.sandbox == Some(true) {
        // A test payment moved no money.
        return Judgement::Decide(Reason::NotPaid);
    }
    if Amount::new(receipt.price.clone()).as_ref() != Some(&event.price) {
        return Judgement::Decide(Reason::PriceMismatch);
    }
    if let Some(expected) = &event.currency {
        let matches = receipt
            .currency
            .as_deref()
            .is_some_and(|paid| paid.eq_ignore_ascii_case(expected));
        if !matches {
            return Judgement::Decide(Reason::CurrencyMismatch);
        }
    }
    match receipt.status {
        PaymentStatus::Paid => Judgement::Decide(Reason::Verified),
        PaymentStatus::AwaitingConfirm => Judgement::Confirm,
        _ => Judgement::NotFinal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(currency: Option<&str>) -> PurchaseEvent {
        let mut body = serde_json::json!({"receipt_id": "r-1", "order_id": "o-1", "price": 3000});
        if let Some(c) = currency {
            body["currency"] = c.into();
        }
        PurchaseEvent::parse(&body.to_string()).unwrap()
    }

    fn receipt(
        status: i64,
        order: &str,
        price: serde_json::Value,
        currency: Option<&str>,
    ) -> Receipt {
        let serde_json::Value::Number(price) = price else {
            panic!("a number")
        };
        Receipt {
            receipt_id: "r-1".into(),
            order_id: order.into(),
            price,
            status: PaymentStatus::from_code(status),
            currency: currency.map(str::to_owned),
            cancelled_price: None,
            sandbox: None,
            deposit_due: None,
        }
    }

    fn paid() -> Receipt {
        receipt(1, "o-1", 3000.into(), Some("KRW"))
    }

    #[test]
    fn a_matching_paid_receipt_is_verified() {
        assert_eq!(
            judge(&event(None), &paid(), Policy::default()),
            Judgement::Decide(Reason::Verified)
        );
        assert_eq!(
            judge(&event(Some("krw")), &paid(), Policy::default()),
            Judgement::Decide(Reason::Verified)
        );
        let float_price = receipt(1, "o-1", serde_json::json!(3000.0), Some("KRW"));
        assert_eq!(
            judge(&event(None), &float_price, Policy::default()),
            Judgement::Decide(Reason::Verified)
        );
    }

    #[test]
    fn a_receipt_for_another_order_is_an_order_mismatch_whatever_its_state() {
        for status in [1, 2, 0, 20, -1] {
            let r = receipt(status, "o-other", 3000.into(), Some("KRW"));
            assert_eq!(
                judge(&event(None), &r, Policy::default()),
                Judgement::Decide(Reason::OrderMismatch)
            );
        }
        let mut other_receipt = paid();
        other_receipt.receipt_id = "r-2".into();
        assert_eq!(
            judge(&event(None), &other_receipt, Policy::default()),
            Judgement::Decide(Reason::OrderMismatch)
        );
    }

    #[test]
    fn a_different_amount_is_a_price_mismatch() {
        for price in [
            serde_json::json!(100),
            serde_json::json!(3000.0000001),
            serde_json::json!(30000),
        ] {
            let r = receipt(1, "o-1", price, Some("KRW"));
            assert_eq!(
                judge(&event(None), &r, Policy::default()),
                Judgement::Decide(Reason::PriceMismatch)
            );
        }
        let negative = receipt(1, "o-1", serde_json::json!(-3000), Some("KRW"));
        assert_eq!(
            judge(&event(None), &negative, Policy::default()),
            Judgement::Decide(Reason::PriceMismatch)
        );
    }

    #[test]
    fn currency_is_checked_only_when_the_event_names_one() {
        let usd = receipt(1, "o-1", 3000.into(), Some("USD"));
        assert_eq!(
            judge(&event(None), &usd, Policy::default()),
            Judgement::Decide(Reason::Verified)
        );
        assert_eq!(
            judge(&event(Some("KRW")), &usd, Policy::default()),
            Judgement::Decide(Reason::CurrencyMismatch)
        );
        let unknown = receipt(1, "o-1", 3000.into(), None);
        assert_eq!(
            judge(&event(Some("KRW")), &unknown, Policy::default()),
            Judgement::Decide(Reason::CurrencyMismatch)
        );
    }

    #[test]
    fn cancelled_and_failed_statuses_are_rejected() {
        for status in [20, -30] {
            let r = receipt(status, "o-1", 3000.into(), None);
            assert_eq!(
                judge(&event(None), &r, Policy::default()),
                Judgement::Decide(Reason::Cancelled)
            );
        }
        for status in [-1, -2, -3, -11] {
            let r = receipt(status, "o-1", 3000.into(), None);
            assert_eq!(
                judge(&event(None), &r, Policy::default()),
                Judgement::Decide(Reason::NotPaid)
            );
        }
    }

    #[test]
    fn awaiting_confirmation_is_confirmed_only_when_everything_matches() {
        let ready = receipt(2, "o-1", 3000.into(), Some("KRW"));
        assert_eq!(
            judge(&event(Some("KRW")), &ready, Policy::default()),
            Judgement::Confirm
        );
        let cheap = receipt(2, "o-1", 100.into(), Some("KRW"));
        assert_eq!(
            judge(&event(None), &cheap, Policy::default()),
            Judgement::Decide(Reason::PriceMismatch)
        );
        let usd = receipt(2, "o-1", 3000.into(), Some("USD"));
        assert_eq!(
            judge(&event(Some("KRW")), &usd, Policy::default()),
            Judgement::Decide(Reason::CurrencyMismatch)
        );
        let replayed = receipt(2, "o-9", 3000.into(), Some("KRW"));
        assert_eq!(
            judge(&event(None), &replayed, Policy::default()),
            Judgement::Decide(Reason::OrderMismatch)
        );
    }

    #[test]
    fn partly_cancelled_and_sandbox_payments() {
        let mut partial = paid();
        partial.cancelled_price = Some(1000.into());
        assert_eq!(
            judge(&event(None), &partial, Policy::default()),
            Judgement::Decide(Reason::Cancelled)
        );
        partial.cancelled_price = Some(0.into());
        assert_eq!(
            judge(&event(None), &partial, Policy::default()),
            Judgement::Decide(Reason::Verified)
        );
        let mut test_payment = paid();
        test_payment.sandbox = Some(true);
        assert_eq!(
            judge(&event(None), &test_payment, Policy::default()),
            Judgement::Decide(Reason::Verified)
        );
        let strict = Policy {
            reject_sandbox: true,
        };
        assert_eq!(
            judge(&event(None), &test_payment, strict),
            Judgement::Decide(Reason::NotPaid)
        );
        assert_eq!(
            judge(&event(None), &paid(), strict),
            Judgement::Decide(Reason::Verified)
        );
    }

    #[test]
    fn statuses_that_are_not_final_get_no_decision() {
        for status in [0, 3, 5, -20, 11, 99] {
            let r = receipt(status, "o-1", 3000.into(), None);
            assert_eq!(
                judge(&event(None), &r, Policy::default()),
                Judgement::NotFinal,
                "status {status}"
            );
        }
    }
}

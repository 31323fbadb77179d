//! What Bootpay says about a payment, in no dialect's wire format: each Bootpay adapter
//! turns its own answer into a [`Receipt`] and its status code into a [`PaymentStatus`].

use std::time::SystemTime;

use serde_json::Number;

/// The parts of a receipt the rules rely on.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub receipt_id: String,
    pub order_id: String,
    /// The amount paid, as Bootpay wrote it.
    pub price: Number,
    pub status: PaymentStatus,
    pub currency: Option<String>,
    /// Cumulative amount cancelled; partial cancels can leave the status untouched.
    pub cancelled_price: Option<Number>,
    /// Set on payments made with a test project's keys, which move no money.
    pub sandbox: Option<bool>,
    /// A virtual account's deposit deadline, when Bootpay gives one.
    pub deposit_due: Option<SystemTime>,
}

/// Where a payment stands. Bootpay's v1 and v2 APIs share these codes; the code Bootpay
/// sent is kept ([`PaymentStatus::code`]) so a decision can echo it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    /// 0: requested, not yet approved.
    Pending,
    /// 1: paid.
    Paid,
    /// 2: approved by the PG, waiting for the merchant's server to confirm it.
    AwaitingConfirm,
    /// 3: approval in progress at the PG.
    Approving,
    /// 5: a virtual account was issued; the buyer has not paid into it yet.
    AwaitingDeposit,
    /// 20: cancelled (wholly, or, in v2, partly; see `cancelled_price`).
    Cancelled,
    /// −30: a cancel was sent to the PG and is in progress.
    CancelInProgress,
    /// −20: a cancel failed; the payment may still stand.
    CancelFailed,
    /// −1 (failed midway), −2 (approval failed), −3 (virtual account cancelled before
    /// any deposit), −11 (billing key cancelled): this payment will never be paid.
    Failed(i64),
    /// Any other code (billing-key and identity objects, codes Bootpay adds later). Never
    /// treated as paid.
    Other(i64),
}

impl PaymentStatus {
    /// The status a Bootpay code stands for.
    pub fn from_code(code: i64) -> Self {
        match code {
            0 => Self::Pending,
            1 => Self::Paid,
            2 => Self::AwaitingConfirm,
            3 => Self::Approving,
            5 => Self::AwaitingDeposit,
            20 => Self::Cancelled,
            -30 => Self::CancelInProgress,
            -20 => Self::CancelFailed,
            -1 | -2 | -3 | -11 => Self::Failed(code),
            other => Self::Other(other),
        }
    }

    /// The code Bootpay sent.
    pub fn code(self) -> i64 {
        match self {
            Self::Pending => 0,
            Self::Paid => 1,
            Self::AwaitingConfirm => 2,
            Self::Approving => 3,
            Self::AwaitingDeposit => 5,
            Self::Cancelled => 20,
            Self::CancelInProgress => -30,
            Self::CancelFailed => -20,
            Self::Failed(code) | Self::Other(code) => code,
        }
    }
}

impl std::fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_back_to_itself() {
        for code in [
            0,
            1,
            2,
            3,
            5,
            11,
            12,
            20,
            41,
            -1,
            -2,
            -3,
            -11,
            -20,
            -30,
            99,
            i64::MIN,
        ] {
            assert_eq!(PaymentStatus::from_code(code).code(), code, "{code}");
        }
        assert_eq!(PaymentStatus::from_code(-2), PaymentStatus::Failed(-2));
        assert_eq!(PaymentStatus::from_code(11), PaymentStatus::Other(11));
    }
}

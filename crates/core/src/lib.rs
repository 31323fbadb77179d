//! The verification core of receipt-verifier, apart from any transport.
//!
//! # Layout
//!
//! - [`event`]: the purchase-event contract (decode and validate a message body).
//! - [`receipt`]: a dialect-neutral [`Receipt`] and its [`PaymentStatus`].
//! - [`rules`]: [`judge`], what a receipt means for the purchase that names it.
//! - [`decision`]: the decision contract ([`Decision`], [`Reason`], [`DecisionMessage`]).
//! - [`notification`]: the note that a receipt may have changed (from a webhook or the
//!   sweep).
//! - [`payments`]: the [`Payments`] port through which the core reaches Bootpay.
//! - [`ledger`]: the [`Ledger`] port through which the core remembers each receipt.
//! - [`pipeline`]: [`Pipeline`], one inbound message in, one [`Outcome`] out.
//!
//! The core decides and remembers; adapters (Bootpay, SQS, DynamoDB) and runtimes (the
//! poller, the Lambda, the webhook ingress) live in the root package, and this crate's
//! manifest names none of their dependencies.

pub mod decision;
pub mod event;
pub mod ledger;
pub mod notification;
pub mod payments;
pub mod pipeline;
pub mod receipt;
pub mod rules;
#[cfg(any(test, feature = "stub"))]
pub mod stub;

pub use decision::{Decision, DecisionMessage, Reason, SCHEMA_VERSION, Verdict};
pub use event::{Amount, DecodeError, PurchaseEvent};
#[cfg(any(test, feature = "stub"))]
pub use ledger::MemoryLedger;
pub use ledger::{Ledger, LedgerEntry, LedgerError, LedgerState, NoLedger, Written};
pub use notification::{Notification, Source};
pub use payments::{Deadline, FailureKind, Payments, PaymentsError};
pub use pipeline::{Inbound, Outcome, Pipeline};
pub use receipt::{PaymentStatus, Receipt};
pub use rules::{Judgement, Policy, judge};

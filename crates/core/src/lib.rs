//! The verification core of receipt-verifier, apart from any transport.
//!
//! # Layout
//!
//! - [`event`]: the purchase-event contract (decode and validate a message body).
//! - [`receipt`]: a dialect-neutral [`Receipt`] and its [`PaymentStatus`].
//! - [`rules`]: [`judge`], what a receipt means for the purchase that names it.
//! - [`decision`]: the decision contract ([`Decision`], [`Reason`], [`DecisionMessage`]).
//! - [`payments`]: the [`Payments`] port through which the core reaches Bootpay.
//! - [`pipeline`]: [`Pipeline`], one inbound purchase in, one [`Outcome`] out.
//!
//! The core decides; adapters (Bootpay, SQS) and runtimes (the poller, the Lambda) live
//! in the root package, and this crate's manifest names none of their dependencies.

pub mod decision;
pub mod event;
pub mod payments;
pub mod pipeline;
pub mod receipt;
pub mod rules;
#[cfg(any(test, feature = "stub"))]
pub mod stub;

pub use decision::{Decision, DecisionMessage, Reason, Verdict};
pub use event::{Amount, DecodeError, PurchaseEvent};
pub use payments::{Deadline, FailureKind, Payments, PaymentsError};
pub use pipeline::{Outcome, Pipeline, Processed};
pub use receipt::{PaymentStatus, Receipt};
pub use rules::{Judgement, Policy, judge};

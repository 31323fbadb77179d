//! The SQS adapter: everything that speaks SQS, for every runtime and the operator
//! commands.
//!
//! - [`message`]: a purchase message as received ([`PurchaseMessage`]), from a long poll
//!   or from a Lambda event;
//! - [`queues`]: start-up resolution of the queues (the DLQ from the `RedrivePolicy`);
//! - [`batch`] and [`calls`]: batch calls of up to ten, with **one** rule for a batch that
//!   succeeds while some of its entries fail: each entry gets its own result;
//! - [`publish`]: decisions and dead letters as SQS messages;
//! - [`disposition`]: what becomes of a purchase message (delete, delay, hold, release);
//! - [`settle`]: an [`Outcome`](receipt_verifier_core::Outcome) published and turned into a
//!   disposition — the one place where "delete only after publishing" is decided.

pub mod batch;
pub mod calls;
pub mod disposition;
pub mod message;
pub mod publish;
pub mod queues;
pub mod settle;

pub use batch::{Batcher, EntryError, Flush, MAX_BATCH};
pub use calls::{DeleteFlush, Outgoing, SendFlush, VisibilityFlush, string_attribute};
pub use disposition::{Acker, Disposition, Requeue, Settled, VisibilityChanger};
pub use message::PurchaseMessage;
pub use publish::{Published, Publisher};
pub use queues::Queues;
pub use settle::Settler;

/// An SQS client with [`crate::aws_config`]'s configuration and timeouts.
pub async fn client(
    connect: std::time::Duration,
    attempt: std::time::Duration,
) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&crate::aws_config(connect, attempt).await)
}

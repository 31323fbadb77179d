//! The SQS batch calls behind the [`Batcher`](crate::batch::Batcher)s: send (decisions and
//! dead letters), delete, and change visibility.

use std::collections::HashMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::operation::change_message_visibility_batch::ChangeMessageVisibilityBatchOutput;
use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchOutput;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, MessageAttributeValue, SendMessageBatchRequestEntry,
};

use crate::batch::{EntryError, Flush, results_by_index};

/// A message to send: a decision or a dead letter.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub body: String,
    pub attributes: HashMap<String, MessageAttributeValue>,
    /// For FIFO queues: the group (the receipt id) and a deduplication id (the source
    /// message id, identical on every redelivery, so SQS drops duplicates of a replay).
    pub fifo: Option<(String, String)>,
}

pub fn string_attribute(value: impl Into<String>) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data_type is set")
}

pub struct SendFlush {
    pub sqs: Client,
    pub queue_url: String,
}

pub struct DeleteFlush {
    pub sqs: Client,
    pub queue_url: String,
}

/// `(receipt handle, visibility timeout in seconds)`
pub type VisibilityChange = (String, i32);

pub struct VisibilityFlush {
    pub sqs: Client,
    pub queue_url: String,
}

impl Flush for SendFlush {
    type Entry = Outgoing;

    fn size(message: &Outgoing) -> usize {
        let attributes: usize = message
            .attributes
            .iter()
            .map(|(name, value)| {
                name.len()
                    + value.data_type().len()
                    + value.string_value().map_or(0, str::len)
                    + value.binary_value().map_or(0, |b| b.as_ref().len())
            })
            .sum();
        message.body.len() + attributes
    }

    async fn flush(&self, entries: Vec<Outgoing>) -> Vec<Result<(), EntryError>> {
        let count = entries.len();
        let built = entries.into_iter().enumerate().map(|(i, m)| {
            let (group, dedup) = m.fifo.unzip();
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(m.body)
                .set_message_attributes(Some(m.attributes))
                .set_message_group_id(group)
                .set_message_deduplication_id(dedup)
                .build()
        });
        let entries = match built.collect() {
            Ok(entries) => entries,
            Err(e) => return all_failed(count, "InvalidEntry", &e),
        };
        let call = self.sqs.send_message_batch().queue_url(&self.queue_url);
        outcome(
            "SendMessageBatch",
            count,
            call.set_entries(Some(entries)).send().await,
        )
    }
}

impl Flush for DeleteFlush {
    type Entry = String;

    async fn flush(&self, handles: Vec<String>) -> Vec<Result<(), EntryError>> {
        let count = handles.len();
        let built = handles.into_iter().enumerate().map(|(i, h)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(h)
                .build()
        });
        let entries = match built.collect() {
            Ok(entries) => entries,
            Err(e) => return all_failed(count, "InvalidEntry", &e),
        };
        let call = self.sqs.delete_message_batch().queue_url(&self.queue_url);
        outcome(
            "DeleteMessageBatch",
            count,
            call.set_entries(Some(entries)).send().await,
        )
    }
}

impl Flush for VisibilityFlush {
    type Entry = VisibilityChange;

    async fn flush(&self, changes: Vec<VisibilityChange>) -> Vec<Result<(), EntryError>> {
        let count = changes.len();
        let built = changes.into_iter().enumerate().map(|(i, (handle, secs))| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(handle)
                .visibility_timeout(secs)
                .build()
        });
        let entries = match built.collect() {
            Ok(entries) => entries,
            Err(e) => return all_failed(count, "InvalidEntry", &e),
        };
        let call = self
            .sqs
            .change_message_visibility_batch()
            .queue_url(&self.queue_url);
        outcome(
            "ChangeMessageVisibilityBatch",
            count,
            call.set_entries(Some(entries)).send().await,
        )
    }
}

/// The parts of a batch call's response that say how each entry fared.
trait BatchResponse {
    fn failed(&self) -> &[BatchResultErrorEntry];
    fn successful_ids(&self) -> Vec<String>;
}

/// The three batch outputs have the same shape under different types.
macro_rules! batch_response {
    ($($output:ty),+) => {$(
        impl BatchResponse for $output {
            fn failed(&self) -> &[BatchResultErrorEntry] {
                self.failed()
            }
            fn successful_ids(&self) -> Vec<String> {
                self.successful().iter().map(|s| s.id().to_owned()).collect()
            }
        }
    )+};
}

batch_response!(
    SendMessageBatchOutput,
    DeleteMessageBatchOutput,
    ChangeMessageVisibilityBatchOutput
);

/// One result per entry: a successful call can still fail some of its entries.
fn outcome<R: BatchResponse, E: std::error::Error + 'static>(
    operation: &'static str,
    count: usize,
    result: Result<R, E>,
) -> Vec<Result<(), EntryError>> {
    crate::metrics::sqs_request(operation, result.is_ok());
    match result {
        Ok(out) => {
            crate::metrics::sqs_entry_failures(operation, out.failed().len());
            results_by_index(
                count,
                out.failed().iter().map(failure),
                out.successful_ids(),
            )
        }
        Err(e) => all_failed(count, "RequestFailed", &e),
    }
}

fn failure(entry: &BatchResultErrorEntry) -> (String, EntryError) {
    (
        entry.id().to_owned(),
        EntryError::new(entry.code(), entry.message().unwrap_or_default()),
    )
}

fn all_failed(
    count: usize,
    code: &str,
    error: &(dyn std::error::Error + 'static),
) -> Vec<Result<(), EntryError>> {
    let message = crate::error_chain(error);
    (0..count)
        .map(|_| Err(EntryError::new(code, message.clone())))
        .collect()
}

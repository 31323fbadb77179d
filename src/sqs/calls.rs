//! The three SQS batch calls — send (decisions, dead letters, purchase events), delete,
//! change visibility — behind the poller's and the Lambda's [`Batcher`]s and the operator
//! commands. Each returns one result per entry, by the same rule (`outcome`).
//!
//! [`Batcher`]: super::Batcher

use std::collections::HashMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::operation::change_message_visibility_batch::ChangeMessageVisibilityBatchOutput;
use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchOutput;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, MessageAttributeValue, SendMessageBatchRequestEntry,
};

use super::batch::{EntryError, Flush, results_by_index};

/// A message to send: a decision, a dead letter, a purchase event.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub body: String,
    pub attributes: HashMap<String, MessageAttributeValue>,
    /// For FIFO queues: the group and a deduplication id (for a decision, the receipt id
    /// and the source message id, identical on every redelivery, so SQS drops duplicates
    /// of a replay).
    pub fifo: Option<(String, String)>,
}

#[allow(
    clippy::expect_used,
    reason = "data_type, the builder's one required field, is set"
)]
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
        if count == 1 {
            return self.send(entries).await.unwrap_or_else(|e| vec![Err(e)]);
        }
        match self.send(entries.clone()).await {
            Ok(results) => results,
            // One bad message can fail the whole call (an oversized body does on moto and,
            // past the batch limit, on AWS). Sent alone, only that one fails, and the
            // others are not held back with it.
            Err(e) if refuses_the_message(&e) => {
                tracing::warn!(
                    message = "SQS refused a whole batch for what one message holds; sending each alone.",
                    error = %e,
                    entries = count,
                );
                let mut results = Vec::with_capacity(count);
                for entry in entries {
                    results.extend(
                        self.send(vec![entry])
                            .await
                            .unwrap_or_else(|e| vec![Err(e)]),
                    );
                }
                results
            }
            Err(e) => vec![Err(e); count],
        }
    }
}

impl SendFlush {
    /// One call; `Err` when the call as a whole failed.
    async fn send(
        &self,
        entries: Vec<Outgoing>,
    ) -> Result<Vec<Result<(), EntryError>>, EntryError> {
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
        let entries = built
            .collect::<Result<_, _>>()
            .map_err(|e| invalid_entry(&e))?;
        let call = self.sqs.send_message_batch().queue_url(&self.queue_url);
        outcome(
            "SendMessageBatch",
            count,
            call.set_entries(Some(entries)).send().await,
        )
    }
}

/// Whether SQS refused a message for what it contains (its size, characters or
/// parameters), so that sending it again cannot succeed; other failures (throttling,
/// permissions, a missing queue, the network) may pass.
pub fn refuses_the_message(error: &EntryError) -> bool {
    // Codes come bare, or prefixed (`AWS.SimpleQueueService.…`, `…#…`) by the protocol.
    let code = error.code.rsplit(['.', '#']).next().unwrap_or_default();
    matches!(
        code,
        "InvalidParameterValue"
            | "InvalidMessageContents"
            | "BatchRequestTooLong"
            | "InvalidAttributeName"
            | "InvalidAttributeValue"
    )
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
            Err(e) => return vec![Err(invalid_entry(&e)); count],
        };
        let call = self.sqs.delete_message_batch().queue_url(&self.queue_url);
        let result = call.set_entries(Some(entries)).send().await;
        outcome("DeleteMessageBatch", count, result).unwrap_or_else(|e| vec![Err(e); count])
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
            Err(e) => return vec![Err(invalid_entry(&e)); count],
        };
        let call = self
            .sqs
            .change_message_visibility_batch()
            .queue_url(&self.queue_url);
        let result = call.set_entries(Some(entries)).send().await;
        outcome("ChangeMessageVisibilityBatch", count, result)
            .unwrap_or_else(|e| vec![Err(e); count])
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

/// One result per entry, since a successful call can still fail some of its entries;
/// `Err` with the service's error code when the call as a whole failed.
fn outcome<R: BatchResponse, E, H>(
    operation: &'static str,
    count: usize,
    result: Result<R, SdkError<E, H>>,
) -> Result<Vec<Result<(), EntryError>>, EntryError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    H: std::fmt::Debug + 'static,
{
    crate::observability::metrics::sqs_request(operation, result.is_ok());
    match result {
        Ok(out) => {
            crate::observability::metrics::sqs_entry_failures(operation, out.failed().len());
            Ok(results_by_index(
                count,
                out.failed().iter().map(failure),
                out.successful_ids(),
            ))
        }
        Err(e) => {
            let code = e
                .as_service_error()
                .and_then(ProvideErrorMetadata::code)
                .unwrap_or("RequestFailed")
                .to_owned();
            Err(EntryError::new(code, crate::error_chain(&e)))
        }
    }
}

fn failure(entry: &BatchResultErrorEntry) -> (String, EntryError) {
    (
        entry.id().to_owned(),
        EntryError::new(entry.code(), entry.message().unwrap_or_default()),
    )
}

/// An entry the SDK would not build (a required field missing): a bug here, not in SQS.
fn invalid_entry(error: &(dyn std::error::Error + 'static)) -> EntryError {
    EntryError::new("InvalidEntry", crate::error_chain(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_the_message_are_told_from_passing_failures() {
        let refused = |code: &str| refuses_the_message(&EntryError::new(code, ""));
        assert!(refused("InvalidParameterValue"));
        assert!(refused("InvalidMessageContents"));
        assert!(refused("AWS.SimpleQueueService.BatchRequestTooLong"));
        assert!(refused("com.amazonaws.sqs#InvalidMessageContents"));
        for passing in [
            "RequestFailed",
            "RequestThrottled",
            "AWS.SimpleQueueService.NonExistentQueue",
            "KmsThrottled",
            "AccessDenied",
            "InternalError",
            "",
        ] {
            assert!(!refused(passing), "{passing}");
        }
    }
}

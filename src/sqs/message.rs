//! A purchase message as it arrives: from the poller's long poll (`ReceiveMessage`) or
//! from a record of a Lambda's SQS event.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};

/// A purchase message, before its body is decoded.
#[derive(Debug, Clone)]
pub struct PurchaseMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// How many times SQS has handed this message out, this time included.
    pub receive_count: u32,
    /// When the producer sent it, for end-to-end latency.
    pub sent_at: Option<SystemTime>,
    /// When this process received it.
    pub received_at: Instant,
    /// The producer's message attributes (a `traceparent` among them).
    pub attributes: HashMap<String, MessageAttributeValue>,
    /// On a FIFO queue, the message's group.
    pub group_id: Option<String>,
}

impl PurchaseMessage {
    /// A purchase, or a notification (marked by its `type` attribute) that a receipt may
    /// have changed.
    pub fn inbound(&self) -> receipt_verifier_core::Inbound {
        use receipt_verifier_core::notification::{NOTIFICATION_TYPE, TYPE_ATTRIBUTE};
        let marked = self
            .attributes
            .get(TYPE_ATTRIBUTE)
            .and_then(|a| a.string_value())
            == Some(NOTIFICATION_TYPE);
        if marked {
            receipt_verifier_core::Inbound::Notification
        } else {
            receipt_verifier_core::Inbound::Purchase
        }
    }

    /// From an SQS `sent` timestamp attribute in epoch milliseconds.
    pub fn parse_sent_at(millis: &str) -> Option<SystemTime> {
        let ms = millis.parse::<u64>().ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("receiving from the purchase queue failed: {cause}")]
pub struct ReceiveError {
    pub cause: String,
}

/// One `ReceiveMessage` call: waits up to `wait` for up to `max` messages (1–10).
///
/// # Errors
/// The SDK's error, with its whole cause chain.
pub async fn receive(
    sqs: &Client,
    queue_url: &str,
    max: i32,
    wait: Duration,
) -> Result<Vec<PurchaseMessage>, ReceiveError> {
    let out = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(max.clamp(1, 10))
        .wait_time_seconds(wait.as_secs().min(20) as i32)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .message_attribute_names("All")
        .send()
        .await;
    crate::observability::metrics::sqs_request("ReceiveMessage", out.is_ok());
    let out = out.map_err(|e| ReceiveError {
        cause: crate::error_chain(&e),
    })?;
    let messages: Vec<PurchaseMessage> = out
        .messages
        .unwrap_or_default()
        .into_iter()
        .filter_map(convert)
        .collect();
    crate::observability::metrics::received(messages.len());
    Ok(messages)
}

fn convert(message: Message) -> Option<PurchaseMessage> {
    let system = message.attributes.unwrap_or_default();
    let receive_count = system
        .get(&MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    let sent_at = system
        .get(&MessageSystemAttributeName::SentTimestamp)
        .and_then(|ms| PurchaseMessage::parse_sent_at(ms));
    Some(PurchaseMessage {
        // A message without a receipt handle cannot be acknowledged: skip it, and SQS
        // redelivers it.
        receipt_handle: message.receipt_handle?,
        message_id: message.message_id.unwrap_or_default(),
        body: message.body.unwrap_or_default(),
        receive_count,
        sent_at,
        received_at: Instant::now(),
        attributes: message.message_attributes.unwrap_or_default(),
        group_id: system
            .get(&MessageSystemAttributeName::MessageGroupId)
            .cloned(),
    })
}

//! Receive stage: long-polls the purchase queue for up to ten messages at a time.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};

/// A purchase message as received, before its body is decoded.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// How many times SQS has handed this message out, this time included.
    pub receive_count: u32,
    /// When the producer sent it, for end-to-end latency.
    pub sent_at: Option<SystemTime>,
    /// When this worker received it.
    pub received_at: Instant,
    pub attributes: HashMap<String, MessageAttributeValue>,
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
) -> Result<Vec<Received>, ReceiveError> {
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
    crate::metrics::sqs_request("ReceiveMessage", out.is_ok());
    let out = out.map_err(|e| ReceiveError {
        cause: crate::error_chain(&e),
    })?;
    let messages: Vec<Received> = out
        .messages
        .unwrap_or_default()
        .into_iter()
        .filter_map(convert)
        .collect();
    crate::metrics::received(messages.len());
    Ok(messages)
}

fn convert(message: Message) -> Option<Received> {
    let system = message.attributes.unwrap_or_default();
    let receive_count = system
        .get(&MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    let sent_at = system
        .get(&MessageSystemAttributeName::SentTimestamp)
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
    Some(Received {
        // A message without a receipt handle cannot be acknowledged: skip it, and SQS
        // redelivers it.
        receipt_handle: message.receipt_handle?,
        message_id: message.message_id.unwrap_or_default(),
        body: message.body.unwrap_or_default(),
        receive_count,
        sent_at,
        received_at: Instant::now(),
        attributes: message.message_attributes.unwrap_or_default(),
    })
}

//! Start-up checks on the queues: the purchase and result queues exist, and the purchase
//! queue has a dead-letter queue, which is where undecidable purchases end up. The worker
//! refuses to start without one, since a poison message would otherwise cycle forever.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;

#[derive(Debug, Clone)]
pub struct Queues {
    pub purchase_url: String,
    pub result_url: String,
    pub dead_letter_url: String,
    /// The purchase queue's default visibility timeout: how long a received message
    /// stays hidden unless the worker extends it.
    pub visibility_timeout: Duration,
    pub max_receive_count: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the {role} queue {url} cannot be used: {cause}")]
    Unusable {
        role: &'static str,
        url: String,
        cause: String,
    },
    #[error(
        "the purchase queue {0} has no dead-letter queue: set a RedrivePolicy on it \
         (deadLetterTargetArn and maxReceiveCount) so undecidable purchases land somewhere"
    )]
    NoDeadLetterQueue(String),
    #[error("the purchase queue's RedrivePolicy cannot be read: {0}")]
    BadRedrivePolicy(String),
}

/// Finds the DLQ named in the purchase queue's `RedrivePolicy` and checks every queue.
///
/// # Errors
/// A [`SetupError`] that names the queue and what to do about it.
pub async fn resolve(
    sqs: &Client,
    purchase_url: &str,
    result_url: &str,
) -> Result<Queues, SetupError> {
    let (purchase, ()) = tokio::try_join!(
        purchase_queue(sqs, purchase_url),
        check_result_queue(sqs, result_url)
    )?;
    Ok(Queues {
        purchase_url: purchase.url,
        result_url: result_url.to_owned(),
        dead_letter_url: purchase.dead_letter_url,
        visibility_timeout: purchase.visibility_timeout,
        max_receive_count: purchase.max_receive_count,
    })
}

/// A purchase queue and what its attributes say.
#[derive(Debug, Clone)]
pub struct PurchaseQueue {
    pub url: String,
    pub dead_letter_url: String,
    pub visibility_timeout: Duration,
    pub max_receive_count: Option<u32>,
}

/// Reads a purchase queue's visibility timeout and `RedrivePolicy`, and finds its DLQ.
///
/// # Errors
/// When the queue or its DLQ cannot be used, or it has no DLQ.
pub async fn purchase_queue(sqs: &Client, url: &str) -> Result<PurchaseQueue, SetupError> {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::VisibilityTimeout)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .map_err(|e| unusable("purchase", url, &e))?;
    let attributes = attrs.attributes().cloned().unwrap_or_default();
    let visibility_timeout = attributes
        .get(&QueueAttributeName::VisibilityTimeout)
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Duration::from_secs(30), Duration::from_secs);
    let policy = attributes
        .get(&QueueAttributeName::RedrivePolicy)
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| SetupError::NoDeadLetterQueue(url.to_owned()))?;
    let (dlq_arn, max_receive_count) = parse_redrive_policy(policy)?;
    let dead_letter_url = queue_url_of_arn(sqs, &dlq_arn)
        .await
        .map_err(|e| unusable("dead-letter", &dlq_arn, e.as_ref()))?;
    Ok(PurchaseQueue {
        url: url.to_owned(),
        dead_letter_url,
        visibility_timeout,
        max_receive_count,
    })
}

/// Checks that the result queue exists and can be read.
///
/// # Errors
/// [`SetupError::Unusable`] naming the queue.
pub async fn check_result_queue(sqs: &Client, url: &str) -> Result<(), SetupError> {
    check_queue(sqs, "result", url).await
}

/// Checks that the queue in `role` exists and can be read.
///
/// # Errors
/// [`SetupError::Unusable`] naming the queue.
pub async fn check_queue(sqs: &Client, role: &'static str, url: &str) -> Result<(), SetupError> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| unusable(role, url, &e))?;
    Ok(())
}

fn unusable(role: &'static str, url: &str, e: &(dyn std::error::Error + 'static)) -> SetupError {
    SetupError::Unusable {
        role,
        url: url.to_owned(),
        cause: crate::error_chain(e),
    }
}

/// Returns the DLQ's ARN and `maxReceiveCount` (a string or a number, depending on who
/// wrote the policy).
pub fn parse_redrive_policy(policy: &str) -> Result<(String, Option<u32>), SetupError> {
    let value: serde_json::Value =
        serde_json::from_str(policy).map_err(|e| SetupError::BadRedrivePolicy(e.to_string()))?;
    let arn = value
        .get("deadLetterTargetArn")
        .and_then(|a| a.as_str())
        .ok_or_else(|| SetupError::BadRedrivePolicy("no deadLetterTargetArn".into()))?;
    let max = value.get("maxReceiveCount").and_then(|m| match m {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    });
    Ok((arn.to_owned(), max))
}

/// `arn:aws:sqs:<region>:<account>:<name>` → the queue's URL, through `GetQueueUrl` so
/// that endpoints (real AWS, an emulator) answer with their own URL form.
pub async fn queue_url_of_arn(
    sqs: &Client,
    arn: &str,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let parts: Vec<&str> = arn.split(':').collect();
    let [_, _, "sqs", _, account, name] = parts.as_slice() else {
        return Err(format!("{arn} is not an SQS queue ARN").into());
    };
    let out = sqs
        .get_queue_url()
        .queue_name(*name)
        .queue_owner_aws_account_id(*account)
        .send()
        .await?;
    out.queue_url()
        .map(str::to_owned)
        .ok_or_else(|| "GetQueueUrl returned no URL".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_policy_accepts_string_and_number_counts() {
        let (arn, max) = parse_redrive_policy(
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:dlq","maxReceiveCount":"5"}"#,
        )
        .unwrap();
        assert_eq!(arn, "arn:aws:sqs:us-east-1:123456789012:dlq");
        assert_eq!(max, Some(5));
        let (_, max) = parse_redrive_policy(
            r#"{"deadLetterTargetArn":"arn:aws:sqs:r:1:q","maxReceiveCount":3}"#,
        )
        .unwrap();
        assert_eq!(max, Some(3));
        assert!(parse_redrive_policy("{}").is_err());
        assert!(parse_redrive_policy("nope").is_err());
    }
}

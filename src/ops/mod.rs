//! Operator commands: `enqueue`, `results`, `stats`, `dlq …`, `ledger …` and `reconcile`. They share the worker's
//! queue settings, print a table for people or JSON lines with `--json`, and turn AWS
//! errors into sentences that say what to do.

pub mod dlq;
pub mod enqueue;
pub mod ledger;
pub mod results;
pub mod stats;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use clap::Args;
use serde_json::Value;

use crate::sqs::queues::{self, SetupError};
use crate::sqs::{DeleteFlush, EntryError, Flush, MAX_BATCH, VisibilityFlush};

/// Queue settings shared by the operator commands (the same variables as `run`).
#[derive(Debug, Clone, Args)]
pub struct OpsQueues {
    /// URL of the purchase queue (its RedrivePolicy names the DLQ).
    #[arg(long, env = "PURCHASE_QUEUE_URL", global = true, value_parser = crate::config::queue_url)]
    pub purchase_queue_url: Option<String>,

    /// URL of the result (decision) queue.
    #[arg(long, env = "RESULT_QUEUE_URL", global = true, value_parser = crate::config::queue_url)]
    pub result_queue_url: Option<String>,

    /// URL of the dead-letter queue; found from the purchase queue's RedrivePolicy when
    /// not given.
    #[arg(long, env = "DLQ_URL", global = true, value_parser = crate::config::queue_url)]
    pub dlq_url: Option<String>,

    /// Print one JSON object per line instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0} is not set: pass --{1} or set {0}")]
    MissingQueue(&'static str, &'static str),
    #[error(
        "AWS credentials are missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
         AWS_PROFILE, and AWS_REGION ({0})"
    )]
    NoCredentials(String),
    #[error("queue {0} does not exist (check the URL, AWS_REGION and AWS_ENDPOINT_URL)")]
    NoSuchQueue(String),
    #[error("{action} on {queue} failed: {cause}")]
    Aws {
        action: &'static str,
        queue: String,
        cause: String,
    },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl OpsError {
    /// Classifies an SDK error on `queue` into something a person can act on.
    pub fn aws(
        action: &'static str,
        queue: &str,
        error: &(dyn std::error::Error + 'static),
    ) -> Self {
        let cause = crate::error_chain(error);
        if cause.contains("QueueDoesNotExist") || cause.contains("NonExistentQueue") {
            Self::NoSuchQueue(queue.to_owned())
        } else if cause.contains("no credentials") || cause.contains("credentials provider") {
            Self::NoCredentials(cause)
        } else {
            Self::Aws {
                action,
                queue: queue.to_owned(),
                cause,
            }
        }
    }
}

impl OpsQueues {
    pub fn purchase(&self) -> Result<&str, OpsError> {
        self.purchase_queue_url
            .as_deref()
            .ok_or(OpsError::MissingQueue(
                "PURCHASE_QUEUE_URL",
                "purchase-queue-url",
            ))
    }

    pub fn result(&self) -> Result<&str, OpsError> {
        self.result_queue_url
            .as_deref()
            .ok_or(OpsError::MissingQueue(
                "RESULT_QUEUE_URL",
                "result-queue-url",
            ))
    }

    /// The DLQ: `--dlq-url`, else the one in the purchase queue's RedrivePolicy.
    pub async fn dlq(&self, sqs: &Client) -> Result<String, OpsError> {
        if let Some(url) = &self.dlq_url {
            return Ok(url.clone());
        }
        let purchase = self.purchase().map_err(|_| {
            OpsError::Usage(
                "no dead-letter queue: pass --dlq-url, or set PURCHASE_QUEUE_URL so it can be \
                 found from the purchase queue's RedrivePolicy"
                    .into(),
            )
        })?;
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(purchase)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| OpsError::aws("GetQueueAttributes", purchase, &e))?;
        let policy = attrs
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
            .ok_or_else(|| SetupError::NoDeadLetterQueue(purchase.to_owned()))?;
        let (arn, _) = queues::parse_redrive_policy(policy)?;
        queue_url_of_arn(sqs, &arn).await
    }
}

pub async fn queue_url_of_arn(sqs: &Client, arn: &str) -> Result<String, OpsError> {
    queues::queue_url_of_arn(sqs, arn)
        .await
        .map_err(|e| OpsError::aws("GetQueueUrl", arn, e.as_ref()))
}

pub async fn queue_arn(sqs: &Client, url: &str) -> Result<String, OpsError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| OpsError::aws("GetQueueAttributes", url, &e))?;
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| OpsError::NoSuchQueue(url.to_owned()))
}

/// Reads messages without consuming them: each is received with a visibility timeout of
/// `hold` (so one scan does not see it twice) and handed back by [`release`] afterwards.
/// Stops at `max` messages or when a receive waiting `wait` brings nothing new.
pub async fn scan(
    sqs: &Client,
    queue_url: &str,
    max: usize,
    wait: Duration,
    hold: Duration,
) -> Result<Vec<Message>, OpsError> {
    let mut seen = std::collections::HashSet::new();
    let mut messages = Vec::new();
    while messages.len() < max {
        let want = (max - messages.len()).min(MAX_BATCH) as i32;
        let out = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(want)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .visibility_timeout(hold.as_secs().clamp(1, 43_200) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| OpsError::aws("ReceiveMessage", queue_url, &e))?;
        let batch = out.messages.unwrap_or_default();
        let mut new = 0;
        for m in batch {
            if seen.insert(m.message_id().unwrap_or_default().to_owned()) {
                messages.push(m);
                new += 1;
            }
        }
        if new == 0 {
            break;
        }
    }
    Ok(messages)
}

/// Makes scanned messages visible again at once.
///
/// # Errors
/// Naming every message SQS did not hand back.
pub async fn release(sqs: &Client, queue_url: &str, messages: &[&Message]) -> Result<(), OpsError> {
    let flush = VisibilityFlush {
        sqs: sqs.clone(),
        queue_url: queue_url.to_owned(),
    };
    let action = "ChangeMessageVisibilityBatch";
    each_message(&flush, action, queue_url, messages, |handle| (handle, 0)).await
}

/// Deletes messages that were received (and handled) by an operator command.
///
/// # Errors
/// Naming every message SQS did not delete.
pub async fn delete(sqs: &Client, queue_url: &str, messages: &[&Message]) -> Result<(), OpsError> {
    let flush = DeleteFlush {
        sqs: sqs.clone(),
        queue_url: queue_url.to_owned(),
    };
    each_message(
        &flush,
        "DeleteMessageBatch",
        queue_url,
        messages,
        |handle| handle,
    )
    .await
}

/// Applies a batch call to received messages, ten at a time, by the adapter's rule for
/// partial failures, and reports every entry that failed.
async fn each_message<F: Flush>(
    flush: &F,
    action: &'static str,
    queue_url: &str,
    messages: &[&Message],
    entry: impl Fn(String) -> F::Entry,
) -> Result<(), OpsError> {
    let mut failures: Vec<(String, EntryError)> = Vec::new();
    for chunk in messages.chunks(MAX_BATCH) {
        let mut ids = Vec::with_capacity(chunk.len());
        let mut entries = Vec::with_capacity(chunk.len());
        for message in chunk {
            let id = message.message_id().unwrap_or("?").to_owned();
            match message.receipt_handle() {
                Some(handle) => {
                    ids.push(id);
                    entries.push(entry(handle.to_owned()));
                }
                None => failures.push((
                    id,
                    EntryError::new("NoReceiptHandle", "received without a receipt handle"),
                )),
            }
        }
        if entries.is_empty() {
            continue;
        }
        for (id, result) in ids.into_iter().zip(flush.flush(entries).await) {
            if let Err(e) = result {
                failures.push((id, e));
            }
        }
    }
    entry_failures(action, queue_url, messages.len(), failures)
}

/// One error for the entries of batch calls that failed: the classified call error when
/// every entry failed the same way (the call itself failed), else each entry's own.
pub fn entry_failures(
    action: &'static str,
    queue_url: &str,
    total: usize,
    failures: Vec<(String, EntryError)>,
) -> Result<(), OpsError> {
    let Some((_, first)) = failures.first() else {
        return Ok(());
    };
    if failures.len() == total && failures.iter().all(|(_, e)| e.code == first.code) {
        return Err(OpsError::aws(action, queue_url, first));
    }
    let listed: Vec<String> = failures
        .iter()
        .map(|(id, e)| format!("{id} ({e})"))
        .collect();
    Err(OpsError::Aws {
        action,
        queue: queue_url.to_owned(),
        cause: format!(
            "{} of {total} messages failed: {}",
            failures.len(),
            listed.join("; ")
        ),
    })
}

/// `--grep` and `--where` filters over a message's body and attributes.
#[derive(Debug, Clone, Default, Args)]
pub struct Filter {
    /// Keep messages whose body or an attribute value matches this regular expression
    /// (a plain substring works too).
    #[arg(long)]
    pub grep: Option<regex::Regex>,

    /// Keep messages where FIELD equals VALUE: a body field (dotted path, e.g.
    /// `order_id` or `metadata.user`) or, failing that, a message attribute (e.g.
    /// `error_code`). Repeat to require several.
    #[arg(long = "where", value_name = "FIELD=VALUE", value_parser = parse_where)]
    pub conditions: Vec<(String, String)>,
}

fn parse_where(text: &str) -> Result<(String, String), String> {
    let (field, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not FIELD=VALUE"))?;
    if field.trim().is_empty() {
        return Err(format!("`{text}` names no field"));
    }
    Ok((field.trim().to_owned(), value.to_owned()))
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.grep.is_none() && self.conditions.is_empty()
    }

    pub fn matches(&self, message: &Message) -> bool {
        let body = message.body().unwrap_or_default();
        let attributes = string_attributes(message);
        if let Some(re) = &self.grep
            && !re.is_match(body)
            && !attributes.values().any(|v| re.is_match(v))
        {
            return false;
        }
        let json: Option<Value> = serde_json::from_str(body).ok();
        self.conditions.iter().all(|(field, expected)| {
            let in_body = json.as_ref().and_then(|j| {
                field
                    .split('.')
                    .try_fold(j, |v, key| v.get(key))
                    .map(|v| match v {
                        Value::String(s) => s == expected,
                        other => serde_json::from_str::<Value>(expected).is_ok_and(|e| e == *other),
                    })
            });
            in_body.unwrap_or_else(|| attributes.get(field.as_str()) == Some(expected))
        })
    }
}

pub fn string_attributes(message: &Message) -> HashMap<String, String> {
    message
        .message_attributes()
        .map(|attrs| {
            attrs
                .iter()
                .filter_map(|(k, v)| v.string_value().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn system_attribute(message: &Message, name: MessageSystemAttributeName) -> Option<&str> {
    message
        .attributes()
        .and_then(|a| a.get(&name))
        .map(String::as_str)
}

/// An SQS epoch-milliseconds attribute as RFC 3339.
pub fn timestamp(message: &Message, name: MessageSystemAttributeName) -> Option<String> {
    let ms: u64 = system_attribute(message, name)?.parse().ok()?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    Some(humantime::format_rfc3339_seconds(at).to_string())
}

/// Prints rows as an aligned table with a header.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    print!("{}", table(headers, rows));
}

/// Rows as an aligned table with a header, one line each. Cells hold text from messages
/// (bodies, error attributes): their control characters are escaped, so that a cell can
/// neither break its row nor send escapes to the operator's terminal.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| escape_controls(cell)).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut text = line(headers.to_vec());
    for row in rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

/// `text` with control characters (and the Unicode line separators) as escapes.
pub fn escape_controls(text: &str) -> String {
    if !text
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
    {
        return text.to_owned();
    }
    text.chars()
        .flat_map(|c| {
            let escape = c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
            let shown: Vec<char> = if escape {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            shown
        })
        .collect()
}

/// Shortens `text` to `max` characters for a table cell.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_cells_cannot_break_a_row_or_reach_the_terminal() {
        let text = table(
            &["BODY"],
            &[
                vec!["a\r\nforged row\u{1b}[31m\u{2028}".into()],
                vec!["영수증 ok".into()],
            ],
        );
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.contains(r"a\r\nforged row\u{1b}[31m\u{2028}"),
            "{text}"
        );
        assert!(text.contains("영수증 ok"), "{text}");
    }

    #[test]
    fn every_failed_entry_is_reported_and_a_failed_call_is_classified() {
        assert!(entry_failures("DeleteMessageBatch", "q", 3, Vec::new()).is_ok());
        let partial = entry_failures(
            "DeleteMessageBatch",
            "q",
            12,
            vec![
                (
                    "m-1".into(),
                    EntryError::new("ReceiptHandleIsInvalid", "expired"),
                ),
                ("m-11".into(), EntryError::new("InternalError", "try again")),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(partial.contains("2 of 12 messages failed"), "{partial}");
        assert!(
            partial.contains("m-1 (ReceiptHandleIsInvalid: expired)"),
            "{partial}"
        );
        assert!(
            partial.contains("m-11 (InternalError: try again)"),
            "{partial}"
        );
        let whole_call = entry_failures(
            "ChangeMessageVisibilityBatch",
            "https://sqs/1/gone",
            2,
            vec![
                (
                    "m-1".into(),
                    EntryError::new("AWS.SimpleQueueService.NonExistentQueue", "service error"),
                ),
                (
                    "m-2".into(),
                    EntryError::new("AWS.SimpleQueueService.NonExistentQueue", "service error"),
                ),
            ],
        )
        .unwrap_err();
        assert!(
            matches!(whole_call, OpsError::NoSuchQueue(ref q) if q == "https://sqs/1/gone"),
            "{whole_call}"
        );
    }
}

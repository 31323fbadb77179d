//! `receipt-verifier stats`: backlog of the purchase, result and dead-letter queues.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use clap::Args;
use serde_json::json;

use super::{OpsError, OpsQueues, print_table};

#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// Refresh every N seconds until interrupted.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "5", value_parser = clap::value_parser!(u64).range(1..))]
    pub watch: Option<u64>,
}

struct Row {
    role: &'static str,
    url: String,
    visible: Option<u64>,
    in_flight: Option<u64>,
    delayed: Option<u64>,
}

pub async fn run(sqs: &Client, queues: &OpsQueues, args: &StatsArgs) -> Result<(), OpsError> {
    let mut targets = Vec::new();
    if let Some(u) = &queues.purchase_queue_url {
        targets.push(("purchase", u.clone()));
    }
    if let Some(u) = &queues.result_queue_url {
        targets.push(("result", u.clone()));
    }
    if queues.dlq_url.is_some() || queues.purchase_queue_url.is_some() {
        targets.push(("dead-letter", queues.dlq(sqs).await?));
    }
    if targets.is_empty() {
        return Err(OpsError::MissingQueue(
            "PURCHASE_QUEUE_URL",
            "purchase-queue-url",
        ));
    }
    loop {
        let mut rows = Vec::new();
        for (role, url) in &targets {
            rows.push(read(sqs, role, url).await?);
        }
        if args.watch.is_some() && !queues.json {
            // Clear the screen between refreshes, like `watch`.
            print!("\x1b[2J\x1b[H");
        }
        print(&rows, queues.json);
        let Some(every) = args.watch else {
            return Ok(());
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(every)) => {}
        }
    }
}

async fn read(sqs: &Client, role: &'static str, url: &str) -> Result<Row, OpsError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| OpsError::aws("GetQueueAttributes", url, &e))?;
    let attrs = out.attributes().cloned().unwrap_or_default();
    let get = |k: QueueAttributeName| attrs.get(&k).and_then(|v| v.parse().ok());
    Ok(Row {
        role,
        url: url.to_owned(),
        visible: get(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    })
}

fn print(rows: &[Row], as_json: bool) {
    if as_json {
        for r in rows {
            // SQS's API does not expose the oldest message's age; CloudWatch's
            // ApproximateAgeOfOldestMessage does (see the README's Monitoring section).
            println!(
                "{}",
                json!({"queue": r.role, "url": r.url, "visible": r.visible,
                       "in_flight": r.in_flight, "delayed": r.delayed,
                       "oldest_age_secs": null})
            );
        }
        return;
    }
    let n = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.role.to_owned(),
                n(r.visible),
                n(r.in_flight),
                n(r.delayed),
                "n/a".to_owned(),
                r.url.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "QUEUE",
            "VISIBLE",
            "IN FLIGHT",
            "DELAYED",
            "OLDEST AGE",
            "URL",
        ],
        &table,
    );
}

//! `receipt-verifier enqueue`: sends purchase events, validated against the event
//! contract first, in batches of ten.

use std::io::BufRead;
use std::path::PathBuf;

use std::collections::HashMap;

use aws_sdk_sqs::Client;
use clap::Args;
use serde_json::{Value, json};

use super::{OpsError, OpsQueues};
use crate::sqs::{EntryError, Flush, MAX_BATCH, Outgoing, SendFlush};
use receipt_verifier_core::PurchaseEvent;

#[derive(Debug, Clone, Args)]
pub struct EnqueueArgs {
    /// Purchase events as JSON lines from FILE (`-` for stdin). Blank lines are skipped.
    #[arg(long, short = 'f', value_name = "FILE", conflicts_with_all = ["receipt_id", "order_id", "price"])]
    pub file: Option<PathBuf>,

    /// Receipt id of a single event.
    #[arg(long, requires_all = ["order_id", "price"])]
    pub receipt_id: Option<String>,

    /// Order id of a single event.
    #[arg(long)]
    pub order_id: Option<String>,

    /// Price the app server charged (a number ≥ 0).
    #[arg(long)]
    pub price: Option<serde_json::Number>,

    /// Currency the app server expects, e.g. KRW.
    #[arg(long)]
    pub currency: Option<String>,

    /// Metadata echoed on the decision, as JSON.
    #[arg(long, value_parser = parse_json)]
    pub metadata: Option<Value>,

    /// Event id echoed on the decision.
    #[arg(long)]
    pub event_id: Option<String>,

    /// Send the lines as they are, without checking them against the event contract
    /// (to see how the worker dead-letters malformed events).
    #[arg(long, requires = "file")]
    pub unchecked: bool,
}

fn parse_json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
}

/// One event to send, with the input line it came from.
struct Pending {
    line: usize,
    body: String,
}

pub async fn run(sqs: &Client, queues: &OpsQueues, args: &EnqueueArgs) -> Result<(), OpsError> {
    let queue = queues.purchase()?;
    let events = read_events(args)?;
    let invalid: Vec<String> = events
        .iter()
        .filter(|_| !args.unchecked)
        .filter_map(|p| {
            PurchaseEvent::parse(&p.body)
                .err()
                .map(|e| format!("line {}: {e}", p.line))
        })
        .collect();
    if !invalid.is_empty() {
        for problem in &invalid {
            eprintln!("invalid event, {problem}");
        }
        return Err(OpsError::Usage(format!(
            "{} of {} events are invalid; nothing was sent",
            invalid.len(),
            events.len()
        )));
    }
    let mut sent = 0;
    let mut failed = Vec::new();
    for chunk in events.chunks(MAX_BATCH) {
        for (pending, result) in chunk.iter().zip(send_batch(sqs, queue, chunk).await) {
            match result {
                Ok(()) => sent += 1,
                Err(e) => failed.push((pending.line, e)),
            }
        }
    }
    for (line, error) in &failed {
        eprintln!("not sent, line {line}: {error}");
    }
    if queues.json {
        println!(
            "{}",
            json!({"sent": sent, "failed": failed.len(), "queue": queue})
        );
    } else {
        println!("sent {sent} of {} purchase events to {queue}", events.len());
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(OpsError::Usage(format!(
            "{} events were not sent (lines listed above); the others were",
            failed.len()
        )))
    }
}

fn read_events(args: &EnqueueArgs) -> Result<Vec<Pending>, OpsError> {
    if let Some(path) = &args.file {
        let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            let file = std::fs::File::open(path)
                .map_err(|e| OpsError::Usage(format!("cannot open {}: {e}", path.display())))?;
            Box::new(std::io::BufReader::new(file))
        };
        let mut events = Vec::new();
        for (i, line) in reader.lines().enumerate() {
            let line = line?;
            if !line.trim().is_empty() {
                events.push(Pending {
                    line: i + 1,
                    body: line,
                });
            }
        }
        return Ok(events);
    }
    let (Some(receipt_id), Some(order_id), Some(price)) =
        (&args.receipt_id, &args.order_id, &args.price)
    else {
        return Err(OpsError::Usage(
            "give --receipt-id, --order-id and --price, or --file with JSON lines".into(),
        ));
    };
    let mut event = json!({"receipt_id": receipt_id, "order_id": order_id, "price": price});
    if let Some(c) = &args.currency {
        event["currency"] = c.clone().into();
    }
    if let Some(m) = &args.metadata {
        event["metadata"] = m.clone();
    }
    if let Some(id) = &args.event_id {
        event["event_id"] = id.clone().into();
    }
    Ok(vec![Pending {
        line: 1,
        body: event.to_string(),
    }])
}

/// One batch call; each event gets its own result, a whole-call failure classified as the
/// other commands classify it.
async fn send_batch(sqs: &Client, queue: &str, chunk: &[Pending]) -> Vec<Result<(), EntryError>> {
    let flush = SendFlush {
        sqs: sqs.clone(),
        queue_url: queue.to_owned(),
    };
    let outgoing = chunk
        .iter()
        .map(|p| Outgoing {
            body: p.body.clone(),
            attributes: HashMap::new(),
            fifo: None,
        })
        .collect();
    let results = flush.flush(outgoing).await;
    let whole_call_failed = results.iter().all(|r| r.is_err());
    results
        .into_iter()
        .map(|r| {
            r.map_err(|e| match whole_call_failed {
                true => EntryError::new(
                    e.code.clone(),
                    OpsError::aws("SendMessageBatch", queue, &e).to_string(),
                ),
                false => e,
            })
        })
        .collect()
}

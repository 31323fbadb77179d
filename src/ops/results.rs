//! `receipt-verifier results`: reads decisions from the result queue. By default they are
//! handed back afterwards for their real consumer; `--delete` consumes them.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::Message;
use clap::Args;
use serde_json::{Value, json};

use super::{OpsError, OpsQueues, clip, release, scan, string_attributes, table};

#[derive(Debug, Clone, Args)]
pub struct ResultsArgs {
    /// Most decisions to show.
    #[arg(long, default_value = "10")]
    pub max: usize,

    /// Seconds each receive waits for messages (0–20).
    #[arg(long, default_value = "2", value_parser = clap::value_parser!(u64).range(0..=20))]
    pub wait: u64,

    /// Delete the decisions shown (consume them) instead of handing them back.
    #[arg(long)]
    pub delete: bool,

    /// Only `fulfill` or `reject` decisions.
    #[arg(long, value_parser = ["fulfill", "reject"])]
    pub decision: Option<String>,

    /// Only decisions with this reason (e.g. price_mismatch).
    #[arg(long)]
    pub reason: Option<String>,
}

pub async fn run(sqs: &Client, queues: &OpsQueues, args: &ResultsArgs) -> Result<(), OpsError> {
    let queue = queues.result()?;
    eprintln!(
        "note: reading decisions raises their receive count; they are handed back unless --delete"
    );
    let filtered = args.decision.is_some() || args.reason.is_some();
    // Hold long enough for one scan; released (or deleted) right after.
    let messages = scan(
        sqs,
        queue,
        if filtered { usize::MAX } else { args.max },
        Duration::from_secs(args.wait),
        Duration::from_secs(30),
    )
    .await?;
    let mut shown = Vec::new();
    let mut others = Vec::new();
    for m in &messages {
        let attrs = string_attributes(m);
        let body: Value = serde_json::from_str(m.body().unwrap_or_default()).unwrap_or(Value::Null);
        let field = |name: &str| {
            attrs
                .get(name)
                .cloned()
                .or_else(|| body[name].as_str().map(str::to_owned))
        };
        let wanted = args
            .decision
            .as_ref()
            .is_none_or(|d| field("decision").as_ref() == Some(d))
            && args
                .reason
                .as_ref()
                .is_none_or(|r| field("reason").as_ref() == Some(r));
        if wanted && shown.len() < args.max {
            shown.push((m, body));
        } else {
            others.push(m);
        }
    }
    // Written out before anything is deleted: a consumed decision must at least have
    // been handed to the reader; if the reader has gone, nothing is deleted.
    let written = {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(render(queues.json, &shown).as_bytes())
            .and_then(|()| stdout.flush())
    };
    if let Err(e) = written {
        let all: Vec<&Message> = messages.iter().collect();
        release(sqs, queue, &all).await?;
        return Err(OpsError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot write the decisions ({e}); none deleted, all handed back"),
        )));
    }
    if args.delete {
        let handles: Vec<&Message> = shown.iter().map(|(m, _)| *m).collect();
        super::delete(sqs, queue, &handles).await?;
    } else {
        others.extend(shown.iter().map(|(m, _)| *m));
    }
    release(sqs, queue, &others).await?;
    if !queues.json {
        let verb = if args.delete {
            "consumed"
        } else {
            "shown (left on the queue)"
        };
        println!("{} decisions {verb}", shown.len());
    }
    Ok(())
}

fn render(json: bool, shown: &[(&Message, Value)]) -> String {
    if json {
        return shown
            .iter()
            .map(|(m, body)| format!("{}\n", json!({"message_id": m.message_id(), "body": body})))
            .collect();
    }
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|(_, b)| {
            let s = |k: &str| match &b[k] {
                Value::Null => "-".to_owned(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            vec![
                s("decision"),
                s("reason"),
                s("receipt_id"),
                s("order_id"),
                s("price"),
                s("paid_price"),
                s("payment_status"),
                clip(&s("verified_at"), 24),
            ]
        })
        .collect();
    table(
        &[
            "DECISION",
            "REASON",
            "RECEIPT",
            "ORDER",
            "PRICE",
            "PAID",
            "STATUS",
            "VERIFIED AT",
        ],
        &rows,
    )
}

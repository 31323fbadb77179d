//! `receipt-verifier dlq …`: inspect, export, redrive and purge dead letters.
//!
//! SQS has no true peek: every read is a receive, which raises the message's receive
//! count. Reads here hold each message briefly and hand it back; redrive sends each
//! message to its destination *before* deleting it from the DLQ, so an interrupted
//! redrive can duplicate a message but never lose one.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{
    Filter, OpsError, OpsQueues, clip, delete, entry_failures, print_table, queue_arn, release,
    scan, string_attributes, system_attribute, timestamp,
};
use crate::sqs::publish::DEAD_LETTER_ATTRIBUTES;
use crate::sqs::{Flush, MAX_BATCH, Outgoing, SendFlush};

#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// List dead letters without deleting them. Reading raises each one's receive count.
    Peek(PeekArgs),
    /// Write dead letters (body and attributes) to a JSON-lines file.
    Export(ExportArgs),
    /// Move dead letters back to the purchase queue (or --to URL), each sent before it is
    /// deleted.
    Redrive(RedriveArgs),
    /// Delete every message in the dead-letter queue.
    Purge(PurgeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ReadArgs {
    /// Most messages to handle (default 100; for `redrive`, all).
    #[arg(long)]
    pub max: Option<usize>,

    /// Seconds each receive waits for messages (0–20).
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u64).range(0..=20))]
    pub wait: u64,

    /// Seconds a message read by this command stays hidden from others if the command is
    /// interrupted before handing it back.
    #[arg(long, default_value = "30", value_parser = clap::value_parser!(u64).range(1..=43200))]
    pub hold: u64,

    #[command(flatten)]
    pub filter: Filter,
}

impl ReadArgs {
    fn limit(&self) -> usize {
        self.max.unwrap_or(100)
    }
}

#[derive(Debug, Clone, Args)]
pub struct PeekArgs {
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// File to write (JSON lines); `-` for stdout.
    #[arg(long)]
    pub out: PathBuf,

    /// Delete the exported messages once the file is written.
    #[arg(long)]
    pub delete: bool,

    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RedriveArgs {
    /// Destination queue URL (default: the purchase queue).
    #[arg(long, value_parser = crate::config::queue_url)]
    pub to: Option<String>,

    /// Most messages moved per second.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub rate: Option<u32>,

    /// Never use SQS's server-side move task, even for an unfiltered redrive.
    #[arg(long)]
    pub client_side: bool,

    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Clone, Args)]
pub struct PurgeArgs {
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

pub async fn run(sqs: &Client, queues: &OpsQueues, command: &DlqCommand) -> Result<(), OpsError> {
    let dlq = queues.dlq(sqs).await?;
    match command {
        DlqCommand::Peek(args) => peek(sqs, &dlq, queues.json, &args.read).await,
        DlqCommand::Export(args) => export(sqs, &dlq, queues.json, args).await,
        DlqCommand::Redrive(args) => redrive(sqs, queues, &dlq, args).await,
        DlqCommand::Purge(args) => purge(sqs, &dlq, args).await,
    }
}

/// Reads up to `max` matching messages; the rest of what was read is handed back.
async fn read_matching(
    sqs: &Client,
    dlq: &str,
    args: &ReadArgs,
) -> Result<(Vec<Message>, Vec<Message>), OpsError> {
    let scanned = scan(
        sqs,
        dlq,
        if args.filter.is_empty() {
            args.limit()
        } else {
            usize::MAX
        },
        Duration::from_secs(args.wait),
        Duration::from_secs(args.hold),
    )
    .await?;
    let (mut matching, mut rest): (Vec<_>, Vec<_>) =
        scanned.into_iter().partition(|m| args.filter.matches(m));
    if matching.len() > args.limit() {
        rest.extend(matching.split_off(args.limit()));
    }
    Ok((matching, rest))
}

fn describe(message: &Message) -> Value {
    let attributes = string_attributes(message);
    json!({
        "message_id": message.message_id(),
        "receive_count": system_attribute(message, MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|c| c.parse::<u64>().ok()),
        "first_received_at": timestamp(message, MessageSystemAttributeName::ApproximateFirstReceiveTimestamp),
        "sent_at": timestamp(message, MessageSystemAttributeName::SentTimestamp),
        "error_code": attributes.get("error_code"),
        "error": attributes.get("error"),
        "attributes": attributes,
        "body": message.body(),
    })
}

async fn peek(sqs: &Client, dlq: &str, as_json: bool, args: &ReadArgs) -> Result<(), OpsError> {
    eprintln!("note: SQS has no true peek; reading raises each message's receive count");
    let (matching, rest) = read_matching(sqs, dlq, args).await?;
    let all: Vec<&Message> = matching.iter().chain(&rest).collect();
    release(sqs, dlq, &all).await?;
    if as_json {
        for m in &matching {
            println!("{}", describe(m));
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = matching
        .iter()
        .map(|m| {
            let d = describe(m);
            let s = |k: &str| match &d[k] {
                Value::Null => "-".to_owned(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            vec![
                s("message_id"),
                s("receive_count"),
                s("first_received_at"),
                s("sent_at"),
                clip(&s("error"), 48),
                clip(&s("body"), 60),
            ]
        })
        .collect();
    print_table(
        &[
            "MESSAGE ID",
            "RECEIVES",
            "FIRST RECEIVED",
            "SENT",
            "ERROR",
            "BODY",
        ],
        &rows,
    );
    println!("{} dead letters shown, none deleted", matching.len());
    Ok(())
}

async fn export(sqs: &Client, dlq: &str, as_json: bool, args: &ExportArgs) -> Result<(), OpsError> {
    let to_stdout = args.out.as_os_str() == "-";
    if args.delete && to_stdout {
        return Err(OpsError::Usage(
            "--delete needs a file: messages written to a pipe cannot be known to be kept".into(),
        ));
    }
    if !to_stdout && args.out.exists() {
        return Err(OpsError::Usage(format!(
            "{} exists; choose a new file so no earlier export is overwritten",
            args.out.display()
        )));
    }
    let (matching, rest) = read_matching(sqs, dlq, &args.read).await?;
    let mut text = String::new();
    for m in &matching {
        text.push_str(&describe(m).to_string());
        text.push('\n');
    }
    let written = if args.out.as_os_str() == "-" {
        std::io::stdout().write_all(text.as_bytes())
    } else {
        write_durably(&args.out, text.as_bytes())
    };
    if let Err(e) = written {
        let all: Vec<&Message> = matching.iter().chain(&rest).collect();
        release(sqs, dlq, &all).await?;
        return Err(OpsError::Usage(format!(
            "cannot write {}: {e}",
            args.out.display()
        )));
    }
    if args.delete {
        delete(sqs, dlq, &matching.iter().collect::<Vec<_>>()).await?;
        release(sqs, dlq, &rest.iter().collect::<Vec<_>>()).await?;
    } else {
        let all: Vec<&Message> = matching.iter().chain(&rest).collect();
        release(sqs, dlq, &all).await?;
    }
    let summary = json!({"exported": matching.len(), "deleted": args.delete, "file": args.out});
    if as_json {
        eprintln!("{summary}");
    } else {
        eprintln!(
            "exported {} dead letters to {}{}",
            matching.len(),
            args.out.display(),
            if args.delete { " and deleted them" } else { "" }
        );
    }
    Ok(())
}

/// Writes a new file and makes it durable (file and directory entry) before the caller
/// deletes what it holds.
fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

async fn redrive(
    sqs: &Client,
    queues: &OpsQueues,
    dlq: &str,
    args: &RedriveArgs,
) -> Result<(), OpsError> {
    let destination = match &args.to {
        Some(url) => url.clone(),
        None => queues.purchase()?.to_owned(),
    };
    // SQS's own move task takes everything, so it only serves an unfiltered, unlimited
    // redrive. It keeps the worker's error attributes on the messages.
    let whole_queue = args.read.filter.is_empty() && args.read.max.is_none() && !args.client_side;
    if whole_queue && move_task(sqs, dlq, &destination, args.rate).await? {
        return Ok(());
    }
    let pace = args
        .rate
        .map(|r| Duration::from_secs_f64(1.0 / f64::from(r)));
    let started = Instant::now();
    let mut moved = 0usize;
    let limit = args.read.max.unwrap_or(usize::MAX);
    while moved < limit {
        let mut read = args.read.clone();
        read.max = Some((limit - moved).min(MAX_BATCH));
        let (matching, rest) = read_matching(sqs, dlq, &read).await?;
        release(sqs, dlq, &rest.iter().collect::<Vec<_>>()).await?;
        if matching.is_empty() {
            break;
        }
        for message in &matching {
            if let Some(pace) = pace {
                let due = started + pace * moved as u32;
                tokio::time::sleep_until(due.into()).await;
            }
            send_to(sqs, &destination, message).await?;
            delete(sqs, dlq, &[message]).await?;
            moved += 1;
            if queues.json {
                println!(
                    "{}",
                    json!({"moved": message.message_id(), "to": destination, "body": message.body()})
                );
            } else {
                println!(
                    "moved {} → {}  {}",
                    message.message_id().unwrap_or_default(),
                    destination,
                    clip(message.body().unwrap_or_default(), 80)
                );
            }
        }
    }
    if !queues.json {
        println!("{moved} dead letters moved to {destination}");
    }
    Ok(())
}

/// Starts SQS's server-side move task. Returns false when the endpoint does not offer it
/// (emulators), so the caller moves messages itself.
async fn move_task(
    sqs: &Client,
    dlq: &str,
    destination: &str,
    rate: Option<u32>,
) -> Result<bool, OpsError> {
    let source_arn = queue_arn(sqs, dlq).await?;
    let destination_arn = queue_arn(sqs, destination).await?;
    let result = sqs
        .start_message_move_task()
        .source_arn(&source_arn)
        .destination_arn(&destination_arn)
        .set_max_number_of_messages_per_second(rate.map(|r| r as i32))
        .send()
        .await;
    match result {
        Ok(out) => {
            println!(
                "started SQS move task {} from {dlq} to {destination}; follow it with \
                 `aws sqs list-message-move-tasks --source-arn {source_arn}`",
                out.task_handle().unwrap_or("?")
            );
            Ok(true)
        }
        Err(e) => {
            let cause = crate::error_chain(&e);
            eprintln!(
                "note: server-side move task unavailable ({cause}); moving messages one by one"
            );
            Ok(false)
        }
    }
}

/// Sends one dead letter, without the worker's attributes, to `destination`.
async fn send_to(sqs: &Client, destination: &str, message: &Message) -> Result<(), OpsError> {
    let attributes: std::collections::HashMap<String, MessageAttributeValue> = message
        .message_attributes()
        .map(|a| {
            a.iter()
                .filter(|(k, _)| !DEAD_LETTER_ATTRIBUTES.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let fifo = destination.ends_with(".fifo").then(|| {
        let group = system_attribute(message, MessageSystemAttributeName::MessageGroupId)
            .unwrap_or("redrive")
            .to_owned();
        (group, message.message_id().unwrap_or_default().to_owned())
    });
    let outgoing = Outgoing {
        body: message.body().unwrap_or_default().to_owned(),
        attributes,
        fifo,
    };
    let flush = SendFlush {
        sqs: sqs.clone(),
        queue_url: destination.to_owned(),
    };
    let results = flush.flush(vec![outgoing]).await;
    let id = message.message_id().unwrap_or("?").to_owned();
    let failures = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| (id.clone(), e)))
        .collect();
    entry_failures("SendMessage", destination, 1, failures)
}

async fn purge(sqs: &Client, dlq: &str, args: &PurgeArgs) -> Result<(), OpsError> {
    if !args.yes {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            return Err(OpsError::Usage(
                "refusing to purge without confirmation: pass --yes".into(),
            ));
        }
        eprint!("Delete every message in {dlq}? Type `purge` to confirm: ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim() != "purge" {
            return Err(OpsError::Usage("not confirmed; nothing was deleted".into()));
        }
    }
    sqs.purge_queue()
        .queue_url(dlq)
        .send()
        .await
        .map_err(|e| OpsError::aws("PurgeQueue", dlq, &e))?;
    println!("purged {dlq} (SQS may take up to 60 seconds to finish)");
    Ok(())
}

//! `receipt-verifier ledger …` and `receipt-verifier reconcile`: create the ledger table
//! on a local stand, look at what the ledger holds, and run one reconciliation sweep.

use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use receipt_verifier_core::{LedgerEntry, LedgerState};
use serde_json::{Value, json};

use super::{OpsError, print_table};
use crate::ledger::{DynamoLedger, sweep};

/// The ledger's table, shared by the ledger commands.
#[derive(Debug, Clone, Args)]
pub struct LedgerTable {
    /// The ledger's DynamoDB table (the same variable as `run`).
    #[arg(long = "table", env = "LEDGER_TABLE", global = true, value_parser = crate::config::table_name)]
    pub ledger_table: Option<String>,

    /// Print one JSON object per line instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum LedgerCommand {
    /// Create the table (partition key `receipt_id`, the `by_state` index, TTL on
    /// `expires_at`), on-demand; for local stands and tests. Production creates it with
    /// the CloudFormation template.
    Init,
    /// Show what the ledger holds for one receipt.
    Show {
        /// The receipt id.
        receipt_id: String,
    },
    /// List receipts in a state, most recently changed last.
    List {
        /// seen, pending, awaiting_deposit, fulfilled, rejected, revoked or expired.
        #[arg(long, value_parser = state)]
        state: LedgerState,
        /// Only those changed within this long (e.g. `1h`, `7d`), or since this time
        /// (RFC 3339).
        #[arg(long, value_parser = since)]
        since: Option<SystemTime>,
        /// At most this many.
        #[arg(long, default_value = "100")]
        limit: usize,
    },
}

/// `receipt-verifier reconcile`.
#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    /// The ledger's DynamoDB table.
    #[arg(long = "table", env = "LEDGER_TABLE", value_parser = crate::config::table_name)]
    pub ledger_table: String,

    /// The purchase queue, where the sweep's notifications go.
    #[arg(long, env = "PURCHASE_QUEUE_URL", value_parser = crate::config::queue_url)]
    pub purchase_queue_url: String,

    /// How far back fulfilled receipts are re-checked for cancels, in hours.
    #[arg(long, env = "RECONCILE_WINDOW_HOURS", default_value = "24", value_parser = clap::value_parser!(u64).range(1..=2160))]
    pub reconcile_window_hours: u64,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

fn state(value: &str) -> Result<LedgerState, String> {
    LedgerState::parse(value).ok_or_else(|| {
        let names: Vec<&str> = LedgerState::ALL.iter().map(|s| s.as_str()).collect();
        format!("expected one of {}", names.join(", "))
    })
}

fn since(value: &str) -> Result<SystemTime, String> {
    if let Ok(ago) = humantime::parse_duration(value) {
        return Ok(SystemTime::now()
            .checked_sub(ago)
            .unwrap_or(SystemTime::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(value)
        .map_err(|_| "expected a duration (`24h`) or an RFC 3339 time".to_owned())
}

pub async fn run(table: &LedgerTable, command: &LedgerCommand) -> Result<(), OpsError> {
    let name = table.ledger_table.as_deref().ok_or_else(|| {
        OpsError::Usage("LEDGER_TABLE is not set: pass --table or set LEDGER_TABLE".into())
    })?;
    let client = crate::ledger::client(Duration::from_secs(5), Duration::from_secs(30)).await;
    let ledger = DynamoLedger::new(client, name);
    match command {
        LedgerCommand::Init => {
            let created = ledger.create().await.map_err(table_error)?;
            ledger.check().await.map_err(table_error)?;
            let what = if created { "created" } else { "already exists" };
            if table.json {
                println!("{}", json!({"table": name, "created": created}));
            } else {
                println!("ledger table {name} {what}");
            }
        }
        LedgerCommand::Show { receipt_id } => {
            let entry = ledger.get(receipt_id).await.map_err(ledger_error)?;
            let Some(entry) = entry else {
                return Err(OpsError::Usage(format!(
                    "the ledger holds nothing for {}",
                    super::escape_controls(receipt_id)
                )));
            };
            print_entries(&[entry], table.json, true);
        }
        LedgerCommand::List {
            state,
            since,
            limit,
        } => {
            let since = since.unwrap_or(SystemTime::UNIX_EPOCH);
            let entries = ledger
                .list(*state, since, *limit)
                .await
                .map_err(ledger_error)?;
            print_entries(&entries, table.json, false);
            if !table.json {
                eprintln!("{} receipts {state}", entries.len());
            }
        }
    }
    Ok(())
}

pub async fn reconcile(sqs: &aws_sdk_sqs::Client, args: &ReconcileArgs) -> Result<(), OpsError> {
    let ledger = crate::ledger::open_table(
        &args.ledger_table,
        Duration::from_secs(5),
        Duration::from_secs(30),
    )
    .await
    .map_err(table_error)?;
    let window = Duration::from_secs(args.reconcile_window_hours * 3600);
    let report = sweep::sweep(&ledger, sqs, &args.purchase_queue_url, window)
        .await
        .map_err(|e| OpsError::Usage(format!("the sweep failed: {e}")))?;
    if args.json {
        println!(
            "{}",
            json!({
                "awaiting_deposit": report.awaiting_deposit,
                "fulfilled": report.fulfilled,
                "revoked": report.revoked,
                "queued": report.queued,
                "failed": report.failed,
            })
        );
    } else {
        println!(
            "queued {} notifications ({} awaiting a deposit, {} fulfilled and {} revoked in the last {}h); {} failed",
            report.queued,
            report.awaiting_deposit,
            report.fulfilled,
            report.revoked,
            args.reconcile_window_hours,
            report.failed
        );
    }
    if report.failed > 0 {
        return Err(OpsError::Usage(format!(
            "{} notifications could not be queued; run the sweep again",
            report.failed
        )));
    }
    Ok(())
}

fn table_error(e: crate::ledger::TableError) -> OpsError {
    OpsError::Usage(e.to_string())
}

fn ledger_error(e: receipt_verifier_core::LedgerError) -> OpsError {
    OpsError::Usage(format!("reading the ledger failed: {e}"))
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn entry_json(entry: &LedgerEntry) -> Value {
    let purchase = entry.purchase.as_ref();
    json!({
        "receipt_id": entry.receipt_id,
        "state": entry.state.as_str(),
        "order_id": purchase.map(|p| p.order_id.as_str()),
        "price": purchase.map(|p| p.price.as_number()),
        "currency": purchase.and_then(|p| p.currency.as_deref()),
        "payment_status": entry.payment_status,
        "cancelled_price": entry.cancelled_price,
        "deposit_due": entry.deposit_due.map(time),
        "decision": entry.decision,
        "created_at": time(entry.created_at),
        "updated_at": time(entry.updated_at),
        "version": entry.version,
    })
}

fn print_entries(entries: &[LedgerEntry], json: bool, whole: bool) {
    if json {
        for entry in entries {
            println!("{}", entry_json(entry));
        }
        return;
    }
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let purchase = e.purchase.as_ref();
            let decision = e.decision.as_ref();
            vec![
                e.receipt_id.clone(),
                e.state.as_str().to_owned(),
                purchase.map_or_else(dash, |p| p.order_id.clone()),
                purchase.map_or_else(dash, |p| p.price.as_number().to_string()),
                decision.map_or_else(dash, |d| {
                    format!("{}/{}", d.decision.as_str(), d.reason.as_str())
                }),
                e.cancelled_price
                    .as_ref()
                    .map_or_else(dash, ToString::to_string),
                e.deposit_due.map_or_else(dash, time),
                time(e.updated_at),
            ]
        })
        .collect();
    print_table(
        &[
            "RECEIPT",
            "STATE",
            "ORDER",
            "PRICE",
            "DECISION",
            "CANCELLED",
            "DEPOSIT DUE",
            "UPDATED",
        ],
        &rows,
    );
    if whole && let Some(decision) = entries.first().and_then(|e| e.decision.as_ref()) {
        println!(
            "\nlatest decision published:\n{}",
            super::escape_controls(&decision.to_json())
        );
    }
}

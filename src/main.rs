//! `receipt-verifier`: the worker (`run`), the webhook ingress (`webhook`) and the
//! operator commands.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use receipt_verifier::config::{RunArgs, WebhookArgs};
use receipt_verifier::observability::logging;
use receipt_verifier::ops::{self, OpsQueues};
use receipt_verifier::runtime::{poller, webhook};
use receipt_verifier::sqs::queues;

#[derive(Debug, Parser)]
#[command(
    name = "receipt-verifier",
    version,
    about = "Verifies Bootpay receipts for purchases queued on SQS and publishes fulfill/reject/revoke decisions."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the worker: poll purchases, verify them with Bootpay, publish decisions.
    Run(RunArgs),
    /// Run the webhook ingress: take Bootpay's webhooks and queue a notification for each.
    Webhook(WebhookArgs),
    /// Send purchase events to the purchase queue (validated first, batched by ten).
    Enqueue {
        #[command(flatten)]
        queues: OpsQueues,
        #[command(flatten)]
        args: ops::enqueue::EnqueueArgs,
    },
    /// Read decisions from the result queue (left there unless --delete).
    Results {
        #[command(flatten)]
        queues: OpsQueues,
        #[command(flatten)]
        args: ops::results::ResultsArgs,
    },
    /// Show the backlog of the purchase, result and dead-letter queues.
    Stats {
        #[command(flatten)]
        queues: OpsQueues,
        #[command(flatten)]
        args: ops::stats::StatsArgs,
    },
    /// Inspect, export, redrive or purge the dead-letter queue.
    Dlq {
        #[command(flatten)]
        queues: OpsQueues,
        #[command(subcommand)]
        command: ops::dlq::DlqCommand,
    },
    /// Create the ledger table, or look at what the ledger holds.
    Ledger {
        #[command(flatten)]
        table: ops::ledger::LedgerTable,
        #[command(subcommand)]
        command: ops::ledger::LedgerCommand,
    },
    /// Sweep the ledger once: queue a notification for every receipt awaiting a deposit and
    /// every recently fulfilled one, so that workers re-check them with Bootpay.
    Reconcile(ops::ledger::ReconcileArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_) | Command::Webhook(_)) {
        end_quietly_on_a_closed_pipe();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(args) => runtime.block_on(run(args)),
        Command::Webhook(args) => runtime.block_on(webhook(args)),
        Command::Enqueue { queues, args } => runtime.block_on(operate(|sqs| async move {
            ops::enqueue::run(&sqs, &queues, &args).await
        })),
        Command::Results { queues, args } => runtime.block_on(operate(|sqs| async move {
            ops::results::run(&sqs, &queues, &args).await
        })),
        Command::Stats { queues, args } => runtime.block_on(operate(|sqs| async move {
            ops::stats::run(&sqs, &queues, &args).await
        })),
        Command::Dlq { queues, command } => runtime.block_on(operate(|sqs| async move {
            ops::dlq::run(&sqs, &queues, &command).await
        })),
        Command::Ledger { table, command } => runtime.block_on(async move {
            ops::ledger::run(&table, &command).await?;
            Ok(())
        }),
        Command::Reconcile(args) => runtime.block_on(operate(|sqs| async move {
            ops::ledger::reconcile(&sqs, &args).await
        })),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(message = "Exiting on an error.", error = %format!("{e:#}"));
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Operator commands are piped into other tools (`dlq peek --json | head`). Like those
/// tools, they end quietly when the reader goes away, rather than panicking on a failed
/// print (Rust ignores SIGPIPE by default). Nothing is lost by it: the commands that
/// delete (`results --delete`, `dlq export --delete`, `dlq redrive`) first write or send
/// on what they delete. Not for `run`: a worker must outlive whatever reads its logs.
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: sets a signal's disposition back to its default, before any thread starts.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Runs an operator command with an SQS client from the standard AWS configuration.
async fn operate<F, Fut>(command: F) -> anyhow::Result<()>
where
    F: FnOnce(aws_sdk_sqs::Client) -> Fut,
    Fut: Future<Output = Result<(), ops::OpsError>>,
{
    command(sqs_client().await).await?;
    Ok(())
}

/// An SQS client whose attempts outlast the 20 s long poll.
async fn sqs_client() -> aws_sdk_sqs::Client {
    receipt_verifier::sqs::client(Duration::from_secs(5), Duration::from_secs(30)).await
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    logging::init(args.log_format);
    let bootpay = args.bootpay.config().context("refusing to start")?;
    // A token (or a probe) is fetched while the queues and the ledger are looked up.
    let start = poller::Start::begin(args.metrics_addr, bootpay, args.outage_threshold).await?;
    let sqs = sqs_client().await;
    let (queues, ledger) = tokio::try_join!(
        async {
            queues::resolve(
                &sqs,
                &args.queues.purchase_queue_url,
                &args.queues.result_queue_url,
            )
            .await
            .context("refusing to start")
        },
        async {
            receipt_verifier::ledger::open(
                args.ledger.ledger_table.as_deref(),
                Duration::from_secs(5),
                Duration::from_secs(10),
            )
            .await
            .context("refusing to start")
        },
    )?;
    let config = args.worker_config(queues.visibility_timeout);
    poller::run(
        sqs,
        queues,
        start,
        ledger,
        config,
        receipt_verifier::shutdown::signal(),
    )
    .await
}

async fn webhook(args: WebhookArgs) -> anyhow::Result<()> {
    logging::init(args.log_format);
    // Bootpay waits 5 s for an answer: a send must fit well inside it.
    let sqs = receipt_verifier::sqs::client(Duration::from_secs(1), Duration::from_secs(2)).await;
    queues::check_queue(&sqs, "purchase", &args.purchase_queue_url)
        .await
        .context("refusing to start")?;
    let config = webhook::WebhookConfig {
        addr: args.webhook_addr,
        rules: webhook::source::SourceRules {
            allowed: args.webhook_allowed_sources.0,
            trusted_proxies: args.webhook_trusted_proxies.0,
        },
        purchase_queue_url: args.purchase_queue_url,
        max_concurrency: args.webhook_max_concurrency.get(),
        metrics_addr: args.metrics_addr,
    };
    webhook::run(sqs, config, receipt_verifier::shutdown::signal()).await
}

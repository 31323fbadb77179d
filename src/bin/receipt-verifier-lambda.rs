//! `receipt-verifier-lambda`: the verification as an SQS-triggered AWS Lambda function
//! (the `bootstrap` of a `provided.al2023` function). Configured by its environment,
//! like `receipt-verifier run`; see `receipt-verifier-lambda --help`.
//!
//! A misconfiguration fails the function's init with a clear message: it is reported to
//! the Runtime API's `/runtime/init/error` (so Lambda shows it) and the process exits 2.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use lambda_runtime::{LambdaEvent, service_fn};
use receipt_verifier::config::LambdaArgs;
use receipt_verifier::observability::counters::Counters;
use receipt_verifier::observability::logging;
use receipt_verifier::runtime::lambda::{Function, Settings};
use receipt_verifier::sqs::queues;

/// What the Lambda runtime client needs, and panics without.
const LAMBDA_VARIABLES: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

fn main() -> ExitCode {
    // `--help` and `--version` answer outside Lambda too.
    let args = std::env::args().collect::<Vec<_>>();
    if args.len() > 1 {
        LambdaArgs::parse();
    }
    let missing: Vec<&str> = LAMBDA_VARIABLES
        .into_iter()
        .filter(|name| std::env::var_os(name).is_none())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "error: not in a Lambda execution environment ({} not set); this binary is a \
             Lambda function's bootstrap. Run `receipt-verifier run` to verify purchases as a service.",
            missing.join(", ")
        );
        return ExitCode::from(2);
    }
    // One thread: a function gets a fraction of a vCPU below 1,769 MB, and its work is
    // waiting on Bootpay and SQS. Worker threads would only add wake-ups and context
    // switches between invocations (measured: docs/lambda.md#benchmark).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run())
}

async fn run() -> ExitCode {
    let args = match LambdaArgs::try_parse_from(["receipt-verifier-lambda"]) {
        Ok(args) => args,
        Err(e) => return init_failed("ConfigError", &e.render().to_string()).await,
    };
    logging::init_lambda(args.log_format);
    let counters = match Counters::install() {
        Ok(counters) => Some(counters),
        Err(e) => {
            tracing::warn!(message = "Request counts are not kept.", error = %e);
            None
        }
    };
    let bootpay = match args.bootpay.config() {
        Ok(config) => config,
        Err(e) => return init_failed("ConfigError", &format!("refusing to start: {e}")).await,
    };
    let sqs = sqs_client().await;
    if let Err(e) = queues::check_result_queue(&sqs, &args.result_queue_url).await {
        return init_failed("ConfigError", &format!("refusing to start: {e}")).await;
    }
    let ledger = match receipt_verifier::ledger::open(
        args.ledger.ledger_table.as_deref(),
        Duration::from_secs(2),
        Duration::from_secs(5),
    )
    .await
    {
        Ok(ledger) => ledger,
        Err(e) => return init_failed("ConfigError", &format!("refusing to start: {e}")).await,
    };
    let settings = Settings {
        concurrency: args.concurrency.get(),
        policy: args.bootpay.policy(),
        retry_budget: args.bootpay.retry_budget(),
        deadline_reserve: Duration::from_millis(args.deadline_reserve_ms),
        requeue: args.requeue.requeue(),
        batch_linger: Duration::from_millis(args.batch_linger_ms),
    };
    let function = match Function::new(
        sqs,
        &args.result_queue_url,
        bootpay,
        ledger,
        settings,
        counters,
    ) {
        Ok(function) => Arc::new(function),
        Err(e) => return init_failed("InitError", &format!("{e:#}")).await,
    };
    tracing::info!(
        message = "Function initialised.",
        result_queue = %args.result_queue_url,
        ledger_table = args.ledger.ledger_table.as_deref(),
        concurrency = args.concurrency.get(),
    );
    let handler = service_fn(move |event: LambdaEvent<_>| function.clone().handle(event));
    match lambda_runtime::run(handler).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(message = "The Lambda runtime stopped.", error = %e);
            ExitCode::FAILURE
        }
    }
}

/// An SQS client (the function's role) whose calls fit well inside an invocation.
async fn sqs_client() -> aws_sdk_sqs::Client {
    receipt_verifier::sqs::client(Duration::from_secs(2), Duration::from_secs(5)).await
}

/// Reports an init failure to the Runtime API, so Lambda shows the message, then exits.
async fn init_failed(error_type: &str, message: &str) -> ExitCode {
    eprintln!("error: {message}");
    // `host:port`, or a base URL (with a path prefix, as some emulators give).
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").unwrap_or_default();
    let base = if api.starts_with("http://") || api.starts_with("https://") {
        api.trim_end_matches('/').to_owned()
    } else {
        format!("http://{api}")
    };
    let url = format!("{base}/2018-06-01/runtime/init/error");
    let body = serde_json::json!({"errorType": error_type, "errorMessage": message});
    let reported = reqwest::Client::new()
        .post(url)
        .header(
            "Lambda-Runtime-Function-Error-Type",
            format!("Runtime.{error_type}"),
        )
        .json(&body)
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    if let Err(e) = reported {
        eprintln!("error: could not report the init failure to the Runtime API: {e}");
    }
    ExitCode::from(2)
}

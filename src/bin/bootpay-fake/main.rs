//! `bootpay-fake`: an HTTP fake of Bootpay's server API for integration tests, the local
//! demo, benchmarks and the official SDKs' tests.
//!
//! Serves v2 (`/v2/request/token`, `/v2/receipt/{id}`, `/v2/confirm`, `/v2/cancel`; Bearer
//! tokens or Basic client/secret keys) and the legacy v1 dialect at the root
//! (`/request/token`, `/receipt/{id}`, `/submit`, `/cancel`, each also with `.json`; raw
//! tokens, `{status, code, message, data}` envelopes) from one in-memory receipt store loaded
//! from a JSON fixture, plus an unauthenticated `/_fake/...` control API for faults, outages,
//! counters and the changes a buyer, a PG console or time make to receipts. Sends Bootpay's
//! v2 webhooks and v1 feedback notifications to the URLs it is given, in the background and
//! with Bootpay's retry rules. Once listening it prints exactly two lines on stdout, in this order:
//! `BOOTPAY_API_URL=http://ADDR/v2` and `BOOTPAY_V1_API_URL=http://ADDR`; logs go to stderr
//! and never carry credentials or tokens. Exit codes: 0 after SIGTERM/SIGINT, 2 for bad flags
//! or fixtures, 1 otherwise.

mod cli;
mod clock;
mod fixture;
mod reply;
mod routes;
mod state;
mod v1;
mod webhook;

use std::io::{IsTerminal as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::Parser as _;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::cli::Cli;
use crate::routes::App;
use crate::state::{Credentials, State};
use crate::webhook::{Targets, Webhooks};

#[tokio::main]
async fn main() -> ExitCode {
    // clap prints its own message and exits with code 2 on bad flags.
    let cli = Cli::parse();
    init_tracing();
    let loaded = cli
        .receipts
        .as_deref()
        .map(|path| fixture::load(path, SystemTime::now()))
        .transpose();
    let receipts = match loaded {
        Ok(receipts) => receipts.unwrap_or_default(),
        Err(error) => {
            eprintln!("bootpay-fake: {error}");
            return ExitCode::from(2);
        }
    };
    match serve(cli, receipts).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bootpay-fake: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli, receipts: Vec<fixture::ReceiptSpec>) -> anyhow::Result<()> {
    let credentials = Credentials {
        application_id: cli.application_id,
        private_key: cli.private_key,
        client_key: cli.client_key,
        secret_key: cli.secret_key,
    };
    let ttl = Duration::from_secs(cli.token_ttl_secs);
    let mut state = State::new(credentials, ttl, cli.chaos_rate);
    let receipt_count = receipts.len();
    for spec in receipts {
        state.upsert(spec);
    }
    let shutdown = CancellationToken::new();
    let targets = Targets {
        v2_url: cli.webhook_url,
        v1_url: cli.webhook_v1_url,
        v1_content_type: cli.webhook_v1_content_type,
    };
    let webhooks = Webhooks::new(
        targets,
        Duration::from_millis(cli.webhook_retry_base_ms),
        cli.webhook_attempts,
        shutdown.clone(),
    )
    .context("cannot build the webhook client")?;
    let app = Arc::new(App::new(
        state,
        Arc::new(webhooks),
        Duration::from_millis(cli.latency_ms),
        Duration::from_millis(cli.chaos_timeout_ms),
        shutdown.clone(),
    ));

    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let local = listener
        .local_addr()
        .context("cannot read the bound address")?;
    announce(local)?;
    tracing::info!(
        address = %local,
        receipts = receipt_count,
        latency_ms = cli.latency_ms,
        chaos_rate = cli.chaos_rate,
        "Bootpay fake listening."
    );

    axum::serve(listener, routes::router(app))
        .with_graceful_shutdown(async move {
            receipt_verifier::shutdown::signal().await;
            tracing::info!("Shutdown signal received, draining requests.");
            // Ends injected delays and webhook retries early so they do not hold up the exit.
            shutdown.cancel();
        })
        .await
        .context("server failed")?;
    tracing::info!("Bootpay fake stopped.");
    Ok(())
}

/// Prints the two stdout lines tests and scripts wait for: the v2 URL first, then v1's. A
/// wildcard bind address is not connectable, so the loopback address of the same family is
/// printed instead.
fn announce(local: SocketAddr) -> anyhow::Result<()> {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let address = SocketAddr::new(ip, local.port());
    // One write for both lines: a reader that closes the pipe after the first line must not
    // make the second write fail.
    let lines =
        format!("BOOTPAY_API_URL=http://{address}/v2\nBOOTPAY_V1_API_URL=http://{address}\n");
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(lines.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write the API URLs to stdout")
}

fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

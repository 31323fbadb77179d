//! Command-line and environment configuration for `receipt-verifier run` and the Lambda
//! function, with the checks that make a misconfigured runtime refuse to start instead of
//! misbehaving. Settings both runtimes share are argument groups of their own
//! ([`BootpayArgs`], [`RequeueArgs`]), so they have one name and one check everywhere.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use receipt_verifier_core::Policy;
use secrecy::SecretString;
use url::Url;

use crate::bootpay::{BootpayConfig, Credentials, Dialect, RetryPolicy};
use crate::observability::logging::LogFormat;
use crate::runtime::poller::WorkerConfig;
use crate::sqs::Requeue;

/// The queues every command works on.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// URL of the SQS queue that app servers send purchase events to.
    #[arg(long, env = "PURCHASE_QUEUE_URL", value_parser = queue_url)]
    pub purchase_queue_url: String,

    /// URL of the SQS queue that decisions are published to.
    #[arg(long, env = "RESULT_QUEUE_URL", value_parser = queue_url)]
    pub result_queue_url: String,
}

/// Bootpay: where, with which credentials, how patiently, and by which policy.
///
/// Two kinds of credentials: a client key and a secret key, sent as HTTP Basic on every
/// call (what Bootpay recommends; v2 only), or an application id and a private key,
/// exchanged for an access token. Exactly one complete pair is needed; when both are set
/// the client and secret keys are used.
#[derive(Debug, Clone, Args)]
pub struct BootpayArgs {
    /// Bootpay client key, sent with the secret key as HTTP Basic on every call (v2 only;
    /// recommended by Bootpay).
    #[arg(
        long,
        env = "BOOTPAY_CLIENT_KEY",
        conflicts_with = "bootpay_client_key_file"
    )]
    pub bootpay_client_key: Option<String>,

    /// File holding the client key; surrounding whitespace is ignored.
    #[arg(long, env = "BOOTPAY_CLIENT_KEY_FILE")]
    pub bootpay_client_key_file: Option<PathBuf>,

    /// Bootpay secret key (secret). Prefer BOOTPAY_SECRET_KEY_FILE in containers.
    #[arg(
        long,
        env = "BOOTPAY_SECRET_KEY",
        hide_env_values = true,
        value_parser = secret,
        conflicts_with = "bootpay_secret_key_file"
    )]
    pub bootpay_secret_key: Option<SecretString>,

    /// File holding the secret key (e.g. a mounted secret); surrounding whitespace is
    /// ignored.
    #[arg(long, env = "BOOTPAY_SECRET_KEY_FILE")]
    pub bootpay_secret_key_file: Option<PathBuf>,

    /// Bootpay REST application id, with the private key exchanged for an access token.
    #[arg(long, env = "BOOTPAY_APPLICATION_ID")]
    pub bootpay_application_id: Option<String>,

    /// Bootpay REST private key (secret). Prefer BOOTPAY_PRIVATE_KEY_FILE in containers.
    #[arg(
        long,
        env = "BOOTPAY_PRIVATE_KEY",
        hide_env_values = true,
        value_parser = secret,
        conflicts_with = "bootpay_private_key_file"
    )]
    pub bootpay_private_key: Option<SecretString>,

    /// File holding the Bootpay private key (e.g. a mounted secret); surrounding
    /// whitespace is ignored.
    #[arg(long, env = "BOOTPAY_PRIVATE_KEY_FILE")]
    pub bootpay_private_key_file: Option<PathBuf>,

    /// Bootpay API dialect: v2 (2022 onward) or the legacy v1.
    #[arg(long, env = "BOOTPAY_API_VERSION", value_enum, default_value = "v2")]
    pub bootpay_api_version: Dialect,

    /// Bootpay base URL [default: https://api.bootpay.co.kr/v2; with v1,
    /// https://api.bootpay.co.kr]. v2 appends `/request/token`, `/receipt/{id}` and
    /// `/confirm`; v1 `/request/token`, `/receipt/{id}` and `/submit`. Must be https, except
    /// on a loopback host.
    #[arg(long, env = "BOOTPAY_API_URL", value_parser = bootpay_url)]
    pub bootpay_api_url: Option<Url>,

    /// Timeout of one Bootpay HTTP request, in seconds.
    #[arg(long, env = "BOOTPAY_TIMEOUT_SECS", default_value = "10", value_parser = clap::value_parser!(u64).range(1..=120))]
    pub bootpay_timeout_secs: u64,

    /// How long transient Bootpay failures of one purchase are retried in process before
    /// the purchase goes back to the queue, in seconds. `run` holds it to 80% of the
    /// purchase queue's visibility timeout; the Lambda to the invocation's deadline.
    #[arg(long, env = "BOOTPAY_RETRY_BUDGET_SECS", default_value = "20", value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub bootpay_retry_budget_secs: u64,

    /// Reject (`not_paid`) receipts Bootpay marks `sandbox`, i.e. payments made with a
    /// test project's keys. Set it in production, where a test payment must never buy
    /// anything.
    #[arg(long, env = "BOOTPAY_REJECT_SANDBOX", default_value_t = false, action = clap::ArgAction::Set)]
    pub bootpay_reject_sandbox: bool,
}

/// When an undecided purchase is tried again.
#[derive(Debug, Clone, Args)]
pub struct RequeueArgs {
    /// First delay before a purchase without a decision (payment not final, Bootpay
    /// failing for it) is tried again, in seconds; it doubles with each receive.
    #[arg(long, env = "REQUEUE_BASE_DELAY_SECS", default_value = "10", value_parser = clap::value_parser!(u64).range(0..=43200))]
    pub requeue_base_delay_secs: u64,

    /// Longest such delay, in seconds (SQS allows up to 43200).
    #[arg(long, env = "REQUEUE_MAX_DELAY_SECS", default_value = "3600", value_parser = clap::value_parser!(u64).range(0..=43200))]
    pub requeue_max_delay_secs: u64,
}

/// The decision ledger.
#[derive(Debug, Clone, Args)]
pub struct LedgerArgs {
    /// DynamoDB table of the decision ledger (partition key `receipt_id`, a string;
    /// `receipt-verifier ledger init` creates one). With it, a receipt is fulfilled at
    /// most once, ever, repeats get the recorded decision, virtual accounts are followed
    /// until their deposit, and cancels after fulfilment are revoked. Unset: no ledger.
    #[arg(long, env = "LEDGER_TABLE", value_parser = table_name)]
    pub ledger_table: Option<String>,
}

/// The reconciliation sweep inside `run`.
#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// How often `run` sweeps the ledger for deposits, expiries and cancels no webhook
    /// reported, in seconds (one worker of many sweeps each time); 0 turns it off. Needs
    /// LEDGER_TABLE.
    #[arg(long, env = "RECONCILE_INTERVAL_SECS", default_value = "3600", value_parser = clap::value_parser!(u64).range(0..=604_800))]
    pub reconcile_interval_secs: u64,

    /// How far back fulfilled receipts are re-checked for cancels, in hours. Each is
    /// re-checked about window ÷ interval times.
    #[arg(long, env = "RECONCILE_WINDOW_HOURS", default_value = "24", value_parser = clap::value_parser!(u64).range(1..=2160))]
    pub reconcile_window_hours: u64,
}

impl SweepArgs {
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.reconcile_window_hours * 3600)
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub queues: QueueArgs,

    #[command(flatten)]
    pub bootpay: BootpayArgs,

    #[command(flatten)]
    pub requeue: RequeueArgs,

    #[command(flatten)]
    pub ledger: LedgerArgs,

    #[command(flatten)]
    pub sweep: SweepArgs,

    /// Most purchases verified at once. The throughput ceiling is roughly this number
    /// divided by Bootpay's latency (64 / 50 ms ≈ 1,280 per second).
    #[arg(long, env = "WORKER_CONCURRENCY", default_value = "64")]
    pub concurrency: NonZeroUsize,

    /// Long-poll wait of each receive, in seconds (0–20).
    #[arg(long, env = "RECEIVE_WAIT_SECS", default_value = "20", value_parser = clap::value_parser!(u64).range(0..=20))]
    pub receive_wait_secs: u64,

    /// On SIGTERM/SIGINT, how long in-flight purchases may take to finish before they are
    /// released to other workers, in seconds. Keep it below the orchestrator's kill timeout.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value = "20", value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_grace_secs: u64,

    /// How long a send/delete/visibility batch waits to fill up to ten entries, in
    /// milliseconds. Longer means fewer SQS requests, shorter means lower latency.
    #[arg(long, env = "BATCH_LINGER_MS", default_value = "20", value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub batch_linger_ms: u64,

    /// Transient Bootpay failures in a row (with no success between) that pause intake.
    #[arg(long, env = "OUTAGE_THRESHOLD", default_value = "10", value_parser = clap::value_parser!(u32).range(1..))]
    pub outage_threshold: u32,

    /// Longest delay between probes of Bootpay while intake is paused, in seconds.
    #[arg(long, env = "PAUSE_PROBE_MAX_SECS", default_value = "60", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub pause_probe_max_secs: u64,

    /// Address to serve `/metrics` (Prometheus), `/healthz` and `/readyz` on, e.g.
    /// `0.0.0.0:9090` (the container's default). Not served when unset.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// The Lambda function's settings, all from its environment. The purchase queue and its
/// DLQ are not among them: they come from each record's `eventSourceARN`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "receipt-verifier-lambda",
    version,
    about = "The Lambda function: verifies the purchases of an SQS event and publishes decisions."
)]
pub struct LambdaArgs {
    /// URL of the SQS queue that decisions are published to.
    #[arg(long, env = "RESULT_QUEUE_URL", value_parser = queue_url)]
    pub result_queue_url: String,

    #[command(flatten)]
    pub bootpay: BootpayArgs,

    #[command(flatten)]
    pub requeue: RequeueArgs,

    #[command(flatten)]
    pub ledger: LedgerArgs,

    /// Most records of one invocation verified at once.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value = "64")]
    pub concurrency: NonZeroUsize,

    /// How long a send or visibility batch waits to fill up to ten entries, in
    /// milliseconds.
    #[arg(long, env = "BATCH_LINGER_MS", default_value = "20", value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub batch_linger_ms: u64,

    /// Time kept back before the invocation's deadline for publishing decisions and
    /// reporting, in milliseconds: verification stops this long before the deadline.
    #[arg(long, env = "DEADLINE_RESERVE_MS", default_value = "2000", value_parser = clap::value_parser!(u64).range(100..=60000))]
    pub deadline_reserve_ms: u64,

    /// Log format, unless Lambda's own `AWS_LAMBDA_LOG_FORMAT` says otherwise.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {variable} {path}: {source}")]
    KeyFile {
        variable: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error("{have} is set but {missing} is not: the two go together")]
    HalfAPair {
        have: &'static str,
        missing: &'static str,
    },
    #[error(
        "no Bootpay credentials: set BOOTPAY_CLIENT_KEY and BOOTPAY_SECRET_KEY (recommended by \
         Bootpay), or BOOTPAY_APPLICATION_ID and BOOTPAY_PRIVATE_KEY"
    )]
    NoCredentials,
    #[error(
        "BOOTPAY_API_VERSION=v1 has no client/secret-key authentication: with v1 use \
         BOOTPAY_APPLICATION_ID and BOOTPAY_PRIVATE_KEY, or use v2"
    )]
    BasicAuthWithV1,
}

/// A setting that may come from its variable or from a file its `_FILE` variable names.
fn from_value_or_file(
    value: Option<SecretString>,
    file: Option<&PathBuf>,
    variable: &'static str,
    file_variable: &'static str,
) -> Result<Option<SecretString>, ConfigError> {
    use secrecy::ExposeSecret;
    let value = match (value, file) {
        (Some(value), _) => value,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::KeyFile {
                variable: file_variable,
                path: path.clone(),
                source,
            })?;
            SecretString::from(text.trim().to_owned())
        }
        (None, None) => return Ok(None),
    };
    if value.expose_secret().trim().is_empty() {
        return Err(ConfigError::Empty(variable));
    }
    Ok(Some(value))
}

impl BootpayArgs {
    /// The Bootpay client's configuration: the dialect, its base URL, and one complete
    /// pair of credentials (client and secret keys when both pairs are set).
    ///
    /// # Errors
    /// When a key cannot be read or is empty, a pair is incomplete, there is none, or
    /// client and secret keys are given for v1.
    pub fn config(&self) -> Result<BootpayConfig, ConfigError> {
        use secrecy::ExposeSecret;
        let client_key = from_value_or_file(
            self.bootpay_client_key.clone().map(SecretString::from),
            self.bootpay_client_key_file.as_ref(),
            "BOOTPAY_CLIENT_KEY",
            "BOOTPAY_CLIENT_KEY_FILE",
        )?;
        let secret_key = from_value_or_file(
            self.bootpay_secret_key.clone(),
            self.bootpay_secret_key_file.as_ref(),
            "BOOTPAY_SECRET_KEY",
            "BOOTPAY_SECRET_KEY_FILE",
        )?;
        let private_key = from_value_or_file(
            self.bootpay_private_key.clone(),
            self.bootpay_private_key_file.as_ref(),
            "BOOTPAY_PRIVATE_KEY",
            "BOOTPAY_PRIVATE_KEY_FILE",
        )?;
        let application_id = self
            .bootpay_application_id
            .clone()
            .filter(|id| !id.trim().is_empty());
        let basic = pair(
            client_key,
            secret_key,
            "BOOTPAY_CLIENT_KEY",
            "BOOTPAY_SECRET_KEY",
        )?;
        let token = pair(
            application_id.map(SecretString::from),
            private_key,
            "BOOTPAY_APPLICATION_ID",
            "BOOTPAY_PRIVATE_KEY",
        )?;
        let credentials = match (basic, token) {
            (Some((client_key, secret_key)), token) => {
                if self.bootpay_api_version == Dialect::V1 {
                    return Err(ConfigError::BasicAuthWithV1);
                }
                if token.is_some() {
                    tracing::warn!(
                        message = "Both kinds of Bootpay credentials are set; using the client and secret keys (BOOTPAY_APPLICATION_ID and BOOTPAY_PRIVATE_KEY are not used)."
                    );
                }
                Credentials::Basic {
                    client_key: client_key.expose_secret().to_owned(),
                    secret_key,
                }
            }
            (None, Some((application_id, private_key))) => Credentials::Token {
                application_id: application_id.expose_secret().to_owned(),
                private_key,
            },
            (None, None) => return Err(ConfigError::NoCredentials),
        };
        let api_url = match &self.bootpay_api_url {
            Some(url) => url.clone(),
            None => self.bootpay_api_version.default_url(),
        };
        Ok(BootpayConfig {
            api_url,
            dialect: self.bootpay_api_version,
            credentials,
            request_timeout: Duration::from_secs(self.bootpay_timeout_secs),
            retry: RetryPolicy {
                min_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(5),
            },
        })
    }

    pub fn policy(&self) -> Policy {
        Policy {
            reject_sandbox: self.bootpay_reject_sandbox,
        }
    }

    pub fn retry_budget(&self) -> Duration {
        Duration::from_secs(self.bootpay_retry_budget_secs)
    }
}

/// Both halves of a pair, neither, or an error naming the missing half.
fn pair(
    first: Option<SecretString>,
    second: Option<SecretString>,
    first_name: &'static str,
    second_name: &'static str,
) -> Result<Option<(SecretString, SecretString)>, ConfigError> {
    match (first, second) {
        (Some(first), Some(second)) => Ok(Some((first, second))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::HalfAPair {
            have: first_name,
            missing: second_name,
        }),
        (None, Some(_)) => Err(ConfigError::HalfAPair {
            have: second_name,
            missing: first_name,
        }),
    }
}

impl RequeueArgs {
    pub fn requeue(&self) -> Requeue {
        Requeue {
            base: Duration::from_secs(self.requeue_base_delay_secs),
            max: Duration::from_secs(self.requeue_max_delay_secs),
        }
    }
}

impl RunArgs {
    /// The worker's tuning. The retry budget is held to 80% of the purchase queue's
    /// visibility timeout, so a purchase is decided or handed back before it could
    /// reappear; a larger setting is reported at start-up, not silently cut.
    pub fn worker_config(&self, visibility_timeout: Duration) -> WorkerConfig {
        let wanted = self.bootpay.retry_budget();
        let ceiling = visibility_timeout.mul_f64(0.8);
        if wanted > ceiling {
            tracing::warn!(
                message = "BOOTPAY_RETRY_BUDGET_SECS is above 80% of the purchase queue's visibility timeout; using that instead.",
                wanted_secs = wanted.as_secs(),
                used_secs = ceiling.as_secs_f64(),
                visibility_timeout_secs = visibility_timeout.as_secs(),
            );
        }
        WorkerConfig {
            retry_budget: wanted.min(ceiling),
            concurrency: self.concurrency.get(),
            receive_wait: Duration::from_secs(self.receive_wait_secs),
            requeue: self.requeue.requeue(),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            batch_linger: Duration::from_millis(self.batch_linger_ms),
            probe_min_delay: Duration::from_millis(500),
            probe_max_delay: Duration::from_secs(self.pause_probe_max_secs),
            policy: self.bootpay.policy(),
            sweep: (self.sweep.reconcile_interval_secs > 0).then(|| {
                (
                    Duration::from_secs(self.sweep.reconcile_interval_secs),
                    self.sweep.window(),
                )
            }),
        }
    }
}

/// `receipt-verifier webhook`: where it listens, whom it takes webhooks from, where it
/// queues them.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Address to serve Bootpay's webhooks on (`POST /webhooks/bootpay` for v2,
    /// `POST /webhooks/bootpay/v1` for v1).
    #[arg(long, env = "WEBHOOK_ADDR", default_value = "0.0.0.0:8080")]
    pub webhook_addr: std::net::SocketAddr,

    /// Senders allowed, as comma-separated CIDR ranges: Bootpay's range by default.
    #[arg(long, env = "WEBHOOK_ALLOWED_SOURCES", default_value = "223.130.82.0/24", value_parser = cidrs)]
    pub webhook_allowed_sources: CidrList,

    /// Our own proxies or load balancers, as comma-separated CIDR ranges: only from them
    /// is `X-Forwarded-For` read, and then only the addresses they appended. Default none.
    #[arg(long, env = "WEBHOOK_TRUSTED_PROXIES", default_value = "", value_parser = cidrs)]
    pub webhook_trusted_proxies: CidrList,

    /// URL of the purchase queue, where notifications are queued for the workers.
    #[arg(long, env = "PURCHASE_QUEUE_URL", value_parser = queue_url)]
    pub purchase_queue_url: String,

    /// Most webhooks handled at once; more are answered 503, and Bootpay retries them.
    #[arg(long, env = "WEBHOOK_MAX_CONCURRENCY", default_value = "256")]
    pub webhook_max_concurrency: NonZeroUsize,

    /// Address to serve `/metrics`, `/healthz` and `/readyz` on. Not served when unset.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// A parsed list of CIDR ranges.
#[derive(Debug, Clone, Default)]
pub struct CidrList(pub Vec<ipnet::IpNet>);

fn cidrs(value: &str) -> Result<CidrList, String> {
    crate::runtime::webhook::source::parse_cidrs(value).map(CidrList)
}

/// A DynamoDB table name: 3 to 255 of `a-z A-Z 0-9 _ - .`.
pub fn table_name(value: &str) -> Result<String, String> {
    let valid = (3..=255).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(value.to_owned())
    } else {
        Err("a DynamoDB table name is 3 to 255 of a-z, A-Z, 0-9, `_`, `-` and `.`".into())
    }
}

fn secret(value: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(value.to_owned()))
}

/// An SQS queue URL: absolute http(s) with a path naming the queue.
pub fn queue_url(value: &str) -> Result<String, String> {
    let url = Url::parse(value).map_err(|e| {
        format!("not a URL ({e}); expected https://sqs.<region>.amazonaws.com/<account>/<queue>")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme `{}` is not http or https", url.scheme()));
    }
    if url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .is_none_or(str::is_empty)
    {
        return Err("the URL names no queue (expected …/<account>/<queue>)".into());
    }
    Ok(value.to_owned())
}

/// Bootpay's base URL: https, or http only on a loopback host (a local fake).
pub fn bootpay_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("not a URL ({e})"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => return Err("the URL has no host".into()),
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err("plain http is allowed only for a loopback host; use https".into()),
        other => Err(format!("scheme `{other}` is not https")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> BootpayArgs {
        BootpayArgs {
            bootpay_client_key: None,
            bootpay_client_key_file: None,
            bootpay_secret_key: None,
            bootpay_secret_key_file: None,
            bootpay_application_id: None,
            bootpay_private_key: None,
            bootpay_private_key_file: None,
            bootpay_api_version: Dialect::V2,
            bootpay_api_url: None,
            bootpay_timeout_secs: 10,
            bootpay_retry_budget_secs: 20,
            bootpay_reject_sandbox: false,
        }
    }

    #[test]
    fn one_complete_pair_of_credentials_is_needed_and_client_keys_win() {
        let error = |a: BootpayArgs| a.config().unwrap_err().to_string();
        assert!(error(args()).contains("no Bootpay credentials"));

        let mut half = args();
        half.bootpay_client_key = Some("client".into());
        assert!(error(half).contains("BOOTPAY_CLIENT_KEY is set but BOOTPAY_SECRET_KEY is not"));
        let mut half = args();
        half.bootpay_private_key = Some(SecretString::from("pk"));
        assert!(
            error(half).contains("BOOTPAY_PRIVATE_KEY is set but BOOTPAY_APPLICATION_ID is not")
        );

        let mut basic = args();
        basic.bootpay_client_key = Some("client".into());
        basic.bootpay_secret_key = Some(SecretString::from("secret"));
        let config = basic.config().unwrap();
        assert!(matches!(config.credentials, Credentials::Basic { .. }));
        assert_eq!(config.api_url.as_str(), "https://api.bootpay.co.kr/v2");

        let mut both = basic.clone();
        both.bootpay_application_id = Some("app".into());
        both.bootpay_private_key = Some(SecretString::from("pk"));
        assert!(matches!(
            both.config().unwrap().credentials,
            Credentials::Basic { .. }
        ));

        let mut v1_basic = basic;
        v1_basic.bootpay_api_version = Dialect::V1;
        assert!(error(v1_basic).contains("v1 has no client/secret-key authentication"));

        let mut v1 = args();
        v1.bootpay_api_version = Dialect::V1;
        v1.bootpay_application_id = Some("app".into());
        v1.bootpay_private_key = Some(SecretString::from("pk"));
        let config = v1.config().unwrap();
        assert!(matches!(config.credentials, Credentials::Token { .. }));
        assert_eq!(config.api_url.as_str(), "https://api.bootpay.co.kr/");

        let mut empty = args();
        empty.bootpay_client_key = Some("client".into());
        empty.bootpay_secret_key = Some(SecretString::from("  "));
        assert!(error(empty).contains("BOOTPAY_SECRET_KEY is empty"));
    }

    #[test]
    fn bootpay_url_must_be_https_unless_loopback() {
        assert!(bootpay_url("https://api.bootpay.co.kr/v2").is_ok());
        assert!(bootpay_url("http://127.0.0.1:8080/v2").is_ok());
        assert!(bootpay_url("http://[::1]:8080/v2").is_ok());
        assert!(bootpay_url("http://localhost/v2").is_ok());
        assert!(bootpay_url("http://api.bootpay.co.kr/v2").is_err());
        assert!(bootpay_url("http://10.0.0.1/v2").is_err());
        assert!(bootpay_url("ftp://127.0.0.1/v2").is_err());
        assert!(bootpay_url("not a url").is_err());
    }

    #[test]
    fn queue_urls_must_name_a_queue() {
        assert!(
            queue_url("https://sqs.ap-northeast-2.amazonaws.com/123456789012/purchases").is_ok()
        );
        assert!(queue_url("http://127.0.0.1:4566/000000000000/q").is_ok());
        assert!(queue_url("https://sqs.ap-northeast-2.amazonaws.com/").is_err());
        assert!(queue_url("purchases").is_err());
        assert!(queue_url("file:///tmp/q").is_err());
    }
}

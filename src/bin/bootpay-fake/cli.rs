//! Command-line flags of the fake. Every flag can also come from an environment variable;
//! the credential variables share their names with the worker's so a demo needs one set.

use std::net::SocketAddr;
use std::path::PathBuf;

use url::Url;

use crate::webhook::{self, V1ContentType};

/// HTTP fake of Bootpay's server API, v2 under `/v2` and legacy v1 at the root, for tests,
/// demos and benchmarks.
///
/// Prints `BOOTPAY_API_URL=http://ADDR/v2` and then `BOOTPAY_V1_API_URL=http://ADDR` on
/// stdout once listening.
// NOTE: no `Debug` derive, so the private key cannot end up in a log line by accident.
#[derive(clap::Parser)]
#[command(name = "bootpay-fake", version)]
pub struct Cli {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "BOOTPAY_FAKE_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// JSON fixture with the receipts to serve (`{"receipts": [...]}`); none means no receipts.
    #[arg(long, env = "BOOTPAY_FAKE_RECEIPTS")]
    pub receipts: Option<PathBuf>,

    /// Application id the token endpoint accepts.
    #[arg(
        long,
        env = "BOOTPAY_APPLICATION_ID",
        default_value = "fake-application-id"
    )]
    pub application_id: String,

    /// Private key the token endpoint accepts.
    #[arg(
        long,
        env = "BOOTPAY_PRIVATE_KEY",
        default_value = "fake-private-key",
        hide_env_values = true
    )]
    pub private_key: String,

    /// Client key accepted in `Authorization: Basic base64(client_key:secret_key)` on v2 calls.
    #[arg(long, env = "BOOTPAY_CLIENT_KEY", default_value = "fake-client-key")]
    pub client_key: String,

    /// Secret key accepted with the client key.
    #[arg(
        long,
        env = "BOOTPAY_SECRET_KEY",
        default_value = "fake-secret-key",
        hide_env_values = true
    )]
    pub secret_key: String,

    /// Lifetime of issued access tokens. Bootpay's is 30 minutes.
    #[arg(
        long,
        env = "BOOTPAY_FAKE_TOKEN_TTL_SECS",
        default_value_t = 1800,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub token_ttl_secs: u64,

    /// Delay added to every Bootpay request (v1 and v2), for benchmarks.
    #[arg(long, env = "BOOTPAY_FAKE_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,

    /// Share (0 to 1) of receipt lookups and confirms (v1: submits) answered with a random
    /// fault.
    #[arg(
        long,
        env = "BOOTPAY_FAKE_CHAOS_RATE",
        default_value_t = 0.0,
        value_parser = parse_rate
    )]
    pub chaos_rate: f64,

    /// How long a "slow" chaos answer waits before its 503.
    #[arg(long, env = "BOOTPAY_FAKE_CHAOS_TIMEOUT_MS", default_value_t = 15_000)]
    pub chaos_timeout_ms: u64,

    /// URL that receives v2 webhooks (JSON); none sends none. `PUT /_fake/webhooks` changes it.
    #[arg(long, env = "BOOTPAY_FAKE_WEBHOOK_URL", value_parser = webhook::parse_url)]
    pub webhook_url: Option<Url>,

    /// URL that receives v1 feedback notifications; none sends none.
    #[arg(long, env = "BOOTPAY_FAKE_WEBHOOK_V1_URL", value_parser = webhook::parse_url)]
    pub webhook_v1_url: Option<Url>,

    /// How v1 feedback bodies are encoded.
    #[arg(
        long,
        env = "BOOTPAY_FAKE_WEBHOOK_V1_CONTENT_TYPE",
        value_enum,
        default_value_t = V1ContentType::Form
    )]
    pub webhook_v1_content_type: V1ContentType,

    /// Pause before a webhook's first retry; each further retry waits twice as long, at most
    /// 30 seconds.
    #[arg(
        long,
        env = "BOOTPAY_FAKE_WEBHOOK_RETRY_BASE_MS",
        default_value_t = 1000
    )]
    pub webhook_retry_base_ms: u64,

    /// Attempts per webhook, the first included. Bootpay's default is 10.
    #[arg(
        long,
        env = "BOOTPAY_FAKE_WEBHOOK_ATTEMPTS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub webhook_attempts: u32,
}

/// Parses a probability, refusing NaN and values outside `0..=1`.
pub fn parse_rate(raw: &str) -> Result<f64, String> {
    let rate: f64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("{raw:?} is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is outside 0..=1"))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rate_must_be_a_probability() {
        assert_eq!(parse_rate("0.25"), Ok(0.25));
        assert_eq!(parse_rate("1"), Ok(1.0));
        assert!(parse_rate("1.5").is_err());
        assert!(parse_rate("-0.1").is_err());
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rate("often").is_err());
    }
}

//! Logging: `tracing` to stderr, as text or JSON lines.
//!
//! `run` takes its level from `RUST_LOG` and its format from `LOG_FORMAT`. The Lambda
//! follows Lambda's own settings first — `AWS_LAMBDA_LOG_LEVEL` and
//! `AWS_LAMBDA_LOG_FORMAT` (`JSON` or `Text`), which the function's logging configuration
//! sets — and falls back to the same two.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `RUST_LOG` wins over the default of `info`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    install(filter, format);
}

/// Installs the global subscriber for a Lambda function.
pub fn init_lambda(fallback: LogFormat) {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL").ok();
    let format = std::env::var("AWS_LAMBDA_LOG_FORMAT").ok();
    let (filter, format) = lambda_settings(level.as_deref(), format.as_deref(), fallback);
    install(filter, format);
}

/// What Lambda's variables ask for; `RUST_LOG` and `fallback` where they say nothing.
fn lambda_settings(
    level: Option<&str>,
    format: Option<&str>,
    fallback: LogFormat,
) -> (EnvFilter, LogFormat) {
    let level = level
        .map(str::to_ascii_lowercase)
        .map(|l| match l.as_str() {
            // Lambda's FATAL has no `tracing` level of its own.
            "fatal" => "error".to_owned(),
            _ => l,
        });
    let filter = level
        .and_then(|l| EnvFilter::try_new(l).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let format = match format.map(str::to_ascii_uppercase).as_deref() {
        Some("JSON") => LogFormat::Json,
        Some("TEXT") => LogFormat::Text,
        _ => fallback,
    };
    (filter, format)
}

fn install(filter: EnvFilter, format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_settings_come_first() {
        let (filter, format) = lambda_settings(Some("DEBUG"), Some("JSON"), LogFormat::Text);
        assert_eq!(filter.to_string(), "debug");
        assert_eq!(format, LogFormat::Json);
        let (filter, format) = lambda_settings(Some("FATAL"), Some("Text"), LogFormat::Json);
        assert_eq!(filter.to_string(), "error");
        assert_eq!(format, LogFormat::Text);
        let (_, format) = lambda_settings(None, None, LogFormat::Json);
        assert_eq!(format, LogFormat::Json);
    }
}

//! Logging: `tracing` to stderr, as text or JSON lines.
//!
//! `run` takes its level from `RUST_LOG` and its format from `LOG_FORMAT`. The Lambda
//! follows Lambda's own settings first — `AWS_LAMBDA_LOG_LEVEL` and
//! `AWS_LAMBDA_LOG_FORMAT` (`JSON` or `Text`), which the function's logging configuration
//! sets — and falls back to the same two.

use std::fmt;
use std::io::IsTerminal;

use clap::ValueEnum;
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

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
        LogFormat::Text => builder.fmt_fields(EscapedFields).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Text-format fields with control characters escaped in every value, so that a value
/// holding text from outside (an order id, a Bootpay error body) cannot end the line and
/// start one of its own, nor send terminal escapes. Otherwise as tracing's default:
/// `name=value`, strings quoted, the message bare. (The JSON format escapes by itself.)
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = EscapedVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapedVisitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl EscapedVisitor<'_> {
    fn write(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        let name = field.name();
        self.result = if name == "message" {
            write!(self.writer, "{separator}{}", Escaped(value))
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            write!(self.writer, "{separator}{name}={}", Escaped(value))
        };
    }
}

impl Visit for EscapedVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, value);
        } else {
            self.write(field, &format!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

/// Text with control characters (and the Unicode line and paragraph separators) written
/// as escapes.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unsafe_char = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
        if !self.0.chars().any(unsafe_char) {
            return f.write_str(self.0);
        }
        for c in self.0.chars() {
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if unsafe_char(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_from_outside_cannot_start_a_line_of_their_own() {
        use tracing_subscriber::layer::SubscriberExt;
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = buffer.clone();
        let layer = tracing_subscriber::fmt::layer()
            .fmt_fields(EscapedFields)
            .without_time()
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let order = "o-1\r\n2026-12-02T00:00:00Z  INFO forged: Decision published.";
            let span = tracing::info_span!("purchase", order_id = tracing::field::Empty);
            span.record("order_id", order);
            let _entered = span.enter();
            tracing::info!(
                message = "Decision published.",
                order_id = %order,
                why = %"HTTP 403 (none): blocked\n\u{1b}[2J\u{2028}next",
                plain = "kept as it is",
            );
        });
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(r#"order_id=o-1\r\n2026-12-02T00:00:00Z  INFO forged"#),
            "{text}"
        );
        assert!(text.contains(r#"purchase{order_id="o-1\r\n2026"#), "{text}");
        assert!(
            text.contains(r#"why=HTTP 403 (none): blocked\n\u{1b}[2J\u{2028}next"#),
            "{text}"
        );
        assert!(text.contains(r#"plain="kept as it is""#), "{text}");
        assert!(text.contains("Decision published."), "{text}");
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

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

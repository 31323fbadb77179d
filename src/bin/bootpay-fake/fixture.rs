//! Receipt fixtures: turns the `--receipts` file and `PUT /_fake/receipts/{id}` bodies into
//! receipts to serve. A receipt is any JSON object with a string `receipt_id`; it is served
//! verbatim except for its `fault` key, which configures injected failures and is never served.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

/// Failures injected on lookups and confirms of one receipt.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fault {
    /// Delay before answering each lookup or confirm.
    pub latency_ms: u64,
    /// How many lookup-or-confirm calls fail before the receipt answers normally.
    pub fail_first: u32,
    /// HTTP status of those failures.
    pub fail_status: u16,
    /// `Retry-After` sent with failures whose status is 429.
    pub retry_after_secs: u64,
}

impl Default for Fault {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            fail_first: 0,
            fail_status: 503,
            retry_after_secs: 1,
        }
    }
}

/// A parsed receipt: its id, the object served for it and its fault settings.
#[derive(Debug, Clone)]
pub struct ReceiptSpec {
    pub id: String,
    pub body: Map<String, Value>,
    pub fault: Fault,
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    #[error("a receipt must be a JSON object")]
    NotAnObject,
    #[error("a receipt needs a non-empty string `receipt_id`")]
    MissingId,
    #[error("receipt {id:?} has an invalid `fault`: {source}")]
    Fault {
        id: String,
        source: serde_json::Error,
    },
    #[error(
        "receipt {id:?}: `fault.fail_status` must be an HTTP error status (400-599), not {status}"
    )]
    FailStatus { id: String, status: u16 },
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read receipts fixture {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("receipts fixture {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("receipts fixture {path}, entry #{index}: {source}")]
    Receipt {
        path: PathBuf,
        index: usize,
        source: ReceiptError,
    },
    #[error("receipts fixture {path}: receipt_id {id:?} appears more than once")]
    Duplicate { path: PathBuf, id: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureFile {
    receipts: Vec<Value>,
}

/// Reads and validates a fixture file.
///
/// # Errors
/// The file cannot be read, is not `{"receipts": [...]}`, holds an invalid receipt, or repeats
/// a `receipt_id`.
pub fn load(path: &Path) -> Result<Vec<ReceiptSpec>, FixtureError> {
    let text = std::fs::read(path).map_err(|source| FixtureError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file: FixtureFile =
        serde_json::from_slice(&text).map_err(|source| FixtureError::Parse {
            path: path.to_owned(),
            source,
        })?;
    let mut seen = HashSet::new();
    file.receipts
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            let spec = parse_receipt(value).map_err(|source| FixtureError::Receipt {
                path: path.to_owned(),
                index,
                source,
            })?;
            if !seen.insert(spec.id.clone()) {
                return Err(FixtureError::Duplicate {
                    path: path.to_owned(),
                    id: spec.id,
                });
            }
            Ok(spec)
        })
        .collect()
}

/// Validates one receipt object and splits off its `fault` settings.
///
/// # Errors
/// See [`ReceiptError`].
pub fn parse_receipt(value: Value) -> Result<ReceiptSpec, ReceiptError> {
    let Value::Object(mut body) = value else {
        return Err(ReceiptError::NotAnObject);
    };
    let id = match body.get("receipt_id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => return Err(ReceiptError::MissingId),
    };
    let fault = match body.remove("fault") {
        None | Some(Value::Null) => Fault::default(),
        Some(raw) => Fault::deserialize(raw).map_err(|source| ReceiptError::Fault {
            id: id.clone(),
            source,
        })?,
    };
    if !(400..=599).contains(&fault.fail_status) {
        return Err(ReceiptError::FailStatus {
            id,
            status: fault.fail_status,
        });
    }
    Ok(ReceiptSpec { id, body, fault })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strips_fault_and_keeps_everything_else() {
        let spec = parse_receipt(json!({
            "receipt_id": "r-1", "price": 3000, "extra": {"a": [1, 2]},
            "fault": {"fail_first": 2, "fail_status": 429}
        }))
        .expect("valid receipt");
        assert_eq!(spec.id, "r-1");
        assert_eq!(
            Value::Object(spec.body),
            json!({"receipt_id": "r-1", "price": 3000, "extra": {"a": [1, 2]}})
        );
        assert_eq!(
            spec.fault,
            Fault {
                fail_first: 2,
                fail_status: 429,
                ..Fault::default()
            }
        );
    }

    #[test]
    fn rejects_invalid_receipts() {
        assert!(matches!(
            parse_receipt(json!([1])),
            Err(ReceiptError::NotAnObject)
        ));
        assert!(matches!(
            parse_receipt(json!({"receipt_id": 7})),
            Err(ReceiptError::MissingId)
        ));
        assert!(matches!(
            parse_receipt(json!({"receipt_id": "r", "fault": {"fail_frist": 1}})),
            Err(ReceiptError::Fault { .. })
        ));
        assert!(matches!(
            parse_receipt(json!({"receipt_id": "r", "fault": {"fail_status": 200}})),
            Err(ReceiptError::FailStatus { .. })
        ));
    }
}

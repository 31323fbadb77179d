//! Receipt fixtures: turns the `--receipts` file and `PUT /_fake/receipts/{id}` bodies into
//! receipts to serve. A receipt is any JSON object with a string `receipt_id`; it is served
//! verbatim except for two keys that are never served: `fault`, which configures injected
//! failures, and `vbank_due_in_secs`, a virtual account's due date relative to the moment the
//! receipt is loaded.
//!
//! An issued virtual account (status 5) always leaves here with a `vbank_data` object holding
//! `bank_code, bank_name, bank_account, bank_username, sender_name, expired_at`: what the
//! fixture gives is kept, what it leaves out is filled with made-up account details and a due
//! date (`vbank_due_in_secs` from now, else seven days from now); one that names no method
//! gets `method_symbol: "vbank"` and `method: "가상계좌"`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::clock;
use crate::state::STATUS_VBANK_ISSUED;

/// The fixture key that sets a virtual account's due date relative to now.
const VBANK_DUE_KEY: &str = "vbank_due_in_secs";

/// A virtual account's due date when its fixture gives none. Bootpay's default is not
/// documented; Toss Payments' is seven days.
const DEFAULT_VBANK_DUE_SECS: i64 = 7 * 86_400;

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
    #[error("receipt {id:?}: `vbank_due_in_secs` {reason}")]
    VbankDue { id: String, reason: &'static str },
    #[error("receipt {id:?}: `vbank_data` of an issued virtual account must be an object")]
    VbankData { id: String },
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

/// Reads and validates a fixture file; relative due dates count from `now`.
///
/// # Errors
/// The file cannot be read, is not `{"receipts": [...]}`, holds an invalid receipt, or repeats
/// a `receipt_id`.
pub fn load(path: &Path, now: SystemTime) -> Result<Vec<ReceiptSpec>, FixtureError> {
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
            let spec = parse_receipt(value, now).map_err(|source| FixtureError::Receipt {
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

/// Validates one receipt object, splits off its `fault` settings and completes an issued
/// virtual account's `vbank_data`, with due dates counted from `now`.
///
/// # Errors
/// See [`ReceiptError`].
pub fn parse_receipt(value: Value, now: SystemTime) -> Result<ReceiptSpec, ReceiptError> {
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
    complete_vbank(&id, &mut body, now)?;
    Ok(ReceiptSpec { id, body, fault })
}

/// Turns `vbank_due_in_secs` into `vbank_data.expired_at` and fills in what an issued virtual
/// account's `vbank_data` leaves out. Receipts in other statuses are left as they are; a due
/// date on one of them is refused, as it could only be a mistake.
fn complete_vbank(
    id: &str,
    body: &mut Map<String, Value>,
    now: SystemTime,
) -> Result<(), ReceiptError> {
    let due_error = |reason| ReceiptError::VbankDue {
        id: id.to_owned(),
        reason,
    };
    let due_in_secs = match body.remove(VBANK_DUE_KEY) {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_i64()
                .ok_or_else(|| due_error("must be a whole number of seconds"))?,
        ),
    };
    if body.get("status").and_then(Value::as_i64) != Some(STATUS_VBANK_ISSUED) {
        return match due_in_secs {
            Some(_) => Err(due_error(
                "is only for an issued virtual account (status 5)",
            )),
            None => Ok(()),
        };
    }
    if matches!(body.get("vbank_data"), None | Some(Value::Null)) {
        body.insert("vbank_data".into(), Value::Object(Map::new()));
    }
    let Some(Value::Object(vbank)) = body.get_mut("vbank_data") else {
        return Err(ReceiptError::VbankData { id: id.to_owned() });
    };
    let given = |value: Option<&Value>| value.is_some_and(|value| !value.is_null());
    if due_in_secs.is_some() && given(vbank.get("expired_at")) {
        return Err(due_error(
            "and `vbank_data.expired_at` cannot both be given",
        ));
    }
    let due = due_at(now, due_in_secs.unwrap_or(DEFAULT_VBANK_DUE_SECS));
    let defaults = [
        ("bank_code", "088"),
        ("bank_name", "신한은행"),
        ("bank_account", "56211105948400"),
        ("bank_username", "부트페이"),
        ("sender_name", "홍길동"),
        ("expired_at", due.as_str()),
    ];
    for (key, value) in defaults {
        if !given(vbank.get(key)) {
            vbank.insert(key.to_owned(), Value::String(value.to_owned()));
        }
    }
    // A receipt that names no method is a virtual account's; one that names any keeps it.
    if !body.contains_key("method_symbol") && !body.contains_key("method") {
        body.insert("method_symbol".into(), "vbank".into());
        body.insert("method".into(), "가상계좌".into());
    }
    Ok(())
}

/// `now` moved by `secs` (negative: into the past), as KST RFC 3339.
fn due_at(now: SystemTime, secs: i64) -> String {
    let shift = Duration::from_secs(secs.unsigned_abs());
    let due = if secs >= 0 {
        now.checked_add(shift)
    } else {
        now.checked_sub(shift)
    };
    clock::kst_rfc3339(due.unwrap_or(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// 2024-05-01T10:00:30+09:00.
    const NOW_SECS: u64 = 1_714_525_230;

    fn parse(value: Value) -> Result<ReceiptSpec, ReceiptError> {
        parse_receipt(
            value,
            SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS),
        )
    }

    #[test]
    fn strips_fault_and_keeps_everything_else() {
        let spec = parse(json!({
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
        assert!(matches!(parse(json!([1])), Err(ReceiptError::NotAnObject)));
        assert!(matches!(
            parse(json!({"receipt_id": 7})),
            Err(ReceiptError::MissingId)
        ));
        assert!(matches!(
            parse(json!({"receipt_id": "r", "fault": {"fail_frist": 1}})),
            Err(ReceiptError::Fault { .. })
        ));
        assert!(matches!(
            parse(json!({"receipt_id": "r", "fault": {"fail_status": 200}})),
            Err(ReceiptError::FailStatus { .. })
        ));
    }

    #[test]
    fn issued_virtual_accounts_get_their_account_and_due_date() {
        let spec = parse(json!({
            "receipt_id": "v", "status": 5, "price": 9000, "vbank_due_in_secs": 3600
        }))
        .expect("valid receipt");
        assert_eq!(
            Value::Object(spec.body),
            json!({
                "receipt_id": "v", "status": 5, "price": 9000,
                "method_symbol": "vbank", "method": "가상계좌",
                "vbank_data": {
                    "bank_code": "088", "bank_name": "신한은행",
                    "bank_account": "56211105948400", "bank_username": "부트페이",
                    "sender_name": "홍길동", "expired_at": "2024-05-01T11:00:30+09:00"
                }
            })
        );

        // What the fixture gives is kept; a due date in the past is allowed.
        let spec = parse(json!({
            "receipt_id": "v", "status": 5, "method_symbol": "vbank", "method": "Virtual",
            "vbank_data": { "bank_name": "KB", "tid": "T-5" }, "vbank_due_in_secs": -30
        }))
        .expect("valid receipt");
        assert_eq!(spec.body["method"], "Virtual");
        assert_eq!(spec.body["vbank_data"]["bank_name"], "KB");
        assert_eq!(spec.body["vbank_data"]["tid"], "T-5");
        assert_eq!(
            spec.body["vbank_data"]["expired_at"],
            "2024-05-01T10:00:00+09:00"
        );

        let spec = parse(json!({ "receipt_id": "v", "status": 5 })).expect("valid receipt");
        assert_eq!(
            spec.body["vbank_data"]["expired_at"],
            "2024-05-08T10:00:30+09:00"
        );
        let literal = json!({ "expired_at": "2030-01-01T00:00:00+09:00" });
        let spec = parse(json!({ "receipt_id": "v", "status": 5, "vbank_data": literal }))
            .expect("valid receipt");
        assert_eq!(
            spec.body["vbank_data"]["expired_at"],
            "2030-01-01T00:00:00+09:00"
        );

        let spec = parse(json!({ "receipt_id": "v", "status": 5, "method_symbol": "card" }))
            .expect("valid receipt");
        assert_eq!(spec.body["method_symbol"], "card");
        assert!(!spec.body.contains_key("method"));

        // Other statuses are served as given.
        let spec = parse(json!({ "receipt_id": "p", "status": 1 })).expect("valid receipt");
        assert_eq!(
            Value::Object(spec.body),
            json!({ "receipt_id": "p", "status": 1 })
        );
    }

    #[test]
    fn rejects_invalid_due_dates() {
        for bad in [
            json!({ "receipt_id": "v", "status": 1, "vbank_due_in_secs": 60 }),
            json!({ "receipt_id": "v", "status": 5, "vbank_due_in_secs": "soon" }),
            json!({ "receipt_id": "v", "status": 5, "vbank_due_in_secs": 1.5 }),
            json!({
                "receipt_id": "v", "status": 5, "vbank_due_in_secs": 60,
                "vbank_data": { "expired_at": "2030-01-01T00:00:00+09:00" }
            }),
        ] {
            assert!(
                matches!(parse(bad.clone()), Err(ReceiptError::VbankDue { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            parse(json!({ "receipt_id": "v", "status": 5, "vbank_data": "088" })),
            Err(ReceiptError::VbankData { .. })
        ));
    }
}

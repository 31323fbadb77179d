//! The purchase-event contract: a message body becomes a [`PurchaseEvent`], or a
//! [`DecodeError`] that says exactly which part of the contract it breaks.
//!
//! Validation is done by hand over a `serde_json::Value` rather than with a derived
//! `Deserialize`, because the error goes to an operator reading the dead-letter queue and
//! must name the field and the rule, not a serde position.
//!
//! Two rules guard what reaches Bootpay and what other readers of the same body see:
//! - a receipt id is 1 to 128 printable ASCII characters (`!` to `~`), and neither `.` nor
//!   `..`: Bootpay's ids are 24 hexadecimal digits, and anything else is refused before
//!   any request, so that no URL layer can turn it into another path or another receipt;
//! - no key may appear twice in an object, at any depth. JSON leaves repeated names
//!   undefined and parsers disagree (many keep the first, serde_json the last), so the
//!   worker and whatever produced or inspected the event could see different prices.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A purchase the app server wants verified before it hands out goods.
#[derive(Debug, Clone, PartialEq)]
pub struct PurchaseEvent {
    pub receipt_id: String,
    pub order_id: String,
    /// What the app server charged; compared with what Bootpay says was paid.
    pub price: Amount,
    pub currency: Option<String>,
    /// Opaque to the worker, echoed on the decision.
    pub metadata: Option<Value>,
    pub event_id: Option<String>,
}

/// A non-negative amount of money as it appeared on the wire.
///
/// The original JSON number is kept so the decision echoes `3000` as `3000`, while
/// comparisons use its value, so `3000` and `3000.0` are the same amount. Amounts written
/// as integers compare exactly up to `u64::MAX`, even past 2^53 where neighbouring
/// integers share an `f64`; the others (`3000.5`, `3e3`) are read as `f64` (about 15
/// significant digits). Past 2^53 a whole amount written with a fraction (`…993.0`) can
/// thus differ from the same integer: a false mismatch (a reject), never a false match.
#[derive(Debug, Clone)]
pub struct Amount(Number);

impl Amount {
    /// Accepts any finite JSON number ≥ 0 (`-0` counts as zero).
    pub fn new(number: Number) -> Option<Self> {
        let value = number.as_f64()?;
        (value.is_finite() && value >= 0.0).then_some(Self(number))
    }

    pub fn value(&self) -> f64 {
        // `new` only admits numbers that have an f64 value.
        self.0.as_f64().unwrap_or(f64::NAN)
    }

    pub fn as_number(&self) -> &Number {
        &self.0
    }

    /// The amount as an exact whole number, when it is one.
    fn whole(&self) -> Option<u64> {
        if let Some(n) = self.0.as_u64() {
            return Some(n);
        }
        let value = self.value();
        // 2^64: the first value past u64::MAX; below it a whole f64 converts exactly.
        (value.fract() == 0.0 && value < 18_446_744_073_709_551_616.0).then_some(value as u64)
    }
}

impl PartialEq for Amount {
    fn eq(&self, other: &Self) -> bool {
        match (self.whole(), other.whole()) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.value() == other.value(),
            _ => false,
        }
    }
}

/// Why a message body is not a valid purchase event. The `Display` text is what an
/// operator sees on the dead letter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("body is a JSON {0}, not an object")]
    NotAnObject(&'static str),
    #[error("required field `{0}` is missing")]
    MissingField(&'static str),
    #[error("field `{field}` {problem}")]
    InvalidField {
        field: &'static str,
        problem: &'static str,
    },
}

impl DecodeError {
    /// A stable, bounded code for message attributes and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotJson(_) => "invalid_json",
            Self::NotAnObject(_) => "not_an_object",
            Self::MissingField(_) => "missing_field",
            Self::InvalidField { .. } => "invalid_field",
        }
    }
}

impl PurchaseEvent {
    /// Parses and validates a message body against the purchase-event contract.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the first rule the body breaks.
    pub fn parse(body: &str) -> Result<Self, DecodeError> {
        let value = serde_json::from_str::<UniqueKeys>(body)
            .map_err(|e| DecodeError::NotJson(e.to_string()))?
            .0;
        let Value::Object(mut fields) = value else {
            return Err(DecodeError::NotAnObject(json_type(&value)));
        };
        let receipt_id = required_id(&fields, "receipt_id")?;
        if !is_valid_receipt_id(&receipt_id) {
            return Err(DecodeError::InvalidField {
                field: "receipt_id",
                problem: RECEIPT_ID_RULE,
            });
        }
        Ok(Self {
            receipt_id,
            order_id: required_id(&fields, "order_id")?,
            price: price(&fields)?,
            currency: optional_string(&fields, "currency")?,
            event_id: optional_string(&fields, "event_id")?,
            metadata: fields.remove("metadata").filter(|m| !m.is_null()),
        })
    }
}

/// What a receipt id must be, as the dead letter says it.
pub const RECEIPT_ID_RULE: &str =
    "must be 1 to 128 printable ASCII characters, without spaces, and not `.` or `..`";

/// Whether `id` can be a Bootpay receipt id: 1 to 128 printable ASCII characters (no space,
/// no control character), and not a dot segment a URL layer would resolve away.
pub fn is_valid_receipt_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_graphic())
        && id != "."
        && id != ".."
}

/// A JSON value parsed like `serde_json::Value`, except that an object with a repeated key
/// is an error naming the key.
struct UniqueKeys(Value);

impl<'de> de::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueKeysVisitor)
            .map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // serde_json hands finite floats only.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "the key {} appears twice",
                    quoted_key(&key)
                )));
            }
            let UniqueKeys(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// A key as an operator reads it on a dead letter: in backquotes, control characters
/// escaped, at most 64 characters.
fn quoted_key(key: &str) -> String {
    let shown: String = key.chars().take(64).flat_map(char::escape_debug).collect();
    let more = if key.chars().count() > 64 { "…" } else { "" };
    format!("`{shown}{more}`")
}

fn required_id(fields: &Map<String, Value>, field: &'static str) -> Result<String, DecodeError> {
    match fields.get(field) {
        None | Some(Value::Null) => Err(DecodeError::MissingField(field)),
        Some(Value::String(s)) if s.trim().is_empty() => Err(DecodeError::InvalidField {
            field,
            problem: "must not be empty",
        }),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(DecodeError::InvalidField {
            field,
            problem: "must be a string",
        }),
    }
}

fn price(fields: &Map<String, Value>) -> Result<Amount, DecodeError> {
    const FIELD: &str = "price";
    match fields.get(FIELD) {
        None | Some(Value::Null) => Err(DecodeError::MissingField(FIELD)),
        Some(Value::Number(n)) => Amount::new(n.clone()).ok_or(DecodeError::InvalidField {
            field: FIELD,
            problem: "must be a number greater than or equal to 0",
        }),
        Some(_) => Err(DecodeError::InvalidField {
            field: FIELD,
            problem: "must be a number",
        }),
    }
}

fn optional_string(
    fields: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, DecodeError> {
    match fields.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(DecodeError::InvalidField {
            field,
            problem: "must be a string when present",
        }),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<PurchaseEvent, DecodeError> {
        PurchaseEvent::parse(body)
    }

    #[test]
    fn accepts_a_full_event_and_ignores_unknown_fields() {
        let event = parse(
            r#"{"receipt_id":"r-1","order_id":"o-1","price":3000,"currency":"KRW",
                "metadata":{"user":7},"event_id":"e-1","unknown":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(event.receipt_id, "r-1");
        assert_eq!(event.order_id, "o-1");
        assert_eq!(event.price.as_number().to_string(), "3000");
        assert_eq!(event.currency.as_deref(), Some("KRW"));
        assert_eq!(event.metadata, Some(serde_json::json!({"user": 7})));
        assert_eq!(event.event_id.as_deref(), Some("e-1"));
    }

    #[test]
    fn integer_and_float_prices_are_the_same_amount() {
        let a = parse(r#"{"receipt_id":"r","order_id":"o","price":3000}"#).unwrap();
        let b = parse(r#"{"receipt_id":"r","order_id":"o","price":3000.0}"#).unwrap();
        let c = parse(r#"{"receipt_id":"r","order_id":"o","price":3000.0000001}"#).unwrap();
        assert_eq!(a.price, b.price);
        assert_ne!(a.price, c.price);
        assert_eq!(b.price.as_number().to_string(), "3000.0");
    }

    #[test]
    fn whole_amounts_compare_exactly_past_what_an_f64_can_tell_apart() {
        let price = |p: &str| {
            parse(&format!(
                r#"{{"receipt_id":"r","order_id":"o","price":{p}}}"#
            ))
            .unwrap()
            .price
        };
        // 2^53 + 1 and 2^53 are the same f64.
        assert_ne!(price("9007199254740993"), price("9007199254740992"));
        assert_ne!(price("9007199254740993"), price("9007199254740992.0"));
        assert_eq!(price("9007199254740992"), price("9007199254740992.0"));
        // Read as an f64, `…993.0` is `…992`: a false mismatch, never a false match.
        assert_ne!(price("9007199254740993"), price("9007199254740993.0"));
        assert_eq!(price("18446744073709551615"), price("18446744073709551615"));
        assert_eq!(price("0"), price("-0"));
        assert_eq!(price("0"), price("-0.0"));
        assert_eq!(price("12.5"), price("12.50"));
        assert_ne!(price("12.5"), price("12"));
        assert_eq!(price("1e300"), price("1E300"));
    }

    #[test]
    fn zero_and_negative_zero_are_valid_prices() {
        assert!(parse(r#"{"receipt_id":"r","order_id":"o","price":0}"#).is_ok());
        assert!(parse(r#"{"receipt_id":"r","order_id":"o","price":-0.0}"#).is_ok());
    }

    #[test]
    fn rejects_each_contract_violation_with_its_own_error() {
        let cases: &[(&str, DecodeError)] = &[
            ("not json", DecodeError::NotJson(String::new())),
            ("[1,2]", DecodeError::NotAnObject("array")),
            ("\"text\"", DecodeError::NotAnObject("string")),
            (
                r#"{"order_id":"o","price":1}"#,
                DecodeError::MissingField("receipt_id"),
            ),
            (
                r#"{"receipt_id":null,"order_id":"o","price":1}"#,
                DecodeError::MissingField("receipt_id"),
            ),
            (
                r#"{"receipt_id":"r","price":1}"#,
                DecodeError::MissingField("order_id"),
            ),
            (
                r#"{"receipt_id":"r","order_id":"o"}"#,
                DecodeError::MissingField("price"),
            ),
            (
                r#"{"receipt_id":"  ","order_id":"o","price":1}"#,
                DecodeError::InvalidField {
                    field: "receipt_id",
                    problem: "must not be empty",
                },
            ),
            (
                r#"{"receipt_id":"r","order_id":7,"price":1}"#,
                DecodeError::InvalidField {
                    field: "order_id",
                    problem: "must be a string",
                },
            ),
            (
                r#"{"receipt_id":"r","order_id":"o","price":"3000"}"#,
                DecodeError::InvalidField {
                    field: "price",
                    problem: "must be a number",
                },
            ),
            (
                r#"{"receipt_id":"r","order_id":"o","price":-1}"#,
                DecodeError::InvalidField {
                    field: "price",
                    problem: "must be a number greater than or equal to 0",
                },
            ),
            (
                r#"{"receipt_id":"r","order_id":"o","price":1,"currency":5}"#,
                DecodeError::InvalidField {
                    field: "currency",
                    problem: "must be a string when present",
                },
            ),
        ];
        for (body, expected) in cases {
            let err = parse(body).unwrap_err();
            match (expected, &err) {
                (DecodeError::NotJson(_), DecodeError::NotJson(_)) => {}
                _ => assert_eq!(&err, expected, "body: {body}"),
            }
        }
    }

    #[test]
    fn out_of_range_numbers_are_not_json() {
        let err = parse(r#"{"receipt_id":"r","order_id":"o","price":1e400}"#).unwrap_err();
        assert_eq!(err.code(), "invalid_json");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let body = format!(
            r#"{{"receipt_id":"r","order_id":"o","price":1,"metadata":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(parse(&body).unwrap_err().code(), "invalid_json");
    }

    #[test]
    fn edge_numbers_strings_and_sizes() {
        let ok = |price: &str| {
            parse(&format!(
                r#"{{"receipt_id":"r","order_id":"o","price":{price}}}"#
            ))
        };
        assert!(ok("-0").is_ok());
        assert!(ok("1e308").is_ok());
        assert!(ok("5e-324").is_ok());
        assert_eq!(ok("-1e-300").unwrap_err().code(), "invalid_field");
        assert_eq!(ok("1e400").unwrap_err().code(), "invalid_json");
        assert_eq!(ok("NaN").unwrap_err().code(), "invalid_json");
        let unicode = parse(r#"{"receipt_id":"r-1","order_id":"주문 🍣","price":1}"#).unwrap();
        assert_eq!(unicode.order_id, "주문 🍣");
        let long = "x".repeat(1 << 20);
        let body = format!(r#"{{"receipt_id":"r","order_id":"{long}","price":1}}"#);
        assert_eq!(parse(&body).unwrap().order_id.len(), 1 << 20);
        assert_eq!(parse("").unwrap_err().code(), "invalid_json");
        assert_eq!(
            parse("{}").unwrap_err(),
            DecodeError::MissingField("receipt_id")
        );
    }

    #[test]
    fn receipt_ids_are_printable_ascii_of_bounded_length_and_no_dot_segment() {
        let id = |receipt_id: &str| {
            let body = serde_json::json!({"receipt_id": receipt_id, "order_id": "o", "price": 1});
            parse(&body.to_string())
        };
        for valid in [
            "6500c8a1d01c7e0021b4c2f1",
            "r-paid-1001",
            "a",
            "...",
            "r/1?x#y%2F",
            &"x".repeat(128),
        ] {
            assert_eq!(id(valid).unwrap().receipt_id, valid);
        }
        let rule = DecodeError::InvalidField {
            field: "receipt_id",
            problem: RECEIPT_ID_RULE,
        };
        for invalid in [
            ".",
            "..",
            "r-1\t",
            "r-1\r\nGET /v2/receipt/other",
            "r 1",
            "영수증",
            "r-\u{0}",
            "r-\u{7f}",
            &"x".repeat(129),
        ] {
            assert_eq!(id(invalid).unwrap_err(), rule, "{invalid:?}");
        }
    }

    #[test]
    fn a_repeated_key_is_not_json_whatever_its_depth() {
        for (body, key) in [
            (
                r#"{"receipt_id":"r","order_id":"o","price":100,"price":3000}"#,
                "`price`",
            ),
            (
                r#"{"receipt_id":"r","receipt_id":"r2","order_id":"o","price":1}"#,
                "`receipt_id`",
            ),
            (
                r#"{"receipt_id":"r","order_id":"o","price":1,"metadata":{"a":{"b":1,"b":2}}}"#,
                "`b`",
            ),
            (
                r#"{"receipt_id":"r","order_id":"o","price":1,"metadata":[{"x":1,"x":1}]}"#,
                "`x`",
            ),
            (
                r#"{"receipt_id":"r","order_id":"o","price":1,"a\nb":1,"a\nb":2}"#,
                "`a\\nb`",
            ),
        ] {
            let error = parse(body).unwrap_err();
            assert_eq!(error.code(), "invalid_json", "{body}");
            let text = error.to_string();
            assert!(
                text.contains(&format!("the key {key} appears twice")),
                "{text}"
            );
        }
        // The same key in different objects is fine.
        let ok = parse(r#"{"receipt_id":"r","order_id":"o","price":1,"metadata":{"price":2}}"#);
        assert_eq!(ok.unwrap().metadata, Some(serde_json::json!({"price": 2})));
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::{Value, json};

        use super::super::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Value::from),
                ".{0,12}".prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                    prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// The contract, stated independently of the decoder.
        fn valid(v: &Value) -> bool {
            let id = |k: &str| {
                v.get(k)
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.trim().is_empty())
            };
            let opt_str = |k: &str| v.get(k).is_none_or(|x| x.is_null() || x.is_string());
            v.is_object()
                && id("receipt_id")
                && id("order_id")
                && v.get("price")
                    .and_then(Value::as_f64)
                    .is_some_and(|p| p >= 0.0)
                && opt_str("currency")
                && opt_str("event_id")
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = PurchaseEvent::parse(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn arbitrary_json_is_accepted_exactly_when_it_keeps_the_contract(value in json_value()) {
                let body = value.to_string();
                prop_assert_eq!(PurchaseEvent::parse(&body).is_ok(), valid(&value), "{}", body);
            }

            #[test]
            fn events_with_extra_fields_keep_their_values(
                receipt in "[A-Za-z0-9-]{1,24}",
                order in "\\PC{1,24}".prop_filter("not blank", |s| !s.trim().is_empty()),
                price in 0.0f64..1e12,
                extra in json_value(),
            ) {
                let body = json!({"receipt_id": receipt, "order_id": order, "price": price,
                                  "zz_extra": extra}).to_string();
                let event = PurchaseEvent::parse(&body).unwrap();
                prop_assert_eq!(event.receipt_id, receipt);
                prop_assert_eq!(event.order_id, order);
                prop_assert_eq!(event.price.value(), price);
            }
        }
    }
}

//! Bootpay's legacy v1 shapes: request bodies that may be form-encoded or JSON, and the
//! receipt as v1 wrote it. The store keeps receipts in v2's shape; v1 answers are derived from
//! it on the way out, so both dialects always tell the same story.

use serde_json::{Map, Value, json};

use crate::clock;
use crate::state::{Amount, Ledger};

/// A v1 request body as its fields: form-encoded when the `Content-Type` says so (the old
/// python module posts forms), JSON otherwise. Anything unreadable has no fields, so the
/// handler refuses it as it would a missing field.
pub fn fields(content_type: Option<&str>, body: &[u8]) -> Map<String, Value> {
    let is_form = content_type.is_some_and(|value| {
        value
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    if is_form {
        return url::form_urlencoded::parse(body)
            .map(|(key, value)| (key.into_owned(), Value::String(value.into_owned())))
            .collect();
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    }
}

/// A non-empty string field.
pub fn text(fields: &Map<String, Value>, name: &str) -> Option<String> {
    match fields.get(name) {
        Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
        _ => None,
    }
}

/// An amount field: absent, `null` and `""` are no amount; a number or a string holding one
/// is the amount.
///
/// # Errors
/// Anything else, with a message naming the field.
pub fn amount(fields: &Map<String, Value>, name: &str) -> Result<Option<Amount>, String> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
        Some(value) => Amount::from_json(value)
            .map(Some)
            .ok_or_else(|| format!("{name} must be a number")),
    }
}

/// The receipt in v1's shape, from the v2 object the store holds. v2-only fields stay out.
pub fn receipt(body: &Map<String, Value>) -> Value {
    let field = |key: &str| body.get(key).cloned().unwrap_or(Value::Null);
    let ledger = Ledger::of(body);
    let status = body.get("status").and_then(Value::as_i64);
    let (status_en, status_ko) = status.and_then(status_labels).unzip();
    let timestamp = |key: &str| match body.get(key) {
        Some(Value::String(text)) => {
            clock::v1_from_rfc3339(text).map_or_else(|| Value::String(text.clone()), Value::String)
        }
        _ => Value::Null,
    };
    let unit = match body.get("currency") {
        Some(Value::String(currency)) => Value::String(currency.to_ascii_lowercase()),
        _ => Value::Null,
    };
    // v2's `pg` and `method` are display names; v1 had an alias beside each display name.
    let method = body
        .get("method_symbol")
        .cloned()
        .unwrap_or_else(|| field("method"));
    json!({
        "receipt_id": field("receipt_id"),
        "order_id": field("order_id"),
        "name": field("order_name"),
        "price": field("price"),
        "tax_free": ledger.tax_free.to_json(),
        "remain_price": ledger.remaining().to_json(),
        "remain_tax_free": ledger.remaining_tax_free().to_json(),
        "cancelled_price": ledger.cancelled.to_json(),
        "cancelled_tax_free": ledger.cancelled_tax_free.to_json(),
        "receipt_url": field("receipt_url"),
        "unit": unit,
        "pg": field("pg"),
        "method": method,
        "pg_name": field("pg"),
        "method_name": field("method"),
        "requested_at": timestamp("requested_at"),
        "purchased_at": timestamp("purchased_at"),
        "revoked_at": timestamp("cancelled_at"),
        "status": field("status"),
        "status_en": status_en,
        "status_ko": status_ko,
    })
}

/// v1's `status_en` and `status_ko`. Bootpay documents `complete`/`결제완료` for 1; the
/// others follow the meanings its status table gives.
fn status_labels(status: i64) -> Option<(&'static str, &'static str)> {
    Some(match status {
        0 => ("ready", "결제대기"),
        1 => ("complete", "결제완료"),
        2 => ("confirm_ready", "승인대기"),
        3 => ("approving", "승인중"),
        5 => ("vbank_issued", "가상계좌발급완료"),
        11 => ("billing_key_issued", "빌링키발급완료"),
        20 => ("cancelled", "결제취소완료"),
        -1 => ("failed", "결제실패"),
        -2 => ("approve_failed", "승인실패"),
        -3 => ("vbank_cancelled", "가상계좌발급취소"),
        -11 => ("billing_key_cancelled", "빌링키발급취소"),
        -20 => ("cancel_failed", "결제취소실패"),
        -30 => ("cancelling", "결제취소진행중"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn reads_forms_and_json() {
        let form = fields(
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            b"receipt_id=r-1&price=1000&name=%ED%99%8D",
        );
        assert_eq!(text(&form, "receipt_id").as_deref(), Some("r-1"));
        assert_eq!(text(&form, "name").as_deref(), Some("홍"));
        assert_eq!(amount(&form, "price"), Ok(Some(Amount::Int(1000))));

        let json = fields(
            Some("application/json"),
            br#"{"receipt_id":"r-1","price":1.5,"tax_free":null,"cancel_id":""}"#,
        );
        assert_eq!(amount(&json, "price"), Ok(Some(Amount::Float(1.5))));
        assert_eq!(amount(&json, "tax_free"), Ok(None));
        assert_eq!(text(&json, "cancel_id"), None);
        assert!(amount(&object(json!({"price": "lots"})), "price").is_err());
        assert!(amount(&object(json!({"price": [1]})), "price").is_err());

        assert!(fields(None, b"[1, 2]").is_empty());
        assert!(fields(None, b"not json").is_empty());
        // Without a form Content-Type a form body is not read as one.
        assert!(fields(None, b"receipt_id=r-1").is_empty());
    }

    #[test]
    fn receipts_take_v1s_shape() {
        let v2 = object(json!({
            "receipt_id": "r-1", "order_id": "o-1", "order_name": "Gems", "price": 3000,
            "tax_free": 0, "cancelled_price": 1000, "cancelled_tax_free": 0, "currency": "KRW",
            "pg": "나이스페이먼츠", "method": "카드", "method_symbol": "card",
            "requested_at": "2024-05-01T10:00:00+09:00",
            "purchased_at": "2024-05-01T10:00:31+09:00",
            "cancelled_at": "2024-05-02T09:00:00+09:00",
            "status": 20, "status_locale": "결제취소완료", "sandbox": true,
            "receipt_url": "https://door.bootpay.co.kr/receipt/r-1",
            "card_data": { "tid": "T1" }, "metadata": {}
        }));
        assert_eq!(
            receipt(&v2),
            json!({
                "receipt_id": "r-1", "order_id": "o-1", "name": "Gems", "price": 3000,
                "tax_free": 0, "remain_price": 2000, "remain_tax_free": 0,
                "cancelled_price": 1000, "cancelled_tax_free": 0,
                "receipt_url": "https://door.bootpay.co.kr/receipt/r-1", "unit": "krw",
                "pg": "나이스페이먼츠", "method": "card", "pg_name": "나이스페이먼츠",
                "method_name": "카드", "requested_at": "2024-05-01 10:00:00",
                "purchased_at": "2024-05-01 10:00:31", "revoked_at": "2024-05-02 09:00:00",
                "status": 20, "status_en": "cancelled", "status_ko": "결제취소완료"
            })
        );

        let bare = receipt(&object(
            json!({ "receipt_id": "r-2", "price": 500, "status": 2 }),
        ));
        assert_eq!(bare["remain_price"], 500);
        assert_eq!(bare["cancelled_price"], 0);
        assert_eq!(bare["unit"], Value::Null);
        assert_eq!(bare["purchased_at"], Value::Null);
        assert_eq!(bare["status_en"], "confirm_ready");
        let odd = receipt(&object(json!({ "receipt_id": "r-3", "status": 99 })));
        assert_eq!(odd["status_en"], Value::Null);
    }
}

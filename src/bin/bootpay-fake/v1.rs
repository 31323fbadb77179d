//! Bootpay's legacy v1 shapes: request bodies that may be form-encoded or JSON, the receipt
//! as v1 wrote it, and the fields of v1's feedback notification. The store keeps receipts in
//! v2's shape; v1 answers are derived from it on the way out, so both dialects always tell the
//! same story.

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
    let timestamp = |key: &str| v1_time(body.get(key));
    let unit = match body.get("currency") {
        Some(Value::String(currency)) => Value::String(currency.to_ascii_lowercase()),
        _ => Value::Null,
    };
    // v2's `pg` and `method` are display names; v1 had an alias beside each display name.
    let method = body
        .get("method_symbol")
        .cloned()
        .unwrap_or_else(|| field("method"));
    let mut receipt = json!({
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
    });
    if let (Value::Object(receipt), Some(payment_data)) = (&mut receipt, vbank_payment_data(body)) {
        receipt.insert("payment_data".into(), payment_data);
    }
    receipt
}

/// v1's `payment_data` of a virtual-account receipt: the account and due date under v1's
/// abbreviated names (`expiredate` in KST without a zone) beside the common keys. Only
/// virtual accounts get one here: their account and due date exist nowhere else in v1.
fn vbank_payment_data(body: &Map<String, Value>) -> Option<Value> {
    let Some(Value::Object(vbank)) = body.get("vbank_data") else {
        return None;
    };
    let field = |key: &str| body.get(key).cloned().unwrap_or(Value::Null);
    let vbank_field = |key: &str| vbank.get(key).cloned().unwrap_or(Value::Null);
    Some(json!({
        "receipt_id": field("receipt_id"),
        "n": field("order_name"),
        "p": field("price"),
        "tid": vbank_field("tid"),
        "pg": field("pg"),
        "pm": field("method"),
        "pm_a": field("method_symbol"),
        "o_id": field("order_id"),
        "p_at": v1_time(body.get("purchased_at")),
        "s": field("status"),
        "bankname": vbank_field("bank_name"),
        "accountholder": vbank_field("bank_username"),
        "account": vbank_field("bank_account"),
        "expiredate": v1_time(vbank.get("expired_at")),
        "username": vbank_field("sender_name"),
    }))
}

/// The fields of v1's feedback notification for a receipt, as Bootpay documents them for a
/// form-encoded one, with the merchant's `application_id` and `private_key` (Bootpay sends
/// both). `retry_count` is added per attempt.
pub fn feedback(
    body: &Map<String, Value>,
    application_id: &str,
    private_key: &str,
) -> Map<String, Value> {
    const FIELDS: [&str; 14] = [
        "receipt_id",
        "order_id",
        "price",
        "tax_free",
        "cancelled_price",
        "status",
        "method",
        "method_name",
        "pg",
        "pg_name",
        "name",
        "unit",
        "purchased_at",
        "receipt_url",
    ];
    let receipt = receipt(body);
    let mut fields: Map<String, Value> = FIELDS
        .iter()
        .map(|&key| {
            (
                key.to_owned(),
                receipt.get(key).cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    fields.insert("application_id".into(), application_id.into());
    fields.insert("private_key".into(), private_key.into());
    fields
}

/// A v2 timestamp as v1 writes it; text that is not RFC 3339 passes unchanged.
fn v1_time(value: Option<&Value>) -> Value {
    match value {
        Some(Value::String(text)) => {
            clock::v1_from_rfc3339(text).map_or_else(|| Value::String(text.clone()), Value::String)
        }
        _ => Value::Null,
    }
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
        assert!(odd.get("payment_data").is_none());
    }

    #[test]
    fn virtual_accounts_carry_their_account_in_payment_data() {
        let v2 = object(json!({
            "receipt_id": "r-5", "order_id": "o-5", "order_name": "Gems", "price": 9000,
            "status": 5, "method": "가상계좌", "method_symbol": "vbank", "pg": "KCP",
            "vbank_data": {
                "tid": "T-5", "bank_code": "088", "bank_name": "신한은행",
                "bank_account": "562111", "bank_username": "부트페이", "sender_name": "홍길동",
                "expired_at": "2024-05-08T10:00:30+09:00"
            }
        }));
        let v1 = receipt(&v2);
        assert_eq!(v1["method"], "vbank");
        assert_eq!(v1["status_en"], "vbank_issued");
        assert_eq!(
            v1["payment_data"],
            json!({
                "receipt_id": "r-5", "n": "Gems", "p": 9000, "tid": "T-5", "pg": "KCP",
                "pm": "가상계좌", "pm_a": "vbank", "o_id": "o-5", "p_at": null, "s": 5,
                "bankname": "신한은행", "accountholder": "부트페이", "account": "562111",
                "expiredate": "2024-05-08 10:00:30", "username": "홍길동"
            })
        );
    }

    #[test]
    fn feedback_carries_the_merchant_keys() {
        let v2 = object(json!({
            "receipt_id": "r-1", "order_id": "o-1", "order_name": "Gems", "price": 3000,
            "status": 1, "currency": "KRW", "method_symbol": "card", "method": "카드",
            "purchased_at": "2024-05-01T10:00:31+09:00", "metadata": {}
        }));
        assert_eq!(
            Value::Object(feedback(&v2, "app", "key")),
            json!({
                "receipt_id": "r-1", "order_id": "o-1", "price": 3000, "tax_free": 0,
                "cancelled_price": 0, "status": 1, "method": "card", "method_name": "카드",
                "pg": null, "pg_name": null, "name": "Gems", "unit": "krw",
                "purchased_at": "2024-05-01 10:00:31", "receipt_url": null,
                "application_id": "app", "private_key": "key"
            })
        );
    }
}

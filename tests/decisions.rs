//! The decision table, end to end: the real worker against moto's SQS and bootpay-fake.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail"
)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn every_row_of_the_decision_table_under_v2_with_a_token() {
    every_row_of_the_decision_table(Mode::V2Token).await;
}

#[tokio::test]
async fn every_row_of_the_decision_table_under_v2_with_client_and_secret_keys() {
    every_row_of_the_decision_table(Mode::V2Basic).await;
}

#[tokio::test]
async fn every_row_of_the_decision_table_under_v1() {
    every_row_of_the_decision_table(Mode::V1).await;
}

async fn every_row_of_the_decision_table(mode: Mode) {
    let table = decision_table();
    let stand = Stand::start(table.receipts).await;
    let events = table.events;
    for event in &events {
        stand.send_json(event).await;
    }
    let worker = stand.worker_in(mode, &[]).await;
    let decisions = stand.decisions(events.len(), WAIT).await;
    let by_id = by_receipt(&decisions);

    for (id, decision, reason) in table.expected {
        let d = &by_id[id];
        assert_eq!(d["decision"], decision, "{id}: {d}");
        assert_eq!(d["reason"], reason, "{id}: {d}");
    }
    // Every decision matches the published schema, and its attributes mirror the body
    // so consumers can filter.
    let decision_schema = schema("decision.schema.json");
    for (body, message) in &decisions {
        if let Err(e) = decision_schema.validate(body) {
            panic!("decision does not match schemas/decision.schema.json: {e}\n{body}");
        }
        assert_eq!(
            attribute(message, "decision").as_deref(),
            body["decision"].as_str()
        );
        assert_eq!(
            attribute(message, "reason").as_deref(),
            body["reason"].as_str()
        );
    }

    let paid = &by_id["r-paid"];
    assert_eq!(paid["order_id"], "o-paid");
    assert_eq!(paid["price"], json!(3000));
    assert_eq!(paid["paid_price"], json!(3000));
    assert_eq!(paid["payment_status"], json!(1));
    assert_eq!(paid["metadata"], json!({"user": 42, "sku": ["gem-pack"]}));
    assert_eq!(paid["event_id"], "evt-1");
    let verified_at = paid["verified_at"].as_str().unwrap();
    assert!(verified_at.ends_with('Z'), "{verified_at}");
    humantime::parse_rfc3339(verified_at).expect("verified_at is RFC 3339");
    assert_eq!(by_id["r-cheap"]["paid_price"], json!(100));
    assert_eq!(by_id["r-cheap"]["price"], json!(3000));
    assert!(by_id["r-missing"].get("paid_price").is_none());
    assert!(by_id["r-replayed"].get("metadata").is_none());

    // Status 2: confirmed once when everything matched, never when the price was tampered.
    assert_eq!(stand.fake.receipt_stats("r-confirm").await, (1, 1, 1));
    let (_, confirms, status) = stand.fake.receipt_stats("r-confirm-tampered").await;
    assert_eq!(
        (confirms, status),
        (0, 2),
        "a tampered payment must never be confirmed"
    );

    // The worker spoke the mode's dialect, with the mode's credentials.
    let requests: Vec<String> = stand
        .fake
        .requests()
        .await
        .into_iter()
        .filter(|r| !r.contains("/_fake/"))
        .collect();
    let count = |wanted: &str| requests.iter().filter(|r| r.as_str() == wanted).count();
    match mode {
        Mode::V2Token | Mode::V2Basic => {
            assert!(requests.iter().all(|r| r.contains(" /v2/")), "{requests:?}");
            let tokens = usize::from(mode == Mode::V2Token);
            assert_eq!(count("POST /v2/request/token"), tokens, "{requests:?}");
            assert_eq!(count("POST /v2/confirm"), 1, "{requests:?}");
        }
        Mode::V1 => {
            assert!(requests.iter().all(|r| !r.contains("/v2")), "{requests:?}");
            assert_eq!(count("POST /request/token"), 1, "{requests:?}");
            assert_eq!(count("POST /submit"), 1, "{requests:?}");
            assert_eq!(count("GET /receipt/r-paid"), 1, "{requests:?}");
        }
    }

    // Every purchase was deleted after its decision; nothing was dead-lettered.
    eventually("the purchase queue to drain", WAIT, || async {
        (stand.depth(&stand.purchase_url).await == 0).then_some(())
    })
    .await;
    assert_eq!(stand.depth(&stand.dlq_url).await, 0);
    let line = worker
        .wait_for_log(
            &[
                "Decision published.",
                "r-paid",
                "o-paid",
                "verified",
                "latency_ms",
            ],
            WAIT,
        )
        .await;
    assert!(line.contains("fulfill"), "{line}");
}

#[tokio::test]
async fn the_trace_context_crosses_the_queue() {
    let stand = Stand::start(json!([receipt("r-1", "o-1", json!(500), 1)])).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    stand
        .send_with(
            purchase("r-1", "o-1", json!(500)).to_string(),
            HashMap::from([(
                "traceparent".to_owned(),
                aws_sdk_sqs::types::MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(traceparent)
                    .build()
                    .unwrap(),
            )]),
        )
        .await;
    let _worker = stand.worker(&[]).await;
    let decisions = stand.decisions(1, WAIT).await;
    assert_eq!(
        attribute(&decisions[0].1, "traceparent").as_deref(),
        Some(traceparent)
    );
}

#[test]
fn the_event_schema_accepts_exactly_what_the_worker_accepts() {
    let event_schema = schema("purchase-event.schema.json");
    let bodies = [
        r#"{"receipt_id":"r","order_id":"o","price":3000}"#,
        r#"{"receipt_id":"r","order_id":"o","price":3000.5,"currency":"KRW","metadata":[1],"event_id":"e"}"#,
        r#"{"receipt_id":"r","order_id":"o","price":0,"currency":null,"extra":true}"#,
        r#"{"receipt_id":"r","order_id":"o","price":-0.0}"#,
        r#"{"receipt_id":"r","order_id":"o","price":-1}"#,
        r#"{"receipt_id":"r","order_id":"o","price":"3000"}"#,
        r#"{"receipt_id":"","order_id":"o","price":1}"#,
        r#"{"receipt_id":"   ","order_id":"o","price":1}"#,
        r#"{"receipt_id":"r","order_id":5,"price":1}"#,
        r#"{"receipt_id":"r","price":1}"#,
        r#"{"receipt_id":"r","order_id":"o","price":1,"currency":7}"#,
        r#"{"receipt_id":"r","order_id":"o","price":1,"event_id":{}}"#,
        r#"{"receipt_id":".","order_id":"o","price":1}"#,
        r#"{"receipt_id":"..","order_id":"o","price":1}"#,
        r#"{"receipt_id":"...","order_id":"o","price":1}"#,
        r#"{"receipt_id":"r\tx","order_id":"o","price":1}"#,
        r#"{"receipt_id":"r x","order_id":"o","price":1}"#,
        r#"{"receipt_id":"영수증","order_id":"o","price":1}"#,
        r#"{"receipt_id":"r/1?x#%2F","order_id":"o","price":1}"#,
        r#"[{"receipt_id":"r","order_id":"o","price":1}]"#,
        r#""text""#,
    ];
    let long = |n: usize| {
        format!(
            r#"{{"receipt_id":"{}","order_id":"o","price":1}}"#,
            "x".repeat(n)
        )
    };
    let (at_most, too_long) = (long(128), long(129));
    for body in bodies
        .into_iter()
        .chain([at_most.as_str(), too_long.as_str()])
    {
        let value: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            event_schema.is_valid(&value),
            receipt_verifier::PurchaseEvent::parse(body).is_ok(),
            "schema and worker disagree on {body}"
        );
    }
}

#[tokio::test]
async fn invalid_events_go_to_the_dlq_byte_for_byte() {
    let stand = Stand::start(json!([receipt("r-ok", "o-ok", json!(10), 1)])).await;
    let bad: &[(&str, &str)] = &[
        ("this is not json {", "invalid_json"),
        ("[1, 2, 3]", "not_an_object"),
        (r#"{"order_id":"o","price":1}"#, "missing_field"),
        (
            r#"{"receipt_id":"","order_id":"o","price":1}"#,
            "invalid_field",
        ),
        (
            r#"{"receipt_id":"r","order_id":["o"],"price":1}"#,
            "invalid_field",
        ),
        (
            r#"{"receipt_id":"r","order_id":"o","price":-5}"#,
            "invalid_field",
        ),
        (
            "{\"receipt_id\" : \"r\",\n  \"order_id\": \"o\" ,\"price\":\"12\"}  ",
            "invalid_field",
        ),
    ];
    for (body, _) in bad {
        stand.send(*body).await;
    }
    stand.send_json(&purchase("r-ok", "o-ok", json!(10))).await;
    let _worker = stand.worker(&[]).await;

    let dead = stand.take(&stand.dlq_url, bad.len(), WAIT).await;
    let mut expected: HashMap<&str, &str> = bad.iter().copied().collect();
    for message in &dead {
        let body = message.body().unwrap();
        let code = expected
            .remove(body)
            .unwrap_or_else(|| panic!("unexpected or altered dead letter: {body:?}"));
        assert_eq!(
            attribute(message, "error_code").as_deref(),
            Some(code),
            "{body}"
        );
        assert!(!attribute(message, "error").unwrap().is_empty());
        assert!(attribute(message, "source_message_id").is_some());
    }
    assert!(expected.is_empty());
    // Only the valid purchase got a decision, and the invalid ones left the queue.
    let decisions = stand.decisions(1, WAIT).await;
    assert_eq!(decisions[0].0["receipt_id"], "r-ok");
    eventually("the purchase queue to drain", WAIT, || async {
        (stand.depth(&stand.purchase_url).await == 0).then_some(())
    })
    .await;
    assert_eq!(stand.depth(&stand.result_url).await, 0);
}

#[tokio::test]
async fn a_slow_receipt_does_not_hold_up_the_rest_of_its_batch() {
    let mut receipts = vec![json!({
        "receipt_id": "r-slow", "order_id": "o-slow", "price": 1, "status": 1,
        "fault": {"latency_ms": 8000}
    })];
    for i in 0..9 {
        receipts.push(receipt(
            &format!("r-fast-{i}"),
            &format!("o-fast-{i}"),
            json!(1),
            1,
        ));
    }
    let stand = Stand::start(Value::Array(receipts)).await;
    // One receive batch: the slow purchase and nine fast ones.
    let bodies: Vec<String> = std::iter::once(purchase("r-slow", "o-slow", json!(1)))
        .chain((0..9).map(|i| purchase(&format!("r-fast-{i}"), &format!("o-fast-{i}"), json!(1))))
        .map(|b| b.to_string())
        .collect();
    stand.send_batch(&bodies).await;
    let _worker = stand.worker(&[("WORKER_CONCURRENCY", "16")]).await;
    let first_nine = stand.decisions(9, WAIT).await;
    assert!(
        first_nine.iter().all(|(d, _)| d["receipt_id"] != "r-slow"),
        "the fast purchases were decided while the slow one was still at Bootpay"
    );
    let last = stand.decisions(1, WAIT).await;
    assert_eq!(last[0].0["receipt_id"], "r-slow");
}

#[tokio::test]
async fn test_payments_can_be_refused_in_production() {
    let stand = Stand::start(json!([
        receipt("r-sandbox", "o-1", json!(100), 1),
        {"receipt_id": "r-live", "order_id": "o-2", "price": 100, "status": 1, "sandbox": false},
        {"receipt_id": "r-partial", "order_id": "o-3", "price": 100, "status": 1,
         "sandbox": false, "cancelled_price": 50},
    ]))
    .await;
    stand
        .send_json(&purchase("r-sandbox", "o-1", json!(100)))
        .await;
    stand
        .send_json(&purchase("r-live", "o-2", json!(100)))
        .await;
    stand
        .send_json(&purchase("r-partial", "o-3", json!(100)))
        .await;
    let _worker = stand.worker(&[("BOOTPAY_REJECT_SANDBOX", "true")]).await;
    let by_id = by_receipt(&stand.decisions(3, WAIT).await);
    assert_eq!(by_id["r-sandbox"]["reason"], "not_paid");
    assert_eq!(by_id["r-live"]["reason"], "verified");
    assert_eq!(by_id["r-partial"]["reason"], "cancelled");
}

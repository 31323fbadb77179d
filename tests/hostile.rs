//! Hostile Bootpay answers — wrong types, missing fields, a huge body, random faults and
//! answers slower than the timeout — must never turn into a fulfilment.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn malformed_receipts_are_never_fulfilled_and_end_in_the_dlq() {
    let stand = Stand::with(
        json!([
            {"receipt_id": "r-price-text", "order_id": "o-1", "price": "3000", "status": 1},
            {"receipt_id": "r-no-status", "order_id": "o-2", "price": 3000},
            {"receipt_id": "r-null-order", "order_id": null, "price": 3000, "status": 1},
            {"receipt_id": "r-status-text", "order_id": "o-4", "price": 3000, "status": "1"},
            {"receipt_id": "r-huge", "order_id": "o-5", "price": 3000, "status": 1,
             "padding": "x".repeat(2 << 20)},
            receipt("r-ok", "o-ok", json!(3000), 1),
        ]),
        QueueOptions {
            max_receive_count: 2,
            ..QueueOptions::default()
        },
        &[],
    )
    .await;
    let hostile = [
        "r-price-text",
        "r-no-status",
        "r-null-order",
        "r-status-text",
        "r-huge",
    ];
    for (i, r) in hostile.iter().enumerate() {
        stand
            .send_json(&purchase(r, &format!("o-{}", i + 1), json!(3000)))
            .await;
    }
    stand
        .send_json(&purchase("r-ok", "o-ok", json!(3000)))
        .await;
    let worker = stand
        .worker(&[
            ("BOOTPAY_RETRY_BUDGET_SECS", "1"),
            ("REQUEUE_BASE_DELAY_SECS", "1"),
            ("OUTAGE_THRESHOLD", "1000"),
        ])
        .await;
    let dead = stand.take(&stand.dlq_url, hostile.len(), WAIT).await;
    let mut dead_ids: Vec<String> = dead.iter().map(receipt_id_of).collect();
    dead_ids.sort();
    let mut expected: Vec<String> = hostile.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(dead_ids, expected);
    let decisions = stand.decisions(1, WAIT).await;
    assert_eq!(decisions[0].0["receipt_id"], "r-ok");
    assert_eq!(
        stand.depth(&stand.result_url).await,
        0,
        "no decision for a malformed receipt"
    );
    worker
        .wait_for_log(&["malformed response", "larger than"], WAIT)
        .await;
    worker
        .wait_for_log(&["malformed response", "invalid type"], WAIT)
        .await;
}

#[tokio::test]
async fn random_faults_and_slow_answers_still_give_the_right_decisions() {
    let mut receipts = Vec::new();
    let mut expected = HashMap::new();
    for i in 0..24 {
        let (status, paid, want) = match i % 3 {
            0 => (1, 500, "verified"),
            1 => (1, 5, "price_mismatch"),
            _ => (20, 500, "cancelled"),
        };
        receipts.push(receipt(
            &format!("r-{i}"),
            &format!("o-{i}"),
            json!(paid),
            status,
        ));
        expected.insert(format!("r-{i}"), want);
    }
    let stand = Stand::with(
        Value::Array(receipts),
        QueueOptions {
            max_receive_count: 20,
            visibility_timeout_secs: 10,
            ..QueueOptions::default()
        },
        &["--chaos-rate", "0.4", "--chaos-timeout-ms", "4000"],
    )
    .await;
    for i in 0..24 {
        stand
            .send_json(&purchase(&format!("r-{i}"), &format!("o-{i}"), json!(500)))
            .await;
    }
    let _worker = stand
        .worker(&[
            ("BOOTPAY_TIMEOUT_SECS", "1"),
            ("BOOTPAY_RETRY_BUDGET_SECS", "6"),
            ("REQUEUE_BASE_DELAY_SECS", "1"),
            ("OUTAGE_THRESHOLD", "1000"),
        ])
        .await;
    let decisions = stand.decisions(24, WAIT).await;
    for (d, _) in &decisions {
        let id = d["receipt_id"].as_str().unwrap();
        assert_eq!(d["reason"], expected[id], "{d}");
    }
    let stats = stand.fake.stats().await;
    let lookups = stats["receipt_requests"].as_u64().unwrap();
    assert!(lookups > 24, "chaos made the worker retry: {stats}");
    assert_eq!(stand.depth(&stand.dlq_url).await, 0);
}

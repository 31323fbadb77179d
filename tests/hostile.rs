//! Hostile input. Bootpay answers — wrong types, missing fields, a huge body, random faults,
//! answers slower than the timeout — must never turn into a fulfilment; a purchase whose
//! decision the result queue refuses must not stall the worker. Events — receipt ids a URL
//! layer would rewrite, repeated keys, control characters — are refused before any request
//! or cannot forge a log line; and a secret an answer echoes back never reaches the log.

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

/// A decision the result queue refuses for its content (here, larger than the queue's
/// maximum message size) would be refused forever. Its purchase goes to the DLQ with the
/// decision it got; the purchases sent in the same batch call are decided as usual, and
/// intake never pauses.
#[tokio::test]
async fn a_decision_the_result_queue_refuses_goes_to_the_dlq_without_stalling_the_rest() {
    let stand = Stand::start(json!([
        receipt("r-big", "o-big", json!(10), 1),
        receipt("r-1", "o-1", json!(10), 1),
        receipt("r-2", "o-2", json!(10), 1),
        receipt("r-3", "o-3", json!(10), 1),
    ]))
    .await;
    stand
        .sqs
        .set_queue_attributes()
        .queue_url(&stand.result_url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize,
            "1024",
        )
        .send()
        .await
        .unwrap();
    let mut big = purchase("r-big", "o-big", json!(10));
    big["metadata"] = json!({ "note": "x".repeat(1500) });
    let big = big.to_string();
    let bodies: Vec<String> = std::iter::once(big.clone())
        .chain(
            (1..=3).map(|i| purchase(&format!("r-{i}"), &format!("o-{i}"), json!(10)).to_string()),
        )
        .collect();
    stand.send_batch(&bodies).await;
    // The longest linger puts the four decisions into one SendMessageBatch call, which moto
    // refuses as a whole for the one oversized entry.
    let worker = stand.worker(&[("BATCH_LINGER_MS", "1000")]).await;

    let decisions = by_receipt(&stand.decisions(3, WAIT).await);
    for i in 1..=3 {
        let decision = &decisions[&format!("r-{i}")];
        assert_eq!(decision["decision"], "fulfill", "{decision}");
        assert_eq!(decision["reason"], "verified", "{decision}");
    }
    let letters = stand.take(&stand.dlq_url, 1, WAIT).await;
    let letter = &letters[0];
    assert_eq!(letter.body(), Some(big.as_str()), "the body, byte for byte");
    assert_eq!(
        attribute(letter, "error_code").as_deref(),
        Some("decision_refused")
    );
    assert_eq!(attribute(letter, "decision").as_deref(), Some("fulfill"));
    assert_eq!(attribute(letter, "reason").as_deref(), Some("verified"));
    let error = attribute(letter, "error").unwrap_or_default();
    assert!(error.contains("InvalidParameterValue"), "{error}");
    eventually("the purchase queue empty", WAIT, || async {
        (stand.depth(&stand.purchase_url).await == 0).then_some(())
    })
    .await;
    assert!(
        stand.drain(&stand.result_url).await.is_empty(),
        "no decision for r-big"
    );
    let logs = worker.logs().join("\n");
    assert!(
        logs.contains("sending each alone"),
        "one batch call, split: {logs}"
    );
    assert!(!logs.contains("pausing intake"), "{logs}");
}

/// Every log line of the worker starts with its own timestamp: no text from outside began
/// one of its own.
fn assert_no_forged_lines(worker: &Worker) {
    let logs = worker.logs();
    for line in &logs {
        let stamped = line.len() > 20
            && line.as_bytes()[..4].iter().all(u8::is_ascii_digit)
            && &line[4..5] == "-"
            && line.contains('T');
        assert!(
            stamped,
            "a line the worker did not start: {line:?}\nall:\n{}",
            logs.join("\n")
        );
        assert!(!line.starts_with("FORGED"), "{line}");
    }
}

#[tokio::test]
async fn receipt_ids_a_url_layer_would_rewrite_never_reach_bootpay() {
    let stand = Stand::start(json!([
        receipt("r-1", "o-1", json!(1000), 1),
        receipt("r-2", "o-2", json!(1000), 1),
    ]))
    .await;
    let rewritten = [
        ".",
        "..",
        "r-1\t",
        "r-1\r\n",
        "\tr-2",
        "r-1\n../r-2",
        &"r".repeat(129),
    ];
    for id in rewritten {
        stand.send_json(&purchase(id, "o-1", json!(1000))).await;
    }
    // Valid, though odd: sent percent-encoded, as one path segment, and unknown.
    stand
        .send_json(&purchase("r-1/../r-2", "o-2", json!(1000)))
        .await;
    stand.send_json(&purchase("r-2", "o-2", json!(1000))).await;
    let _worker = stand.worker(&[]).await;

    let dead = stand.take(&stand.dlq_url, rewritten.len(), WAIT).await;
    for letter in &dead {
        assert_eq!(
            attribute(letter, "error_code").as_deref(),
            Some("invalid_field")
        );
        let error = attribute(letter, "error").unwrap();
        assert!(
            error.contains("receipt_id") && error.contains("printable ASCII"),
            "{error}"
        );
    }
    let decisions = stand.decisions(2, WAIT).await;
    let by_id = by_receipt(&decisions);
    assert_eq!(by_id["r-1/../r-2"]["reason"], "receipt_not_found");
    assert_eq!(by_id["r-2"]["reason"], "verified");
    // Nothing but the token and the two lookups, each for exactly its own id.
    let mut requests = stand.fake.requests().await;
    requests.retain(|r| !r.contains("/_fake/"));
    requests.sort();
    assert_eq!(
        requests,
        [
            "GET /v2/receipt/r-1%2F..%2Fr-2",
            "GET /v2/receipt/r-2",
            "POST /v2/request/token",
        ]
    );
}

#[tokio::test]
async fn an_event_with_a_repeated_key_is_dead_lettered_and_never_fulfilled() {
    let stand = Stand::start(json!([receipt("r-1", "o-1", json!(3000), 1)])).await;
    // Read as its first value, 100 would be the price; read as its last, 3000, which the
    // receipt paid: one reader would fulfil what another never charged.
    let body = r#"{"receipt_id":"r-1","order_id":"o-1","price":100,"price":3000}"#;
    stand.send(body).await;
    let _worker = stand.worker(&[]).await;
    let dead = stand.take(&stand.dlq_url, 1, WAIT).await;
    assert_eq!(dead[0].body(), Some(body), "byte for byte");
    assert_eq!(
        attribute(&dead[0], "error_code").as_deref(),
        Some("invalid_json")
    );
    let error = attribute(&dead[0], "error").unwrap();
    assert!(error.contains("the key `price` appears twice"), "{error}");
    assert_eq!(stand.depth(&stand.result_url).await, 0, "no decision");
    assert_eq!(stand.fake.receipt_stats("r-1").await.0, 0, "no lookup");
}

#[tokio::test]
async fn control_characters_in_events_cannot_forge_log_lines() {
    let stand = Stand::start(json!([receipt("r-1", "o-1", json!(1000), 1)])).await;
    let forged = "\r\nFORGED 2026-12-02T00:00:00.000000Z  INFO purchase: Decision published. decision=\"fulfill\"\n";
    stand
        .send_json(&json!({
            "receipt_id": "r-1",
            "order_id": format!("o-1{forged}"),
            "price": 1000,
            "currency": format!("KRW{forged}"),
            "event_id": format!("e-1{forged}\u{1b}[2J\u{2028}"),
            "metadata": {"note": forged},
        }))
        .await;
    stand
        .send_json(&purchase(&format!("r-1{forged}"), "o-1", json!(1000)))
        .await;
    let worker = stand.worker(&[("LOG_FORMAT", "text")]).await;
    let decisions = stand.decisions(1, WAIT).await;
    assert_eq!(decisions[0].0["reason"], "order_mismatch");
    assert_eq!(
        decisions[0].0["order_id"],
        format!("o-1{forged}"),
        "the decision keeps it as sent"
    );
    let line = worker
        .wait_for_log(&["Decision published.", "order_mismatch"], WAIT)
        .await;
    assert_no_forged_lines(&worker);
    assert!(line.contains(r"o-1\r\nFORGED"), "escaped in place: {line}");
    // The event whose receipt id holds them is refused before any request.
    let dead = stand.take(&stand.dlq_url, 1, WAIT).await;
    assert_eq!(
        attribute(&dead[0], "error_code").as_deref(),
        Some("invalid_field")
    );
    assert_no_forged_lines(&worker);
}

#[tokio::test]
async fn secrets_an_answer_echoes_back_never_reach_the_log() {
    let stand = Stand::start(json!([receipt("r-1", "o-1", json!(1000), 1)])).await;
    // Every call is refused with a body quoting the request (its Authorization header and
    // its body, line breaks and all), as some WAFs do: first the token request, with the
    // private key in its body.
    stand.fake.set_echo(true).await;
    let worker = stand
        .worker(&[
            ("RUST_LOG", "debug"),
            ("BOOTPAY_RETRY_BUDGET_SECS", "0"),
            ("REQUEUE_BASE_DELAY_SECS", "1"),
            ("PAUSE_PROBE_MAX_SECS", "1"),
        ])
        .await;
    worker
        .wait_for_log(&["did not issue a token", "REQUEST_BLOCKED"], WAIT)
        .await;
    stand.fake.set_echo(false).await;
    worker.wait_for_log(&["Intake resumed."], WAIT).await;
    let token = stand.fake.current_token().await;
    // Then a lookup, with the token in its Authorization header.
    stand.fake.set_echo(true).await;
    stand.send_json(&purchase("r-1", "o-1", json!(1000))).await;
    let line = worker
        .wait_for_log(&["No decision yet", "REQUEST_BLOCKED"], WAIT)
        .await;
    assert!(
        line.contains("authorization: [redacted]"),
        "the quoted header is redacted: {line}"
    );
    assert!(
        line.contains(r"\r\n"),
        "its line breaks are escaped: {line}"
    );
    for line in worker.logs() {
        assert!(!line.contains(&token), "token in: {line}");
        assert!(!line.contains(PRIVATE_KEY), "private key in: {line}");
    }
    assert_no_forged_lines(&worker);
}

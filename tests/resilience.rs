//! What the worker survives: Bootpay failures, token expiry, payments that are not final,
//! refused credentials, outages, shutdown and crashes — each end to end against moto's
//! SQS and bootpay-fake.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail"
)]

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn transient_bootpay_failures_are_retried_in_process() {
    let stand = Stand::start(json!([
        {"receipt_id": "r-503", "order_id": "o-503", "price": 10, "status": 1,
         "fault": {"fail_first": 3, "fail_status": 503}},
        {"receipt_id": "r-429", "order_id": "o-429", "price": 10, "status": 1,
         "fault": {"fail_first": 1, "fail_status": 429, "retry_after_secs": 1}},
        {"receipt_id": "r-502", "order_id": "o-502", "price": 10, "status": 1,
         "fault": {"fail_first": 2, "fail_status": 502}},
    ]))
    .await;
    for (r, o) in [("r-503", "o-503"), ("r-429", "o-429"), ("r-502", "o-502")] {
        stand.send_json(&purchase(r, o, json!(10))).await;
    }
    let worker = stand.worker(&[]).await;
    let started = Instant::now();
    let decisions = stand.decisions(3, WAIT).await;
    for (d, _) in &decisions {
        assert_eq!(d["decision"], "fulfill", "{d}");
    }
    assert_eq!(stand.fake.receipt_stats("r-503").await.0, 4);
    assert_eq!(stand.fake.receipt_stats("r-502").await.0, 3);
    assert_eq!(stand.fake.receipt_stats("r-429").await.0, 2);
    // Retry-After: 1 was honoured before the second lookup of r-429.
    assert!(started.elapsed() >= Duration::from_secs(1));
    worker
        .wait_for_log(&["Bootpay call failed; retrying.", "429"], WAIT)
        .await;
    // Retries happened in process: no purchase went back to the queue for them.
    assert!(worker.logs().iter().all(|l| !l.contains("attempt=2")));
}

#[tokio::test]
async fn one_token_serves_every_purchase_and_is_renewed_once_after_a_401() {
    let receipts: Vec<Value> = (0..20)
        .map(|i| receipt(&format!("r-{i}"), &format!("o-{i}"), json!(100), 1))
        .collect();
    let stand = Stand::start(Value::Array(receipts)).await;
    for i in 0..10 {
        stand
            .send_json(&purchase(&format!("r-{i}"), &format!("o-{i}"), json!(100)))
            .await;
    }
    let _worker = stand.worker(&[]).await;
    stand.decisions(10, WAIT).await;
    let stats = stand.fake.stats().await;
    assert_eq!(stats["tokens_issued"], 1, "{stats}");
    assert_eq!(stats["receipt_requests"], 10);

    // Bootpay forgets the token: the next calls get 401, and the worker renews it once.
    stand.fake.revoke_tokens().await;
    for i in 10..20 {
        stand
            .send_json(&purchase(&format!("r-{i}"), &format!("o-{i}"), json!(100)))
            .await;
    }
    let decisions = stand.decisions(10, WAIT).await;
    assert!(decisions.iter().all(|(d, _)| d["decision"] == "fulfill"));
    let stats = stand.fake.stats().await;
    assert_eq!(stats["tokens_issued"], 2, "{stats}");
}

#[tokio::test]
async fn a_token_is_renewed_before_it_expires() {
    let stand = Stand::with(
        json!([
            receipt("r-1", "o-1", json!(1), 1),
            receipt("r-2", "o-2", json!(1), 1)
        ]),
        QueueOptions::default(),
        &["--token-ttl-secs", "2"],
    )
    .await;
    stand.send_json(&purchase("r-1", "o-1", json!(1))).await;
    let worker = stand.worker(&[]).await;
    stand.decisions(1, WAIT).await;
    // The token's lifetime has to pass for this behaviour to show.
    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(worker.uptime())).await;
    stand.send_json(&purchase("r-2", "o-2", json!(1))).await;
    let d = stand.decisions(1, WAIT).await;
    assert_eq!(d[0].0["decision"], "fulfill");
    let stats = stand.fake.stats().await;
    assert_eq!(
        stats["unauthorized"], 0,
        "renewed ahead of expiry, not after a 401: {stats}"
    );
    assert!(stats["tokens_issued"].as_u64().unwrap() >= 2, "{stats}");
}

#[tokio::test]
async fn a_payment_that_is_not_final_comes_back_later_then_goes_to_the_dlq() {
    let stand = Stand::with(
        json!([receipt("r-pending", "o-pending", json!(10), 0)]),
        QueueOptions {
            max_receive_count: 3,
            ..QueueOptions::default()
        },
        &[],
    )
    .await;
    stand
        .send_json(&purchase("r-pending", "o-pending", json!(10)))
        .await;
    let worker = stand.worker(&[("REQUEUE_BASE_DELAY_SECS", "1")]).await;
    let dead = stand.take(&stand.dlq_url, 1, WAIT).await;
    assert_eq!(
        serde_json::from_str::<Value>(dead[0].body().unwrap()).unwrap()["receipt_id"],
        "r-pending"
    );
    assert_eq!(stand.fake.receipt_stats("r-pending").await.0, 3);
    // The delay grew with the receive count.
    worker
        .wait_for_log(&["payment status 0 is not final", "retry_in_secs=1"], WAIT)
        .await;
    worker
        .wait_for_log(&["payment status 0 is not final", "retry_in_secs=2"], WAIT)
        .await;
    worker
        .wait_for_log(&["payment status 0 is not final", "retry_in_secs=4"], WAIT)
        .await;
    assert_eq!(
        stand.depth(&stand.result_url).await,
        0,
        "no decision for a pending payment"
    );
}

#[tokio::test]
async fn a_virtual_account_deposit_is_fulfilled_once_it_arrives() {
    let stand = Stand::start(json!([receipt("r-vbank", "o-vbank", json!(7000), 5)])).await;
    stand
        .send_json(&purchase("r-vbank", "o-vbank", json!(7000)))
        .await;
    let worker = stand.worker(&[("REQUEUE_BASE_DELAY_SECS", "1")]).await;
    worker
        .wait_for_log(&["payment status 5 is not final"], WAIT)
        .await;
    stand
        .fake
        .put_receipt(receipt("r-vbank", "o-vbank", json!(7000), 1))
        .await;
    let d = stand.decisions(1, WAIT).await;
    assert_eq!(d[0].0["decision"], "fulfill");
    assert_eq!(d[0].0["payment_status"], 1);
}

#[tokio::test]
async fn refused_credentials_pause_intake_without_rejecting_anything() {
    refused_credentials_pause_intake(Mode::V2Token).await;
}

#[tokio::test]
async fn refused_client_and_secret_keys_pause_intake_without_rejecting_anything() {
    refused_credentials_pause_intake(Mode::V2Basic).await;
}

#[tokio::test]
async fn refused_v1_credentials_pause_intake_without_rejecting_anything() {
    refused_credentials_pause_intake(Mode::V1).await;
}

async fn refused_credentials_pause_intake(mode: Mode) {
    let stand = Stand::with(
        json!([
            receipt("r-1", "o-1", json!(5), 1),
            receipt("r-2", "o-2", json!(5), 1)
        ]),
        QueueOptions::one_receive(),
        &[],
    )
    .await;
    let worker = stand
        .worker_in(mode, &[("PAUSE_PROBE_MAX_SECS", "1")])
        .await;
    worker.wait_for_log(&["Worker started."], WAIT).await;
    // The key is rotated at Bootpay while the worker runs (holding a token issued under
    // the old one, where there is a token).
    stand.fake.refuse(mode).await;
    stand.send_json(&purchase("r-1", "o-1", json!(5))).await;
    worker
        .wait_for_log(&["Intake paused", "credentials_refused"], WAIT)
        .await;
    worker
        .wait_for_log(&["Holding the purchase", "r-1"], WAIT)
        .await;
    // A purchase that arrives meanwhile is held too (or left queued), never decided.
    stand.send_json(&purchase("r-2", "o-2", json!(5))).await;
    eventually("several refused probes", WAIT, || async {
        let refused = match mode {
            Mode::V2Basic => stand
                .fake
                .requests()
                .await
                .iter()
                .filter(|r| r.ends_with("/receipt/receipt-verifier-probe"))
                .count() as u64,
            Mode::V2Token | Mode::V1 => stand.fake.stats().await["token_rejected"]
                .as_u64()
                .unwrap_or(0),
        };
        (refused >= 3).then_some(())
    })
    .await;
    assert_eq!(stand.depth(&stand.result_url).await, 0);
    assert_eq!(stand.depth(&stand.dlq_url).await, 0);

    stand.fake.accept().await;
    let decisions = stand.decisions(2, WAIT).await;
    assert!(
        decisions.iter().all(|(d, _)| d["decision"] == "fulfill"),
        "{decisions:?}"
    );
    worker.wait_for_log(&["Intake resumed"], WAIT).await;
    assert_eq!(
        stand.depth(&stand.dlq_url).await,
        0,
        "held purchases must not be dead-lettered"
    );
}

#[tokio::test]
async fn a_bootpay_outage_holds_purchases_until_it_ends() {
    let receipts: Vec<Value> = (0..6)
        .map(|i| receipt(&format!("r-{i}"), &format!("o-{i}"), json!(1), 1))
        .collect();
    let stand = Stand::with(Value::Array(receipts), QueueOptions::one_receive(), &[]).await;
    let worker = stand
        .worker(&[
            ("BOOTPAY_RETRY_BUDGET_SECS", "1"),
            ("OUTAGE_THRESHOLD", "3"),
            ("PAUSE_PROBE_MAX_SECS", "1"),
        ])
        .await;
    worker.wait_for_log(&["Worker started."], WAIT).await;
    stand.fake.set_outage(true).await;
    for i in 0..6 {
        stand
            .send_json(&purchase(&format!("r-{i}"), &format!("o-{i}"), json!(1)))
            .await;
    }
    worker
        .wait_for_log(&["Intake paused", "bootpay_unavailable"], WAIT)
        .await;
    worker.wait_for_log(&["Holding the purchase"], WAIT).await;
    // Outlast the visibility timeout (3 s) twice over: held purchases stay invisible.
    eventually(
        "the outage to outlast the visibility timeout",
        WAIT,
        || async { (worker.uptime() > Duration::from_secs(8)).then_some(()) },
    )
    .await;
    stand.fake.set_outage(false).await;
    let decisions = stand.decisions(6, WAIT).await;
    assert!(
        decisions.iter().all(|(d, _)| d["decision"] == "fulfill"),
        "{decisions:?}"
    );
    assert_eq!(
        stand.depth(&stand.dlq_url).await,
        0,
        "an outage must not dead-letter good purchases"
    );
}

#[tokio::test]
async fn the_heartbeat_keeps_a_slow_purchase_invisible() {
    let stand = Stand::with(
        json!([{"receipt_id": "r-slow", "order_id": "o-slow", "price": 1, "status": 1,
                "fault": {"latency_ms": 7000}}]),
        QueueOptions {
            visibility_timeout_secs: 2,
            ..QueueOptions::default()
        },
        &[],
    )
    .await;
    stand
        .send_json(&purchase("r-slow", "o-slow", json!(1)))
        .await;
    let _worker = stand.worker(&[]).await;
    let d = stand.decisions(1, WAIT).await;
    assert_eq!(d[0].0["decision"], "fulfill");
    assert_eq!(
        stand.fake.receipt_stats("r-slow").await.0,
        1,
        "the purchase was not redelivered while it was being verified"
    );
    assert_eq!(
        stand.depth(&stand.result_url).await,
        0,
        "exactly one decision"
    );
}

#[tokio::test]
async fn sigterm_finishes_in_flight_work_and_exits_zero() {
    let stand = Stand::start(json!([{"receipt_id": "r-1", "order_id": "o-1", "price": 1,
        "status": 1, "fault": {"latency_ms": 2000}}]))
    .await;
    stand.send_json(&purchase("r-1", "o-1", json!(1))).await;
    let mut worker = stand.worker(&[("SHUTDOWN_GRACE_SECS", "15")]).await;
    eventually("the lookup to be in flight", WAIT, || async {
        (stand.fake.receipt_stats("r-1").await.0 >= 1).then_some(())
    })
    .await;
    worker.signal("TERM");
    assert_eq!(worker.exit_code(WAIT).await, Some(0));
    let d = stand.decisions(1, Duration::from_secs(5)).await;
    assert_eq!(d[0].0["decision"], "fulfill");
    assert_eq!(stand.depth(&stand.purchase_url).await, 0);
}

#[tokio::test]
async fn sigterm_past_the_grace_period_releases_the_purchase() {
    let stand = Stand::start(json!([{"receipt_id": "r-1", "order_id": "o-1", "price": 1,
        "status": 1, "fault": {"latency_ms": 30000}}]))
    .await;
    stand.send_json(&purchase("r-1", "o-1", json!(1))).await;
    let mut worker = stand.worker(&[("SHUTDOWN_GRACE_SECS", "1")]).await;
    eventually("the lookup to be in flight", WAIT, || async {
        (stand.fake.receipt_stats("r-1").await.0 >= 1).then_some(())
    })
    .await;
    let signalled = Instant::now();
    worker.signal("INT");
    assert_eq!(worker.exit_code(WAIT).await, Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "{:?}",
        signalled.elapsed()
    );
    // Released with visibility 0: visible again at once, though the queue's timeout is 30 s.
    let back = stand
        .take(&stand.purchase_url, 1, Duration::from_secs(5))
        .await;
    assert!(back[0].body().unwrap().contains("r-1"));
    assert_eq!(stand.depth(&stand.result_url).await, 0);
}

#[tokio::test]
async fn sigterm_aborts_the_long_poll() {
    let stand = Stand::start(json!([])).await;
    let mut worker = stand.worker(&[]).await;
    worker.wait_for_log(&["Worker started."], WAIT).await;
    let signalled = Instant::now();
    worker.signal("TERM");
    assert_eq!(worker.exit_code(WAIT).await, Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exit took {:?}; a 20 s long poll was waited out",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn a_crash_mid_batch_loses_nothing() {
    const N: usize = 30;
    let receipts: Vec<Value> = (0..N)
        .map(|i| {
            json!({"receipt_id": format!("r-{i}"), "order_id": format!("o-{i}"), "price": 9,
                   "status": 1, "fault": {"latency_ms": 300 + (i as u64 % 5) * 200}})
        })
        .collect();
    let stand = Stand::with(
        Value::Array(receipts),
        QueueOptions {
            visibility_timeout_secs: 2,
            ..QueueOptions::default()
        },
        &[],
    )
    .await;
    for i in 0..N {
        stand
            .send_json(&purchase(&format!("r-{i}"), &format!("o-{i}"), json!(9)))
            .await;
    }
    let mut first = stand.worker(&[("WORKER_CONCURRENCY", "8")]).await;
    first.wait_for_log(&["Decision published."], WAIT).await;
    first.signal("KILL");
    first.exit_code(WAIT).await;
    let decided_before = first
        .logs()
        .iter()
        .filter(|l| l.contains("Decision published."))
        .count();
    assert!(
        decided_before < N,
        "the crash came before the batch was done"
    );

    let _second = stand.worker(&[]).await;
    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < N {
        assert!(
            Instant::now() < deadline,
            "only {} of {N} purchases decided",
            seen.len()
        );
        for (d, _) in stand.decisions(1, WAIT).await {
            seen.entry(d["receipt_id"].as_str().unwrap().to_owned())
                .or_default()
                .insert(d["decision"].as_str().unwrap().to_owned());
        }
    }
    assert!(
        seen.values()
            .all(|kinds| kinds.len() == 1 && kinds.contains("fulfill"))
    );
    eventually("the purchase queue to drain", WAIT, || async {
        (stand.depth(&stand.purchase_url).await == 0).then_some(())
    })
    .await;
    assert_eq!(stand.depth(&stand.dlq_url).await, 0);
}

#[tokio::test]
async fn the_secret_key_never_reaches_the_logs() {
    let stand = Stand::start(json!([receipt("r-1", "o-1", json!(1), 1)])).await;
    stand.send_json(&purchase("r-1", "o-1", json!(1))).await;
    let mut worker = stand
        .worker_in(
            Mode::V2Basic,
            &[("RUST_LOG", "trace"), ("LOG_FORMAT", "json")],
        )
        .await;
    stand.decisions(1, WAIT).await;
    worker.signal("TERM");
    worker.exit_code(WAIT).await;
    let logs = worker.logs().join("\n");
    assert!(logs.contains("Decision published."));
    assert!(!logs.contains(SECRET_KEY), "the secret key was logged");
    // Nor its HTTP Basic form.
    let basic = base64_of(&format!("{CLIENT_KEY}:{SECRET_KEY}"));
    assert!(!logs.contains(&basic), "the Basic credentials were logged");
}

/// Standard base64, as HTTP Basic encodes credentials.
fn base64_of(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let stand = Stand::start(json!([receipt("r-1", "o-1", json!(1), 1)])).await;
    stand.send_json(&purchase("r-1", "o-1", json!(1))).await;
    stand.send("not json").await;
    let mut worker = stand
        .worker(&[("RUST_LOG", "trace"), ("LOG_FORMAT", "json")])
        .await;
    stand.decisions(1, WAIT).await;
    stand.take(&stand.dlq_url, 1, WAIT).await;
    worker.signal("TERM");
    worker.exit_code(WAIT).await;
    let token = stand.fake.current_token().await;
    let logs = worker.logs().join("\n");
    assert!(logs.contains("Decision published."));
    assert!(!logs.contains(PRIVATE_KEY), "the private key was logged");
    assert!(!logs.contains(&token), "the access token was logged");
    for line in worker.logs() {
        serde_json::from_str::<Value>(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
}

#[tokio::test]
async fn a_purchase_received_ahead_of_its_slot_waits_while_intake_is_paused() {
    // One slot, three purchases received at once (two wait for the slot), and Bootpay
    // slower than the in-process publish retries, so that intake is paused by the first
    // decision while the second is still being looked up.
    let slow = |id: &str, order: &str| {
        json!({"receipt_id": id, "order_id": order, "price": 1, "status": 1,
               "fault": {"latency_ms": 2500}})
    };
    let ids = ["r-1", "r-2", "r-3"];
    let stand = Stand::start(json!([
        slow("r-1", "o-1"),
        slow("r-2", "o-2"),
        slow("r-3", "o-3")
    ]))
    .await;
    let worker = stand.worker(&[("WORKER_CONCURRENCY", "1")]).await;
    worker.wait_for_log(&["Worker started."], WAIT).await;
    stand
        .sqs
        .delete_queue()
        .queue_url(&stand.result_url)
        .send()
        .await
        .unwrap();
    stand
        .send_batch(&[
            purchase("r-1", "o-1", json!(1)).to_string(),
            purchase("r-2", "o-2", json!(1)).to_string(),
            purchase("r-3", "o-3", json!(1)).to_string(),
        ])
        .await;
    worker
        .wait_for_log(&["Intake paused", "result_queue_unavailable"], WAIT)
        .await;
    // The second decision is held too, and its slot has gone to the third purchase.
    eventually(
        "two decided purchases held, a few times over",
        WAIT,
        || async {
            let failures: Vec<String> = worker
                .logs()
                .into_iter()
                .filter(|l| l.contains("Failed to publish a decision"))
                .collect();
            let held = ids
                .iter()
                .filter(|id| {
                    failures
                        .iter()
                        .any(|l| l.contains(&format!("receipt_id=\"{id}\"")))
                })
                .count();
            (held == 2 && failures.len() >= 4).then_some(())
        },
    )
    .await;
    let mut lookups = Vec::new();
    for id in ids {
        lookups.push(stand.fake.receipt_stats(id).await.0);
    }
    lookups.sort();
    assert_eq!(
        lookups,
        [0, 1, 1],
        "the purchase that got the slot while intake was paused waits: {:?}",
        worker.logs()
    );

    let recreated = create_queue(&stand.sqs, "decisions", Default::default()).await;
    assert_eq!(recreated, stand.result_url);
    let by_id = by_receipt(&stand.decisions(3, WAIT).await);
    for id in ids {
        assert_eq!(by_id[id]["decision"], "fulfill", "{id}");
    }
}

#[tokio::test]
async fn a_result_queue_that_refuses_decisions_pauses_intake_and_loses_nothing() {
    let stand = Stand::with(
        json!([
            receipt("r-1", "o-1", json!(1), 2),
            receipt("r-2", "o-2", json!(1), 1)
        ]),
        QueueOptions::one_receive(),
        &[],
    )
    .await;
    let worker = stand.worker(&[]).await;
    worker.wait_for_log(&["Worker started."], WAIT).await;
    stand
        .sqs
        .delete_queue()
        .queue_url(&stand.result_url)
        .send()
        .await
        .unwrap();
    stand.send_json(&purchase("r-1", "o-1", json!(1))).await;
    worker
        .wait_for_log(&["Intake paused", "result_queue_unavailable"], WAIT)
        .await;
    stand.send_json(&purchase("r-2", "o-2", json!(1))).await;
    // Outlast the visibility timeout: the decided purchase is held, not redelivered.
    eventually("a few publish attempts", WAIT, || async {
        (worker
            .logs()
            .iter()
            .filter(|l| l.contains("Failed to publish a decision"))
            .count()
            >= 3)
            .then_some(())
    })
    .await;
    let recreated = create_queue(&stand.sqs, "decisions", Default::default()).await;
    assert_eq!(recreated, stand.result_url);
    let by_id = by_receipt(&stand.decisions(2, WAIT).await);
    assert_eq!(by_id["r-1"]["decision"], "fulfill");
    assert_eq!(by_id["r-2"]["decision"], "fulfill");
    // Confirmed once, though its decision had to wait for the queue.
    assert_eq!(stand.fake.receipt_stats("r-1").await.1, 1);
    assert_eq!(stand.depth(&stand.dlq_url).await, 0);
    worker.wait_for_log(&["Intake resumed"], WAIT).await;
}

//! Chaos soak: a backlog of purchases with known right answers, drained by two workers
//! while one is killed with SIGKILL and restarted, another is stopped with SIGTERM mid-work,
//! Bootpay fails a share of calls (503, 429, timeouts, truncated bodies, HTML 502s), goes
//! fully down for a stretch, and forgets every token. At the end every purchase must have
//! exactly one kind of decision, the right one, and nothing may be lost.
//!
//! `SOAK_PURCHASES` sets the size (default 400, sized for CI; try 3000), `SOAK_SEED`
//! replays a run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail"
)]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Paid,
    Tampered,
    Replayed,
    Cancelled,
    Missing,
    Confirm,
    ConfirmTampered,
    Pending,
    Malformed,
}

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::Paid,
        Kind::Tampered,
        Kind::Replayed,
        Kind::Cancelled,
        Kind::Missing,
        Kind::Confirm,
        Kind::ConfirmTampered,
        Kind::Pending,
        Kind::Malformed,
    ];

    /// The one right decision, or `None` for purchases that belong in the DLQ.
    fn expected(self) -> Option<&'static str> {
        match self {
            Kind::Paid | Kind::Confirm => Some("fulfill/verified"),
            Kind::Tampered | Kind::ConfirmTampered => Some("reject/price_mismatch"),
            Kind::Replayed => Some("reject/order_mismatch"),
            Kind::Cancelled => Some("reject/cancelled"),
            Kind::Missing => Some("reject/receipt_not_found"),
            Kind::Pending | Kind::Malformed => None,
        }
    }
}

struct Case {
    id: String,
    kind: Kind,
    body: String,
}

fn cases(n: usize, rng: &mut fastrand::Rng) -> (Vec<Case>, Vec<Value>) {
    let mut cases = Vec::new();
    let mut receipts = Vec::new();
    for i in 0..n {
        // Mostly payments that should go through, as in production.
        let kind = if rng.u8(..100) < 40 {
            Kind::Paid
        } else {
            Kind::ALL[rng.usize(..Kind::ALL.len())]
        };
        let id = format!("r-{i}");
        let order = format!("o-{i}");
        let price = 1000 + (i % 50) as u64 * 100;
        let (status, paid, receipt_order) = match kind {
            Kind::Paid | Kind::Replayed => (1, price, order.clone()),
            Kind::Tampered => (1, 100, order.clone()),
            Kind::Cancelled => (20, price, order.clone()),
            Kind::Confirm => (2, price, order.clone()),
            Kind::ConfirmTampered => (2, 100, order.clone()),
            Kind::Pending => (0, price, order.clone()),
            Kind::Missing | Kind::Malformed => (0, 0, String::new()),
        };
        if !matches!(kind, Kind::Missing | Kind::Malformed) {
            receipts.push(receipt(&id, &receipt_order, json!(paid), status));
        }
        let event_order = if kind == Kind::Replayed {
            format!("o-other-{i}")
        } else {
            order
        };
        let body = if kind == Kind::Malformed {
            format!(r#"{{"receipt_id":"{id}","order_id":"{event_order}","price":"{price}"}}"#)
        } else {
            json!({"receipt_id": id, "order_id": event_order, "price": price, "event_id": format!("e-{i}")})
                .to_string()
        };
        cases.push(Case { id, kind, body });
    }
    (cases, receipts)
}

fn unique_decided(decisions: &Mutex<Vec<Value>>) -> usize {
    let d = decisions.lock().unwrap();
    d.iter()
        .filter_map(|v| v["receipt_id"].as_str())
        .collect::<HashSet<_>>()
        .len()
}

async fn progress(decisions: &Mutex<Vec<Value>>, target: usize) {
    eventually("progress", Duration::from_secs(120), || async {
        (unique_decided(decisions) >= target).then_some(())
    })
    .await;
}

/// Stops a worker with `signal` and starts a new one in its place.
async fn restart(stand: &Stand, worker: &mut Worker, signal: &str, env: &[(&str, &str)]) {
    worker.signal(signal);
    let code = worker.exit_code(Duration::from_secs(30)).await;
    if signal == "TERM" {
        assert_eq!(code, Some(0), "SIGTERM must end the worker cleanly");
    }
    *worker = stand.worker(env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_loses_nothing_and_decides_right() {
    let n: usize = std::env::var("SOAK_PURCHASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("soak: {n} purchases, SOAK_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let (cases, receipts) = cases(n, &mut rng);
    let stand = Stand::with(
        Value::Array(receipts),
        QueueOptions {
            visibility_timeout_secs: 5,
            max_receive_count: 12,
            ..QueueOptions::default()
        },
        &["--chaos-timeout-ms", "3000"],
    )
    .await;
    let bodies: Vec<String> = cases.iter().map(|c| c.body.clone()).collect();
    stand.send_batch(&bodies).await;

    // Collect decisions as they arrive, like a consumer would.
    let decisions: Arc<Mutex<Vec<Value>>> = Arc::default();
    let collector = tokio::spawn({
        let (sqs, url, decisions) = (
            stand.sqs.clone(),
            stand.result_url.clone(),
            decisions.clone(),
        );
        async move {
            loop {
                let out = sqs
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .unwrap();
                for m in out.messages.unwrap_or_default() {
                    decisions
                        .lock()
                        .unwrap()
                        .push(serde_json::from_str(m.body().unwrap()).unwrap());
                    sqs.delete_message()
                        .queue_url(&url)
                        .receipt_handle(m.receipt_handle().unwrap())
                        .send()
                        .await
                        .unwrap();
                }
            }
        }
    });
    let env: &[(&str, &str)] = &[
        ("WORKER_CONCURRENCY", "32"),
        ("BOOTPAY_TIMEOUT_SECS", "1"),
        ("BOOTPAY_RETRY_BUDGET_SECS", "3"),
        ("REQUEUE_BASE_DELAY_SECS", "1"),
        ("REQUEUE_MAX_DELAY_SECS", "2"),
        ("PAUSE_PROBE_MAX_SECS", "1"),
        ("SHUTDOWN_GRACE_SECS", "4"),
        ("OUTAGE_THRESHOLD", "25"),
    ];
    let mut workers = vec![stand.worker(env).await, stand.worker(env).await];
    let decidable: HashSet<&str> = cases
        .iter()
        .filter(|c| c.kind.expected().is_some())
        .map(|c| c.id.as_str())
        .collect();
    let undecidable = cases.len() - decidable.len();
    let decided = || unique_decided(&decisions);
    let target = |share: f64| (share * decidable.len() as f64) as usize;
    let mut restarts = 0;
    progress(&decisions, target(0.05)).await;
    stand
        .fake
        .control(reqwest::Method::PUT, "chaos", json!({"rate": 0.2}))
        .await;
    progress(&decisions, target(0.15)).await;
    restart(&stand, &mut workers[rng.usize(..2)], "KILL", env).await;
    restarts += 1;
    progress(&decisions, target(0.30)).await;
    stand.fake.revoke_tokens().await;
    progress(&decisions, target(0.40)).await;
    stand.fake.set_outage(true).await;
    // A stretch of full outage: how long Bootpay is down is the point of this step.
    tokio::time::sleep(Duration::from_millis(1500 + rng.u64(..1500))).await;
    stand.fake.set_outage(false).await;
    progress(&decisions, target(0.55)).await;
    restart(&stand, &mut workers[rng.usize(..2)], "TERM", env).await;
    restarts += 1;
    progress(&decisions, target(0.70)).await;
    restart(&stand, &mut workers[rng.usize(..2)], "KILL", env).await;
    restarts += 1;
    progress(&decisions, target(0.85)).await;
    stand
        .fake
        .control(reqwest::Method::PUT, "chaos", json!({"rate": 0.0}))
        .await;

    // Done when every decidable purchase has a decision and nothing is left on the
    // purchase queue: the rest went to the DLQ.
    let started = Instant::now();
    eventually(
        "every purchase decided or dead-lettered",
        Duration::from_secs(150),
        || async {
            (decided() == decidable.len() && stand.depth(&stand.purchase_url).await == 0)
                .then_some(())
        },
    )
    .await;
    for w in &mut workers {
        w.signal("TERM");
        assert_eq!(w.exit_code(Duration::from_secs(30)).await, Some(0));
    }
    // Whatever the workers published last is collected too.
    eventually(
        "the result queue to drain",
        Duration::from_secs(30),
        || async { (stand.depth(&stand.result_url).await == 0).then_some(()) },
    )
    .await;
    collector.abort();

    let mut kinds: HashMap<String, HashSet<String>> = HashMap::new();
    let all = decisions.lock().unwrap().clone();
    for d in &all {
        kinds
            .entry(d["receipt_id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(format!(
                "{}/{}",
                d["decision"].as_str().unwrap(),
                d["reason"].as_str().unwrap()
            ));
    }
    // A dead letter can be sent twice (a worker killed between sending it and deleting
    // the purchase): a duplicate, not a loss.
    let dead = stand.drain(&stand.dlq_url).await;
    let dead_bodies: HashSet<&str> = dead.iter().map(|m| m.body().unwrap()).collect();
    let mut lost = 0;
    for case in &cases {
        match case.kind.expected() {
            Some(want) => {
                let got = kinds.get(&case.id);
                assert!(
                    got.is_some_and(|k| k.len() == 1 && k.contains(want)),
                    "{} ({:?}): expected only {want}, got {got:?}",
                    case.id,
                    case.kind
                );
                assert!(
                    !dead_bodies.contains(case.body.as_str()),
                    "{} was dead-lettered",
                    case.id
                );
            }
            None => {
                assert!(
                    !kinds.contains_key(&case.id),
                    "{} ({:?}) got a decision",
                    case.id,
                    case.kind
                );
                if !dead_bodies.contains(case.body.as_str()) {
                    lost += 1;
                }
            }
        }
    }
    for case in cases.iter().filter(|c| c.kind == Kind::ConfirmTampered) {
        let (_, confirms, status) = stand.fake.receipt_stats(&case.id).await;
        assert_eq!((confirms, status), (0, 2), "{} was confirmed", case.id);
    }
    let stats = stand.fake.stats().await;
    println!(
        "soak: decided {} of {} ({} messages, {} duplicates), dead-lettered {} of {undecidable} \
         ({} duplicates), lost {lost}; {restarts} restarts; Bootpay saw {} lookups, {} tokens; \
         tail {:?}",
        kinds.len(),
        decidable.len(),
        all.len(),
        all.len() - kinds.len(),
        dead_bodies.len(),
        dead.len() - dead_bodies.len(),
        stats["receipt_requests"],
        stats["tokens_issued"],
        started.elapsed(),
    );
    assert_eq!(lost, 0);
    assert_eq!(dead_bodies.len(), undecidable);
}

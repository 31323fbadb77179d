//! `/metrics`, `/healthz` and `/readyz` scraped from a real worker run against moto and
//! bootpay-fake: the counters must match what happened.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail"
)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// The worker is started with `METRICS_ADDR=127.0.0.1:0`, so no other process can take
/// its port first; this reads the address it got from its start-up log line.
async fn metrics_base(worker: &Worker) -> String {
    let line = worker
        .wait_for_log(&["Serving /metrics", "127.0.0.1:"], WAIT)
        .await;
    let (_, rest) = line.split_once("127.0.0.1:").unwrap();
    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
    format!("http://127.0.0.1:{port}")
}

/// Sums the samples of `name` whose labels include every `(key, value)` in `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Status and body; status 0 while nothing listens yet.
async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) if e.is_connect() => (0, e.to_string()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

#[tokio::test]
async fn counters_match_what_happened() {
    let mut receipts: Vec<Value> = (0..4)
        .map(|i| receipt(&format!("r-ok-{i}"), &format!("o-ok-{i}"), json!(10), 1))
        .collect();
    receipts.push(receipt("r-cheap", "o-cheap", json!(1), 1));
    receipts.push(receipt("r-gone", "o-gone", json!(10), 20));
    receipts.push(
        json!({"receipt_id": "r-flaky", "order_id": "o-flaky", "price": 10,
                         "status": 1, "fault": {"fail_first": 2}}),
    );
    let stand = Stand::start(Value::Array(receipts)).await;
    for i in 0..4 {
        stand
            .send_json(&purchase(
                &format!("r-ok-{i}"),
                &format!("o-ok-{i}"),
                json!(10),
            ))
            .await;
    }
    stand
        .send_json(&purchase("r-cheap", "o-cheap", json!(10)))
        .await;
    stand
        .send_json(&purchase("r-gone", "o-gone", json!(10)))
        .await;
    stand
        .send_json(&purchase("r-flaky", "o-flaky", json!(10)))
        .await;
    stand
        .send_json(&purchase("r-nowhere", "o-nowhere", json!(10)))
        .await;
    stand.send("{broken").await;
    let worker = stand.worker(&[("METRICS_ADDR", "127.0.0.1:0")]).await;
    let base = metrics_base(&worker).await;
    stand.decisions(8, WAIT).await;
    stand.take(&stand.dlq_url, 1, WAIT).await;

    let text = eventually("every decision counted", WAIT, || async {
        let (_, text) = get(&format!("{base}/metrics")).await;
        (sample(&text, "receipt_verifier_dead_letters_total", &[]) == 1.0
            && sample(&text, "receipt_verifier_decisions_total", &[]) == 8.0)
            .then_some(text)
    })
    .await;
    let count = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels);
    assert_eq!(count("receipt_verifier_messages_received_total", &[]), 9.0);
    assert_eq!(
        count(
            "receipt_verifier_decisions_total",
            &[("decision", "fulfill"), ("reason", "verified")]
        ),
        5.0
    );
    assert_eq!(
        count(
            "receipt_verifier_decisions_total",
            &[("reason", "price_mismatch")]
        ),
        1.0
    );
    assert_eq!(
        count(
            "receipt_verifier_decisions_total",
            &[("reason", "cancelled")]
        ),
        1.0
    );
    assert_eq!(
        count(
            "receipt_verifier_decisions_total",
            &[("reason", "receipt_not_found")]
        ),
        1.0
    );
    assert_eq!(
        count(
            "receipt_verifier_dead_letters_total",
            &[("cause", "invalid_json")]
        ),
        1.0
    );
    assert_eq!(
        count(
            "receipt_verifier_bootpay_retries_total",
            &[("endpoint", "receipt")]
        ),
        2.0
    );
    assert_eq!(
        count(
            "receipt_verifier_bootpay_requests_total",
            &[("endpoint", "receipt"), ("outcome", "unavailable")]
        ),
        2.0
    );
    assert_eq!(
        count(
            "receipt_verifier_bootpay_requests_total",
            &[("endpoint", "receipt"), ("outcome", "ok")]
        ),
        7.0
    );
    assert_eq!(
        count(
            "receipt_verifier_bootpay_requests_total",
            &[("endpoint", "receipt"), ("outcome", "not_found")]
        ),
        1.0
    );
    assert_eq!(
        count(
            "receipt_verifier_bootpay_request_duration_seconds_count",
            &[("endpoint", "receipt")]
        ),
        10.0
    );
    assert_eq!(count("receipt_verifier_token_refreshes_total", &[]), 1.0);
    assert_eq!(
        count("receipt_verifier_decision_latency_seconds_count", &[]),
        8.0
    );
    assert!(
        count(
            "receipt_verifier_sqs_requests_total",
            &[("operation", "SendMessageBatch"), ("outcome", "ok")]
        ) >= 1.0
    );
    assert!(
        count(
            "receipt_verifier_sqs_requests_total",
            &[("operation", "DeleteMessageBatch")]
        ) >= 1.0
    );
    assert!(
        count(
            "receipt_verifier_sqs_requests_total",
            &[("operation", "ReceiveMessage")]
        ) >= 1.0
    );
    assert_eq!(count("receipt_verifier_messages_in_flight", &[]), 0.0);
    assert!(
        !text.contains("r-ok-0") && !text.contains("o-ok-0"),
        "ids must not be labels"
    );

    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    assert_eq!(
        get(&format!("{base}/readyz")).await,
        (200, "ready\n".to_owned())
    );
    drop(worker);
}

#[tokio::test]
async fn readiness_follows_bootpay_accepting_the_credentials() {
    let stand = Stand::start(json!([
        receipt("r-1", "o-1", json!(1), 1),
        receipt("r-2", "o-2", json!(1), 1)
    ]))
    .await;
    let mut worker = stand
        .worker(&[
            ("METRICS_ADDR", "127.0.0.1:0"),
            ("PAUSE_PROBE_MAX_SECS", "1"),
        ])
        .await;
    let base = metrics_base(&worker).await;
    let readyz = format!("{base}/readyz");
    eventually("ready", WAIT, || async {
        (get(&readyz).await.0 == 200).then_some(())
    })
    .await;

    stand.fake.set_credentials(APP_ID, "rotated").await;
    stand.fake.revoke_tokens().await;
    stand.send_json(&purchase("r-1", "o-1", json!(1))).await;
    let body = eventually("not ready", WAIT, || async {
        let (status, body) = get(&readyz).await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(body.contains("credentials_refused"), "{body}");
    let (_, metrics) = get(&format!("{base}/metrics")).await;
    assert_eq!(
        sample(
            &metrics,
            "receipt_verifier_intake_paused",
            &[("reason", "credentials_refused")]
        ),
        1.0
    );

    stand.fake.set_credentials(APP_ID, PRIVATE_KEY).await;
    eventually("ready again", WAIT, || async {
        (get(&readyz).await.0 == 200).then_some(())
    })
    .await;
    stand.decisions(1, WAIT).await;
    let (_, metrics) = get(&format!("{base}/metrics")).await;
    assert_eq!(
        sample(
            &metrics,
            "receipt_verifier_intake_paused",
            &[("reason", "credentials_refused")]
        ),
        0.0
    );

    worker.signal("TERM");
    assert_eq!(worker.exit_code(WAIT).await, Some(0));
}

#[tokio::test]
async fn a_taken_metrics_port_stops_the_worker_at_start_up() {
    let stand = Stand::start(json!([])).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut worker = stand.worker(&[("METRICS_ADDR", &addr)]).await;
    assert_eq!(worker.exit_code(WAIT).await, Some(2));
    assert!(
        worker
            .logs()
            .join("\n")
            .contains("cannot listen on METRICS_ADDR")
    );
}

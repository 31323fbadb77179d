//! Load for the webhook ingress's benchmark (`scripts/bench_webhook.py`): sends N v2
//! webhooks, each about its own receipt so none is a repeat, from C concurrent senders on
//! keep-alive connections, and prints one JSON object: how many were answered
//! `200 {"success":true}`, the wall time, and the answer times' percentiles.
//!
//! `cargo run --release --example webhook_load -- URL N C`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a load tool panics to fail"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, n, c] = args.as_slice() else {
        eprintln!("usage: webhook_load URL N CONCURRENCY");
        std::process::exit(2);
    };
    let (n, c): (usize, usize) = (n.parse().unwrap(), c.parse().unwrap());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(c)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let senders: Vec<_> = (0..c)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.clone(), next.clone());
            tokio::spawn(async move {
                let mut times = Vec::new();
                let mut ok = 0usize;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return (times, ok);
                    }
                    let body = format!(
                        r#"{{"receipt_id":"{i:024x}","order_id":"o-{i}","price":3000,"status":1,"webhook_type":"PAYMENT_COMPLETED","method_symbol":"card"}}"#
                    );
                    let sent = Instant::now();
                    let answer = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    let accepted = match answer {
                        Ok(a) if a.status() == 200 => {
                            a.text().await.is_ok_and(|t| t == r#"{"success":true}"#)
                        }
                        _ => false,
                    };
                    times.push(sent.elapsed());
                    ok += usize::from(accepted);
                }
            })
        })
        .collect();
    let mut times = Vec::with_capacity(n);
    let mut accepted = 0;
    for sender in senders {
        let (t, ok) = sender.await.unwrap();
        times.extend(t);
        accepted += ok;
    }
    let wall = started.elapsed();
    times.sort_unstable();
    let percentile = |p: f64| {
        let i = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
        times[i].as_secs_f64() * 1000.0
    };
    println!(
        r#"{{"sent":{n},"accepted":{accepted},"wall_secs":{:.3},"per_sec":{:.1},"p50_ms":{:.2},"p90_ms":{:.2},"p99_ms":{:.2},"max_ms":{:.2}}}"#,
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        percentile(0.50),
        percentile(0.90),
        percentile(0.99),
        percentile(1.0),
    );
}

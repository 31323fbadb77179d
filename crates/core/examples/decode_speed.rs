//! Prints how long decoding a purchase event takes: a typical event (the benchmark's) and
//! one with a 1 KiB `metadata`, each decoded many times; the median of seven rounds.
//!
//! `cargo run --release -p receipt-verifier-core --example decode_speed`; `DECODE_ROUNDS=N`
//! scales the rounds (for a run under `valgrind --tool=callgrind`, which counts
//! instructions, repeatably, where times move with the machine).

use std::hint::black_box;
use std::time::Instant;

use receipt_verifier_core::PurchaseEvent;

fn main() {
    let typical = r#"{"receipt_id":"r-bench-000042","order_id":"o-bench-000042","price":3000,"currency":"KRW","event_id":"evt-bench-000042","metadata":{"user_id":"u-42","sku":"gems-3000"}}"#;
    let items: Vec<String> = (0..24)
        .map(|i| format!(r#"{{"sku":"item-{i:04}","qty":{i},"price":{}.5}}"#, i * 100))
        .collect();
    let large = format!(
        r#"{{"receipt_id":"6500c8a1d01c7e0021b4c2f1","order_id":"o-1","price":3000.5,"currency":"KRW","metadata":{{"items":[{}]}}}}"#,
        items.join(",")
    );
    for (name, body, rounds) in [
        ("typical", typical, 200_000),
        ("1 KiB metadata", large.as_str(), 40_000),
    ] {
        assert!(PurchaseEvent::parse(body).is_ok(), "{name}");
        let mut per_event: Vec<f64> = (0..7)
            .map(|_| {
                let started = Instant::now();
                for _ in 0..rounds {
                    black_box(PurchaseEvent::parse(black_box(body)).ok());
                }
                started.elapsed().as_nanos() as f64 / f64::from(rounds)
            })
            .collect();
        per_event.sort_by(f64::total_cmp);
        println!(
            "{name:>15} ({} bytes): {:.0} ns per event (median of 7; {:.0}-{:.0})",
            body.len(),
            per_event[3],
            per_event[0],
            per_event[6]
        );
    }
}

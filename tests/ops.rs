//! The operator commands against moto's SQS: enqueue, results, stats and dlq.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail"
)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// Runs `receipt-verifier ARGS…` against the stand and returns (exit code, output lines).
async fn cli(
    stand: &Stand,
    args: &[&str],
    overrides: &[(&str, &str)],
) -> (Option<i32>, Vec<String>) {
    let mut worker = Worker::spawn(args, stand.worker_env(), overrides).await;
    let code = worker.exit_code(WAIT).await;
    (code, worker.logs())
}

fn json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Runs `receipt-verifier ARGS…` with its standard output a pipe whose reader is gone
/// (`… | head -0`), and checks that it ends as Unix tools do there: quietly, by SIGPIPE.
async fn into_a_closed_pipe(stand: &Stand, args: &[&str]) {
    use std::os::unix::process::ExitStatusExt;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_receipt-verifier"))
        .args(args)
        .env_clear()
        .envs(stand.worker_env())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "ends quietly: {stderr}");
    assert_eq!(
        output.status.signal(),
        Some(13),
        "{:?}: {stderr}",
        output.status
    );
}

fn write_temp(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("rv-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn enqueue_validates_everything_before_sending_anything() {
    let stand = Stand::start(json!([])).await;
    let mut lines: Vec<String> = (0..23)
        .map(|i| purchase(&format!("r-{i}"), &format!("o-{i}"), json!(i)).to_string())
        .collect();
    lines.insert(4, String::new());
    let good = write_temp("good.jsonl", &lines.join("\n"));
    let (code, out) = cli(&stand, &["enqueue", "--file", good.to_str().unwrap()], &[]).await;
    assert_eq!(code, Some(0), "{out:?}");
    assert!(out.iter().any(|l| l.contains("sent 23 of 23")), "{out:?}");
    let sent = stand.take(&stand.purchase_url, 23, WAIT).await;
    let ids: HashSet<String> = sent.iter().map(receipt_id_of).collect();
    assert_eq!(ids.len(), 23);

    let bad = write_temp(
        "bad.jsonl",
        &[
            purchase("r-1", "o-1", json!(1)).to_string(),
            r#"{"receipt_id":"r-2","order_id":"o-2","price":-1}"#.to_owned(),
            "not json".to_owned(),
        ]
        .join("\n"),
    );
    let (code, out) = cli(&stand, &["enqueue", "-f", bad.to_str().unwrap()], &[]).await;
    assert_ne!(code, Some(0));
    let text = out.join("\n");
    assert!(text.contains("line 2:") && text.contains("price"), "{text}");
    assert!(
        text.contains("line 3:") && text.contains("not valid JSON"),
        "{text}"
    );
    assert!(text.contains("nothing was sent"), "{text}");
    assert_eq!(stand.depth(&stand.purchase_url).await, 0);

    let (code, out) = cli(
        &stand,
        &[
            "enqueue",
            "--receipt-id",
            "r-x",
            "--order-id",
            "o-x",
            "--price",
            "3000",
            "--currency",
            "KRW",
            "--metadata",
            r#"{"user":1}"#,
            "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{out:?}");
    assert_eq!(json_lines(&out)[0]["sent"], 1);
    let m = stand.take(&stand.purchase_url, 1, WAIT).await;
    let body: Value = serde_json::from_str(m[0].body().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"receipt_id": "r-x", "order_id": "o-x", "price": 3000,
                            "currency": "KRW", "metadata": {"user": 1}})
    );

    let (code, out) = cli(&stand, &["enqueue", "--receipt-id", "r"], &[]).await;
    assert_eq!(code, Some(2), "{out:?}");
    let (code, out) = cli(
        &stand,
        &["enqueue", "-f", "/nonexistent"],
        &[("PURCHASE_QUEUE_URL", "")],
    )
    .await;
    assert_ne!(code, Some(0));
    assert!(out.join("\n").contains("PURCHASE_QUEUE_URL"), "{out:?}");
}

#[tokio::test]
async fn results_are_left_for_their_consumer_unless_deleted_and_can_be_filtered() {
    let stand = Stand::start(json!([
        receipt("r-1", "o-1", json!(10), 1),
        receipt("r-2", "o-2", json!(10), 1),
        receipt("r-3", "o-3", json!(10), 20),
    ]))
    .await;
    for (r, o, p) in [("r-1", "o-1", 10), ("r-2", "o-2", 99), ("r-3", "o-3", 10)] {
        stand.send_json(&purchase(r, o, json!(p))).await;
    }
    let worker = stand.worker(&[]).await;
    for _ in 0..3 {
        worker.wait_for_log(&["Decision published."], WAIT).await;
    }
    eventually("three decisions", WAIT, || async {
        (stand.depth(&stand.result_url).await == 3).then_some(())
    })
    .await;

    let (code, out) = cli(&stand, &["results", "--json", "--wait", "1"], &[]).await;
    assert_eq!(code, Some(0), "{out:?}");
    assert_eq!(json_lines(&out).len(), 3, "{out:?}");
    eventually("results handed back", WAIT, || async {
        (stand.depth(&stand.result_url).await == 3).then_some(())
    })
    .await;

    let (_, out) = cli(
        &stand,
        &["results", "--json", "--reason", "price_mismatch"],
        &[],
    )
    .await;
    let shown = json_lines(&out);
    assert_eq!(shown.len(), 1, "{out:?}");
    assert_eq!(shown[0]["body"]["receipt_id"], "r-2");

    let (_, out) = cli(&stand, &["results", "--decision", "reject"], &[]).await;
    let text = out.join("\n");
    assert!(
        text.contains("DECISION") && text.contains("r-2") && text.contains("r-3"),
        "{text}"
    );
    assert!(!text.contains("r-1"), "{text}");

    let (_, out) = cli(
        &stand,
        &["results", "--json", "--decision", "fulfill", "--delete"],
        &[],
    )
    .await;
    assert_eq!(json_lines(&out).len(), 1);
    eventually("one decision consumed", WAIT, || async {
        (stand.depth(&stand.result_url).await == 2).then_some(())
    })
    .await;

    // `results --delete | head -0`: the reader is gone before anything is written, so
    // nothing may be deleted.
    into_a_closed_pipe(&stand, &["results", "--json", "--delete", "--wait", "1"]).await;
    assert_eq!(stand.depth(&stand.result_url).await, 2, "nothing deleted");
}

#[tokio::test]
async fn stats_show_each_queue() {
    let stand = Stand::start(json!([])).await;
    for i in 0..3 {
        stand
            .send_json(&purchase(&format!("r-{i}"), "o", json!(1)))
            .await;
    }
    let (code, out) = cli(&stand, &["stats", "--json"], &[]).await;
    assert_eq!(code, Some(0), "{out:?}");
    let rows = json_lines(&out);
    let row = |q: &str| rows.iter().find(|r| r["queue"] == q).cloned().unwrap();
    assert_eq!(row("purchase")["visible"], 3);
    assert_eq!(row("result")["visible"], 0);
    assert_eq!(row("dead-letter")["url"], json!(stand.dlq_url));
    let (_, out) = cli(&stand, &["stats"], &[]).await;
    let text = out.join("\n");
    assert!(
        text.contains("VISIBLE") && text.contains("purchase") && text.contains("dead-letter"),
        "{text}"
    );

    let missing = format!("{}/123456789012/nope", stand.moto.endpoint);
    let (code, out) = cli(&stand, &["stats"], &[("PURCHASE_QUEUE_URL", &missing)]).await;
    assert_ne!(code, Some(0));
    assert!(out.join("\n").contains("does not exist"), "{out:?}");

    let (code, out) = cli(
        &stand,
        &["stats"],
        &[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")],
    )
    .await;
    assert_ne!(code, Some(0));
    assert!(
        out.join("\n").contains("AWS credentials are missing"),
        "{out:?}"
    );
}

/// Fills the DLQ with invalid purchases, dead-lettered by a worker.
async fn dead_letters(stand: &Stand, bodies: &[String]) {
    for b in bodies {
        stand.send(b.clone()).await;
    }
    let mut worker = stand.worker(&[]).await;
    eventually("dead letters", WAIT, || async {
        (stand.depth(&stand.dlq_url).await == bodies.len() as u64).then_some(())
    })
    .await;
    worker.signal("TERM");
    worker.exit_code(WAIT).await;
}

#[tokio::test]
async fn dlq_peek_and_export_filter_without_deleting() {
    let stand = Stand::start(json!([])).await;
    let bodies: Vec<String> = vec![
        r#"{"receipt_id":"r-1","order_id":"o-123","price":-1}"#.into(),
        r#"{"receipt_id":"r-2","order_id":"o-456"}"#.into(),
        "garbage".into(),
    ];
    dead_letters(&stand, &bodies).await;

    let (code, out) = cli(&stand, &["dlq", "peek", "--json"], &[]).await;
    assert_eq!(code, Some(0), "{out:?}");
    assert!(
        out.iter()
            .any(|l| l.contains("raises each message's receive count"))
    );
    let all = json_lines(&out);
    assert_eq!(all.len(), 3);
    into_a_closed_pipe(&stand, &["dlq", "peek", "--json", "--hold", "1"]).await;
    assert!(
        all.iter()
            .all(|d| d["receive_count"].as_u64().unwrap() >= 1 && d["sent_at"].is_string())
    );

    let (_, out) = cli(
        &stand,
        &["dlq", "peek", "--json", "--where", "order_id=o-123"],
        &[],
    )
    .await;
    let hit = json_lines(&out);
    assert_eq!(hit.len(), 1);
    assert_eq!(hit[0]["error_code"], "invalid_field");
    let (_, out) = cli(
        &stand,
        &["dlq", "peek", "--json", "--where", "order_id=o-999"],
        &[],
    )
    .await;
    assert!(json_lines(&out).is_empty());
    let (_, out) = cli(
        &stand,
        &[
            "dlq",
            "peek",
            "--json",
            "--where",
            "error_code=invalid_json",
        ],
        &[],
    )
    .await;
    assert_eq!(json_lines(&out)[0]["body"], "garbage");
    let (_, out) = cli(
        &stand,
        &["dlq", "peek", "--json", "--grep", "o-4[0-9]+"],
        &[],
    )
    .await;
    assert_eq!(json_lines(&out)[0]["error_code"], "missing_field");
    let (_, out) = cli(&stand, &["dlq", "peek"], &[]).await;
    assert!(out.join("\n").contains("MESSAGE ID"));
    eventually("peeked letters handed back", WAIT, || async {
        (stand.depth(&stand.dlq_url).await == 3).then_some(())
    })
    .await;

    let file = std::env::temp_dir().join(format!("rv-{}-export.jsonl", std::process::id()));
    let second = file.with_extension("2.jsonl");
    for f in [&file, &second] {
        let _ = std::fs::remove_file(f);
    }
    let (code, out) = cli(
        &stand,
        &[
            "dlq",
            "export",
            "--out",
            file.to_str().unwrap(),
            "--grep",
            "r-",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{out:?}");
    let exported: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported.len(), 2);
    assert!(
        exported
            .iter()
            .all(|e| e["attributes"]["error"].is_string())
    );
    eventually("export left them", WAIT, || async {
        (stand.depth(&stand.dlq_url).await == 3).then_some(())
    })
    .await;

    // An earlier export is never overwritten, and --delete needs a file.
    let (code, out) = cli(
        &stand,
        &["dlq", "export", "--out", file.to_str().unwrap()],
        &[],
    )
    .await;
    assert_eq!(code, Some(2));
    assert!(out.join("\n").contains("exists"), "{out:?}");
    let (code, _) = cli(&stand, &["dlq", "export", "--out", "-", "--delete"], &[]).await;
    assert_eq!(code, Some(2));

    let (code, _) = cli(
        &stand,
        &[
            "dlq",
            "export",
            "--out",
            second.to_str().unwrap(),
            "--delete",
            "--where",
            "error_code=invalid_json",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0));
    eventually("exported letter deleted", WAIT, || async {
        (stand.depth(&stand.dlq_url).await == 2).then_some(())
    })
    .await;
    assert!(
        std::fs::read_to_string(&second)
            .unwrap()
            .contains("garbage")
    );
}

#[tokio::test]
async fn dlq_redrive_moves_filtered_letters_back_and_purge_asks_first() {
    let stand = Stand::start(json!([])).await;
    let bodies: Vec<String> = (0..5)
        .map(|i| format!(r#"{{"receipt_id":"r-{i}","order_id":"o-{i}","price":"bad"}}"#))
        .collect();
    dead_letters(&stand, &bodies).await;
    let (code, out) = cli(&stand, &["dlq", "redrive", "--where", "order_id=o-3"], &[]).await;
    assert_eq!(code, Some(0), "{out:?}");
    assert!(out.join("\n").contains("1 dead letters moved"), "{out:?}");
    let back = stand.take(&stand.purchase_url, 1, WAIT).await;
    assert_eq!(back[0].body().unwrap(), bodies[3]);
    assert!(
        attribute(&back[0], "error_code").is_none(),
        "the worker's error attributes are dropped"
    );
    eventually("four left", WAIT, || async {
        (stand.depth(&stand.dlq_url).await == 4).then_some(())
    })
    .await;

    let elsewhere = create_queue(&stand.sqs, "elsewhere", Default::default()).await;
    let (code, out) = cli(
        &stand,
        &["dlq", "redrive", "--to", &elsewhere, "--rate", "50"],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{out:?}");
    assert!(
        out.join("\n").contains("moving messages one by one")
            || out.join("\n").contains("4 dead letters moved"),
        "{out:?}"
    );
    stand.take(&elsewhere, 4, WAIT).await;
    assert_eq!(stand.depth(&stand.dlq_url).await, 0);

    dead_letters(&stand, &bodies[..2]).await;
    let (code, out) = cli(&stand, &["dlq", "purge"], &[]).await;
    assert_ne!(code, Some(0));
    assert!(out.join("\n").contains("--yes"), "{out:?}");
    assert_eq!(stand.depth(&stand.dlq_url).await, 2);
    let (code, _) = cli(&stand, &["dlq", "purge", "--yes"], &[]).await;
    assert_eq!(code, Some(0));
    eventually("purged", WAIT, || async {
        (stand.depth(&stand.dlq_url).await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_interrupted_redrive_loses_nothing() {
    let stand = Stand::start(json!([])).await;
    let bodies: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"receipt_id":"r-{i}","order_id":"o-{i}"}}"#))
        .collect();
    dead_letters(&stand, &bodies).await;
    let mut redrive = Worker::spawn(
        &[
            "dlq",
            "redrive",
            "--rate",
            "4",
            "--hold",
            "2",
            "--client-side",
        ],
        stand.worker_env(),
        &[],
    )
    .await;
    redrive.wait_for_log(&["moved"], WAIT).await;
    redrive.wait_for_log(&["moved", "r-"], WAIT).await;
    redrive.signal("KILL");
    redrive.exit_code(WAIT).await;
    let moved = redrive
        .logs()
        .iter()
        .filter(|l| l.starts_with("moved"))
        .count();
    assert!(moved < 20, "interrupted halfway");

    // Every body is on one queue or the other (a message sent but not yet deleted is on both).
    let mut found = HashSet::new();
    for m in stand.take(&stand.purchase_url, moved, WAIT).await {
        found.insert(m.body().unwrap().to_owned());
    }
    let left = eventually("held letters to come back", WAIT, || async {
        let n = stand.depth(&stand.dlq_url).await as usize;
        (n + moved >= 20).then_some(n)
    })
    .await;
    for m in stand.take(&stand.dlq_url, left, WAIT).await {
        found.insert(m.body().unwrap().to_owned());
    }
    let expected: HashSet<String> = bodies.into_iter().collect();
    assert_eq!(found, expected);
}

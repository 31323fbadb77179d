//! `run` refuses to start, with a clear message and a non-zero exit, when it could not do
//! its job safely; and its configuration surface is what the contract says.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail"
)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const WAIT: Duration = Duration::from_secs(60);

async fn refusal(stand: &Stand, overrides: &[(&str, &str)]) -> String {
    let mut worker = stand.worker(overrides).await;
    let code = worker.exit_code(WAIT).await;
    let logs = worker.logs().join("\n");
    assert_eq!(code, Some(2), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
    logs
}

#[tokio::test]
async fn refuses_a_purchase_queue_without_a_dead_letter_queue() {
    let stand = Stand::with(
        json!([]),
        QueueOptions {
            with_dlq: false,
            ..QueueOptions::default()
        },
        &[],
    )
    .await;
    let logs = refusal(&stand, &[]).await;
    assert!(logs.contains("has no dead-letter queue"), "{logs}");
    assert!(logs.contains("RedrivePolicy"), "{logs}");
}

#[tokio::test]
async fn refuses_unusable_queue_and_bootpay_urls() {
    let stand = Stand::start(json!([])).await;
    let missing = format!("{}/123456789012/no-such-queue", stand.moto.endpoint);
    let logs = refusal(&stand, &[("PURCHASE_QUEUE_URL", &missing)]).await;
    assert!(
        logs.contains("purchase queue") && logs.contains("no-such-queue"),
        "{logs}"
    );

    let logs = refusal(&stand, &[("RESULT_QUEUE_URL", &missing)]).await;
    assert!(logs.contains("result queue"), "{logs}");

    let logs = refusal(&stand, &[("PURCHASE_QUEUE_URL", "purchases")]).await;
    assert!(
        logs.contains("PURCHASE_QUEUE_URL") || logs.contains("purchase-queue-url"),
        "{logs}"
    );

    let logs = refusal(
        &stand,
        &[("BOOTPAY_API_URL", "http://api.bootpay.co.kr/v2")],
    )
    .await;
    assert!(logs.contains("only for a loopback host"), "{logs}");

    let logs = refusal(&stand, &[("BOOTPAY_PRIVATE_KEY", "")]).await;
    assert!(
        logs.contains("BOOTPAY_APPLICATION_ID is set but BOOTPAY_PRIVATE_KEY is not"),
        "{logs}"
    );

    let logs = refusal(
        &stand,
        &[("BOOTPAY_PRIVATE_KEY", ""), ("BOOTPAY_APPLICATION_ID", "")],
    )
    .await;
    assert!(logs.contains("no Bootpay credentials"), "{logs}");

    let logs = refusal(&stand, &[("BOOTPAY_CLIENT_KEY", "client")]).await;
    assert!(
        logs.contains("BOOTPAY_CLIENT_KEY is set but BOOTPAY_SECRET_KEY is not"),
        "{logs}"
    );

    let logs = refusal(
        &stand,
        &[
            ("BOOTPAY_CLIENT_KEY", "client"),
            ("BOOTPAY_SECRET_KEY", "secret-never-log-me"),
            ("BOOTPAY_API_VERSION", "v1"),
        ],
    )
    .await;
    assert!(
        logs.contains("v1 has no client/secret-key authentication"),
        "{logs}"
    );
    assert!(!logs.contains("secret-never-log-me"), "{logs}");

    let logs = refusal(&stand, &[("BOOTPAY_API_VERSION", "v3")]).await;
    assert!(logs.contains("v3"), "{logs}");

    let logs = refusal(&stand, &[("WORKER_CONCURRENCY", "0")]).await;
    assert!(logs.contains("concurrency"), "{logs}");
}

#[tokio::test]
async fn reads_the_private_key_from_a_file() {
    let stand = Stand::start(json!([receipt("r-1", "o-1", json!(1), 1)])).await;
    let path = std::env::temp_dir().join(format!("rv-key-{}", std::process::id()));
    std::fs::write(&path, format!("{PRIVATE_KEY}\n")).unwrap();
    stand.send_json(&purchase("r-1", "o-1", json!(1))).await;
    let _worker = stand
        .worker(&[
            ("BOOTPAY_PRIVATE_KEY", ""),
            ("BOOTPAY_PRIVATE_KEY_FILE", path.to_str().unwrap()),
        ])
        .await;
    let d = stand.decisions(1, WAIT).await;
    assert_eq!(d[0].0["decision"], "fulfill");

    let logs = refusal(
        &stand,
        &[
            ("BOOTPAY_PRIVATE_KEY", ""),
            ("BOOTPAY_PRIVATE_KEY_FILE", "/nonexistent/key"),
        ],
    )
    .await;
    assert!(
        logs.contains("cannot read BOOTPAY_PRIVATE_KEY_FILE"),
        "{logs}"
    );
}

#[tokio::test]
async fn help_names_every_setting_and_hides_the_key() {
    let mut env = vec![("BOOTPAY_PRIVATE_KEY".to_owned(), PRIVATE_KEY.to_owned())];
    env.push(("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()));
    let mut worker = Worker::spawn(&["run", "--help"], env, &[]).await;
    assert_eq!(worker.exit_code(WAIT).await, Some(0));
    let help = worker.logs().join("\n");
    for name in [
        "PURCHASE_QUEUE_URL",
        "RESULT_QUEUE_URL",
        "BOOTPAY_CLIENT_KEY",
        "BOOTPAY_CLIENT_KEY_FILE",
        "BOOTPAY_SECRET_KEY",
        "BOOTPAY_SECRET_KEY_FILE",
        "BOOTPAY_APPLICATION_ID",
        "BOOTPAY_PRIVATE_KEY",
        "BOOTPAY_PRIVATE_KEY_FILE",
        "BOOTPAY_API_VERSION",
        "BOOTPAY_API_URL",
        "WORKER_CONCURRENCY",
        "SHUTDOWN_GRACE_SECS",
        "LOG_FORMAT",
    ] {
        assert!(help.contains(name), "--help does not mention {name}");
    }
    assert!(help.contains("https://api.bootpay.co.kr/v2"));
    assert!(!help.contains(PRIVATE_KEY), "--help shows the private key");
}

#[tokio::test]
async fn nonsense_values_get_a_clear_message_and_a_non_zero_exit() {
    let stand = Stand::start(json!([])).await;
    /// Arguments, environment overrides, and what the message must mention.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            &["run"],
            &[("BOOTPAY_TIMEOUT_SECS", "soon")],
            "--bootpay-timeout-secs",
        ),
        (&["run"], &[("LOG_FORMAT", "xml")], "--log-format"),
        (
            &["run"],
            &[("RECEIVE_WAIT_SECS", "99")],
            "--receive-wait-secs",
        ),
        (
            &["run"],
            &[("METRICS_ADDR", "everywhere")],
            "--metrics-addr",
        ),
        (&["run"], &[("WORKER_CONCURRENCY", "-3")], "--concurrency"),
        (
            &["run"],
            &[("SHUTDOWN_GRACE_SECS", "1e9")],
            "--shutdown-grace-secs",
        ),
        (&["results", "--wait", "50"], &[], "--wait"),
        (&["results", "--decision", "maybe"], &[], "--decision"),
        (&["dlq", "redrive", "--rate", "0"], &[], "--rate"),
        (
            &["dlq", "peek", "--where", "no-equals-sign"],
            &[],
            "FIELD=VALUE",
        ),
        (&["dlq", "peek", "--grep", "(unclosed"], &[], "--grep"),
        (
            &[
                "enqueue",
                "--receipt-id",
                "r",
                "--order-id",
                "o",
                "--price",
                "free",
            ],
            &[],
            "--price",
        ),
        (&["frobnicate"], &[], "unrecognized subcommand"),
    ];
    for (args, overrides, mention) in cases {
        let mut worker = Worker::spawn(args, stand.worker_env(), overrides).await;
        let code = worker.exit_code(WAIT).await;
        let output = worker.logs().join("\n");
        assert_eq!(code, Some(2), "{args:?} {overrides:?}: {output}");
        assert!(
            output.contains(mention),
            "{args:?} {overrides:?} should mention {mention}: {output}"
        );
        assert!(!output.contains("panicked"), "{output}");
    }
}

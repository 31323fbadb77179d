//! Test support: real services started as processes on free ports — moto's SQS server,
//! `bootpay-fake`, and the `receipt-verifier` binary itself — plus helpers that wait for
//! conditions instead of sleeping.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

pub const APP_ID: &str = "test-application-id";
pub const PRIVATE_KEY: &str = "pk-test-4f1c9e7a-never-log-me";
pub const CLIENT_KEY: &str = "test-client-key";
pub const SECRET_KEY: &str = "sk-test-9b2d7c41-never-log-me";

/// How the worker speaks to Bootpay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// v2 with an application id and a private key (a token).
    V2Token,
    /// v2 with a client key and a secret key (HTTP Basic).
    V2Basic,
    /// The legacy v1 dialect (a token sent raw).
    V1,
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn moto_server_path() -> PathBuf {
    if let Ok(path) = std::env::var("MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("moto_server")
}

/// moto's SQS server, killed on drop.
pub struct Moto {
    child: std::process::Child,
    pub endpoint: String,
}

impl Moto {
    /// Lets moto bind port 0 and reads the port it got from its start-up line, so no
    /// other process can take the port between choosing it and binding it.
    pub async fn start() -> Self {
        let path = moto_server_path();
        let mut child = std::process::Command::new(&path)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start moto's server ({}): {e}. Run the tests with \
                     scripts/test.sh, which installs moto[server] into .venv",
                    path.display()
                )
            });
        let stderr = child.stderr.take().unwrap();
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        // A thread, not a task: moto logs every request to stderr and must never block
        // on a full pipe, even while the test's runtime is busy elsewhere.
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut port_tx = Some(port_tx);
            let mut seen = Vec::new();
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(tx) = port_tx.take() {
                    match line.split_once("Running on http://127.0.0.1:") {
                        Some((_, port)) => {
                            let _ = tx.send(Ok(port.trim().to_owned()));
                        }
                        None => {
                            seen.push(line);
                            port_tx = Some(tx);
                        }
                    }
                }
            }
            if let Some(tx) = port_tx {
                let _ = tx.send(Err(seen.join("\n")));
            }
        });
        // Built first, so that a panic below still kills the process.
        let mut moto = Self {
            child,
            endpoint: String::new(),
        };
        let port = match tokio::time::timeout(Duration::from_secs(60), port_rx).await {
            Ok(Ok(Ok(port))) => port,
            Ok(Ok(Err(output))) => panic!("moto's server exited at start-up:\n{output}"),
            Ok(Err(_)) => panic!("moto's server exited at start-up"),
            Err(_) => panic!("moto's server did not start within 60 s"),
        };
        moto.endpoint = format!("http://127.0.0.1:{port}");
        moto
    }

    pub fn client(&self) -> Client {
        sqs_client(&self.endpoint)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sqs_client(endpoint: &str) -> Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .build();
    Client::from_conf(config)
}

/// `bootpay-fake` on a free port, with its control API.
pub struct Fake {
    _child: Child,
    /// The v2 base URL, e.g. `http://127.0.0.1:1234/v2`.
    pub api_url: String,
    pub base: String,
    http: reqwest::Client,
}

impl Fake {
    pub async fn start(receipts: Value, extra_args: &[&str]) -> Self {
        let dir = {
            static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::env::temp_dir().join(format!("rv-fake-{}-{n}", std::process::id()))
        };
        std::fs::create_dir_all(&dir).unwrap();
        let fixture = dir.join("receipts.json");
        std::fs::write(&fixture, json!({ "receipts": receipts }).to_string()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_bootpay-fake"))
            .args(["--listen", "127.0.0.1:0", "--receipts"])
            .arg(&fixture)
            .args(["--application-id", APP_ID, "--private-key", PRIVATE_KEY])
            .args(["--client-key", CLIENT_KEY, "--secret-key", SECRET_KEY])
            .args(extra_args)
            .env_remove("BOOTPAY_APPLICATION_ID")
            .env_remove("BOOTPAY_PRIVATE_KEY")
            .env_remove("BOOTPAY_CLIENT_KEY")
            .env_remove("BOOTPAY_SECRET_KEY")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start bootpay-fake");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("bootpay-fake printed its URL in time")
            .unwrap()
            .expect("bootpay-fake printed a line");
        let api_url = line
            .strip_prefix("BOOTPAY_API_URL=")
            .unwrap_or_else(|| panic!("unexpected first line from bootpay-fake: {line}"))
            .to_owned();
        let base = api_url.trim_end_matches("/v2").to_owned();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            _child: child,
            api_url,
            base,
            http: reqwest::Client::new(),
        }
    }

    pub async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/_fake/stats", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Lookups and confirms recorded for one receipt.
    pub async fn receipt_stats(&self, receipt_id: &str) -> (u64, u64, i64) {
        let stats = self.stats().await;
        let r = &stats["receipts"][receipt_id];
        (
            r["lookups"].as_u64().unwrap_or(0),
            r["confirms"].as_u64().unwrap_or(0),
            r["status"].as_i64().unwrap_or(i64::MIN),
        )
    }

    pub async fn control(&self, method: reqwest::Method, path: &str, body: Value) {
        let response = self
            .http
            .request(method, format!("{}/_fake/{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "control {path}: {}",
            response.status()
        );
    }

    pub async fn set_credentials(&self, application_id: &str, private_key: &str) {
        self.control(
            reqwest::Method::PUT,
            "credentials",
            json!({"application_id": application_id, "private_key": private_key,
                   "client_key": CLIENT_KEY, "secret_key": SECRET_KEY}),
        )
        .await;
    }

    /// Changes the client and secret keys the fake accepts (the application id and
    /// private key stay the tests').
    pub async fn set_keys(&self, client_key: &str, secret_key: &str) {
        self.control(
            reqwest::Method::PUT,
            "credentials",
            json!({"application_id": APP_ID, "private_key": PRIVATE_KEY,
                   "client_key": client_key, "secret_key": secret_key}),
        )
        .await;
    }

    /// Refuses the credentials the worker uses in `mode` (rotated at Bootpay).
    pub async fn refuse(&self, mode: Mode) {
        match mode {
            Mode::V2Basic => self.set_keys(CLIENT_KEY, "rotated-secret-key").await,
            Mode::V2Token | Mode::V1 => {
                self.set_credentials(APP_ID, "rotated-key").await;
                self.revoke_tokens().await;
            }
        }
    }

    /// Accepts the tests' credentials again.
    pub async fn accept(&self) {
        self.set_credentials(APP_ID, PRIVATE_KEY).await;
    }

    pub async fn set_outage(&self, down: bool) {
        self.control(reqwest::Method::PUT, "outage", json!({ "down": down }))
            .await;
    }

    /// While on, the fake refuses every `/v2` call with a body quoting the request.
    pub async fn set_echo(&self, on: bool) {
        self.control(reqwest::Method::PUT, "echo", json!({ "on": on }))
            .await;
    }

    /// Method and path (as sent, percent-encoded) of every request the fake received.
    pub async fn requests(&self) -> Vec<String> {
        let v: Value = self
            .http
            .get(format!("{}/_fake/requests", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        serde_json::from_value(v["requests"].clone()).unwrap()
    }

    pub async fn revoke_tokens(&self) {
        self.control(reqwest::Method::POST, "tokens/revoke", json!({}))
            .await;
    }

    /// Where the fake sends webhooks: the v2 URL and the v1 one (`None`: not sent).
    pub async fn send_webhooks_to(&self, v2: Option<&str>, v1: Option<&str>) {
        self.control(
            reqwest::Method::PUT,
            "webhooks",
            json!({"v2_url": v2, "v1_url": v1}),
        )
        .await;
    }

    /// The fake's webhook deliveries, oldest first.
    pub async fn webhooks(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}/_fake/webhooks", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["deliveries"].as_array().cloned().unwrap_or_default()
    }

    /// A control call on one receipt (`deposit`, `cancel`, `expire`) that must succeed.
    pub async fn act(&self, receipt_id: &str, action: &str, body: Value) {
        self.control(
            reqwest::Method::POST,
            &format!("receipts/{receipt_id}/{action}"),
            body,
        )
        .await;
    }

    pub async fn put_receipt(&self, receipt: Value) {
        let id = receipt["receipt_id"].as_str().unwrap().to_owned();
        self.control(reqwest::Method::PUT, &format!("receipts/{id}"), receipt)
            .await;
    }

    /// Asks the fake for a token with the test credentials. Within its reuse window the
    /// fake answers with the token it last issued, i.e. the worker's.
    pub async fn current_token(&self) -> String {
        let v: Value = self
            .http
            .post(format!("{}/request/token", self.api_url))
            .json(&json!({"application_id": APP_ID, "private_key": PRIVATE_KEY}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    }
}

/// A paid receipt for `order_id`.
pub fn receipt(receipt_id: &str, order_id: &str, price: Value, status: i64) -> Value {
    json!({
        "receipt_id": receipt_id, "order_id": order_id, "price": price, "status": status,
        "currency": "KRW", "order_name": "Gems", "method_symbol": "card", "sandbox": true,
    })
}

/// The decision table as every runtime's end-to-end test runs it: the receipts Bootpay
/// holds, the purchase events, and the decision and reason each event must get.
pub struct DecisionTable {
    pub receipts: Value,
    pub events: Vec<Value>,
    pub expected: Vec<(&'static str, &'static str, &'static str)>,
}

pub fn decision_table() -> DecisionTable {
    DecisionTable {
        receipts: json!([
            receipt("r-paid", "o-paid", json!(3000), 1),
            receipt("r-replayed", "o-original", json!(3000), 1),
            receipt("r-cheap", "o-cheap", json!(100), 1),
            receipt("r-usd", "o-usd", json!(3000), 1),
            receipt("r-cancelled", "o-cancelled", json!(3000), 20),
            receipt("r-cancelling", "o-cancelling", json!(3000), -30),
            receipt("r-failed", "o-failed", json!(3000), -1),
            receipt("r-declined", "o-declined", json!(3000), -2),
            receipt("r-confirm", "o-confirm", json!(12000), 2),
            receipt("r-confirm-tampered", "o-confirm-tampered", json!(12000), 2),
            receipt("r-float", "o-float", json!(3000.0), 1),
        ]),
        events: vec![
            json!({"receipt_id": "r-paid", "order_id": "o-paid", "price": 3000, "currency": "krw",
                   "metadata": {"user": 42, "sku": ["gem-pack"]}, "event_id": "evt-1"}),
            purchase("r-replayed", "o-attacker", json!(3000)),
            purchase("r-cheap", "o-cheap", json!(3000)),
            json!({"receipt_id": "r-usd", "order_id": "o-usd", "price": 3000, "currency": "USD"}),
            purchase("r-cancelled", "o-cancelled", json!(3000)),
            purchase("r-cancelling", "o-cancelling", json!(3000)),
            purchase("r-failed", "o-failed", json!(3000)),
            purchase("r-declined", "o-declined", json!(3000)),
            purchase("r-missing", "o-missing", json!(3000)),
            purchase("r-confirm", "o-confirm", json!(12000)),
            purchase("r-confirm-tampered", "o-confirm-tampered", json!(1200)),
            purchase("r-float", "o-float", json!(3000)),
            json!({"receipt_id": "r-int-vs-float", "order_id": "o", "price": 1}),
        ],
        expected: vec![
            ("r-paid", "fulfill", "verified"),
            ("r-replayed", "reject", "order_mismatch"),
            ("r-cheap", "reject", "price_mismatch"),
            ("r-usd", "reject", "currency_mismatch"),
            ("r-cancelled", "reject", "cancelled"),
            ("r-cancelling", "reject", "cancelled"),
            ("r-failed", "reject", "not_paid"),
            ("r-declined", "reject", "not_paid"),
            ("r-missing", "reject", "receipt_not_found"),
            ("r-confirm", "fulfill", "verified"),
            ("r-confirm-tampered", "reject", "price_mismatch"),
            ("r-float", "fulfill", "verified"),
            ("r-int-vs-float", "reject", "receipt_not_found"),
        ],
    }
}

pub fn purchase(receipt_id: &str, order_id: &str, price: Value) -> Value {
    json!({ "receipt_id": receipt_id, "order_id": order_id, "price": price })
}

#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub visibility_timeout_secs: u32,
    pub max_receive_count: u32,
    pub with_dlq: bool,
    /// FIFO purchase queue and DLQ (`.fifo`, content-based deduplication).
    pub fifo: bool,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            visibility_timeout_secs: 30,
            max_receive_count: 5,
            with_dlq: true,
            fifo: false,
        }
    }
}

impl QueueOptions {
    /// One receive only, and a short visibility timeout: a purchase handed back to the
    /// queue even once is dead-lettered on its next receive, so a test can prove that
    /// something was held rather than requeued.
    pub fn one_receive() -> Self {
        Self {
            max_receive_count: 1,
            visibility_timeout_secs: 3,
            ..Self::default()
        }
    }
}

/// The `receipt_id` in a message's JSON body.
pub fn receipt_id_of(message: &Message) -> String {
    let body: Value =
        serde_json::from_str(message.body().unwrap_or_default()).expect("a JSON body");
    body["receipt_id"]
        .as_str()
        .expect("a receipt_id")
        .to_owned()
}

/// A local stand: moto with a purchase queue (and its DLQ) and a result queue, plus
/// `bootpay-fake` serving `receipts`.
pub struct Stand {
    pub moto: Moto,
    pub sqs: Client,
    pub fake: Fake,
    pub purchase_url: String,
    pub result_url: String,
    pub dlq_url: String,
}

impl Stand {
    pub async fn start(receipts: Value) -> Self {
        Self::with(receipts, QueueOptions::default(), &[]).await
    }

    pub async fn with(receipts: Value, options: QueueOptions, fake_args: &[&str]) -> Self {
        let (moto, fake) = tokio::join!(Moto::start(), Fake::start(receipts, fake_args));
        let sqs = moto.client();
        let (suffix, fifo) = if options.fifo {
            (
                ".fifo",
                HashMap::from([
                    (QueueAttributeName::FifoQueue, "true".to_owned()),
                    (
                        QueueAttributeName::ContentBasedDeduplication,
                        "true".to_owned(),
                    ),
                ]),
            )
        } else {
            ("", HashMap::new())
        };
        let dlq_url = create_queue(&sqs, &format!("purchases-dlq{suffix}"), fifo.clone()).await;
        let dlq_arn = queue_arn(&sqs, &dlq_url).await;
        let mut attributes = fifo;
        attributes.insert(
            QueueAttributeName::VisibilityTimeout,
            options.visibility_timeout_secs.to_string(),
        );
        if options.with_dlq {
            attributes.insert(
                QueueAttributeName::RedrivePolicy,
                json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": options.max_receive_count})
                    .to_string(),
            );
        }
        let purchase_url = create_queue(&sqs, &format!("purchases{suffix}"), attributes).await;
        let result_url = create_queue(&sqs, "decisions", HashMap::new()).await;
        Self {
            moto,
            sqs,
            fake,
            purchase_url,
            result_url,
            dlq_url,
        }
    }

    /// Environment for `receipt-verifier run` against this stand.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        [
            ("PURCHASE_QUEUE_URL", self.purchase_url.as_str()),
            ("RESULT_QUEUE_URL", self.result_url.as_str()),
            ("BOOTPAY_APPLICATION_ID", APP_ID),
            ("BOOTPAY_PRIVATE_KEY", PRIVATE_KEY),
            ("BOOTPAY_API_URL", self.fake.api_url.as_str()),
            ("AWS_ENDPOINT_URL", self.moto.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("RUST_LOG", "info"),
            ("BATCH_LINGER_MS", "5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    pub async fn worker(&self, overrides: &[(&str, &str)]) -> Worker {
        Worker::spawn(&["run"], self.worker_env(), overrides).await
    }

    /// Environment for `receipt-verifier run` speaking to Bootpay in `mode`.
    pub fn worker_env_in(&self, mode: Mode) -> Vec<(String, String)> {
        let mut env = self.worker_env();
        let set = |env: &mut Vec<(String, String)>, k: &str, v: Option<&str>| {
            env.retain(|(key, _)| key != k);
            if let Some(v) = v {
                env.push((k.to_owned(), v.to_owned()));
            }
        };
        match mode {
            Mode::V2Token => {}
            Mode::V2Basic => {
                set(&mut env, "BOOTPAY_APPLICATION_ID", None);
                set(&mut env, "BOOTPAY_PRIVATE_KEY", None);
                set(&mut env, "BOOTPAY_CLIENT_KEY", Some(CLIENT_KEY));
                set(&mut env, "BOOTPAY_SECRET_KEY", Some(SECRET_KEY));
            }
            Mode::V1 => {
                set(&mut env, "BOOTPAY_API_VERSION", Some("v1"));
                set(&mut env, "BOOTPAY_API_URL", Some(&self.fake.base));
            }
        }
        env
    }

    /// Creates the ledger table on this stand's moto with `receipt-verifier ledger init`,
    /// and returns its name.
    pub async fn ledger(&self) -> String {
        const TABLE: &str = "ledger";
        let mut init = Worker::spawn(
            &["ledger", "init", "--table", TABLE],
            self.worker_env(),
            &[],
        )
        .await;
        assert_eq!(
            init.exit_code(Duration::from_secs(60)).await,
            Some(0),
            "{:?}",
            init.logs()
        );
        TABLE.to_owned()
    }

    /// What `receipt-verifier ledger show --json` says of a receipt (`Null` when nothing).
    pub async fn ledger_entry(&self, table: &str, receipt_id: &str) -> Value {
        let mut show = Worker::spawn(
            &["ledger", "show", receipt_id, "--table", table, "--json"],
            self.worker_env(),
            &[],
        )
        .await;
        let code = show.exit_code(Duration::from_secs(60)).await;
        let logs = show.logs();
        match code {
            Some(0) => logs
                .iter()
                .find_map(|l| serde_json::from_str(l).ok())
                .unwrap_or_else(|| panic!("no JSON in {logs:?}")),
            _ => {
                assert!(
                    logs.iter().any(|l| l.contains("holds nothing")),
                    "ledger show failed: {logs:?}"
                );
                Value::Null
            }
        }
    }

    /// Runs `receipt-verifier reconcile` once and returns its JSON report.
    pub async fn reconcile(&self, table: &str) -> Value {
        let mut sweep = Worker::spawn(
            &["reconcile", "--table", table, "--json"],
            self.worker_env(),
            &[],
        )
        .await;
        assert_eq!(
            sweep.exit_code(Duration::from_secs(60)).await,
            Some(0),
            "{:?}",
            sweep.logs()
        );
        sweep
            .logs()
            .iter()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("no JSON report in {:?}", sweep.logs()))
    }

    /// Starts `receipt-verifier webhook` on a free port, taking webhooks from loopback,
    /// and returns it with its base URL.
    pub async fn ingress(&self, overrides: &[(&str, &str)]) -> (Worker, String) {
        let mut env = self.worker_env();
        env.retain(|(k, _)| k.starts_with("AWS_") || k == "PURCHASE_QUEUE_URL" || k == "RUST_LOG");
        env.push(("WEBHOOK_ADDR".into(), "127.0.0.1:0".into()));
        env.push(("WEBHOOK_ALLOWED_SOURCES".into(), "127.0.0.1/32".into()));
        let ingress = Worker::spawn(&["webhook"], env, overrides).await;
        let line = ingress
            .wait_for_log(&["Webhook ingress started."], Duration::from_secs(30))
            .await;
        let addr = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr in {line}"));
        (ingress, format!("http://{addr}"))
    }

    pub async fn worker_in(&self, mode: Mode, overrides: &[(&str, &str)]) -> Worker {
        Worker::spawn(&["run"], self.worker_env_in(mode), overrides).await
    }

    pub async fn send(&self, body: impl Into<String>) {
        self.send_with(body, HashMap::new()).await;
    }

    pub async fn send_with(
        &self,
        body: impl Into<String>,
        attributes: HashMap<String, aws_sdk_sqs::types::MessageAttributeValue>,
    ) {
        self.sqs
            .send_message()
            .queue_url(&self.purchase_url)
            .message_body(body)
            .set_message_attributes(Some(attributes))
            .send()
            .await
            .expect("send a purchase");
    }

    /// Sends bodies to the purchase queue with `SendMessageBatch`, ten at a time.
    pub async fn send_batch(&self, bodies: &[String]) {
        for chunk in bodies.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .unwrap()
                })
                .collect();
            let out = self
                .sqs
                .send_message_batch()
                .queue_url(&self.purchase_url)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("send a batch of purchases");
            assert!(out.failed().is_empty(), "{:?}", out.failed());
        }
    }

    pub async fn send_json(&self, body: &Value) {
        self.send(body.to_string()).await;
    }

    /// Receives (and deletes) `n` messages from `queue_url`, or panics after `timeout`.
    pub async fn take(&self, queue_url: &str, n: usize, timeout: Duration) -> Vec<Message> {
        let mut taken = Vec::new();
        let deadline = Instant::now() + timeout;
        while taken.len() < n {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} with {} of {n} messages from {queue_url}: {:#?}",
                taken.len(),
                taken
                    .iter()
                    .map(|m: &Message| m.body().unwrap_or_default().to_owned())
                    .collect::<Vec<_>>()
            );
            let out = self
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .expect("receive");
            for m in out.messages.unwrap_or_default() {
                self.sqs
                    .delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .expect("delete");
                taken.push(m);
            }
        }
        taken
    }

    /// Receives (and deletes) everything on `queue_url`, until a receive comes back empty.
    pub async fn drain(&self, queue_url: &str) -> Vec<Message> {
        let mut all = Vec::new();
        loop {
            let depth = self.depth(queue_url).await as usize;
            if depth == 0 {
                return all;
            }
            all.extend(self.take(queue_url, depth, Duration::from_secs(60)).await);
        }
    }

    /// `n` decisions, as JSON bodies keyed by receipt id (later duplicates overwrite).
    pub async fn decisions(&self, n: usize, timeout: Duration) -> Vec<(Value, Message)> {
        self.take(&self.result_url, n, timeout)
            .await
            .into_iter()
            .map(|m| {
                (
                    serde_json::from_str(m.body().unwrap()).expect("decision is JSON"),
                    m,
                )
            })
            .collect()
    }

    /// Visible + in-flight + delayed messages on a queue.
    pub async fn depth(&self, queue_url: &str) -> u64 {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .expect("queue attributes");
        let attrs = out.attributes().cloned().unwrap_or_default();
        [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        ]
        .iter()
        .map(|k| {
            attrs
                .get(k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
    }
}

pub async fn create_queue(
    sqs: &Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> String {
    sqs.create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes))
        .send()
        .await
        .expect("create queue")
        .queue_url()
        .unwrap()
        .to_owned()
}

pub async fn queue_arn(sqs: &Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue arn")
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap()
}

/// A running `receipt-verifier` process whose output is collected line by line (by
/// plain threads, so no async runtime's child-process handling is involved), killed on drop.
pub struct Worker {
    pid: u32,
    exited: Option<tokio::sync::oneshot::Receiver<std::process::ExitStatus>>,
    status: Option<std::process::ExitStatus>,
    readers: Vec<std::thread::JoinHandle<()>>,
    logs: Arc<Mutex<Vec<String>>>,
    logged: Arc<Notify>,
    started: Instant,
}

impl Worker {
    /// Starts `receipt-verifier` with `args`.
    pub async fn spawn(
        args: &[&str],
        env: Vec<(String, String)>,
        overrides: &[(&str, &str)],
    ) -> Self {
        Self::spawn_binary(env!("CARGO_BIN_EXE_receipt-verifier"), args, env, overrides).await
    }

    /// Starts one of the package's binaries with `args` and nothing but `env` (and
    /// `PATH`) in its environment; an empty override removes a variable.
    pub async fn spawn_binary(
        binary: &str,
        args: &[&str],
        env: Vec<(String, String)>,
        overrides: &[(&str, &str)],
    ) -> Self {
        use std::io::BufRead;
        let mut command = std::process::Command::new(binary);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in overrides {
            if v.is_empty() {
                command.env_remove(k);
            } else {
                command.env(k, v);
            }
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let logged = Arc::new(Notify::new());
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stderr.take().unwrap()),
            Box::new(child.stdout.take().unwrap()),
        ];
        let readers = streams
            .into_iter()
            .map(|stream| {
                let (logs, logged) = (logs.clone(), logged.clone());
                std::thread::spawn(move || {
                    for line in std::io::BufReader::new(stream).lines() {
                        let Ok(line) = line else { break };
                        if std::env::var_os("TEST_LOG").is_some() {
                            eprintln!("[worker] {line}");
                        }
                        logs.lock().unwrap().push(line);
                        logged.notify_waiters();
                    }
                })
            })
            .collect();
        let pid = child.id();
        let (tx, exited) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = tx.send(status);
            }
        });
        Self {
            pid,
            exited: Some(exited),
            status: None,
            readers,
            logs,
            logged,
            started: Instant::now(),
        }
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits for a log line containing every one of `needles`.
    pub async fn wait_for_log(&self, needles: &[&str], timeout: Duration) -> String {
        let found = || {
            self.logs
                .lock()
                .unwrap()
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .cloned()
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.logged.notified();
            if let Some(line) = found() {
                return line;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "no log line with {needles:?} within {timeout:?}; logs:\n{}",
                    self.logs().join("\n")
                );
            }
        }
    }

    pub fn signal(&self, signal: &str) {
        assert!(self.status.is_none(), "the worker has exited");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit and its output to be read; returns its exit code.
    pub async fn exit_code(&mut self, timeout: Duration) -> Option<i32> {
        if let Some(exited) = self.exited.take() {
            let status = tokio::time::timeout(timeout, exited)
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "worker did not exit within {timeout:?}; logs:\n{}",
                        self.logs().join("\n")
                    )
                })
                .expect("worker's exit status");
            self.status = Some(status);
            for reader in self.readers.drain(..) {
                let _ = tokio::task::spawn_blocking(move || reader.join()).await;
            }
        }
        self.status.and_then(|s| s.code())
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Groups decisions by receipt id.
pub fn by_receipt(decisions: &[(Value, Message)]) -> HashMap<String, Value> {
    decisions
        .iter()
        .map(|(d, _)| (d["receipt_id"].as_str().unwrap().to_owned(), d.clone()))
        .collect()
}

pub fn attribute(message: &Message, name: &str) -> Option<String> {
    message
        .message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
        .map(str::to_owned)
}

/// A validator for one of the JSON Schemas in `schemas/`.
pub fn schema(name: &str) -> jsonschema::Validator {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(name);
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Python shared by the tests that deploy a CloudFormation template into moto and then run
/// a binary with nothing but the stack's policy: read a managed policy's document, create
/// a user with given policies and an access key, translate a policy into moto's action
/// names, and switch on moto's authentication. Prepend it to a deploy script.
pub const MOTO_IAM_PY: &str = r#"
import json, urllib.request

def policy_document(iam, policy_arn):
    version = iam.get_policy(PolicyArn=policy_arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=policy_arn, VersionId=version)["PolicyVersion"]["Document"]
    return json.loads(document) if isinstance(document, str) else document

def user(iam, name, managed, inline):
    iam.create_user(UserName=name)
    for arn in managed:
        iam.attach_user_policy(UserName=name, PolicyArn=arn)
    for policy_name, statements in inline.items():
        iam.put_user_policy(UserName=name, PolicyName=policy_name, PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": statements}))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}

# AWS authorises SendMessageBatch, DeleteMessageBatch and ChangeMessageVisibilityBatch by the
# non-batch action names, GetQueueUrl against the queue's ARN, and DynamoDB calls against
# the table's (or index's) ARN. moto checks the batch names themselves, and GetQueueUrl and
# every DynamoDB call against "*". This translates a policy into moto's terms, statement by
# statement, and grants no action the policy does not name.
def moto_terms(document):
    terms = []
    for statement in document["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        batch = [a + "Batch" for a in actions
                 if a in ("sqs:SendMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility")]
        if batch:
            terms.append({"Effect": "Allow", "Action": batch, "Resource": statement["Resource"]})
        if "sqs:GetQueueUrl" in actions:
            terms.append({"Effect": "Allow", "Action": "sqs:GetQueueUrl", "Resource": "*"})
        dynamodb = [a for a in actions if a.startswith("dynamodb:")]
        if dynamodb:
            terms.append({"Effect": "Allow", "Action": dynamodb, "Resource": "*"})
    return terms

def admin_and(iam, name, policy_arn, document):
    """An administrator for the test's own calls, and `name` with only `policy_arn`."""
    admin = user(iam, "infra-test-admin", [], {"all": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
    limited = user(iam, name, [policy_arn], {"moto-action-names": moto_terms(document)})
    return admin, limited

def enable_auth(endpoint):
    """From the next request on, moto checks credentials and permissions."""
    urllib.request.urlopen(urllib.request.Request(
        endpoint + "/moto-api/reset-auth", data=b"0", method="POST",
        headers={"Content-Type": "text/plain"})).read()
"#;

/// The Python of the virtualenv that holds moto (and so boto3).
pub fn venv_python() -> PathBuf {
    if let Ok(server) = std::env::var("MOTO_SERVER") {
        let python = std::path::Path::new(&server).with_file_name("python");
        if python.exists() {
            return python;
        }
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

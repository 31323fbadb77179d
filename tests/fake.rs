//! Integration tests of the `bootpay-fake` binary: each test starts the real process on a free
//! port with its own fixture, talks to it over HTTP, and kills it when done. Webhook tests
//! also start a small receiver on a free port and wait on the fake's delivery log, never on
//! fixed sleeps.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail"
)]

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};

const APP_ID: &str = "test-app";
const PRIVATE_KEY: &str = "test-key";
const CLIENT_KEY: &str = "test-client";
const SECRET_KEY: &str = "test-secret";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test waits for webhooks; well above a 5 s attempt timeout.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(20);
/// What Bootpay's v2 expects a receiver to answer.
const V2_ACK: &str = r#"{"success": true}"#;

/// A running fake, killed (and its fixture removed) on drop.
struct Fake {
    child: Child,
    fixture: PathBuf,
    /// `http://127.0.0.1:PORT/v2`, as printed by the fake.
    api: String,
    /// `http://127.0.0.1:PORT`, printed second as the v1 URL.
    root: String,
    http: reqwest::Client,
}

impl Fake {
    fn start(receipts: Value) -> Self {
        Self::start_with(receipts, &[])
    }

    fn start_with(receipts: Value, extra_args: &[&str]) -> Self {
        let fixture = write_fixture(&json!({ "receipts": receipts }));
        let mut child = fake_command()
            .arg("--receipts")
            .arg(&fixture)
            .args(extra_args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn bootpay-fake");
        let stdout = child.stdout.take().expect("piped stdout");
        // The read blocks, so it runs on a thread and the wait is bounded.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let (mut first, mut second) = (String::new(), String::new());
            let _ = stdout.read_line(&mut first);
            let _ = stdout.read_line(&mut second);
            let _ = tx.send((first, second));
        });
        let (first, second) = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(lines) => lines,
            Err(error) => {
                let _ = child.kill();
                panic!("bootpay-fake did not announce its URLs: {error}");
            }
        };
        let api = first
            .trim()
            .strip_prefix("BOOTPAY_API_URL=")
            .unwrap_or_else(|| panic!("unexpected first stdout line {first:?}"))
            .to_owned();
        let root = api.strip_suffix("/v2").expect("URL ends in /v2").to_owned();
        assert_eq!(second, format!("BOOTPAY_V1_API_URL={root}\n"));
        Self {
            child,
            fixture,
            api,
            root,
            http: reqwest::Client::new(),
        }
    }

    fn v2(&self, path: &str) -> String {
        format!("{}/{path}", self.api)
    }

    fn v1(&self, path: &str) -> String {
        format!("{}/{path}", self.root)
    }

    fn control(&self, path: &str) -> String {
        format!("{}/_fake/{path}", self.root)
    }

    async fn token(&self) -> String {
        let response = self
            .http
            .post(self.v2("request/token"))
            .json(&json!({ "application_id": APP_ID, "private_key": PRIVATE_KEY }))
            .send()
            .await
            .expect("token request");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("token JSON");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    async fn lookup(&self, receipt_id: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .get(self.v2(&format!("receipt/{receipt_id}?lookup_user_data=false")));
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        request.send().await.expect("lookup request")
    }

    async fn post_v2(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.v2(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("v2 request")
    }

    async fn put_control(&self, path: &str, body: Value) {
        let response = self
            .http
            .put(self.control(path))
            .json(&body)
            .send()
            .await
            .expect("control request");
        assert!(response.status().is_success(), "PUT {path}: {response:?}");
    }

    async fn post_control(&self, path: &str) {
        let response = self
            .http
            .post(self.control(path))
            .send()
            .await
            .expect("control request");
        assert!(response.status().is_success(), "POST {path}: {response:?}");
    }

    async fn stats(&self) -> Value {
        self.http
            .get(self.control("stats"))
            .send()
            .await
            .expect("stats request")
            .json()
            .await
            .expect("stats JSON")
    }

    /// A token from v1's `POST /request/token`, posted as a form.
    async fn v1_token(&self) -> String {
        let response = self
            .v1_form(
                "request/token",
                None,
                &format!("application_id={APP_ID}&private_key={PRIVATE_KEY}"),
            )
            .await;
        let (status, body) = envelope(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"]["token"].as_str().expect("token").to_owned()
    }

    /// A v1 GET with the token raw in `Authorization`, as v1 sends it.
    async fn v1_get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(self.v1(path));
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, token);
        }
        request.send().await.expect("v1 request")
    }

    /// A v1 POST of a form body, as the python modules send it.
    async fn v1_form(&self, path: &str, token: Option<&str>, form: &str) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.v1(path))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form.to_owned());
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, token);
        }
        request.send().await.expect("v1 request")
    }

    /// A v1 POST of a JSON body, as the Java, Node and Go modules send it.
    async fn v1_json(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.v1(path))
            .header(AUTHORIZATION, token)
            .json(&body)
            .send()
            .await
            .expect("v1 request")
    }

    /// A control POST with a JSON body, answered as it comes.
    async fn post_control_json(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.control(path))
            .json(&body)
            .send()
            .await
            .expect("control request")
    }

    /// The webhook delivery log.
    async fn deliveries(&self) -> Vec<Value> {
        let log: Value = self
            .http
            .get(self.control("webhooks"))
            .send()
            .await
            .expect("webhook log request")
            .json()
            .await
            .expect("webhook log JSON");
        log["deliveries"].as_array().expect("deliveries").clone()
    }

    /// Polls the delivery log until `done` holds for it, and returns it.
    async fn deliveries_when(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + WEBHOOK_TIMEOUT;
        loop {
            let deliveries = self.deliveries().await;
            if done(&deliveries) {
                return deliveries;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {deliveries:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the log holds `count` deliveries, all acknowledged, and returns them.
    async fn delivered(&self, count: usize) -> Vec<Value> {
        self.deliveries_when(&format!("{count} delivered webhooks"), |log| {
            log.len() == count && log.iter().all(|d| d["delivered"] == true)
        })
        .await
    }

    /// A v2 POST authenticated with `Basic base64(client_key:secret_key)`.
    async fn post_basic(&self, path: &str, secret_key: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.v2(path))
            .basic_auth(CLIENT_KEY, Some(secret_key))
            .json(&body)
            .send()
            .await
            .expect("v2 request")
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.fixture);
    }
}

/// The fake with the test credentials, independent of the caller's environment.
fn fake_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bootpay-fake"));
    command
        .args(["--listen", "127.0.0.1:0"])
        .args(["--application-id", APP_ID, "--private-key", PRIVATE_KEY])
        .args(["--client-key", CLIENT_KEY, "--secret-key", SECRET_KEY])
        .env_remove("BOOTPAY_FAKE_RECEIPTS")
        .env_remove("BOOTPAY_FAKE_LATENCY_MS")
        .env_remove("BOOTPAY_FAKE_CHAOS_RATE")
        .env_remove("BOOTPAY_FAKE_TOKEN_TTL_SECS")
        .env_remove("BOOTPAY_FAKE_WEBHOOK_URL")
        .env_remove("BOOTPAY_FAKE_WEBHOOK_V1_URL")
        .env_remove("BOOTPAY_FAKE_WEBHOOK_V1_CONTENT_TYPE")
        .env_remove("BOOTPAY_FAKE_WEBHOOK_RETRY_BASE_MS")
        .env_remove("BOOTPAY_FAKE_WEBHOOK_ATTEMPTS")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    command
}

fn write_fixture(contents: &Value) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "bootpay-fake-test-{}-{}.json",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, contents.to_string()).expect("write fixture");
    path
}

/// Waits for a child to exit, killing it and failing if it takes longer than `limit`.
fn wait_with_limit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("bootpay-fake did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn paid(receipt_id: &str) -> Value {
    json!({
        "receipt_id": receipt_id, "order_id": format!("o-{receipt_id}"), "price": 3000,
        "currency": "KRW", "status": 1, "status_locale": "결제완료", "order_name": "Gems",
        "sandbox": true, "card_data": { "tid": "T1" }
    })
}

fn awaiting_confirm(receipt_id: &str) -> Value {
    json!({ "receipt_id": receipt_id, "order_id": "o-2", "price": 12000, "status": 2 })
}

/// A v1 answer: its HTTP status and its envelope, whose `status` must repeat the HTTP
/// status, and whose `code` is 0 on success and negative otherwise.
async fn envelope(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response.headers()[CONTENT_TYPE].to_str().expect("ascii");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = response.json().await.expect("envelope JSON");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    let code = body["code"].as_i64().expect("numeric code");
    let message = body["message"].as_str().expect("message");
    if status.is_success() {
        assert_eq!((code, message), (0, ""), "{body}");
        assert!(body["data"].is_object(), "{body}");
    } else {
        assert!(code < 0 && !message.is_empty(), "{body}");
        assert_eq!(body["data"], Value::Null, "{body}");
    }
    (status, body)
}

async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("error JSON");
    body["error_code"].as_str().expect("error_code").to_owned()
}

#[tokio::test]
async fn issues_tokens_for_json_and_form_credentials_only() {
    let fake = Fake::start(json!([]));

    let response = fake
        .http
        .post(fake.v2("request/token"))
        .json(&json!({ "application_id": APP_ID, "private_key": PRIVATE_KEY }))
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("token JSON");
    let token = body["access_token"].as_str().expect("access_token");
    assert!(!token.is_empty());
    assert_eq!(body["expire_in"], 1800);
    let server_time = body["server_time"].as_u64().expect("server_time");
    assert_eq!(body["expired_at"].as_u64(), Some(server_time + 1800));

    // Old clients post a form to the `.json` path; the fresh token is handed out again.
    let response = fake
        .http
        .post(fake.v2("request/token.json"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("application_id={APP_ID}&private_key={PRIVATE_KEY}"))
        .send()
        .await
        .expect("form token request");
    assert_eq!(response.status(), StatusCode::OK);
    let form: Value = response.json().await.expect("token JSON");
    assert_eq!(form["access_token"].as_str(), Some(token));

    for bad in [
        json!({ "application_id": APP_ID, "private_key": "wrong" }),
        json!({ "application_id": APP_ID }),
        json!("not an object"),
    ] {
        let response = fake
            .http
            .post(fake.v2("request/token"))
            .json(&bad)
            .send()
            .await
            .expect("token request");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(response).await, "TOKEN_KEY_INVALID");
    }

    let stats = fake.stats().await;
    assert_eq!(stats["token_requests"], 5);
    assert_eq!(stats["tokens_issued"], 1);
    assert_eq!(stats["token_rejected"], 3);
}

#[tokio::test]
async fn lookup_requires_a_live_bearer_token() {
    let fake = Fake::start(json!([paid("r-1")]));

    let response = fake.lookup("r-1", None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(response).await, "INVALID_ACCESS_TOKEN");
    let response = fake.lookup("r-1", Some("made-up")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // A v1-style bare token is not accepted by v2.
    let token = fake.token().await;
    let response = fake
        .http
        .get(fake.v2("receipt/r-1"))
        .header(AUTHORIZATION, &token)
        .send()
        .await
        .expect("lookup request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let response = fake.lookup("r-1", Some(&token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[CONTENT_TYPE].to_str().expect("ascii");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert_eq!(
        response.json::<Value>().await.expect("receipt"),
        paid("r-1")
    );

    fake.post_control("tokens/revoke").await;
    let response = fake.lookup("r-1", Some(&token)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(response).await, "INVALID_ACCESS_TOKEN");

    let renewed = fake.token().await;
    assert_ne!(renewed, token);
    assert_eq!(
        fake.lookup("r-1", Some(&renewed)).await.status(),
        StatusCode::OK
    );

    fake.post_control("tokens/expire").await;
    assert_eq!(
        fake.lookup("r-1", Some(&renewed)).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let stats = fake.stats().await;
    assert_eq!(stats["unauthorized"], 5);
    assert_eq!(stats["receipt_requests"], 7);
    assert_eq!(stats["receipts"]["r-1"]["lookups"], 7);
    assert_eq!(stats["tokens_issued"], 2);
}

#[tokio::test]
async fn unknown_receipts_and_routes_are_404() {
    let fake = Fake::start(json!([]));
    let token = fake.token().await;

    let response = fake.lookup("nope", Some(&token)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.expect("error JSON");
    assert_eq!(
        body,
        json!({ "error_code": "RC_NOT_FOUND", "message": "영수증 정보를 찾지 못했습니다." })
    );

    let response = fake
        .post_v2("confirm", &token, json!({ "receipt_id": "nope" }))
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(response).await, "RC_NOT_FOUND");

    for response in [
        fake.http.get(fake.v2("nowhere")).send().await,
        fake.http.get(fake.v2("confirm")).send().await,
    ] {
        let response = response.expect("request");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(error_code(response).await, "NOT_FOUND");
    }

    let stats = fake.stats().await;
    assert_eq!(stats["receipt_requests"], 1);
    assert_eq!(stats["confirm_requests"], 1);
    assert_eq!(stats["receipts"], json!({}));
}

#[tokio::test]
async fn confirm_moves_awaiting_receipts_to_paid_once() {
    let fake = Fake::start(json!([awaiting_confirm("r-2"), paid("r-1")]));
    let token = fake.token().await;

    let response = fake
        .post_v2("confirm", &token, json!({ "receipt_id": "r-2" }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let receipt: Value = response.json().await.expect("receipt");
    assert_eq!(receipt["status"], 1);
    assert_eq!(receipt["status_locale"], "결제완료");
    assert_eq!(receipt["price"], 12000);
    let purchased_at = receipt["purchased_at"].as_str().expect("purchased_at");
    assert!(purchased_at.ends_with("+09:00"), "{purchased_at}");
    assert!(humantime::parse_rfc3339_weak(&purchased_at[..19]).is_ok());

    let looked_up: Value = fake
        .lookup("r-2", Some(&token))
        .await
        .json()
        .await
        .expect("receipt");
    assert_eq!(looked_up, receipt);

    for id in ["r-2", "r-1"] {
        let response = fake
            .post_v2("confirm", &token, json!({ "receipt_id": id }))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error_code(response).await, "RC_NOT_CONFIRM_READY");
    }

    let stats = fake.stats().await;
    assert_eq!(stats["confirm_requests"], 3);
    assert_eq!(stats["receipts"]["r-2"]["confirms"], 2);
    assert_eq!(stats["receipts"]["r-2"]["lookups"], 1);
    assert_eq!(stats["receipts"]["r-2"]["status"], 1);
}

#[tokio::test]
async fn cancel_marks_receipts_cancelled_once() {
    let fake = Fake::start(json!([paid("r-full"), paid("r-part")]));
    let token = fake.token().await;

    let response = fake
        .post_v2("cancel", &token, json!({ "receipt_id": "r-full" }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let receipt: Value = response.json().await.expect("receipt");
    assert_eq!(receipt["status"], 20);
    assert_eq!(receipt["status_locale"], "결제취소완료");
    assert_eq!(receipt["cancelled_price"], 3000);
    assert!(receipt["cancelled_at"].is_string());

    let response = fake
        .post_v2("cancel", &token, json!({ "receipt_id": "r-full" }))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "RC_ALREADY_CANCELLED");

    let response = fake
        .post_v2(
            "cancel",
            &token,
            json!({ "receipt_id": "r-part", "cancel_price": 1000, "cancel_message": "환불" }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let receipt: Value = response.json().await.expect("receipt");
    assert_eq!(receipt["cancelled_price"], 1000);

    let stats = fake.stats().await;
    assert_eq!(stats["cancel_requests"], 3);
    assert_eq!(stats["receipts"]["r-full"]["status"], 20);
}

#[tokio::test]
async fn fail_first_counts_lookups_and_confirms_together() {
    let mut receipt = awaiting_confirm("r-flaky");
    receipt["fault"] = json!({ "fail_first": 2 });
    let fake = Fake::start(json!([receipt]));
    let token = fake.token().await;

    let response = fake.lookup("r-flaky", Some(&token)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!response.headers().contains_key(RETRY_AFTER));
    assert_eq!(error_code(response).await, "SERVER_ERROR");
    let response = fake
        .post_v2("confirm", &token, json!({ "receipt_id": "r-flaky" }))
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    let response = fake
        .post_v2("confirm", &token, json!({ "receipt_id": "r-flaky" }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let receipt: Value = response.json().await.expect("receipt");
    assert_eq!(receipt["status"], 1);
    assert!(receipt.get("fault").is_none());

    let stats = fake.stats().await;
    assert_eq!(stats["receipts"]["r-flaky"]["lookups"], 1);
    assert_eq!(stats["receipts"]["r-flaky"]["confirms"], 2);
    assert_eq!(stats["receipts"]["r-flaky"]["status"], 1);
}

#[tokio::test]
async fn rate_limited_receipts_carry_retry_after() {
    let mut custom = paid("r-429");
    custom["fault"] = json!({ "fail_first": 1, "fail_status": 429, "retry_after_secs": 7 });
    let mut default = paid("r-429-default");
    default["fault"] = json!({ "fail_first": 1, "fail_status": 429 });
    let fake = Fake::start(json!([custom, default]));
    let token = fake.token().await;

    for (id, retry_after) in [("r-429", "7"), ("r-429-default", "1")] {
        let response = fake.lookup(id, Some(&token)).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], retry_after);
        assert_eq!(fake.lookup(id, Some(&token)).await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn receipt_latency_delays_the_answer() {
    let mut slow = paid("r-slow");
    slow["fault"] = json!({ "latency_ms": 150 });
    let fake = Fake::start(json!([slow]));
    let token = fake.token().await;

    let started = Instant::now();
    assert_eq!(
        fake.lookup("r-slow", Some(&token)).await.status(),
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn outage_answers_html_until_lifted() {
    let fake = Fake::start(json!([paid("r-1")]));
    let token = fake.token().await;

    fake.put_control("outage", json!({ "down": true })).await;
    for response in [
        fake.lookup("r-1", Some(&token)).await,
        fake.http
            .post(fake.v2("request/token"))
            .json(&json!({ "application_id": APP_ID, "private_key": PRIVATE_KEY }))
            .send()
            .await
            .expect("token request"),
    ] {
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/html");
        let body = response.text().await.expect("body");
        assert_eq!(
            body,
            "<html><body><h1>503 Service Unavailable</h1></body></html>"
        );
    }
    let health = fake
        .http
        .get(fake.control("health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), StatusCode::OK);

    fake.put_control("outage", json!({ "down": false })).await;
    assert_eq!(
        fake.lookup("r-1", Some(&token)).await.status(),
        StatusCode::OK
    );

    // Answers given during the outage are counted too.
    let stats = fake.stats().await;
    assert_eq!(stats["token_requests"], 2);
    assert_eq!(stats["receipts"]["r-1"]["lookups"], 2);
}

#[tokio::test]
async fn control_api_replaces_receipts_and_credentials() {
    let fake = Fake::start(json!([]));
    let token = fake.token().await;

    let mut receipt = paid("r-new");
    receipt["fault"] = json!({ "fail_first": 1 });
    fake.put_control("receipts/r-new", receipt).await;
    assert_eq!(
        fake.lookup("r-new", Some(&token)).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        fake.lookup("r-new", Some(&token)).await.status(),
        StatusCode::OK
    );

    // The path supplies a missing receipt_id; a different one is refused.
    fake.put_control("receipts/r-bare", json!({ "status": 5, "price": 7000 }))
        .await;
    let receipt: Value = fake
        .lookup("r-bare", Some(&token))
        .await
        .json()
        .await
        .expect("receipt");
    assert_eq!(receipt["receipt_id"], "r-bare");
    let response = fake
        .http
        .put(fake.control("receipts/r-x"))
        .json(&json!({ "receipt_id": "r-y" }))
        .send()
        .await
        .expect("control request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    fake.put_control(
        "credentials",
        json!({ "application_id": "other", "private_key": "other-key" }),
    )
    .await;
    fake.post_control("tokens/revoke").await;
    let response = fake
        .http
        .post(fake.v2("request/token"))
        .json(&json!({ "application_id": APP_ID, "private_key": PRIVATE_KEY }))
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = fake
        .http
        .post(fake.v2("request/token"))
        .json(&json!({ "application_id": "other", "private_key": "other-key" }))
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn chaos_faults_every_call_at_rate_one() {
    let fake = Fake::start_with(
        json!([paid("r-1")]),
        &["--chaos-rate", "1", "--chaos-timeout-ms", "20"],
    );
    let token = fake.token().await;

    for _ in 0..25 {
        let response = fake.lookup("r-1", Some(&token)).await;
        let status = response.status();
        let retry_after = response.headers().get(RETRY_AFTER).cloned();
        let body = response.bytes().await.expect("body");
        let parsed = serde_json::from_slice::<Value>(&body);
        match status {
            StatusCode::OK => assert!(parsed.is_err(), "200 with a whole body: {parsed:?}"),
            StatusCode::TOO_MANY_REQUESTS => assert_eq!(retry_after.expect("Retry-After"), "1"),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(parsed.expect("JSON error")["error_code"], "SERVER_ERROR");
            }
            StatusCode::BAD_GATEWAY => assert!(parsed.is_err()),
            other => panic!("unexpected chaos status {other}"),
        }
    }

    let response = fake
        .http
        .put(fake.control("chaos"))
        .json(&json!({ "rate": 2.0 }))
        .send()
        .await
        .expect("control request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    fake.put_control("chaos", json!({ "rate": 0.0 })).await;
    assert_eq!(
        fake.lookup("r-1", Some(&token)).await.status(),
        StatusCode::OK
    );
}

#[test]
fn invalid_setup_exits_with_code_2() {
    let duplicate = write_fixture(&json!({ "receipts": [paid("r-1"), paid("r-1")] }));
    let no_id = write_fixture(&json!({ "receipts": [{ "price": 1 }] }));
    let not_json =
        std::env::temp_dir().join(format!("bootpay-fake-test-{}-bad.json", std::process::id()));
    std::fs::write(&not_json, "{ not json").expect("write fixture");
    let missing = std::env::temp_dir().join("bootpay-fake-test-does-not-exist.json");

    for fixture in [&duplicate, &no_id, &not_json, &missing] {
        let output = fake_command()
            .arg("--receipts")
            .arg(fixture)
            .output()
            .expect("run bootpay-fake");
        assert_eq!(output.status.code(), Some(2), "fixture {fixture:?}");
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("receipts fixture"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    for fixture in [duplicate, no_id, not_json] {
        let _ = std::fs::remove_file(fixture);
    }

    for flags in [["--chaos-rate", "1.5"], ["--listen", "nowhere"]] {
        let output = fake_command()
            .args(flags)
            .output()
            .expect("run bootpay-fake");
        assert_eq!(output.status.code(), Some(2), "flags {flags:?}");
    }
}

#[cfg(unix)]
#[test]
fn exits_cleanly_on_sigterm() {
    let mut fake = Fake::start(json!([]));
    let killed = Command::new("kill")
        .args(["-TERM", &fake.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = wait_with_limit(&mut fake.child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn v1_tokens_from_forms_and_json_at_either_path() {
    let fake = Fake::start(json!([paid("r-1")]));

    let response = fake
        .v1_form(
            "request/token",
            None,
            &format!("application_id={APP_ID}&private_key={PRIVATE_KEY}"),
        )
        .await;
    let (status, body) = envelope(response).await;
    assert_eq!(status, StatusCode::OK);
    let data = &body["data"];
    let token = data["token"].as_str().expect("token");
    assert!(!token.is_empty());
    let server_time = data["server_time"].as_u64().expect("server_time");
    assert_eq!(data["expired_at"].as_u64(), Some(server_time + 1800));

    // JSON at the `.json` path: the same token, with the same expiry.
    let response = fake
        .http
        .post(fake.v1("request/token.json"))
        .json(&json!({ "application_id": APP_ID, "private_key": PRIVATE_KEY }))
        .send()
        .await
        .expect("token request");
    let (status, again) = envelope(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["data"]["token"], token);
    assert_eq!(again["data"]["expired_at"], data["expired_at"]);

    for form in [
        format!("application_id={APP_ID}&private_key=wrong"),
        format!("application_id={APP_ID}"),
        String::new(),
    ] {
        let (status, body) = envelope(fake.v1_form("request/token", None, &form).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["code"], -2410);
    }

    // One token store: a v1 token works on v2 and a v2 token on v1.
    assert_eq!(
        fake.lookup("r-1", Some(token)).await.status(),
        StatusCode::OK
    );
    fake.post_control("tokens/revoke").await;
    let v2_token = fake.token().await;
    let (status, _) = envelope(fake.v1_get("receipt/r-1", Some(&v2_token)).await).await;
    assert_eq!(status, StatusCode::OK);

    let stats = fake.stats().await;
    assert_eq!(stats["token_requests"], 6);
    assert_eq!(stats["tokens_issued"], 2);
    assert_eq!(stats["token_rejected"], 3);
}

#[tokio::test]
async fn v1_lookups_take_the_raw_token_and_answer_v1s_shape() {
    let mut receipt = paid("r-1");
    receipt["method"] = json!("카드");
    receipt["method_symbol"] = json!("card");
    receipt["pg"] = json!("나이스페이먼츠");
    receipt["tax_free"] = json!(0);
    receipt["requested_at"] = json!("2024-05-01T10:00:00+09:00");
    receipt["purchased_at"] = json!("2024-05-01T01:00:31Z");
    receipt["receipt_url"] = json!("https://door.bootpay.co.kr/receipt/r-1");
    let fake = Fake::start(json!([receipt]));
    let token = fake.v1_token().await;

    let expected = json!({
        "receipt_id": "r-1", "order_id": "o-r-1", "name": "Gems", "price": 3000,
        "tax_free": 0, "remain_price": 3000, "remain_tax_free": 0, "cancelled_price": 0,
        "cancelled_tax_free": 0, "receipt_url": "https://door.bootpay.co.kr/receipt/r-1",
        "unit": "krw", "pg": "나이스페이먼츠", "method": "card", "pg_name": "나이스페이먼츠",
        "method_name": "카드", "requested_at": "2024-05-01 10:00:00",
        "purchased_at": "2024-05-01 10:00:31", "revoked_at": null, "status": 1,
        "status_en": "complete", "status_ko": "결제완료"
    });
    for path in ["receipt/r-1", "receipt/r-1.json"] {
        let (status, body) = envelope(fake.v1_get(path, Some(&token)).await).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body["data"], expected, "{path}");
    }

    // A Bearer prefix is v2's; v1 refuses it like a bad token.
    for authorization in [
        Some(format!("Bearer {token}")),
        Some("made-up".to_owned()),
        None,
    ] {
        let response = fake.v1_get("receipt/r-1", authorization.as_deref()).await;
        let (status, body) = envelope(response).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(body["code"], -2400);
    }

    let (status, body) = envelope(fake.v1_get("receipt/nope", Some(&token)).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "영수증 정보를 찾지 못했습니다.");

    // Unknown routes and methods get v1's envelope too.
    for response in [
        fake.v1_get("nowhere", Some(&token)).await,
        fake.v1_get("submit", Some(&token)).await,
    ] {
        let (status, _) = envelope(response).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    let stats = fake.stats().await;
    assert_eq!(stats["receipt_requests"], 6);
    assert_eq!(stats["receipts"]["r-1"]["lookups"], 5);
    assert_eq!(stats["unauthorized"], 3);
}

#[tokio::test]
async fn v1_submit_confirms_awaiting_receipts_once() {
    let fake = Fake::start(json!([awaiting_confirm("r-2"), awaiting_confirm("r-3")]));
    let token = fake.v1_token().await;

    let (status, body) = envelope(
        fake.v1_form("submit.json", Some(&token), "receipt_id=r-2")
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["receipt_id"], "r-2");
    assert_eq!(body["data"]["status"], 1);
    assert_eq!(body["data"]["status_en"], "complete");
    let purchased_at = body["data"]["purchased_at"].as_str().expect("purchased_at");
    assert_eq!(
        purchased_at.len(),
        "2024-05-01 10:00:31".len(),
        "{purchased_at}"
    );

    // v2 sees the same receipt, paid.
    let receipt: Value = fake
        .lookup("r-2", Some(&token))
        .await
        .json()
        .await
        .expect("receipt");
    assert_eq!(receipt["status"], 1);
    assert_eq!(receipt["status_locale"], "결제완료");

    let (status, body) = envelope(
        fake.v1_json("submit", &token, json!({ "receipt_id": "r-2" }))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].is_string());
    let (status, _) = envelope(
        fake.v1_json("submit", &token, json!({ "receipt_id": "r-3" }))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = envelope(
        fake.v1_json("submit", &token, json!({ "receipt_id": "nope" }))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = envelope(fake.v1_form("submit", Some(&token), "").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let stats = fake.stats().await;
    assert_eq!(stats["confirm_requests"], 5);
    assert_eq!(stats["receipts"]["r-2"]["confirms"], 2);
}

#[tokio::test]
async fn v1_cancels_in_full_in_parts_and_once_per_cancel_id() {
    let fake = Fake::start(json!([
        paid("r-full"),
        paid("r-part"),
        awaiting_confirm("r-unpaid")
    ]));
    let token = fake.v1_token().await;
    let cancel = |form: &'static str| fake.v1_form("cancel.json", Some(&token), form);

    let (status, first) =
        envelope(cancel("receipt_id=r-part&price=1000&cancel_id=c-1&name=test&reason=why").await)
            .await;
    assert_eq!(status, StatusCode::OK);
    let data = &first["data"];
    assert_eq!(data["receipt_id"], "r-part");
    assert_eq!(data["request_cancel_price"], 1000);
    assert_eq!(data["cancelled_price"], 1000);
    assert_eq!(data["remain_price"], 2000);
    assert_eq!(data["cancelled_tax_free"], 0);
    assert_eq!(data["remain_tax_free"], 0);
    assert_eq!(data["tid"], "T1");
    assert!(data["revoked_at"].is_string());

    // The same cancel_id: the same answer, no second cancel.
    let (status, repeated) =
        envelope(cancel("receipt_id=r-part&price=1000&cancel_id=c-1").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(repeated, first);

    // JSON at the bare path; another id adds up.
    let response = fake
        .v1_json(
            "cancel",
            &token,
            json!({ "receipt_id": "r-part", "price": 500, "cancel_id": "c-2" }),
        )
        .await;
    let (status, second) = envelope(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["data"]["cancelled_price"], 1500);

    for (form, expected) in [
        (
            "receipt_id=r-part&price=1501&cancel_id=c-3",
            StatusCode::BAD_REQUEST,
        ),
        (
            "receipt_id=r-part&price=0&cancel_id=c-3",
            StatusCode::BAD_REQUEST,
        ),
        ("receipt_id=r-part&price=lots", StatusCode::BAD_REQUEST),
        ("receipt_id=r-unpaid", StatusCode::BAD_REQUEST),
        ("receipt_id=nope", StatusCode::NOT_FOUND),
        ("price=1", StatusCode::BAD_REQUEST),
    ] {
        let (status, _) = envelope(cancel(form).await).await;
        assert_eq!(status, expected, "{form}");
    }

    let (status, full) = envelope(cancel("receipt_id=r-full").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(full["data"]["request_cancel_price"], 3000);
    assert_eq!(full["data"]["remain_price"], 0);
    let (status, _) = envelope(cancel("receipt_id=r-full").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, looked_up) = envelope(fake.v1_get("receipt/r-part", Some(&token)).await).await;
    assert_eq!(looked_up["data"]["status"], 20);
    assert_eq!(looked_up["data"]["status_en"], "cancelled");
    assert_eq!(looked_up["data"]["remain_price"], 1500);

    let stats = fake.stats().await;
    assert_eq!(stats["cancel_requests"], 11);
    assert_eq!(stats["receipts"]["r-part"]["cancels"], 6);
    assert_eq!(stats["receipts"]["r-unpaid"]["status"], 2);
}

#[tokio::test]
async fn v1_shares_the_outage_and_the_faults() {
    let mut flaky = paid("r-flaky");
    flaky["fault"] = json!({ "fail_first": 2, "fail_status": 429, "retry_after_secs": 3 });
    let fake = Fake::start(json!([flaky]));
    let token = fake.v1_token().await;

    // fail_first counts v1 and v2 calls together; v1's failure is an envelope.
    let response = fake.v1_get("receipt/r-flaky", Some(&token)).await;
    assert_eq!(response.headers()[RETRY_AFTER], "3");
    let (status, _) = envelope(response).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        fake.lookup("r-flaky", Some(&token)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let (status, _) = envelope(fake.v1_get("receipt/r-flaky", Some(&token)).await).await;
    assert_eq!(status, StatusCode::OK);

    fake.put_control("outage", json!({ "down": true })).await;
    for response in [
        fake.v1_get("receipt/r-flaky", Some(&token)).await,
        fake.v1_form("request/token", None, "application_id=a&private_key=b")
            .await,
        fake.v1_get("nowhere", None).await,
    ] {
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/html");
    }
    fake.put_control("outage", json!({ "down": false })).await;

    let stats = fake.stats().await;
    assert_eq!(stats["receipts"]["r-flaky"]["lookups"], 4);
    assert_eq!(stats["token_requests"], 2);
}

#[tokio::test]
async fn v1_chaos_answers_in_envelopes() {
    let fake = Fake::start_with(
        json!([paid("r-1")]),
        &["--chaos-rate", "1", "--chaos-timeout-ms", "20"],
    );
    let token = fake.v1_token().await;
    for _ in 0..25 {
        let response = fake.v1_get("receipt/r-1", Some(&token)).await;
        let status = response.status();
        let body = response.bytes().await.expect("body");
        let parsed = serde_json::from_slice::<Value>(&body);
        match status {
            StatusCode::OK => assert!(parsed.is_err(), "200 with a whole body: {parsed:?}"),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                let envelope = parsed.expect("JSON envelope");
                assert_eq!(envelope["status"], status.as_u16());
                assert!(envelope["code"].as_i64().is_some_and(|c| c < 0));
            }
            StatusCode::BAD_GATEWAY => assert!(parsed.is_err()),
            other => panic!("unexpected chaos status {other}"),
        }
    }
}

#[tokio::test]
async fn v2_accepts_basic_keys() {
    let fake = Fake::start(json!([paid("r-1"), awaiting_confirm("r-2")]));

    let response = fake
        .http
        .get(fake.v2("receipt/r-1?lookup_user_data=false"))
        .basic_auth(CLIENT_KEY, Some(SECRET_KEY))
        .send()
        .await
        .expect("lookup request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.expect("receipt"),
        paid("r-1")
    );
    let response = fake
        .post_basic("confirm", SECRET_KEY, json!({ "receipt_id": "r-2" }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = fake
        .post_basic(
            "cancel",
            SECRET_KEY,
            json!({ "receipt_id": "r-1", "cancel_price": 100 }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let response = fake
        .post_basic("confirm", "wrong", json!({ "receipt_id": "r-2" }))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(response).await, "TOKEN_KEY_INVALID");
    // Basic is v2's: v1 wants its raw token.
    let (status, _) = envelope(
        fake.http
            .get(fake.v1("receipt/r-1"))
            .basic_auth(CLIENT_KEY, Some(SECRET_KEY))
            .send()
            .await
            .expect("lookup request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Rotated keys: the old pair is refused, the new one accepted; the rest stays.
    fake.put_control(
        "credentials",
        json!({ "client_key": CLIENT_KEY, "secret_key": "rotated" }),
    )
    .await;
    let response = fake
        .post_basic("cancel", SECRET_KEY, json!({ "receipt_id": "r-1" }))
        .await;
    assert_eq!(error_code(response).await, "TOKEN_KEY_INVALID");
    let response = fake
        .post_basic("cancel", "rotated", json!({ "receipt_id": "r-1" }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!fake.token().await.is_empty());

    let stats = fake.stats().await;
    assert_eq!(stats["unauthorized"], 3);
    assert_eq!(stats["tokens_issued"], 1);
}

#[tokio::test]
async fn v2_cancels_add_up_and_refuse_what_bootpay_refuses() {
    let fake = Fake::start(json!([
        paid("r-1"),
        paid("r-2"),
        awaiting_confirm("r-unpaid")
    ]));
    let token = fake.token().await;
    let cancel = |body: Value| fake.post_v2("cancel", &token, body);

    // Two partial cancels with their own ids add up (status 20 from the first).
    let response =
        cancel(json!({ "receipt_id": "r-1", "cancel_price": 1000, "cancel_id": "c-1" })).await;
    assert_eq!(response.status(), StatusCode::OK);
    let receipt: Value = response.json().await.expect("receipt");
    assert_eq!(receipt["status"], 20);
    assert_eq!(receipt["status_locale"], "결제취소완료");
    assert_eq!(receipt["cancelled_price"], 1000);
    let response =
        cancel(json!({ "receipt_id": "r-1", "cancel_price": 500, "cancel_id": "c-2" })).await;
    assert_eq!(response.status(), StatusCode::OK);
    let receipt: Value = response.json().await.expect("receipt");
    assert_eq!(receipt["cancelled_price"], 1500);

    // The same cancel_id again answers the receipt as it is, without cancelling again.
    let response =
        cancel(json!({ "receipt_id": "r-1", "cancel_price": 500, "cancel_id": "c-2" })).await;
    assert_eq!(response.status(), StatusCode::OK);
    let repeated: Value = response.json().await.expect("receipt");
    assert_eq!(repeated, receipt);

    for (body, code) in [
        (
            json!({ "receipt_id": "r-1", "cancel_price": 1501 }),
            "RC_CANCEL_PRICE_EXCEEDED",
        ),
        (
            json!({ "receipt_id": "r-1", "cancel_price": 0 }),
            "RC_CANCEL_PRICE_EXCEEDED",
        ),
        (
            json!({ "receipt_id": "r-1", "cancel_price": -1 }),
            "RC_CANCEL_PRICE_EXCEEDED",
        ),
        (json!({ "receipt_id": "r-unpaid" }), "RC_NOT_CANCELLABLE"),
        (
            json!({ "receipt_id": "r-unpaid", "cancel_price": 1 }),
            "RC_NOT_CANCELLABLE",
        ),
    ] {
        let response = cancel(body.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(response).await, code, "{body}");
    }
    let response = cancel(json!({ "receipt_id": "nope" })).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // What remains goes without an amount; after that nothing can be cancelled.
    let response =
        cancel(json!({ "receipt_id": "r-1", "cancel_id": "", "cancel_price": null })).await;
    assert_eq!(response.status(), StatusCode::OK);
    let receipt: Value = response.json().await.expect("receipt");
    assert_eq!(receipt["cancelled_price"], 3000);
    for body in [
        json!({ "receipt_id": "r-1" }),
        json!({ "receipt_id": "r-1", "cancel_price": 1, "cancel_id": "c-9" }),
    ] {
        let response = cancel(body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error_code(response).await, "RC_ALREADY_CANCELLED");
    }
    // A full cancel straight away.
    let response = cancel(json!({ "receipt_id": "r-2", "cancel_id": "f-1" })).await;
    let receipt: Value = response.json().await.expect("receipt");
    assert_eq!(receipt["cancelled_price"], 3000);
    assert!(receipt["cancelled_at"].is_string());

    let stats = fake.stats().await;
    assert_eq!(stats["receipts"]["r-1"]["cancels"], 9);
    assert_eq!(stats["receipts"]["r-unpaid"]["status"], 2);
}

#[tokio::test]
async fn token_expiry_is_fixed_when_the_token_is_issued() {
    let fake = Fake::start(json!([]));
    let request = || {
        fake.http
            .post(fake.v2("request/token"))
            .json(&json!({ "application_id": APP_ID, "private_key": PRIVATE_KEY }))
            .send()
    };
    let first: Value = request().await.expect("token").json().await.expect("JSON");
    // Into the next second of the server's clock.
    std::thread::sleep(Duration::from_millis(1100));
    let again: Value = request().await.expect("token").json().await.expect("JSON");
    assert_eq!(again["access_token"], first["access_token"]);
    assert_eq!(again["expired_at"], first["expired_at"]);
    let (t0, t1) = (
        first["server_time"].as_u64().expect("server_time"),
        again["server_time"].as_u64().expect("server_time"),
    );
    assert!(t1 > t0, "{first} {again}");
    let expire_in = again["expire_in"].as_u64().expect("expire_in");
    assert!((1798..1800).contains(&expire_in), "{again}");

    // v1 hands out the same token with the same expiry.
    let response = fake
        .v1_form(
            "request/token",
            None,
            &format!("application_id={APP_ID}&private_key={PRIVATE_KEY}"),
        )
        .await;
    let (_, body) = envelope(response).await;
    assert_eq!(body["data"]["token"], first["access_token"]);
    assert_eq!(body["data"]["expired_at"], first["expired_at"]);
}

// ---- webhooks ----

/// A request a receiver got.
#[derive(Debug, Clone)]
struct Hit {
    content_type: String,
    body: Vec<u8>,
}

impl Hit {
    fn json(&self) -> Value {
        assert_eq!(self.content_type, "application/json");
        serde_json::from_slice(&self.body).expect("JSON webhook")
    }

    fn form(&self) -> Vec<(String, String)> {
        assert_eq!(self.content_type, "application/x-www-form-urlencoded");
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }
}

/// One field of a form, which must appear once.
fn form_field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    let values: Vec<&str> = form
        .iter()
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(values.len(), 1, "{name} in {form:?}");
    values[0]
}

#[derive(Clone)]
struct Script {
    hits: Arc<Mutex<Vec<Hit>>>,
    /// The answer to the n-th request; the last one repeats. Empty: never answers.
    answers: Arc<Vec<(u16, &'static str)>>,
}

/// A webhook receiver on a free local port, stopped on drop.
struct Receiver {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(answers: &[(u16, &'static str)]) -> Self {
        let script = Script {
            hits: Arc::default(),
            answers: Arc::new(answers.to_vec()),
        };
        let hits = script.hits.clone();
        let router = axum::Router::new().fallback(receive).with_state(script);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let address = listener.local_addr().expect("receiver address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url: format!("http://{address}/hook"),
            hits,
            server,
        }
    }

    /// A receiver that takes requests and never answers.
    async fn silent() -> Self {
        Self::start(&[]).await
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    axum::extract::State(script): axum::extract::State<Script>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let index = {
        let mut hits = script.hits.lock().unwrap();
        hits.push(Hit {
            content_type,
            body: body.to_vec(),
        });
        hits.len() - 1
    };
    match script.answers.get(index).or(script.answers.last()) {
        Some(&(status, answer)) => (StatusCode::from_u16(status).unwrap(), answer).into_response(),
        None => std::future::pending().await,
    }
}

/// An issued virtual account due in an hour.
fn vbank(receipt_id: &str) -> Value {
    json!({
        "receipt_id": receipt_id, "order_id": format!("o-{receipt_id}"), "price": 9000,
        "currency": "KRW", "status": 5, "status_locale": "가상계좌발급완료",
        "order_name": "Gems", "vbank_due_in_secs": 3600
    })
}

/// `secs` since the epoch as KST wall time, date and time joined by `separator`.
fn kst(secs: u64, separator: char) -> String {
    let local = secs + 9 * 3600;
    let (days, time) = ((local / 86_400) as i64, local % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}{separator}{:02}:{:02}:{:02}",
        time / 3600,
        time % 3600 / 60,
        time % 60
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A v2 webhook body without its `webhook_type`, and that type.
fn split_webhook(mut webhook: Value) -> (Value, String) {
    let kind = webhook
        .as_object_mut()
        .expect("webhook object")
        .remove("webhook_type")
        .expect("webhook_type");
    (
        webhook,
        kind.as_str().expect("webhook_type text").to_owned(),
    )
}

#[tokio::test]
async fn v2_webhooks_report_every_change_with_the_receipt_as_served() {
    let receiver = Receiver::start(&[(200, V2_ACK)]).await;
    let fake = Fake::start(json!([
        awaiting_confirm("r-confirm"),
        vbank("r-vbank"),
        paid("r-paid")
    ]));
    fake.put_control("webhooks", json!({ "v2_url": receiver.url }))
        .await;
    let token = fake.token().await;
    let served = |receipt_id: &'static str| {
        let (fake, token) = (&fake, &token);
        async move {
            let response = fake.lookup(receipt_id, Some(token)).await;
            response.json::<Value>().await.expect("receipt")
        }
    };
    // Waits for the n-th delivery and answers its body, checked against what the fake now
    // serves for the receipt, and its webhook_type.
    let next_webhook = |count: usize| {
        let (fake, receiver) = (&fake, &receiver);
        async move {
            let log = fake.delivered(count).await;
            let delivery = &log[count - 1];
            assert_eq!(delivery["id"], count);
            assert_eq!(delivery["dialect"], "v2");
            assert_eq!(delivery["url"], receiver.url);
            assert_eq!(delivery["gave_up"], false);
            let attempts = delivery["attempts"].as_array().expect("attempts");
            assert_eq!(attempts.len(), 1, "{delivery}");
            assert_eq!(attempts[0]["http_status"], 200);
            assert_eq!(attempts[0]["ok"], true);
            assert_eq!(attempts[0]["answer"], V2_ACK);
            assert!(attempts[0]["at_ms"].as_u64().is_some_and(|ms| ms > 0));
            let hits = receiver.hits();
            assert_eq!(hits.len(), count);
            let (receipt, kind) = split_webhook(hits[count - 1].json());
            assert_eq!(delivery["receipt_id"], receipt["receipt_id"]);
            assert_eq!(delivery["status"], receipt["status"]);
            assert_eq!(delivery["webhook_type"], kind.as_str());
            (receipt, kind)
        }
    };

    let response = fake
        .post_v2("confirm", &token, json!({ "receipt_id": "r-confirm" }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let (receipt, kind) = next_webhook(1).await;
    assert_eq!(kind, "PAYMENT_COMPLETED");
    assert_eq!(receipt["status"], 1);
    assert_eq!(receipt, served("r-confirm").await);

    let response = fake
        .post_control_json("receipts/r-vbank/deposit", json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let answered: Value = response.json().await.expect("receipt");
    let (receipt, kind) = next_webhook(2).await;
    assert_eq!(kind, "PAYMENT_COMPLETED");
    assert_eq!(receipt["status"], 1);
    assert_eq!(receipt["status_locale"], "결제완료");
    assert!(
        receipt["purchased_at"]
            .as_str()
            .expect("purchased_at")
            .ends_with("+09:00")
    );
    assert_eq!(receipt["vbank_data"]["bank_name"], "신한은행");
    assert_eq!(receipt, answered);
    assert_eq!(receipt, served("r-vbank").await);

    // Two partial cancels: two webhooks, cancelled_price adding up.
    for (count, (price, cancel_id, cancelled)) in [(1000, "c-1", 1000), (500, "c-2", 1500)]
        .into_iter()
        .enumerate()
    {
        let body = json!({ "receipt_id": "r-paid", "cancel_price": price, "cancel_id": cancel_id });
        let response = fake.post_v2("cancel", &token, body).await;
        assert_eq!(response.status(), StatusCode::OK);
        let (receipt, kind) = next_webhook(3 + count).await;
        assert_eq!(kind, "PAYMENT_PARTIAL_CANCELLED");
        assert_eq!(receipt["status"], 20);
        assert_eq!(receipt["cancelled_price"], cancelled);
        assert_eq!(receipt, served("r-paid").await);
    }
    // A repeated cancel_id changes nothing and sends nothing: the next delivery is the full
    // cancel's.
    let repeat = json!({ "receipt_id": "r-paid", "cancel_price": 500, "cancel_id": "c-2" });
    assert_eq!(
        fake.post_v2("cancel", &token, repeat).await.status(),
        StatusCode::OK
    );
    let rest = json!({ "receipt_id": "r-paid", "cancel_id": "c-3" });
    assert_eq!(
        fake.post_v2("cancel", &token, rest).await.status(),
        StatusCode::OK
    );
    let (receipt, kind) = next_webhook(5).await;
    assert_eq!(kind, "PAYMENT_CANCELLED");
    assert_eq!(receipt["cancelled_price"], 3000);
    assert_eq!(receipt, served("r-paid").await);

    // A virtual account put in place is issued; one put in place as paid is completed.
    fake.put_control("receipts/r-issued", vbank("r-issued"))
        .await;
    let (receipt, kind) = next_webhook(6).await;
    assert_eq!(kind, "PAYMENT_VIRTUAL_ACCOUNT_ISSUED");
    assert_eq!(receipt["status"], 5);
    for key in [
        "bank_code",
        "bank_name",
        "bank_account",
        "bank_username",
        "sender_name",
        "expired_at",
    ] {
        assert!(receipt["vbank_data"][key].is_string(), "{key} in {receipt}");
    }
    assert!(receipt.get("vbank_due_in_secs").is_none());
    assert_eq!(receipt, served("r-issued").await);
    fake.put_control("receipts/r-put", paid("r-put")).await;
    let (receipt, kind) = next_webhook(7).await;
    assert_eq!(kind, "PAYMENT_COMPLETED");
    assert_eq!(receipt, paid("r-put"));

    // The log clears; the target stays.
    let response = fake
        .http
        .delete(fake.control("webhooks"))
        .send()
        .await
        .expect("clear request");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(fake.deliveries().await.is_empty());
    fake.put_control("receipts/r-again", paid("r-again")).await;
    let log = fake.delivered(1).await;
    assert_eq!(log[0]["receipt_id"], "r-again");
    assert_eq!(log[0]["id"], 8);
}

#[tokio::test]
async fn v1_feedback_carries_the_merchant_keys_and_counts_retries() {
    let receiver = Receiver::start(&[(200, "NO"), (200, "OK")]).await;
    let fake = Fake::start_with(
        json!([awaiting_confirm("r-1"), vbank("r-vbank")]),
        &["--webhook-retry-base-ms", "50"],
    );
    let targets: Value = fake
        .http
        .put(fake.control("webhooks"))
        .json(&json!({ "v1_url": receiver.url }))
        .send()
        .await
        .expect("webhooks request")
        .json()
        .await
        .expect("targets");
    assert_eq!(
        targets,
        json!({ "v2_url": null, "v1_url": receiver.url, "v1_content_type": "form" })
    );
    let token = fake.v1_token().await;

    let (status, _) = envelope(fake.v1_form("submit", Some(&token), "receipt_id=r-1").await).await;
    assert_eq!(status, StatusCode::OK);
    let log = fake.delivered(1).await;
    let delivery = &log[0];
    assert_eq!(delivery["dialect"], "v1");
    assert_eq!(delivery["webhook_type"], Value::Null);
    assert_eq!(delivery["status"], 1);
    let attempts = delivery["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{delivery}");
    assert_eq!(
        (&attempts[0]["ok"], &attempts[0]["answer"]),
        (&json!(false), &json!("NO"))
    );
    assert_eq!(
        (&attempts[1]["ok"], &attempts[1]["answer"]),
        (&json!(true), &json!("OK"))
    );
    let hits = receiver.hits();
    assert_eq!(hits.len(), 2);
    for (retries, hit) in hits.iter().enumerate() {
        let form = hit.form();
        assert_eq!(form_field(&form, "retry_count"), retries.to_string());
        assert_eq!(form_field(&form, "application_id"), APP_ID);
        assert_eq!(form_field(&form, "private_key"), PRIVATE_KEY);
        assert_eq!(form_field(&form, "receipt_id"), "r-1");
        assert_eq!(form_field(&form, "order_id"), "o-2");
        assert_eq!(form_field(&form, "price"), "12000");
        assert_eq!(form_field(&form, "cancelled_price"), "0");
        assert_eq!(form_field(&form, "status"), "1");
        let purchased_at = form_field(&form, "purchased_at");
        assert_eq!(
            purchased_at.len(),
            "2024-05-01 10:00:30".len(),
            "{purchased_at}"
        );
        assert!(!purchased_at.contains('T') && !purchased_at.contains('+'));
        for key in ["tax_free", "method", "pg", "name", "unit", "receipt_url"] {
            form_field(&form, key);
        }
    }

    // JSON on request; a virtual account's issue sends no v1 feedback, its deposit does.
    fake.put_control("webhooks", json!({ "v1_content_type": "json" }))
        .await;
    fake.put_control("receipts/r-issued", vbank("r-issued"))
        .await;
    let response = fake
        .post_control_json("receipts/r-vbank/deposit", json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let log = fake.delivered(2).await;
    assert_eq!(log[1]["receipt_id"], "r-vbank");
    let feedback = receiver.hits()[2].json();
    assert_eq!(feedback["retry_count"], 0);
    assert_eq!(feedback["status"], 1);
    assert_eq!(feedback["private_key"], PRIVATE_KEY);
    assert_eq!(feedback["method"], "vbank");

    // A v1 cancel reports the cumulative cancelled price.
    let form = "receipt_id=r-1&price=2000&cancel_id=c-1";
    let (status, _) = envelope(fake.v1_form("cancel", Some(&token), form).await).await;
    assert_eq!(status, StatusCode::OK);
    fake.delivered(3).await;
    let feedback = receiver.hits()[3].json();
    assert_eq!(feedback["status"], 20);
    assert_eq!(feedback["cancelled_price"], 2000);
    assert_eq!(feedback["application_id"], APP_ID);
}

#[tokio::test]
async fn v2_retries_until_the_answer_is_exactly_success_true() {
    let receiver = Receiver::start(&[
        (200, r#"{"status":200}"#),
        (302, V2_ACK),
        (200, r#"{"success": true, "received": 1}"#),
        (500, V2_ACK),
        (200, " {\n  \"success\" : true }\n"),
    ])
    .await;
    let fake = Fake::start_with(json!([]), &["--webhook-retry-base-ms", "10"]);
    fake.put_control("webhooks", json!({ "v2_url": receiver.url }))
        .await;
    fake.put_control("receipts/r-1", paid("r-1")).await;

    let log = fake.delivered(1).await;
    let attempts = log[0]["attempts"].as_array().expect("attempts");
    let seen: Vec<(u64, bool)> = attempts
        .iter()
        .map(|a| (a["http_status"].as_u64().expect("status"), a["ok"] == true))
        .collect();
    assert_eq!(
        seen,
        [
            (200, false),
            (302, false),
            (200, false),
            (500, false),
            (200, true)
        ]
    );
    assert_eq!(attempts[0]["answer"], r#"{"status":200}"#);
    // Every retry sends the same webhook.
    let hits = receiver.hits();
    assert_eq!(hits.len(), 5);
    assert!(hits.iter().all(|hit| hit.body == hits[0].body));
    assert_eq!(hits[0].json()["webhook_type"], "PAYMENT_COMPLETED");
}

#[tokio::test]
async fn deliveries_give_up_after_the_last_attempt() {
    let receiver = Receiver::start(&[(500, "boom")]).await;
    let fake = Fake::start_with(
        json!([]),
        &[
            "--webhook-url",
            &receiver.url,
            "--webhook-attempts",
            "3",
            "--webhook-retry-base-ms",
            "30",
        ],
    );
    fake.put_control("receipts/r-1", paid("r-1")).await;
    let log = fake
        .deliveries_when("a delivery given up", |log| {
            log.first().is_some_and(|d| d["gave_up"] == true)
        })
        .await;
    let delivery = &log[0];
    assert_eq!(delivery["delivered"], false);
    let attempts = delivery["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3);
    for attempt in attempts {
        assert_eq!(attempt["http_status"], 500);
        assert_eq!(attempt["answer"], "boom");
        assert_eq!(attempt["ok"], false);
    }
    // The pause doubles: 30 ms, then 60 ms.
    let at: Vec<u64> = attempts
        .iter()
        .map(|a| a["at_ms"].as_u64().expect("at_ms"))
        .collect();
    assert!(at[1] - at[0] >= 30 && at[2] - at[1] >= 60, "{at:?}");
    assert_eq!(receiver.hits().len(), 3);
}

#[tokio::test]
async fn console_cancels_expiry_and_quiet_puts_send_nothing() {
    let v2_receiver = Receiver::start(&[(200, V2_ACK)]).await;
    let v1_receiver = Receiver::start(&[(200, "OK")]).await;
    let fake = Fake::start(json!([paid("r-console"), vbank("r-due"), paid("r-admin")]));
    fake.put_control(
        "webhooks",
        json!({ "v2_url": v2_receiver.url, "v1_url": v1_receiver.url }),
    )
    .await;

    let response = fake
        .post_control_json("receipts/r-console/cancel", json!({ "silent": true }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let receipt: Value = response.json().await.expect("receipt");
    assert_eq!(
        (&receipt["status"], &receipt["cancelled_price"]),
        (&json!(20), &json!(3000))
    );

    let before = unix_now();
    let response = fake
        .post_control_json("receipts/r-due/expire", json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let receipt: Value = response.json().await.expect("receipt");
    assert_eq!(receipt["status"], 5);
    let expired_at = receipt["vbank_data"]["expired_at"]
        .as_str()
        .expect("expired_at");
    assert!(
        expired_at < format!("{}+09:00", kst(unix_now(), 'T')).as_str(),
        "{expired_at}"
    );
    assert!(
        expired_at >= format!("{}+09:00", kst(before - 1, 'T')).as_str(),
        "{expired_at}"
    );
    // v1 shows the same due date, its own way.
    let token = fake.v1_token().await;
    let (_, body) = envelope(fake.v1_get("receipt/r-due", Some(&token)).await).await;
    let expiredate = body["data"]["payment_data"]["expiredate"]
        .as_str()
        .expect("expiredate");
    assert_eq!(expiredate, &expired_at[..19].replace('T', " "));

    let response = fake
        .http
        .put(fake.control("receipts/r-quiet?webhook=false"))
        .json(&paid("r-quiet"))
        .send()
        .await
        .expect("put request");
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = fake
        .http
        .put(fake.control("receipts/r-loud?webhook=maybe"))
        .json(&paid("r-loud"))
        .send()
        .await
        .expect("put request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // A later, audible cancel is delivered to both targets, and it is all the log holds.
    let response = fake
        .post_control_json("receipts/r-admin/cancel", json!({ "price": 1000 }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let log = fake.delivered(2).await;
    assert!(log.iter().all(|d| d["receipt_id"] == "r-admin"), "{log:?}");
    let v2 = log
        .iter()
        .find(|d| d["dialect"] == "v2")
        .expect("v2 delivery");
    assert_eq!(v2["webhook_type"], "PAYMENT_PARTIAL_CANCELLED");
    assert_eq!(v2_receiver.hits().len(), 1);
    assert_eq!(v1_receiver.hits().len(), 1);
    let feedback = v1_receiver.hits()[0].form();
    assert_eq!(form_field(&feedback, "cancelled_price"), "1000");
}

#[tokio::test]
async fn virtual_accounts_from_fixtures_are_due_when_the_fixture_says() {
    let before = unix_now();
    let fake = Fake::start(json!([vbank("r-vbank")]));
    let after = unix_now();
    let token = fake.token().await;
    let receipt: Value = fake
        .lookup("r-vbank", Some(&token))
        .await
        .json()
        .await
        .expect("receipt");
    assert!(receipt.get("vbank_due_in_secs").is_none(), "{receipt}");
    assert_eq!(receipt["method_symbol"], "vbank");
    let vbank = receipt["vbank_data"].as_object().expect("vbank_data");
    for key in [
        "bank_code",
        "bank_name",
        "bank_account",
        "bank_username",
        "sender_name",
    ] {
        assert!(vbank[key].as_str().is_some_and(|v| !v.is_empty()), "{key}");
    }
    let expired_at = vbank["expired_at"].as_str().expect("expired_at");
    let earliest = format!("{}+09:00", kst(before + 3600, 'T'));
    let latest = format!("{}+09:00", kst(after + 3600, 'T'));
    assert!(
        (earliest.as_str()..=latest.as_str()).contains(&expired_at),
        "{expired_at} not within {earliest}..={latest}"
    );

    let v1_token = fake.v1_token().await;
    let (_, body) = envelope(fake.v1_get("receipt/r-vbank", Some(&v1_token)).await).await;
    let payment_data = &body["data"]["payment_data"];
    assert_eq!(
        payment_data["expiredate"],
        expired_at[..19].replace('T', " ")
    );
    assert_eq!(payment_data["bankname"], vbank["bank_name"]);
    assert_eq!(payment_data["account"], vbank["bank_account"]);
    assert_eq!(payment_data["accountholder"], vbank["bank_username"]);
    assert_eq!(payment_data["username"], vbank["sender_name"]);
    assert_eq!(body["data"]["status_en"], "vbank_issued");

    // A due date on anything but an issued virtual account is a mistake.
    let mut wrong = paid("r-wrong");
    wrong["vbank_due_in_secs"] = json!(60);
    let response = fake
        .http
        .put(fake.control("receipts/r-wrong"))
        .json(&wrong)
        .send()
        .await
        .expect("put request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "INVALID_REQUEST");
}

#[tokio::test]
async fn control_changes_refuse_what_bootpay_would_not_do() {
    let fake = Fake::start(json!([
        paid("r-paid"),
        vbank("r-vbank"),
        awaiting_confirm("r-2")
    ]));
    for path in ["receipts/r-paid/deposit", "receipts/r-paid/expire"] {
        let response = fake.post_control_json(path, json!({})).await;
        assert_eq!(response.status(), StatusCode::CONFLICT, "{path}");
        assert_eq!(error_code(response).await, "RC_NOT_AWAITING_DEPOSIT");
    }
    for path in [
        "receipts/nope/deposit",
        "receipts/nope/expire",
        "receipts/nope/cancel",
    ] {
        let response = fake.post_control_json(path, json!({})).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(error_code(response).await, "RC_NOT_FOUND");
    }
    // Deposited once, a virtual account is paid: no second deposit, no expiry.
    let response = fake
        .http
        .post(fake.control("receipts/r-vbank/deposit"))
        .send()
        .await
        .expect("deposit request");
    assert_eq!(response.status(), StatusCode::OK);
    for path in ["receipts/r-vbank/deposit", "receipts/r-vbank/expire"] {
        let response = fake.post_control_json(path, json!({})).await;
        assert_eq!(response.status(), StatusCode::CONFLICT, "{path}");
    }

    // The control cancel follows the API cancel's rules.
    let cases = [
        ("r-2", json!({}), "RC_NOT_CANCELLABLE"),
        (
            "r-paid",
            json!({ "price": 3001 }),
            "RC_CANCEL_PRICE_EXCEEDED",
        ),
        ("r-paid", json!({ "price": "lots" }), "INVALID_REQUEST"),
        ("r-paid", json!({ "prize": 10 }), "INVALID_REQUEST"),
    ];
    for (receipt_id, body, code) in cases {
        let response = fake
            .post_control_json(&format!("receipts/{receipt_id}/cancel"), body.clone())
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(response).await, code, "{body}");
    }
    let response = fake
        .post_control_json(
            "receipts/r-paid/cancel",
            json!({ "price": 1000, "cancel_id": "c" }),
        )
        .await;
    let receipt: Value = response.json().await.expect("receipt");
    assert_eq!(receipt["cancelled_price"], 1000);
    let response = fake
        .post_control_json(
            "receipts/r-paid/cancel",
            json!({ "price": 1000, "cancel_id": "c" }),
        )
        .await;
    let receipt: Value = response.json().await.expect("receipt");
    assert_eq!(receipt["cancelled_price"], 1000);

    // Targets must be http URLs, and v1's content type form or json.
    for body in [
        json!({ "v2_url": "ftp://127.0.0.1/" }),
        json!({ "v1_url": "not a url" }),
        json!({ "v1_content_type": "xml" }),
        json!({ "v3_url": "http://127.0.0.1/" }),
    ] {
        let response = fake
            .http
            .put(fake.control("webhooks"))
            .json(&body)
            .send()
            .await
            .expect("webhooks request");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(response).await, "INVALID_REQUEST");
    }
}

#[tokio::test]
async fn a_receiver_that_never_answers_delays_no_api_answer() {
    let receiver = Receiver::silent().await;
    // A port nothing listens on: bound, then released.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let fake = Fake::start_with(
        json!([awaiting_confirm("r-1")]),
        &["--webhook-attempts", "1"],
    );
    fake.put_control(
        "webhooks",
        json!({ "v2_url": receiver.url, "v1_url": format!("http://{closed}/feedback") }),
    )
    .await;
    let token = fake.token().await;
    let started = Instant::now();
    let response = fake
        .post_v2("confirm", &token, json!({ "receipt_id": "r-1" }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    // A correctness bound, not a benchmark: the answer does not wait for the 5 s attempt.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let log = fake
        .deliveries_when("both deliveries given up", |log| {
            log.len() == 2 && log.iter().all(|d| d["gave_up"] == true)
        })
        .await;
    for delivery in &log {
        let attempts = delivery["attempts"].as_array().expect("attempts");
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0]["http_status"], Value::Null);
        let answer = attempts[0]["answer"].as_str().expect("answer");
        match delivery["dialect"].as_str() {
            Some("v2") => assert_eq!(answer, "timed out after 5 s"),
            _ => assert!(!answer.is_empty()),
        }
    }
    assert_eq!(receiver.hits().len(), 1);
}

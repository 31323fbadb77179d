//! Integration tests of the `bootpay-fake` binary: each test starts the real process on a free
//! port with its own fixture, talks to it over HTTP, and kills it when done.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail"
)]

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};

const APP_ID: &str = "test-app";
const PRIVATE_KEY: &str = "test-key";
const CLIENT_KEY: &str = "test-client";
const SECRET_KEY: &str = "test-secret";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

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

//! `bootpay-fake` under Bootpay's own server SDKs: python v2 (`bootpay-backend`), Node
//! (`@bootpay/backend-js`) and python v1 (`bootpay`), pinned and installed by
//! `scripts/dev-env.sh`'s `ensure_sdks`. Each test starts a fresh fake, runs one script of
//! `tests/sdk/` against it through the SDK's own base-URL setting, and checks every call's
//! result against what Bootpay documents. The SDKs must be installed: a missing one fails
//! the test, it is never skipped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail"
)]

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::{APP_ID, CLIENT_KEY, Fake, PRIVATE_KEY, SECRET_KEY};

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(20);

/// The pinned versions; `ensure_sdks` installs exactly these.
const PYTHON_V2_VERSION: &str = "2.9.0";
const PYTHON_V1_VERSION: &str = "1.0.7";
const NODE_VERSION: &str = "2.13.1";

/// The receipts every script expects (see the scripts' headers).
fn receipts() -> Value {
    json!([paid_receipt(), {
        "receipt_id": "r-confirm", "order_id": "o-confirm", "price": 12000, "tax_free": 0,
        "order_name": "Gem chest", "currency": "KRW", "status": 2, "sandbox": true
    }, {
        "receipt_id": "r-unpaid", "order_id": "o-unpaid", "price": 5000, "currency": "KRW",
        "status": 2
    }, {
        "receipt_id": "r-partial", "order_id": "o-partial", "price": 10000, "tax_free": 0,
        "cancelled_price": 0, "cancelled_tax_free": 0, "order_name": "Gem crate",
        "currency": "KRW", "pg": "KCP", "method": "카드", "method_symbol": "card", "status": 1,
        "status_locale": "결제완료", "card_data": { "tid": "T-PARTIAL" }
    }])
}

/// A paid receipt as Bootpay's v2 lookups show one.
fn paid_receipt() -> Value {
    json!({
        "receipt_id": "r-paid", "order_id": "o-paid", "price": 3000, "tax_free": 0,
        "cancelled_price": 0, "cancelled_tax_free": 0, "order_name": "보석 300개",
        "company_name": "테스트 상점", "gateway_url": "https://gw.bootpay.co.kr",
        "metadata": {}, "sandbox": true, "pg": "나이스페이먼츠", "method": "카드",
        "method_symbol": "card", "method_origin": "카드", "method_origin_symbol": "card",
        "currency": "KRW", "requested_at": "2024-05-01T10:00:00+09:00",
        "purchased_at": "2024-05-01T10:00:31+09:00", "status": 1, "status_locale": "결제완료",
        "receipt_url": "https://door.bootpay.co.kr/receipt/r-paid",
        "card_data": {
            "tid": "T-PAID", "card_approve_no": "30011001", "card_no": "5365********1001",
            "card_quota": "00", "card_company_code": "CCSS", "card_company": "삼성카드"
        }
    })
}

/// A fresh fake with the receipts; it accepts the tests' application id and private key,
/// and their client key and secret key.
async fn start_fake() -> Fake {
    Fake::start(receipts(), &[]).await
}

// ---- finding the SDKs ----

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn missing(what: &str) -> ! {
    panic!(
        "{what}. The SDK tests need Bootpay's SDKs: run scripts/test.sh, or \
         `source scripts/dev-env.sh && ensure_sdks`, which installs them into .venv-sdk and \
         tests/sdk/node and exports SDK_PYTHON and SDK_NODE_DIR"
    )
}

/// The Python that holds `bootpay-backend` and `bootpay`: `SDK_PYTHON`, else `.venv-sdk`'s.
fn sdk_python() -> PathBuf {
    let python = std::env::var_os("SDK_PYTHON")
        .map_or_else(|| repo().join(".venv-sdk/bin/python"), PathBuf::from);
    if !python.exists() {
        missing(&format!("no SDK Python at {}", python.display()));
    }
    python
}

/// The folder whose `node_modules` holds `@bootpay/backend-js`: `SDK_NODE_DIR`, else
/// `tests/sdk/node`.
fn sdk_node_dir() -> PathBuf {
    let dir = std::env::var_os("SDK_NODE_DIR")
        .map_or_else(|| repo().join("tests/sdk/node"), PathBuf::from);
    if !dir
        .join("node_modules/@bootpay/backend-js/package.json")
        .exists()
    {
        missing(&format!(
            "@bootpay/backend-js is not installed under {}",
            dir.display()
        ));
    }
    dir
}

// ---- running a script ----

/// One line of a script's output.
struct Call {
    ok: bool,
    result: Value,
}

/// Every call a script reported, by name.
struct Calls {
    sdk: &'static str,
    calls: HashMap<String, Call>,
}

impl Calls {
    fn get(&self, name: &str) -> &Call {
        self.calls
            .get(name)
            .unwrap_or_else(|| panic!("{}: no call {name:?} in the script's output", self.sdk))
    }

    /// The result of a call the SDK reported as a success.
    fn ok(&self, name: &str) -> &Value {
        let call = self.get(name);
        assert!(call.ok, "{}: {name} failed: {}", self.sdk, call.result);
        &call.result
    }

    /// The result of a call the SDK reported as a failure.
    fn refused(&self, name: &str) -> &Value {
        let call = self.get(name);
        assert!(!call.ok, "{}: {name} succeeded: {}", self.sdk, call.result);
        &call.result
    }

    /// A v2 call refused with `error_code`.
    fn v2_error(&self, name: &str, error_code: &str) {
        let result = self.refused(name);
        assert_eq!(
            result["error_code"], error_code,
            "{}: {name}: {result}",
            self.sdk
        );
        assert!(
            result["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: {name} has no message: {result}",
            self.sdk
        );
    }

    /// A v1 call refused with an envelope of `status`, a negative code and no data.
    fn v1_error(&self, name: &str, status: u16) -> &Value {
        let result = self.refused(name);
        assert_eq!(result["status"], status, "{}: {name}: {result}", self.sdk);
        assert!(
            result["code"].as_i64().is_some_and(|code| code < 0),
            "{}: {name}: code must be negative: {result}",
            self.sdk
        );
        assert!(
            result["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: {name} has no message: {result}",
            self.sdk
        );
        assert_eq!(result["data"], Value::Null, "{}: {name}", self.sdk);
        result
    }

    /// `data` of a v1 call that succeeded, after checking the success envelope.
    fn v1_data(&self, name: &str) -> &Value {
        let result = self.ok(name);
        assert_eq!(result["status"], 200, "{}: {name}: {result}", self.sdk);
        assert_eq!(result["code"], 0, "{}: {name}: {result}", self.sdk);
        assert_eq!(result["message"], "", "{}: {name}: {result}", self.sdk);
        &result["data"]
    }

    /// Fails unless the script reported exactly `names`, so no call goes unchecked.
    fn expect_exactly(&self, names: &[&str]) {
        let mut reported: Vec<&str> = self.calls.keys().map(String::as_str).collect();
        reported.sort_unstable();
        let mut expected = names.to_vec();
        expected.sort_unstable();
        assert_eq!(reported, expected, "{}: calls reported", self.sdk);
    }
}

async fn run(sdk: &'static str, program: &Path, args: &[&str], node_dir: Option<&Path>) -> Calls {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = node_dir {
        command.env("SDK_NODE_DIR", dir);
    }
    let child = command
        .spawn()
        .unwrap_or_else(|error| missing(&format!("cannot run {}: {error}", program.display())));
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{sdk}: the script did not finish in {SCRIPT_TIMEOUT:?}"))
        .expect("script output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{sdk}: the script failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    let mut calls = HashMap::new();
    for line in stdout.lines() {
        let record: Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("{sdk}: not a JSON line ({error}): {line}"));
        let name = record["call"].as_str().expect("call name").to_owned();
        let call = Call {
            ok: record["ok"].as_bool().expect("ok"),
            result: record["result"].clone(),
        };
        assert!(
            calls.insert(name.clone(), call).is_none(),
            "{sdk}: {name} reported twice"
        );
    }
    Calls { sdk, calls }
}

/// What the SDK sent, without the test's own control calls.
async fn sdk_requests(fake: &Fake) -> Vec<String> {
    let mut requests = fake.requests().await;
    requests.retain(|request| !request.contains(" /_fake/"));
    requests
}

// ---- v2: python and Node, with a token or with Basic keys ----

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Auth {
    /// `application_id`/`private_key`, a token from `request/token`, `Bearer`.
    Token,
    /// `client_key`/`secret_key` in `Authorization: Basic` on every call.
    Basic,
}

impl Auth {
    fn args(self) -> [&'static str; 3] {
        match self {
            Self::Token => ["token", APP_ID, PRIVATE_KEY],
            Self::Basic => ["basic", CLIENT_KEY, SECRET_KEY],
        }
    }
}

const V2_CALLS: &[&str] = &[
    "sdk",
    "token",
    "token_again",
    "lookup_paid",
    "lookup_unknown",
    "confirm",
    "confirm_again",
    "cancel_full",
    "cancel_again",
    "cancel_partial_1",
    "cancel_partial_2",
    "cancel_partial_repeat",
    "cancel_above_remainder",
    "cancel_unpaid",
    "lookup_partial",
    "token_wrong_key",
];

async fn python_v2(auth: Auth) {
    let fake = start_fake().await;
    let script = repo().join("tests/sdk/sdk_v2.py");
    let script = script.to_str().expect("UTF-8 path");
    let mut args = vec![script, &fake.api_url];
    args.extend(auth.args());
    let calls = run("python v2", &sdk_python(), &args, None).await;
    assert_eq!(calls.ok("sdk")["version"], PYTHON_V2_VERSION);
    check_v2(&calls, auth, &fake).await;
}

async fn node(auth: Auth) {
    let fake = start_fake().await;
    let script = repo().join("tests/sdk/sdk_v2.js");
    let script = script.to_str().expect("UTF-8 path");
    let node_dir = sdk_node_dir();
    let mut args = vec![script, &fake.api_url];
    args.extend(auth.args());
    let calls = run("node", Path::new("node"), &args, Some(&node_dir)).await;
    assert_eq!(calls.ok("sdk")["version"], NODE_VERSION);
    check_v2(&calls, auth, &fake).await;
}

/// What Bootpay documents for each v2 call, whichever SDK made it.
async fn check_v2(calls: &Calls, auth: Auth, fake: &Fake) {
    let mut expected = V2_CALLS.to_vec();
    if auth == Auth::Basic {
        expected.push("lookup_wrong_key");
    }
    calls.expect_exactly(&expected);

    match auth {
        Auth::Token => {
            let token = calls.ok("token");
            let access_token = token["access_token"].as_str().expect("access_token");
            assert!(!access_token.is_empty());
            assert_eq!(token["expire_in"], 1800);
            // Within the reuse window: the same token, with the same expiry.
            let again = calls.ok("token_again");
            assert_eq!(again["access_token"], access_token);
            assert_eq!(again["expired_at"], token["expired_at"]);
            assert!(again["expire_in"].as_u64().is_some_and(|s| s <= 1800));
            calls.v2_error("token_wrong_key", "TOKEN_KEY_INVALID");
        }
        Auth::Basic => {
            // With keys the SDKs ask for no token and answer a synthetic one.
            let synthetic = json!({ "access_token": "", "expire_in": 0 });
            assert_eq!(calls.ok("token"), &synthetic);
            assert_eq!(calls.ok("token_again"), &synthetic);
            assert_eq!(calls.ok("token_wrong_key"), &synthetic);
            calls.v2_error("lookup_wrong_key", "TOKEN_KEY_INVALID");
        }
    }

    assert_eq!(calls.ok("lookup_paid"), &paid_receipt());
    calls.v2_error("lookup_unknown", "RC_NOT_FOUND");
    assert_eq!(
        calls.refused("lookup_unknown")["message"],
        "영수증 정보를 찾지 못했습니다."
    );

    let confirmed = calls.ok("confirm");
    assert_eq!(confirmed["receipt_id"], "r-confirm");
    assert_eq!(confirmed["status"], 1);
    assert_eq!(confirmed["status_locale"], "결제완료");
    assert!(confirmed["purchased_at"].is_string(), "{confirmed}");
    calls.v2_error("confirm_again", "RC_NOT_CONFIRM_READY");

    let full = calls.ok("cancel_full");
    assert_eq!(full["receipt_id"], "r-paid");
    assert_eq!(full["status"], 20);
    assert_eq!(full["status_locale"], "결제취소완료");
    assert_eq!(full["cancelled_price"], full["price"]);
    assert_eq!(full["cancelled_price"], 3000);
    assert!(full["cancelled_at"].is_string(), "{full}");
    calls.v2_error("cancel_again", "RC_ALREADY_CANCELLED");

    for (name, cancelled) in [
        ("cancel_partial_1", 1000),
        ("cancel_partial_2", 3000),
        // The same cancel_id again: answered, counted once.
        ("cancel_partial_repeat", 3000),
    ] {
        let receipt = calls.ok(name);
        assert_eq!(receipt["receipt_id"], "r-partial", "{name}");
        assert_eq!(receipt["status"], 20, "{name}");
        assert_eq!(receipt["cancelled_price"], cancelled, "{name}");
    }
    calls.v2_error("cancel_above_remainder", "RC_CANCEL_PRICE_EXCEEDED");
    calls.v2_error("cancel_unpaid", "RC_NOT_CANCELLABLE");
    let partial = calls.ok("lookup_partial");
    assert_eq!(partial["price"], 10000);
    assert_eq!(partial["cancelled_price"], 3000);
    assert_eq!(partial["status"], 20);

    let stats = fake.stats().await;
    assert_eq!(stats["cancel_requests"], 7, "{stats}");
    assert_eq!(stats["receipts"]["r-partial"]["cancels"], 4, "{stats}");
    assert_eq!(stats["confirm_requests"], 2, "{stats}");
    let (tokens_issued, unauthorized) = match auth {
        Auth::Token => (1, 0),
        Auth::Basic => (0, 1),
    };
    assert_eq!(stats["tokens_issued"], tokens_issued, "{stats}");
    assert_eq!(stats["unauthorized"], unauthorized, "{stats}");
    // The SDK reached the fake through its base-URL setting, and only under /v2.
    let requests = sdk_requests(fake).await;
    assert!(requests.iter().all(|r| r.contains(" /v2/")), "{requests:?}");
    assert!(
        requests.contains(&"GET /v2/receipt/r-paid".to_owned()),
        "{requests:?}"
    );
}

#[tokio::test]
async fn python_v2_sdk_with_a_token() {
    python_v2(Auth::Token).await;
}

#[tokio::test]
async fn python_v2_sdk_with_basic_keys() {
    python_v2(Auth::Basic).await;
}

#[tokio::test]
async fn node_sdk_with_a_token() {
    node(Auth::Token).await;
}

#[tokio::test]
async fn node_sdk_with_basic_keys() {
    node(Auth::Basic).await;
}

// ---- v1: python ----

#[tokio::test]
async fn python_v1_sdk_with_its_token() {
    let fake = start_fake().await;
    let script = repo().join("tests/sdk/sdk_v1.py");
    let script = script.to_str().expect("UTF-8 path");
    let args = [script, &fake.base, APP_ID, PRIVATE_KEY];
    let calls = run("python v1", &sdk_python(), &args, None).await;
    calls.expect_exactly(&[
        "sdk",
        "token",
        "token_again",
        "token_wrong_key",
        "lookup_paid",
        "lookup_unknown",
        "submit",
        "submit_again",
        "cancel_full",
        "cancel_again",
        "cancel_partial_1",
        "cancel_partial_2",
        "cancel_partial_repeat",
        "cancel_above_remainder",
        "cancel_unpaid",
        "lookup_partial",
    ]);
    assert_eq!(calls.ok("sdk")["version"], PYTHON_V1_VERSION);

    let token = calls.v1_data("token");
    assert!(token["token"].as_str().is_some_and(|t| !t.is_empty()));
    let server_time = token["server_time"].as_u64().expect("server_time");
    assert_eq!(token["expired_at"].as_u64(), Some(server_time + 1800));
    let again = calls.v1_data("token_again");
    assert_eq!(again["token"], token["token"]);
    assert_eq!(again["expired_at"], token["expired_at"]);
    assert_eq!(calls.v1_error("token_wrong_key", 401)["code"], -2410);

    assert_eq!(
        calls.v1_data("lookup_paid"),
        &json!({
            "receipt_id": "r-paid", "order_id": "o-paid", "name": "보석 300개", "price": 3000,
            "tax_free": 0, "remain_price": 3000, "remain_tax_free": 0, "cancelled_price": 0,
            "cancelled_tax_free": 0, "receipt_url": "https://door.bootpay.co.kr/receipt/r-paid",
            "unit": "krw", "pg": "나이스페이먼츠", "method": "card", "pg_name": "나이스페이먼츠",
            "method_name": "카드", "requested_at": "2024-05-01 10:00:00",
            "purchased_at": "2024-05-01 10:00:31", "revoked_at": null, "status": 1,
            "status_en": "complete", "status_ko": "결제완료"
        })
    );
    assert_eq!(
        calls.v1_error("lookup_unknown", 404)["message"],
        "영수증 정보를 찾지 못했습니다."
    );

    let submitted = calls.v1_data("submit");
    assert_eq!(submitted["receipt_id"], "r-confirm");
    assert_eq!(submitted["status"], 1);
    assert_eq!(submitted["status_en"], "complete");
    assert!(submitted["purchased_at"].is_string(), "{submitted}");
    calls.v1_error("submit_again", 400);

    let full = calls.v1_data("cancel_full");
    assert_eq!(full["receipt_id"], "r-paid");
    assert_eq!(full["request_cancel_price"], 3000);
    assert_eq!(full["cancelled_price"], 3000);
    assert_eq!(full["remain_price"], 0);
    assert_eq!(full["tid"], "T-PAID");
    let revoked_at = full["revoked_at"].as_str().expect("revoked_at");
    assert_eq!(
        revoked_at.len(),
        "2024-05-01 10:00:00".len(),
        "{revoked_at}"
    );
    calls.v1_error("cancel_again", 400);

    let first = calls.v1_data("cancel_partial_1");
    assert_eq!(first["request_cancel_price"], 1000);
    assert_eq!(first["cancelled_price"], 1000);
    assert_eq!(first["remain_price"], 9000);
    let second = calls.v1_data("cancel_partial_2");
    assert_eq!(second["request_cancel_price"], 2000);
    assert_eq!(second["cancelled_price"], 3000);
    assert_eq!(second["remain_price"], 7000);
    // The same cancel_id again: the same cancel, not another.
    assert_eq!(calls.v1_data("cancel_partial_repeat"), second);
    calls.v1_error("cancel_above_remainder", 400);
    calls.v1_error("cancel_unpaid", 400);
    let partial = calls.v1_data("lookup_partial");
    assert_eq!(partial["status"], 20);
    assert_eq!(partial["cancelled_price"], 3000);
    assert_eq!(partial["remain_price"], 7000);

    let stats = fake.stats().await;
    assert_eq!(stats["tokens_issued"], 1, "{stats}");
    assert_eq!(stats["token_rejected"], 1, "{stats}");
    assert_eq!(stats["cancel_requests"], 7, "{stats}");
    assert_eq!(stats["receipts"]["r-partial"]["cancels"], 4, "{stats}");
    assert_eq!(stats["confirm_requests"], 2, "{stats}");
    assert_eq!(stats["unauthorized"], 0, "{stats}");
    // The python module posts forms to the `.json` paths, at the root.
    let requests = sdk_requests(&fake).await;
    for sent in [
        "POST /request/token",
        "POST /submit.json",
        "POST /cancel.json",
    ] {
        assert!(requests.iter().any(|r| r == sent), "{sent}: {requests:?}");
    }
    assert!(
        requests.iter().all(|r| !r.contains(" /v2/")),
        "{requests:?}"
    );
}

//! The webhook ingress on its own, as Bootpay and strangers see it: what it answers, when,
//! to whom, and what it queues.

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

async fn post(url: &str, content_type: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    post_from(url, content_type, body, None).await
}

async fn post_from(
    url: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if let Some(xff) = forwarded_for {
        request = request.header("x-forwarded-for", xff);
    }
    request.send().await.unwrap()
}

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

#[tokio::test]
async fn a_webhook_is_answered_after_its_notification_is_queued() {
    let stand = Stand::start(json!([])).await;
    let (_ingress, url) = stand.ingress(&[]).await;
    let v2 = format!("{url}/webhooks/bootpay");
    let answer = post(
        &v2,
        JSON,
        json!({"receipt_id": "6500c8a1d01c7e0021b4c2f1", "status": 1, "price": 3000,
               "webhook_type": "PAYMENT_COMPLETED", "order_id": "o-1"})
        .to_string(),
    )
    .await;
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.json::<Value>().await.unwrap(),
        json!({"success": true})
    );
    let queued = stand.take(&stand.purchase_url, 1, WAIT).await;
    assert_eq!(
        attribute(&queued[0], "type").as_deref(),
        Some("notification")
    );
    let note: Value = serde_json::from_str(queued[0].body().unwrap()).unwrap();
    assert_eq!(
        note,
        json!({"receipt_id": "6500c8a1d01c7e0021b4c2f1", "source": "webhook",
               "webhook_type": "PAYMENT_COMPLETED", "status": 1}),
        "the receipt id and the hints, nothing else of the body"
    );

    let v1 = format!("{url}/webhooks/bootpay/v1");
    let answer = post(
        &v1,
        FORM,
        "receipt_id=r-1&status=20&private_key=pk&retry_count=0",
    )
    .await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "OK");
    let queued = stand.take(&stand.purchase_url, 1, WAIT).await;
    let note: Value = serde_json::from_str(queued[0].body().unwrap()).unwrap();
    assert_eq!(
        note,
        json!({"receipt_id": "r-1", "source": "webhook_v1", "status": 20})
    );
}

#[tokio::test]
async fn when_queueing_fails_bootpay_is_told_to_retry() {
    let stand = Stand::start(json!([])).await;
    let (ingress, url) = stand.ingress(&[("METRICS_ADDR", "127.0.0.1:0")]).await;
    stand
        .sqs
        .delete_queue()
        .queue_url(&stand.purchase_url)
        .send()
        .await
        .unwrap();
    let body = json!({"receipt_id": "r-1", "status": 1}).to_string();
    let answer = post(&format!("{url}/webhooks/bootpay"), JSON, body.clone()).await;
    assert_eq!(answer.status(), 503);
    assert_eq!(
        answer.json::<Value>().await.unwrap(),
        json!({"success": false})
    );
    let answer = post(
        &format!("{url}/webhooks/bootpay/v1"),
        FORM,
        "receipt_id=r-1",
    )
    .await;
    assert_eq!(answer.status(), 503);
    assert_ne!(answer.text().await.unwrap(), "OK");
    ingress
        .wait_for_log(&["Could not queue the webhook's notification"], WAIT)
        .await;

    let recreated = create_queue(&stand.sqs, "purchases", Default::default()).await;
    assert_eq!(recreated, stand.purchase_url);
    let answer = post(&format!("{url}/webhooks/bootpay"), JSON, body).await;
    assert_eq!(
        answer.status(),
        200,
        "the retry is taken: it was never queued"
    );
    assert_eq!(stand.take(&stand.purchase_url, 1, WAIT).await.len(), 1);
}

#[tokio::test]
async fn only_bootpay_s_range_is_heard_and_x_forwarded_for_only_from_our_proxies() {
    let stand = Stand::start(json!([])).await;
    let body = || json!({"receipt_id": "r-1", "status": 1}).to_string();
    // Bootpay's range only (the default): loopback is a stranger.
    let (_direct, url) = stand
        .ingress(&[("WEBHOOK_ALLOWED_SOURCES", "223.130.82.0/24")])
        .await;
    let v2 = format!("{url}/webhooks/bootpay");
    assert_eq!(post(&v2, JSON, body()).await.status(), 403);
    assert_eq!(
        post_from(&v2, JSON, body(), Some("223.130.82.4"))
            .await
            .status(),
        403,
        "a header from a peer that is not our proxy proves nothing"
    );

    let (_proxied, url) = stand
        .ingress(&[
            ("WEBHOOK_ALLOWED_SOURCES", "223.130.82.0/24"),
            ("WEBHOOK_TRUSTED_PROXIES", "127.0.0.1/32"),
        ])
        .await;
    let v2 = format!("{url}/webhooks/bootpay");
    assert_eq!(
        post_from(&v2, JSON, body(), Some("223.130.82.4"))
            .await
            .status(),
        200,
        "our proxy vouches for Bootpay's address"
    );
    assert_eq!(
        post_from(&v2, JSON, body(), Some("223.130.82.4, 198.51.100.7"))
            .await
            .status(),
        403,
        "the leftmost address is the client's own claim"
    );
    assert_eq!(
        post(&v2, JSON, body()).await.status(),
        403,
        "no header from the proxy"
    );
    assert_eq!(stand.take(&stand.purchase_url, 1, WAIT).await.len(), 1);
}

#[tokio::test]
async fn bodies_are_capped_typed_and_checked_and_never_logged() {
    let stand = Stand::start(json!([])).await;
    let (ingress, url) = stand.ingress(&[]).await;
    let v2 = format!("{url}/webhooks/bootpay");
    let v1 = format!("{url}/webhooks/bootpay/v1");
    let huge = format!(
        r#"{{"receipt_id": "r-1", "pad": "{}"}}"#,
        "x".repeat(70 * 1024)
    );
    assert_eq!(post(&v2, JSON, huge).await.status(), 413);
    assert_eq!(post(&v2, FORM, "receipt_id=r-1").await.status(), 415);
    assert_eq!(
        post(&v1, "text/plain", "receipt_id=r-1").await.status(),
        415
    );
    let bad_id = json!({"receipt_id": "../../admin\nINFO forged", "status": 1}).to_string();
    let answer = post(&v2, JSON, bad_id).await;
    assert_eq!(answer.status(), 400);
    assert!(!answer.text().await.unwrap().contains("admin"), "no echo");
    assert_eq!(post(&v2, JSON, "[1, 2]").await.status(), 400);
    let secret = "pk-live-5f6e-do-not-log";
    let v1_body = format!("receipt_id=r-9&status=1&application_id=app&private_key={secret}");
    assert_eq!(post(&v1, FORM, v1_body).await.status(), 200);
    ingress
        .wait_for_log(&["Webhook queued.", "r-9"], WAIT)
        .await;
    let queued = stand.take(&stand.purchase_url, 1, WAIT).await;
    assert!(!queued[0].body().unwrap().contains(secret));
    for line in ingress.logs() {
        assert!(!line.contains(secret), "the private key was logged: {line}");
        assert!(
            !line.contains("INFO forged"),
            "a body reached the log: {line}"
        );
    }
}

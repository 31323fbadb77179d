//! A receipt's whole life with the ledger, end to end: moto's SQS and DynamoDB,
//! bootpay-fake sending its webhooks, the webhook ingress and the worker, all real
//! processes. At most one fulfilment per receipt across workers and crashes; virtual
//! accounts parked until their deposit or their deadline; cancels after fulfilment
//! revoked once per change; what no webhook reports found by the sweep; forged webhooks
//! changing nothing; a ledger that does not answer holding everything.

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

/// A virtual-account receipt issued and awaiting its deposit, due in `due_in_secs`.
fn vbank(receipt_id: &str, order_id: &str, price: i64, due_in_secs: i64) -> Value {
    let mut r = receipt(receipt_id, order_id, json!(price), 5);
    r["method_symbol"] = json!("vbank");
    r["vbank_due_in_secs"] = json!(due_in_secs);
    r
}

fn fresh(decisions: &[(Value, aws_sdk_sqs::types::Message)]) -> Vec<&Value> {
    decisions
        .iter()
        .map(|(d, _)| d)
        .filter(|d| d.get("repeat").is_none())
        .collect()
}

/// A stand with the ledger table, the webhook ingress, and the fake sending its v2
/// webhooks to the ingress.
struct Life {
    stand: Stand,
    table: String,
    ingress: Worker,
    ingress_url: String,
}

impl Life {
    async fn start(receipts: Value) -> Self {
        let stand = Stand::start(receipts).await;
        let table = stand.ledger().await;
        let (ingress, ingress_url) = stand.ingress(&[]).await;
        stand
            .fake
            .send_webhooks_to(
                Some(&format!("{ingress_url}/webhooks/bootpay")),
                Some(&format!("{ingress_url}/webhooks/bootpay/v1")),
            )
            .await;
        Self {
            stand,
            table,
            ingress,
            ingress_url,
        }
    }

    async fn worker(&self) -> Worker {
        let worker = self
            .stand
            .worker(&[("LEDGER_TABLE", self.table.as_str())])
            .await;
        worker.wait_for_log(&["Worker started."], WAIT).await;
        worker
    }

    async fn entry(&self, receipt_id: &str) -> Value {
        self.stand.ledger_entry(&self.table, receipt_id).await
    }

    async fn post_webhook(&self, body: Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/webhooks/bootpay", self.ingress_url))
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn the_same_purchase_five_times_across_two_workers_is_fulfilled_once() {
    let stand = Stand::start(json!([receipt("r-1", "o-1", json!(3000), 1)])).await;
    let table = stand.ledger().await;
    let env = [("LEDGER_TABLE", table.as_str())];
    let (_a, _b) = (stand.worker(&env).await, stand.worker(&env).await);
    let bodies: Vec<String> = (0..5)
        .map(|_| purchase("r-1", "o-1", json!(3000)).to_string())
        .collect();
    stand.send_batch(&bodies).await;
    let decisions = stand.decisions(5, WAIT).await;
    let validator = schema("decision.schema.json");
    for (decision, message) in &decisions {
        assert!(validator.is_valid(decision), "{decision}");
        assert_eq!(decision["decision"], "fulfill", "{decision}");
        assert_eq!(decision["reason"], "verified");
        assert_eq!(decision["schema_version"], 2);
        let repeat = decision.get("repeat").is_some();
        assert_eq!(attribute(message, "repeat").is_some(), repeat);
    }
    let first = fresh(&decisions);
    assert_eq!(first.len(), 1, "one decision, four repeats: {decisions:?}");
    for (decision, _) in &decisions {
        assert_eq!(
            decision["verified_at"], first[0]["verified_at"],
            "a repeat is the recorded decision"
        );
    }
    let entry = stand.ledger_entry(&table, "r-1").await;
    assert_eq!(entry["state"], "fulfilled", "{entry}");
    assert_eq!(entry["version"], 1, "written once: {entry}");
    assert_eq!(entry["decision"]["decision"], "fulfill");
}

#[tokio::test]
async fn a_crash_between_the_record_and_the_publish_publishes_the_record() {
    let stand = Stand::with(
        json!([receipt("r-1", "o-1", json!(12000), 2)]),
        QueueOptions {
            visibility_timeout_secs: 3,
            ..QueueOptions::default()
        },
        &[],
    )
    .await;
    let table = stand.ledger().await;
    let env = [("LEDGER_TABLE", table.as_str())];
    let mut first = stand.worker(&env).await;
    first.wait_for_log(&["Worker started."], WAIT).await;
    stand
        .sqs
        .delete_queue()
        .queue_url(&stand.result_url)
        .send()
        .await
        .unwrap();
    stand.send_json(&purchase("r-1", "o-1", json!(12000))).await;
    first
        .wait_for_log(&["Failed to publish a decision"], WAIT)
        .await;
    let entry = stand.ledger_entry(&table, "r-1").await;
    assert_eq!(
        entry["state"], "fulfilled",
        "recorded before the publish: {entry}"
    );
    first.signal("KILL");
    first.exit_code(WAIT).await;
    create_queue(&stand.sqs, "decisions", Default::default()).await;

    let _second = stand.worker(&env).await;
    let decisions = stand.decisions(1, WAIT).await;
    let decision = &decisions[0].0;
    assert_eq!(decision["decision"], "fulfill", "{decision}");
    assert_eq!(
        decision["repeat"], true,
        "published from the record: {decision}"
    );
    assert_eq!(decision["verified_at"], entry["decision"]["verified_at"]);
    assert_eq!(
        stand.fake.receipt_stats("r-1").await.1,
        1,
        "Bootpay's confirm is not called again"
    );
}

#[tokio::test]
async fn a_ledger_that_does_not_answer_holds_purchases_and_rejects_nothing() {
    let stand = Stand::with(
        json!([receipt("r-1", "o-1", json!(1), 1)]),
        QueueOptions::one_receive(),
        &[],
    )
    .await;
    let table = stand.ledger().await;
    let worker = stand.worker(&[("LEDGER_TABLE", table.as_str())]).await;
    worker.wait_for_log(&["Worker started."], WAIT).await;
    let dynamodb = dynamodb_client(&stand.moto.endpoint);
    dynamodb
        .delete_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    stand.send_json(&purchase("r-1", "o-1", json!(1))).await;
    worker
        .wait_for_log(&["Intake paused", "ledger_unavailable"], WAIT)
        .await;
    // Outlast the visibility timeout: held, not handed back (one receive would be the
    // dead-letter queue).
    eventually("a few ledger attempts", WAIT, || async {
        (worker
            .logs()
            .iter()
            .filter(|l| l.contains("The ledger does not answer"))
            .count()
            >= 3)
            .then_some(())
    })
    .await;
    assert_eq!(stand.depth(&stand.result_url).await, 0, "nothing decided");
    stand.ledger().await;
    let decisions = stand.decisions(1, WAIT).await;
    assert_eq!(decisions[0].0["decision"], "fulfill");
    assert_eq!(
        stand.depth(&stand.dlq_url).await,
        0,
        "nothing dead-lettered"
    );
    worker.wait_for_log(&["Intake resumed"], WAIT).await;
}

#[tokio::test]
async fn a_virtual_account_is_parked_then_fulfilled_by_its_deposit_webhook() {
    let life = Life::start(json!([vbank("r-v", "o-v", 7000, 3600)])).await;
    let worker = life.worker().await;
    life.stand
        .send_json(&purchase("r-v", "o-v", json!(7000)))
        .await;
    worker
        .wait_for_log(&["Awaiting the virtual account's deposit"], WAIT)
        .await;
    let parked = life.entry("r-v").await;
    assert_eq!(parked["state"], "awaiting_deposit", "{parked}");
    assert!(parked["deposit_due"].is_string(), "{parked}");
    eventually("the purchase off its queue", WAIT, || async {
        (life.stand.depth(&life.stand.purchase_url).await == 0).then_some(())
    })
    .await;

    life.stand.fake.act("r-v", "deposit", json!({})).await;
    let decisions = life.stand.decisions(1, WAIT).await;
    let decision = &decisions[0].0;
    assert_eq!(decision["decision"], "fulfill", "{decision}");
    assert_eq!(decision["payment_status"], 1);
    assert!(decision.get("repeat").is_none());
    assert_eq!(life.entry("r-v").await["state"], "fulfilled");
    let deliveries = life.stand.fake.webhooks().await;
    assert!(
        deliveries
            .iter()
            .any(|d| d["webhook_type"] == "PAYMENT_COMPLETED" && d["delivered"] == true),
        "{deliveries:?}"
    );
    life.ingress
        .wait_for_log(&["Webhook queued.", "r-v", "PAYMENT_COMPLETED"], WAIT)
        .await;
}

#[tokio::test]
async fn a_deposit_deadline_that_passes_is_found_by_the_sweep_and_expired() {
    let life = Life::start(json!([vbank("r-v", "o-v", 7000, 3600)])).await;
    let worker = life.worker().await;
    life.stand
        .send_json(&purchase("r-v", "o-v", json!(7000)))
        .await;
    worker
        .wait_for_log(&["Awaiting the virtual account's deposit"], WAIT)
        .await;
    // Bootpay sends nothing when a deadline passes.
    life.stand.fake.act("r-v", "expire", json!({})).await;
    let report = life.stand.reconcile(&life.table).await;
    assert_eq!(report["awaiting_deposit"], 1, "{report}");
    assert_eq!(report["queued"], 1, "{report}");
    let decisions = life.stand.decisions(1, WAIT).await;
    let decision = &decisions[0].0;
    assert_eq!(decision["decision"], "reject", "{decision}");
    assert_eq!(decision["reason"], "expired");
    assert!(schema("decision.schema.json").is_valid(decision));
    assert_eq!(life.entry("r-v").await["state"], "expired");
}

#[tokio::test]
async fn cancels_after_fulfilment_are_revoked_once_per_change_of_the_amount() {
    let life = Life::start(json!([receipt("r-1", "o-1", json!(3000), 1)])).await;
    let worker = life.worker().await;
    life.stand
        .send_json(&purchase("r-1", "o-1", json!(3000)))
        .await;
    assert_eq!(
        life.stand.decisions(1, WAIT).await[0].0["decision"],
        "fulfill"
    );

    life.stand
        .fake
        .act("r-1", "cancel", json!({"price": 1000, "cancel_id": "c-1"}))
        .await;
    let partial = life.stand.decisions(1, WAIT).await;
    let partial = &partial[0].0;
    assert_eq!(partial["decision"], "revoke", "{partial}");
    assert_eq!(partial["reason"], "partially_cancelled");
    assert_eq!(partial["cancelled_price"], 1000);
    assert!(
        schema("decision.schema.json").is_valid(partial),
        "{partial}"
    );

    // The same cancel told again (a webhook without its type, so the ingress queues it):
    // nothing new.
    let again = life
        .post_webhook(json!({"receipt_id": "r-1", "status": 20}))
        .await;
    assert_eq!(again.status(), 200);
    worker
        .wait_for_log(
            &["The notification changes nothing.", "no_new_cancel"],
            WAIT,
        )
        .await;

    life.stand
        .fake
        .act("r-1", "cancel", json!({"price": 2000, "cancel_id": "c-2"}))
        .await;
    let full = life.stand.decisions(1, WAIT).await;
    let full = &full[0].0;
    assert_eq!(full["decision"], "revoke", "{full}");
    assert_eq!(full["reason"], "cancelled");
    assert_eq!(full["cancelled_price"], 3000);
    let entry = life.entry("r-1").await;
    assert_eq!(entry["state"], "revoked", "{entry}");
    assert_eq!(entry["cancelled_price"], 3000);

    // The purchase enqueued again gets the latest decision, marked as a repeat; nothing
    // else was published in between.
    life.stand
        .send_json(&purchase("r-1", "o-1", json!(3000)))
        .await;
    let repeat = life.stand.decisions(1, WAIT).await;
    assert_eq!(repeat[0].0["decision"], "revoke");
    assert_eq!(repeat[0].0["repeat"], true);
    assert!(life.stand.drain(&life.stand.result_url).await.is_empty());
}

#[tokio::test]
async fn a_console_cancel_with_no_webhook_is_found_by_the_sweep() {
    let life = Life::start(json!([receipt("r-1", "o-1", json!(3000), 1)])).await;
    let _worker = life.worker().await;
    life.stand
        .send_json(&purchase("r-1", "o-1", json!(3000)))
        .await;
    assert_eq!(
        life.stand.decisions(1, WAIT).await[0].0["decision"],
        "fulfill"
    );
    life.stand
        .fake
        .act("r-1", "cancel", json!({"silent": true}))
        .await;
    let report = life.stand.reconcile(&life.table).await;
    assert_eq!(report["fulfilled"], 1, "{report}");
    let decisions = life.stand.decisions(1, WAIT).await;
    assert_eq!(decisions[0].0["decision"], "revoke", "{:?}", decisions[0].0);
    assert_eq!(decisions[0].0["reason"], "cancelled");
    assert!(
        life.stand
            .fake
            .webhooks()
            .await
            .iter()
            .all(|d| d["receipt_id"] != "r-1" || d["webhook_type"] != "PAYMENT_CANCELLED"),
        "the console cancel sent no webhook"
    );
}

#[tokio::test]
async fn forged_webhooks_change_nothing_and_a_flood_costs_one_lookup() {
    let life = Life::start(json!([
        receipt("r-pending", "o-pending", json!(3000), 0),
        receipt("r-sentinel", "o-sentinel", json!(1), 1)
    ]))
    .await;
    let worker = life
        .stand
        .worker(&[
            ("LEDGER_TABLE", life.table.as_str()),
            ("REQUEUE_BASE_DELAY_SECS", "600"),
        ])
        .await;
    life.stand
        .send_json(&purchase("r-pending", "o-pending", json!(3000)))
        .await;
    worker
        .wait_for_log(&["payment status 0 is not final"], WAIT)
        .await;
    assert_eq!(life.entry("r-pending").await["state"], "pending");

    // "Paid", says the forger; Bootpay says otherwise.
    let forged = json!({"receipt_id": "r-pending", "status": 1, "price": 3000,
                        "webhook_type": "PAYMENT_COMPLETED"});
    assert_eq!(life.post_webhook(forged).await.status(), 200);
    worker
        .wait_for_log(&["The notification changes nothing.", "not_final"], WAIT)
        .await;
    // A flood about a receipt Bootpay does not know: queued once, looked up once.
    for _ in 0..20 {
        let body =
            json!({"receipt_id": "r-forged", "status": 1, "webhook_type": "PAYMENT_COMPLETED"});
        assert_eq!(life.post_webhook(body).await.status(), 200);
    }
    worker
        .wait_for_log(
            &["The notification changes nothing.", "unknown_receipt"],
            WAIT,
        )
        .await;
    let queued = life
        .ingress
        .logs()
        .iter()
        .filter(|l| l.contains("Webhook queued.") && l.contains("r-forged"))
        .count();
    assert_eq!(queued, 1, "repeats within the window are not queued again");
    let lookups = life
        .stand
        .fake
        .requests()
        .await
        .iter()
        .filter(|r| r.contains("/receipt/r-forged"))
        .count();
    assert_eq!(lookups, 1);
    assert_eq!(
        life.entry("r-forged").await,
        Value::Null,
        "nothing kept for a forgery"
    );

    life.stand
        .send_json(&purchase("r-sentinel", "o-sentinel", json!(1)))
        .await;
    let decisions = life.stand.decisions(1, WAIT).await;
    assert_eq!(
        decisions[0].0["receipt_id"], "r-sentinel",
        "no decision came of the forgeries"
    );
    assert_eq!(life.entry("r-pending").await["state"], "pending");
}

#[tokio::test]
async fn v1_feedback_is_acted_on_and_its_private_key_is_never_logged() {
    let life = Life::start(json!([receipt("r-1", "o-1", json!(12000), 2)])).await;
    life.stand
        .fake
        .send_webhooks_to(
            None,
            Some(&format!("{}/webhooks/bootpay/v1", life.ingress_url)),
        )
        .await;
    let worker = life.worker().await;
    life.stand
        .send_json(&purchase("r-1", "o-1", json!(12000)))
        .await;
    assert_eq!(
        life.stand.decisions(1, WAIT).await[0].0["decision"],
        "fulfill"
    );
    life.stand.fake.act("r-1", "cancel", json!({})).await;
    let revoke = life.stand.decisions(1, WAIT).await;
    assert_eq!(revoke[0].0["decision"], "revoke");
    let deliveries = life.stand.fake.webhooks().await;
    assert!(
        deliveries
            .iter()
            .any(|d| d["dialect"] == "v1" && d["delivered"] == true),
        "{deliveries:?}"
    );
    for line in life.ingress.logs().iter().chain(worker.logs().iter()) {
        assert!(
            !line.contains(PRIVATE_KEY),
            "the private key was logged: {line}"
        );
    }
}

/// A DynamoDB client for moto at `endpoint`.
fn dynamodb_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

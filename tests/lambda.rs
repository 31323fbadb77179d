//! The Lambda function, end to end: the real `receipt-verifier-lambda` binary driven
//! through the real `lambda_runtime` client by `lambda-simulator` (which plays the Runtime
//! API), while this harness plays the SQS event source mapping over moto's SQS: it
//! receives with every attribute, builds the event, invokes with a deadline, kills the
//! function at the deadline, and deletes only what the function reported successful.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail"
)]

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use lambda_simulator::{InvocationBuilder, InvocationStatus, Simulator};
use serde_json::{Value, json};
use support::*;

const WAIT: Duration = Duration::from_secs(60);
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(10);

/// What one poll of the event source mapping saw.
#[derive(Debug, PartialEq)]
enum Invoked {
    /// Nothing to receive.
    Empty,
    /// The function answered; these records were reported failed.
    Answered {
        records: Vec<String>,
        failed: Vec<String>,
    },
    /// The invocation failed as a whole, with this `errorType`.
    Failed {
        records: Vec<String>,
        error_type: String,
    },
    /// The function did not answer before its deadline and was killed.
    TimedOut,
}

/// The function's execution environment and the event source mapping around it.
struct Lambda {
    stand: Stand,
    simulator: Simulator,
    function: Option<Worker>,
    env: Vec<(String, String)>,
    purchase_arn: String,
    timeout: Duration,
}

impl Lambda {
    async fn start(stand: Stand, overrides: &[(&str, &str)]) -> Self {
        Self::with_timeout(stand, FUNCTION_TIMEOUT, overrides).await
    }

    async fn with_timeout(stand: Stand, timeout: Duration, overrides: &[(&str, &str)]) -> Self {
        Self::launch(stand, Mode::V2Token, timeout, overrides).await
    }

    async fn launch(
        stand: Stand,
        mode: Mode,
        timeout: Duration,
        overrides: &[(&str, &str)],
    ) -> Self {
        let simulator = Simulator::builder()
            .function_name("receipt-verifier")
            .invocation_timeout(timeout)
            .build()
            .await
            .expect("start lambda-simulator");
        let mut env: Vec<(String, String)> = stand
            .worker_env_in(mode)
            .into_iter()
            .filter(|(k, _)| k != "PURCHASE_QUEUE_URL")
            .chain(simulator.lambda_env_vars())
            .collect();
        for (k, v) in overrides {
            env.retain(|(key, _)| key != k);
            if !v.is_empty() {
                env.push(((*k).to_owned(), (*v).to_owned()));
            }
        }
        let purchase_arn = queue_arn(&stand.sqs, &stand.purchase_url).await;
        let mut lambda = Self {
            stand,
            simulator,
            function: None,
            env,
            purchase_arn,
            timeout,
        };
        lambda.spawn().await;
        lambda
    }

    /// A new execution environment: the process is started again.
    async fn spawn(&mut self) {
        self.function = Some(
            Worker::spawn_binary(
                env!("CARGO_BIN_EXE_receipt-verifier-lambda"),
                &[],
                self.env.clone(),
                &[],
            )
            .await,
        );
    }

    fn function(&self) -> &Worker {
        self.function.as_ref().expect("a running function")
    }

    fn logs(&self) -> Vec<String> {
        self.function().logs()
    }

    /// One poll: receives up to `batch` records, invokes the function with them, and
    /// applies the event source mapping's rules to its answer.
    async fn poll(&mut self, batch: usize) -> Invoked {
        let messages = self.receive(batch).await;
        if messages.is_empty() {
            return Invoked::Empty;
        }
        let records: Vec<String> = messages
            .iter()
            .map(|m| m.message_id().unwrap().to_owned())
            .collect();
        let event = json!({"Records": messages.iter().map(|m| self.record(m)).collect::<Vec<_>>()});
        let invocation = InvocationBuilder::new()
            .payload(event)
            .timeout_ms(self.timeout.as_millis() as u64)
            .build()
            .unwrap();
        let request_id = self.simulator.enqueue(invocation).await;
        let state = match self
            .simulator
            .wait_for_invocation_complete(&request_id, self.timeout)
            .await
        {
            Ok(state) => state,
            Err(_) => {
                // Lambda kills a function still running at its deadline.
                self.function = None;
                self.spawn().await;
                return Invoked::TimedOut;
            }
        };
        match state.status {
            InvocationStatus::Success => {
                let payload = state.response.expect("a response").payload;
                let failed = self.failures(&payload, &records);
                match failed {
                    Some(failed) => {
                        let done: Vec<&Message> = messages
                            .iter()
                            .filter(|m| !failed.contains(&m.message_id().unwrap().to_owned()))
                            .collect();
                        self.delete(&done).await;
                        Invoked::Answered { records, failed }
                    }
                    None => Invoked::Failed {
                        records,
                        error_type: "InvalidBatchResponse".into(),
                    },
                }
            }
            _ => Invoked::Failed {
                records,
                error_type: state.error.map(|e| e.error_type).unwrap_or_default(),
            },
        }
    }

    /// Polls until a poll receives something (each empty receive waits a second).
    async fn poll_next(&mut self, batch: usize) -> Invoked {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            match self.poll(batch).await {
                Invoked::Empty => assert!(
                    std::time::Instant::now() < deadline,
                    "nothing to receive within {WAIT:?}"
                ),
                other => return other,
            }
        }
    }

    /// Polls until the purchase queue has nothing visible; returns every answer.
    async fn drain(&mut self, batch: usize) -> Vec<Invoked> {
        let mut answers = Vec::new();
        loop {
            match self.poll(batch).await {
                Invoked::Empty => return answers,
                other => answers.push(other),
            }
        }
    }

    /// The ids reported failed, or `None` when the response would fail the whole batch
    /// (an identifier that is empty or not a message of the batch).
    fn failures(&self, payload: &Value, records: &[String]) -> Option<Vec<String>> {
        if payload.is_null() {
            return Some(Vec::new());
        }
        let items = match &payload["batchItemFailures"] {
            Value::Null => return Some(Vec::new()),
            Value::Array(items) => items,
            _ => return None,
        };
        items
            .iter()
            .map(|item| {
                item["itemIdentifier"]
                    .as_str()
                    .filter(|id| records.iter().any(|r| r == id))
                    .map(str::to_owned)
            })
            .collect()
    }

    async fn receive(&self, batch: usize) -> Vec<Message> {
        let mut messages = Vec::new();
        while messages.len() < batch {
            let want = (batch - messages.len()).min(10) as i32;
            let out = self
                .stand
                .sqs
                .receive_message()
                .queue_url(&self.stand.purchase_url)
                .max_number_of_messages(want)
                .wait_time_seconds(if messages.is_empty() { 1 } else { 0 })
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .expect("receive");
            let got = out.messages.unwrap_or_default();
            if got.is_empty() {
                break;
            }
            messages.extend(got);
        }
        messages
    }

    async fn delete(&self, messages: &[&Message]) {
        for m in messages {
            self.stand
                .sqs
                .delete_message()
                .queue_url(&self.stand.purchase_url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .expect("delete");
        }
    }

    /// A record of an SQS event, as the event source mapping writes it.
    fn record(&self, message: &Message) -> Value {
        let attributes: HashMap<&str, &str> = message
            .attributes()
            .map(|a| a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
            .unwrap_or_default();
        let message_attributes: HashMap<&str, Value> = message
            .message_attributes()
            .map(|a| {
                a.iter()
                    .map(|(k, v)| {
                        (
                            k.as_str(),
                            json!({"stringValue": v.string_value(), "stringListValues": [],
                                   "binaryListValues": [], "dataType": v.data_type()}),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "messageId": message.message_id(),
            "receiptHandle": message.receipt_handle(),
            "body": message.body(),
            "attributes": attributes,
            "messageAttributes": message_attributes,
            "md5OfBody": message.md5_of_body(),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.purchase_arn,
            "awsRegion": "us-east-1",
        })
    }
}

fn paid(receipt_id: &str, order_id: &str, price: i64) -> Value {
    receipt(receipt_id, order_id, json!(price), 1)
}

#[tokio::test]
async fn every_row_of_the_decision_table_with_one_token_for_every_invocation() {
    let table = decision_table();
    let stand = Stand::start(table.receipts).await;
    let events = table.events;
    for event in &events {
        stand.send_json(event).await;
    }
    let mut lambda = Lambda::start(stand, &[]).await;
    let answers = lambda.drain(5).await;
    assert!(answers.len() >= 3, "batches of five: {answers:?}");
    for answer in &answers {
        assert!(
            matches!(answer, Invoked::Answered { failed, .. } if failed.is_empty()),
            "{answer:?}"
        );
    }

    let stand = &lambda.stand;
    let decisions = stand.decisions(events.len(), WAIT).await;
    let by_id = by_receipt(&decisions);
    for (id, decision, reason) in table.expected {
        assert_eq!(by_id[id]["decision"], decision, "{id}: {}", by_id[id]);
        assert_eq!(by_id[id]["reason"], reason, "{id}: {}", by_id[id]);
    }
    let decision_schema = schema("decision.schema.json");
    for (body, message) in &decisions {
        assert!(decision_schema.validate(body).is_ok(), "{body}");
        assert_eq!(
            attribute(message, "reason").as_deref(),
            body["reason"].as_str()
        );
    }
    assert_eq!(
        by_id["r-paid"]["metadata"],
        json!({"user": 42, "sku": ["gem-pack"]})
    );
    assert_eq!(by_id["r-paid"]["event_id"], "evt-1");

    // Confirmed once when everything matched; never when the price was tampered.
    assert_eq!(stand.fake.receipt_stats("r-confirm").await, (1, 1, 1));
    let (_, confirms, status) = stand.fake.receipt_stats("r-confirm-tampered").await;
    assert_eq!(
        (confirms, status),
        (0, 2),
        "a tampered payment must never be confirmed"
    );

    // One token served every invocation of the execution environment.
    let stats = stand.fake.stats().await;
    assert_eq!(stats["tokens_issued"], 1, "{stats}");
    assert_eq!(stand.depth(&stand.purchase_url).await, 0);
    assert_eq!(stand.depth(&stand.dlq_url).await, 0);

    // One summary line per invocation, with the counts, and an EMF document.
    let logs = lambda.logs();
    let emf: Vec<Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), answers.len(), "{logs:#?}");
    let records: u64 = emf.iter().map(|d| d["Records"].as_u64().unwrap()).sum();
    let fulfilled: u64 = emf.iter().map(|d| d["Fulfilled"].as_u64().unwrap()).sum();
    assert_eq!((records, fulfilled), (events.len() as u64, 3));
    let bootpay: u64 = emf
        .iter()
        .map(|d| d["BootpayRequests"].as_u64().unwrap())
        .sum();
    let served: u64 = ["token_requests", "receipt_requests", "confirm_requests"]
        .iter()
        .map(|k| stats[*k].as_u64().unwrap())
        .sum();
    assert_eq!(
        bootpay, served,
        "the function counts what the fake served: {stats}"
    );
}

#[tokio::test]
async fn the_decision_table_under_v1_and_with_client_and_secret_keys() {
    for mode in [Mode::V1, Mode::V2Basic] {
        let table = decision_table();
        let stand = Stand::start(table.receipts).await;
        for event in &table.events {
            stand.send_json(event).await;
        }
        let mut lambda = Lambda::launch(stand, mode, FUNCTION_TIMEOUT, &[]).await;
        lambda.drain(10).await;
        let stand = &lambda.stand;
        let decisions = stand.decisions(table.events.len(), WAIT).await;
        let by_id = by_receipt(&decisions);
        for (id, decision, reason) in &table.expected {
            assert_eq!(
                by_id[*id]["decision"], *decision,
                "{mode:?} {id}: {}",
                by_id[*id]
            );
            assert_eq!(
                by_id[*id]["reason"], *reason,
                "{mode:?} {id}: {}",
                by_id[*id]
            );
        }
        let stats = stand.fake.stats().await;
        let tokens = u64::from(mode == Mode::V1);
        assert_eq!(stats["token_requests"], tokens, "{mode:?}: {stats}");
        for line in lambda.logs() {
            assert!(
                !line.contains(SECRET_KEY) && !line.contains(PRIVATE_KEY),
                "{line}"
            );
        }
    }
}

#[tokio::test]
async fn a_malformed_record_is_dead_lettered_alone_in_a_batch_of_ten() {
    let receipts: Vec<Value> = (0..9)
        .map(|i| paid(&format!("r-{i}"), &format!("o-{i}"), 1000))
        .collect();
    let stand = Stand::start(Value::Array(receipts)).await;
    let malformed = r#"{"receipt_id": "r-broken", "price": "free"}"#;
    let mut bodies: Vec<String> = (0..9)
        .map(|i| purchase(&format!("r-{i}"), &format!("o-{i}"), json!(1000)).to_string())
        .collect();
    bodies.insert(4, malformed.to_owned());
    stand.send_batch(&bodies).await;
    let mut lambda = Lambda::start(stand, &[]).await;

    let answer = lambda.poll(10).await;
    let Invoked::Answered { records, failed } = &answer else {
        panic!("{answer:?}")
    };
    assert_eq!(records.len(), 10, "one batch of ten");
    assert!(failed.is_empty(), "{answer:?}");
    let stand = &lambda.stand;
    let decisions = stand.decisions(9, WAIT).await;
    assert!(decisions.iter().all(|(d, _)| d["decision"] == "fulfill"));
    let letters = stand.take(&stand.dlq_url, 1, WAIT).await;
    assert_eq!(letters[0].body(), Some(malformed), "byte for byte");
    assert_eq!(
        attribute(&letters[0], "error_code").as_deref(),
        Some("missing_field")
    );
    assert_eq!(stand.depth(&stand.purchase_url).await, 0);
}

#[tokio::test]
async fn a_record_that_is_not_final_comes_back_with_a_growing_delay() {
    let stand = Stand::start(json!([receipt("r-vbank", "o-vbank", json!(5000), 5)])).await;
    stand
        .send_json(&purchase("r-vbank", "o-vbank", json!(5000)))
        .await;
    let mut lambda = Lambda::start(stand, &[("REQUEUE_BASE_DELAY_SECS", "1")]).await;

    for attempt in 1..=2u64 {
        let answer = lambda.poll_next(10).await;
        let Invoked::Answered { records, failed } = &answer else {
            panic!("{answer:?}")
        };
        assert_eq!(failed, records, "an undecided record is reported failed");
        // Handed back with the requeue delay for its receive count: 1 s, then 2 s.
        let delay = 1u64 << (attempt - 1);
        lambda
            .function()
            .wait_for_log(
                &[
                    "No decision yet",
                    &format!("retry_in_secs={delay}"),
                    &format!("attempt={attempt}"),
                ],
                WAIT,
            )
            .await;
    }
    let stand = &lambda.stand;
    assert_eq!(stand.depth(&stand.result_url).await, 0, "no decision");
    assert_eq!(stand.depth(&stand.dlq_url).await, 0);
}

#[tokio::test]
async fn with_a_ledger_a_repeat_is_answered_from_it_and_a_deposit_webhook_fulfils_a_parked_purchase()
 {
    let stand = Stand::start(json!([
        paid("r-1", "o-1", 3000),
        receipt("r-vbank", "o-vbank", json!(5000), 5),
    ]))
    .await;
    let table = stand.ledger().await;
    let (_ingress, webhooks) = stand.ingress(&[]).await;
    stand
        .fake
        .send_webhooks_to(Some(&format!("{webhooks}/webhooks/bootpay")), None)
        .await;
    for (receipt_id, order_id, price) in [
        ("r-1", "o-1", 3000),
        ("r-1", "o-1", 3000),
        ("r-vbank", "o-vbank", 5000),
    ] {
        stand
            .send_json(&purchase(receipt_id, order_id, json!(price)))
            .await;
    }
    let mut lambda = Lambda::start(stand, &[("LEDGER_TABLE", &table)]).await;

    // One at a time, so that the repeat meets the recorded decision.
    for answer in lambda.drain(1).await {
        assert!(
            matches!(&answer, Invoked::Answered { failed, .. } if failed.is_empty()),
            "every record is done: {answer:?}"
        );
    }
    let stand = &lambda.stand;
    let mut seen: Vec<(Value, Value, bool)> = stand
        .decisions(2, WAIT)
        .await
        .into_iter()
        .map(|(d, _)| {
            (
                d["receipt_id"].clone(),
                d["decision"].clone(),
                d["repeat"] == true,
            )
        })
        .collect();
    seen.sort_by_key(|(_, _, repeat)| *repeat);
    assert_eq!(
        seen,
        [
            (json!("r-1"), json!("fulfill"), false),
            (json!("r-1"), json!("fulfill"), true),
        ]
    );
    // The virtual account is parked in the ledger, off the queue, with no decision yet.
    assert_eq!(
        stand.ledger_entry(&table, "r-vbank").await["state"],
        "awaiting_deposit"
    );
    assert_eq!(stand.depth(&stand.purchase_url).await, 0);
    assert_eq!(stand.depth(&stand.result_url).await, 0);

    // The deposit: bootpay-fake posts the webhook, the ingress queues a notification, and
    // the function, invoked with it, fulfils the purchase.
    stand.fake.act("r-vbank", "deposit", json!({})).await;
    let answer = lambda.poll_next(10).await;
    assert!(
        matches!(&answer, Invoked::Answered { failed, .. } if failed.is_empty()),
        "{answer:?}"
    );
    let stand = &lambda.stand;
    let decisions = stand.decisions(1, WAIT).await;
    let decision = &decisions[0].0;
    assert_eq!(decision["receipt_id"], "r-vbank", "{decision}");
    assert_eq!(decision["decision"], "fulfill", "{decision}");
    assert_eq!(decision["reason"], "verified", "{decision}");
    assert_eq!(
        stand.ledger_entry(&table, "r-vbank").await["state"],
        "fulfilled"
    );
}

#[tokio::test]
async fn bootpay_down_fails_the_invocation_and_rejects_nothing() {
    let receipts: Vec<Value> = (0..3)
        .map(|i| paid(&format!("r-{i}"), &format!("o-{i}"), 1000))
        .collect();
    let stand = Stand::start(Value::Array(receipts)).await;
    for i in 0..3 {
        stand
            .send_json(&purchase(&format!("r-{i}"), &format!("o-{i}"), json!(1000)))
            .await;
    }
    stand.send(r#"{"not": "a purchase"}"#).await;
    stand.fake.set_outage(true).await;
    let mut lambda = Lambda::start(
        stand,
        &[
            ("BOOTPAY_RETRY_BUDGET_SECS", "1"),
            ("REQUEUE_BASE_DELAY_SECS", "1"),
        ],
    )
    .await;

    let answer = lambda.poll(10).await;
    assert!(
        matches!(&answer, Invoked::Failed { records, error_type } if records.len() == 4 && error_type == "BootpayUnavailable"),
        "{answer:?}"
    );
    let stand = &lambda.stand;
    assert_eq!(stand.depth(&stand.result_url).await, 0, "nothing rejected");
    // The malformed record was dead-lettered, and deleted by the function itself, since
    // a failed invocation deletes nothing: it is not dead-lettered twice.
    assert_eq!(stand.take(&stand.dlq_url, 1, WAIT).await.len(), 1);
    assert_eq!(stand.depth(&stand.purchase_url).await, 3);

    lambda.stand.fake.set_outage(false).await;
    // Handed back with the requeue delay, they come back and are decided.
    let answer = lambda.poll_next(10).await;
    assert!(
        matches!(&answer, Invoked::Answered { records, failed } if records.len() == 3 && failed.is_empty()),
        "{answer:?}"
    );
    let stand = &lambda.stand;
    let decisions = stand.decisions(3, WAIT).await;
    assert!(decisions.iter().all(|(d, _)| d["decision"] == "fulfill"));
    assert_eq!(stand.depth(&stand.dlq_url).await, 0);
}

#[tokio::test]
async fn refused_credentials_fail_the_invocation_and_reject_nothing() {
    let stand = Stand::start(json!([paid("r-1", "o-1", 1000)])).await;
    stand.send_json(&purchase("r-1", "o-1", json!(1000))).await;
    stand.fake.set_credentials(APP_ID, "a-rotated-key").await;
    let mut lambda = Lambda::start(stand, &[]).await;
    let answer = lambda.poll(10).await;
    assert!(
        matches!(&answer, Invoked::Failed { error_type, .. } if error_type == "CredentialsRefused"),
        "{answer:?}"
    );
    let stand = &lambda.stand;
    assert_eq!(stand.depth(&stand.result_url).await, 0);
    assert_eq!(stand.depth(&stand.dlq_url).await, 0);
    assert_eq!(stand.depth(&stand.purchase_url).await, 1);
}

#[tokio::test]
async fn a_deadline_too_short_for_every_record_starts_only_what_fits() {
    // Each lookup takes 700 ms, one at a time; a record starts only with a second left
    // before the cutoff (the 3.5 s deadline less a 500 ms reserve): records start at
    // about 0, 0.7, 1.4 and 2.1 s, not at 2.8, so three or four are verified (fewer on a
    // slow machine) and the rest are handed back untouched, in time.
    let receipts: Vec<Value> = (0..6)
        .map(|i| {
            let mut r = paid(&format!("r-{i}"), &format!("o-{i}"), 1000);
            r["fault"] = json!({"latency_ms": 700});
            r
        })
        .collect();
    let stand = Stand::start(Value::Array(receipts)).await;
    let bodies: Vec<String> = (0..6)
        .map(|i| purchase(&format!("r-{i}"), &format!("o-{i}"), json!(1000)).to_string())
        .collect();
    stand.send_batch(&bodies).await;
    let mut lambda = Lambda::with_timeout(
        stand,
        Duration::from_millis(3500),
        &[("WORKER_CONCURRENCY", "1"), ("DEADLINE_RESERVE_MS", "500")],
    )
    .await;
    // The token is fetched at the first lookup; take it first so timings are the lookups'.
    lambda.stand.fake.current_token().await;

    let answer = lambda.poll(10).await;
    let Invoked::Answered { records, failed } = &answer else {
        panic!("{answer:?}")
    };
    assert_eq!(records.len(), 6);
    let verified = records.len() - failed.len();
    assert!((2..=4).contains(&verified), "{answer:?}");
    let stand = &lambda.stand;
    let decisions = stand.decisions(verified, WAIT).await;
    let decided: HashSet<String> = decisions
        .iter()
        .map(|(d, _)| d["receipt_id"].as_str().unwrap().to_owned())
        .collect();
    let stats = stand.fake.stats().await;
    let looked_up: HashSet<String> = stats["receipts"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, s)| s["lookups"].as_u64() > Some(0))
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(
        decided, looked_up,
        "the records not started were never looked up"
    );
    lambda
        .function()
        .wait_for_log(&["Not enough time left before the deadline"], WAIT)
        .await;
    // Handed back at once, they are decided by the next invocations.
    let answers = lambda.drain(10).await;
    assert!(!answers.is_empty());
    let rest = lambda.stand.decisions(6 - verified, WAIT).await;
    assert_eq!(rest.len(), 6 - verified);
}

#[tokio::test]
async fn fifo_groups_keep_their_order_after_an_undecided_record() {
    let stand = Stand::with(
        json!([
            receipt("r-a1", "o-a1", json!(1000), 5),
            paid("r-a2", "o-a2", 1000),
            paid("r-a3", "o-a3", 1000),
            paid("r-b1", "o-b1", 1000),
            paid("r-b2", "o-b2", 1000),
        ]),
        QueueOptions {
            fifo: true,
            visibility_timeout_secs: 60,
            ..QueueOptions::default()
        },
        &[],
    )
    .await;
    for (receipt_id, group) in [
        ("r-a1", "group-a"),
        ("r-b1", "group-b"),
        ("r-a2", "group-a"),
        ("r-b2", "group-b"),
        ("r-a3", "group-a"),
    ] {
        stand
            .sqs
            .send_message()
            .queue_url(&stand.purchase_url)
            .message_body(
                purchase(receipt_id, &receipt_id.replace("r-", "o-"), json!(1000)).to_string(),
            )
            .message_group_id(group)
            .send()
            .await
            .unwrap();
    }
    let mut lambda = Lambda::start(stand, &[("REQUEUE_BASE_DELAY_SECS", "30")]).await;
    let answer = lambda.poll(10).await;
    let Invoked::Answered { records, failed } = &answer else {
        panic!("{answer:?}")
    };
    assert_eq!(records.len(), 5, "{answer:?}");
    assert_eq!(
        failed.len(),
        3,
        "group a is held back from its first record on: {answer:?}"
    );

    let stand = &lambda.stand;
    let decisions = stand.decisions(2, WAIT).await;
    let decided: HashSet<&str> = decisions
        .iter()
        .map(|(d, _)| d["receipt_id"].as_str().unwrap())
        .collect();
    assert_eq!(decided, HashSet::from(["r-b1", "r-b2"]));
    for untouched in ["r-a2", "r-a3"] {
        let (lookups, _, _) = stand.fake.receipt_stats(untouched).await;
        assert_eq!(
            lookups, 0,
            "{untouched} follows an undecided record of its group"
        );
    }
    assert_eq!(stand.fake.receipt_stats("r-a1").await.0, 1);
}

#[tokio::test]
async fn the_private_key_is_absent_from_every_log_line() {
    let stand = Stand::start(json!([paid("r-1", "o-1", 1000)])).await;
    stand.send_json(&purchase("r-1", "o-1", json!(1000))).await;
    let mut lambda = Lambda::start(
        stand,
        &[
            ("AWS_LAMBDA_LOG_LEVEL", "TRACE"),
            ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ],
    )
    .await;
    assert!(matches!(lambda.poll(10).await, Invoked::Answered { .. }));
    lambda.stand.decisions(1, WAIT).await;
    let token = lambda.stand.fake.current_token().await;
    let logs = lambda.logs();
    assert!(logs.len() > 10, "trace logging: {logs:#?}");
    // JSON lines, as Lambda's JSON log format asks for, each carrying the record's span.
    let decided = logs
        .iter()
        .find(|l| l.contains("Decision published."))
        .expect("a decision line");
    let line: Value = serde_json::from_str(decided).expect("a JSON log line");
    assert_eq!(line["span"]["receipt_id"], "r-1", "{line}");
    assert_eq!(line["span"]["attempt"], 1, "{line}");
    for line in &logs {
        assert!(!line.contains(PRIVATE_KEY), "private key in: {line}");
        assert!(!line.contains(&token), "token in: {line}");
    }
}

#[tokio::test]
async fn a_misconfiguration_fails_the_init_with_a_clear_message() {
    let stand = Stand::start(json!([])).await;
    let missing = format!("{}-gone", stand.result_url);
    let mut lambda = Lambda::start(stand, &[("RESULT_QUEUE_URL", &missing)]).await;
    let function = lambda.function.as_mut().unwrap();
    assert_eq!(function.exit_code(WAIT).await, Some(2));
    let error = lambda
        .simulator
        .get_init_error()
        .await
        .expect("an init error");
    assert!(
        error.contains("refusing to start") && error.contains("-gone"),
        "{error}"
    );

    let mut lambda =
        Lambda::start(Stand::start(json!([])).await, &[("RESULT_QUEUE_URL", "")]).await;
    assert_eq!(
        lambda.function.as_mut().unwrap().exit_code(WAIT).await,
        Some(2)
    );
    let error = lambda
        .simulator
        .get_init_error()
        .await
        .expect("an init error");
    assert!(error.contains("RESULT_QUEUE_URL"), "{error}");
}

#[tokio::test]
async fn message_attributes_reach_the_decision_and_the_dead_letter() {
    let stand = Stand::start(json!([paid("r-1", "o-1", 1000)])).await;
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let traced = HashMap::from([(
        "traceparent".to_owned(),
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(trace)
            .build()
            .unwrap(),
    )]);
    stand
        .send_with(
            purchase("r-1", "o-1", json!(1000)).to_string(),
            traced.clone(),
        )
        .await;
    stand.send_with("not json", traced).await;
    let mut lambda = Lambda::start(stand, &[]).await;
    lambda.drain(10).await;
    let stand = &lambda.stand;
    let (_, decision) = &stand.decisions(1, WAIT).await[0];
    assert_eq!(attribute(decision, "traceparent").as_deref(), Some(trace));
    let letter = &stand.take(&stand.dlq_url, 1, WAIT).await[0];
    assert_eq!(attribute(letter, "traceparent").as_deref(), Some(trace));
    assert_eq!(
        attribute(letter, "error_code").as_deref(),
        Some("invalid_json")
    );
}

/// cargo-lambda's own emulator, installed by the test script into `.venv`.
fn cargo_lambda_path() -> std::path::PathBuf {
    if let Ok(path) = std::env::var("CARGO_LAMBDA") {
        return path.into();
    }
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/cargo-lambda")
}

/// A port nobody listens on now. cargo-lambda's emulator cannot be asked for port 0, so
/// the port is chosen here; the test tries again if it was taken meanwhile.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

#[tokio::test]
async fn a_smoke_run_through_cargo_lambdas_own_emulator() {
    let stand = Stand::start(json!([paid("r-1", "o-1", 1000)])).await;
    stand.send_json(&purchase("r-1", "o-1", json!(1000))).await;
    let cargo_lambda = cargo_lambda_path();
    assert!(
        cargo_lambda.exists(),
        "{} is missing: run the tests with scripts/test.sh, which installs cargo-lambda",
        cargo_lambda.display()
    );
    let cargo_lambda = cargo_lambda.to_str().unwrap().to_owned();
    let path = [("PATH".to_owned(), std::env::var("PATH").unwrap_or_default())];
    let (emulator, port) = {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port().to_string();
            let args = [
                "lambda",
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
                &port,
            ];
            let emulator = Worker::spawn_binary(&cargo_lambda, &args, path.to_vec(), &[]).await;
            let started = tokio::time::timeout(
                Duration::from_secs(30),
                emulator.wait_for_log(&["starting Runtime server", &format!(":{port}")], WAIT),
            )
            .await;
            if started.is_ok() && !emulator.logs().iter().any(|l| l.contains("in use")) {
                break (emulator, port);
            }
            assert!(
                attempt < 3,
                "cargo-lambda did not start: {:#?}",
                emulator.logs()
            );
        }
    };

    // The function as the emulator expects it; its event is one real record from moto.
    let purchase_arn = queue_arn(&stand.sqs, &stand.purchase_url).await;
    let mut env: Vec<(String, String)> = stand
        .worker_env()
        .into_iter()
        .filter(|(k, _)| k != "PURCHASE_QUEUE_URL")
        .collect();
    env.extend(
        [
            (
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt"),
            ),
            ("AWS_LAMBDA_FUNCTION_NAME", "_".to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".to_owned()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "1".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let function =
        Worker::spawn_binary(env!("CARGO_BIN_EXE_receipt-verifier-lambda"), &[], env, &[]).await;
    let message = stand
        .sqs
        .receive_message()
        .queue_url(&stand.purchase_url)
        .wait_time_seconds(5)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap()
        .remove(0);
    let event = json!({"Records": [{
        "messageId": message.message_id(),
        "receiptHandle": message.receipt_handle(),
        "body": message.body(),
        "attributes": message.attributes().map(|a| a.iter().map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect::<HashMap<_, _>>()),
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": purchase_arn,
        "awsRegion": "us-east-1",
    }]});
    let file = std::env::temp_dir().join(format!("rv-cargo-lambda-{}.json", std::process::id()));
    std::fs::write(&file, event.to_string()).unwrap();
    let output = tokio::process::Command::new(&cargo_lambda)
        .args([
            "lambda",
            "invoke",
            "-A",
            "127.0.0.1",
            "-P",
            &port,
            "--data-file",
        ])
        .arg(&file)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo lambda invoke failed: {stdout}\n{}\nfunction: {:#?}",
        String::from_utf8_lossy(&output.stderr),
        function.logs()
    );
    let response: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(response["batchItemFailures"], json!([]), "{response}");
    let decisions = stand.decisions(1, WAIT).await;
    assert_eq!(decisions[0].0["decision"], "fulfill");
    drop(emulator);
}

/// Deploys the Lambda template into moto (with a placeholder zip in S3 and the key in
/// Secrets Manager), reads back what it made, creates a user with nothing but the
/// function's policy, and switches on moto's authentication. Runs after [`MOTO_IAM_PY`].
const DEPLOY_LAMBDA: &str = r#"
import io, sys, zipfile
import boto3

endpoint, template, stack = sys.argv[1:4]
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="test", aws_secret_access_key="test")
s3, secrets, cfn, iam = (boto3.client(s, **kw) for s in ("s3", "secretsmanager", "cloudformation", "iam"))
lam, sqs = boto3.client("lambda", **kw), boto3.client("sqs", **kw)
s3.create_bucket(Bucket="code")
zipped = io.BytesIO()
with zipfile.ZipFile(zipped, "w") as z:
    z.writestr("bootstrap", "placeholder")
s3.put_object(Bucket="code", Key="receipt-verifier-lambda/bootstrap.zip", Body=zipped.getvalue())
secret = secrets.create_secret(Name="bootpay-private-key", SecretString="not-used")["ARN"]
params = {"CodeS3Bucket": "code", "BootpayApplicationId": "app", "BootpayPrivateKeySecretArn": secret,
          "FunctionTimeoutSeconds": "30", "MaximumConcurrency": "5"}
with open(template) as f:
    cfn.create_stack(StackName=stack, TemplateBody=f.read(), Capabilities=["CAPABILITY_IAM"],
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()])
described = cfn.describe_stacks(StackName=stack)["Stacks"][0]
outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
function = lam.get_function_configuration(FunctionName=outputs["FunctionName"])
mapping = lam.get_event_source_mapping(UUID=outputs["EventSourceMappingId"])
visibility = sqs.get_queue_attributes(QueueUrl=outputs["PurchaseQueueUrl"],
                                      AttributeNames=["VisibilityTimeout", "RedrivePolicy"])["Attributes"]
document = policy_document(iam, outputs["FunctionPolicyArn"])
admin, function_user = admin_and(iam, "receipt-verifier-lambda", outputs["FunctionPolicyArn"], document)
enable_auth(endpoint)
print(json.dumps({
    "status": described["StackStatus"], "outputs": outputs, "policy": document,
    "function": {k: function.get(k) for k in ("Runtime", "Handler", "Timeout", "Environment")},
    "mapping": {k: mapping.get(k) for k in ("FunctionResponseTypes", "ScalingConfig", "BatchSize",
                                            "MaximumBatchingWindowInSeconds", "EventSourceArn")},
    "queue": visibility, "admin": admin, "function_user": function_user,
}))
"#;

#[tokio::test]
async fn the_lambda_template_deploys_and_its_function_runs_with_only_its_policy() {
    let (moto, fake) = tokio::join!(
        Moto::start(),
        Fake::start(json!([paid("r-paid", "o-paid", 3000)]), &[])
    );
    let template = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/infra/cloudformation/receipt-verifier-lambda.yaml"
    );
    let out = tokio::process::Command::new(venv_python())
        .arg("-c")
        .arg(format!("{MOTO_IAM_PY}\n{DEPLOY_LAMBDA}"))
        .args([&moto.endpoint, template, "rvl"])
        .output()
        .await
        .expect("run the deploy script with the virtualenv's Python (scripts/dev-env.sh)");
    assert!(
        out.status.success(),
        "deploying failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stack: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stack["status"], "CREATE_COMPLETE", "{stack}");
    let output = |k: &str| stack["outputs"][k].as_str().unwrap().to_owned();

    // What the event source mapping and the queue must be for the function to be safe.
    assert_eq!(stack["function"]["Runtime"], "provided.al2023");
    assert_eq!(stack["function"]["Handler"], "bootstrap");
    assert_eq!(stack["function"]["Timeout"], 30);
    assert_eq!(
        stack["mapping"]["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
    assert_eq!(
        stack["mapping"]["ScalingConfig"],
        json!({"MaximumConcurrency": 5})
    );
    assert_eq!(
        stack["mapping"]["EventSourceArn"],
        output("PurchaseQueueArn")
    );
    let visibility: u64 = stack["queue"]["VisibilityTimeout"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        visibility >= 6 * 30 + 20,
        "visibility {visibility} s for a 30 s function and a batching window of up to 20 s"
    );
    let redrive: Value =
        serde_json::from_str(stack["queue"]["RedrivePolicy"].as_str().unwrap()).unwrap();
    assert!(redrive["maxReceiveCount"].as_u64().unwrap() >= 5);
    let env = &stack["function"]["Environment"]["Variables"];
    assert_eq!(env["RESULT_QUEUE_URL"], output("ResultQueueUrl"));

    // The function's policy: exactly what the function and its event source mapping call.
    let mut grants: HashMap<String, HashSet<String>> = HashMap::new();
    for statement in stack["policy"]["Statement"].as_array().unwrap() {
        assert_eq!(statement["Effect"], "Allow");
        let actions: Vec<String> = match &statement["Action"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(a) => a.iter().map(|a| a.as_str().unwrap().to_owned()).collect(),
            other => panic!("{other}"),
        };
        let resource = statement["Resource"].as_str().unwrap().to_owned();
        grants.entry(resource).or_default().extend(actions);
    }
    let set = |items: &[&str]| {
        items
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<HashSet<_>>()
    };
    assert_eq!(
        grants[&output("PurchaseQueueArn")],
        set(&[
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:ChangeMessageVisibility",
            "sqs:GetQueueAttributes",
            "sqs:GetQueueUrl"
        ])
    );
    let result_arn = output("PurchaseQueueArn").replace("-purchases", "-decisions");
    assert_eq!(
        grants[&result_arn],
        set(&["sqs:SendMessage", "sqs:GetQueueAttributes"])
    );
    let dlq_arn = output("PurchaseQueueArn").replace("-purchases", "-purchases-dlq");
    assert_eq!(
        grants[&dlq_arn],
        set(&["sqs:SendMessage", "sqs:GetQueueUrl"])
    );
    assert_eq!(grants.len(), 4, "queues and the log group only: {grants:?}");

    // The real function against the stack's queues, as the function's role.
    let key = |k: &str| stack["admin"][k].as_str().unwrap().to_owned();
    let sqs = {
        use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
        aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .endpoint_url(&moto.endpoint)
                .credentials_provider(Credentials::new(
                    key("id"),
                    key("secret"),
                    None,
                    None,
                    "admin",
                ))
                .build(),
        )
    };
    let stand = Stand {
        moto,
        sqs,
        fake,
        purchase_url: output("PurchaseQueueUrl"),
        result_url: output("ResultQueueUrl"),
        dlq_url: output("PurchaseDeadLetterQueueUrl"),
    };
    stand
        .send_json(&purchase("r-paid", "o-paid", json!(3000)))
        .await;
    stand.send("this is not a purchase {").await;
    let id = stack["function_user"]["id"].as_str().unwrap();
    let secret = stack["function_user"]["secret"].as_str().unwrap();
    let mut lambda = Lambda::start(
        stand,
        &[("AWS_ACCESS_KEY_ID", id), ("AWS_SECRET_ACCESS_KEY", secret)],
    )
    .await;
    let answers = lambda.drain(10).await;
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Invoked::Answered { failed, .. } if failed.is_empty())),
        "{answers:?}\n{:#?}",
        lambda.logs()
    );
    let stand = &lambda.stand;
    let decisions = stand.decisions(1, WAIT).await;
    assert_eq!(decisions[0].0["decision"], "fulfill");
    assert_eq!(stand.take(&stand.dlq_url, 1, WAIT).await.len(), 1);
    let logs = lambda.logs();
    let unexpected: Vec<&String> = logs
        .iter()
        .filter(|l| (l.contains(" WARN ") || l.contains(" ERROR ")) && !l.contains("invalid_json"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "a permission missing from the function's policy?\n{}",
        logs.join("\n")
    );
}

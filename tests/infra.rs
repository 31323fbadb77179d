//! The CloudFormation template, deployed into moto's CloudFormation without the ECS part
//! (`CreateService=false`), and the real worker run against the queues the stack created,
//! with nothing but the permissions of the stack's worker policy: moto checks every request's
//! credentials and IAM permissions once the stack is up.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test panics to fail"
)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use serde_json::{Value, json};
use support::*;

const WAIT: Duration = Duration::from_secs(60);

const TEMPLATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/infra/cloudformation/receipt-verifier.yaml"
);

/// Deploys the template with boto3 (moto installs it), reads back what the stack made, and
/// creates two IAM users: an administrator for the test's own calls and the worker, which
/// gets the stack's WorkerPolicy. Then switches on moto's authentication and authorisation.
/// Runs after [`MOTO_IAM_PY`].
const DEPLOY: &str = r#"
import sys
import boto3

endpoint, template, stack, fifo = sys.argv[1:5]
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="test", aws_secret_access_key="test")
cfn = boto3.client("cloudformation", **kw)
iam = boto3.client("iam", **kw)
with open(template) as f:
    body = f.read()
params = {"CreateService": "false", "Fifo": fifo, "MaxReceiveCount": "5",
          "VisibilityTimeoutSeconds": "60"}
cfn.create_stack(StackName=stack, TemplateBody=body,
                 Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()])
described = cfn.describe_stacks(StackName=stack)["Stacks"][0]
outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
resources = cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]
document = policy_document(iam, outputs["WorkerPolicyArn"])
admin, worker = admin_and(iam, "receipt-verifier", outputs["WorkerPolicyArn"], document)
enable_auth(endpoint)
print(json.dumps({
    "status": described["StackStatus"],
    "outputs": outputs,
    "resource_types": sorted({r["ResourceType"] for r in resources if r["ResourceType"]}),
    "policy": document,
    "admin": admin,
    "worker": worker,
}))
"#;

struct Key {
    id: String,
    secret: String,
}

impl Key {
    fn from(value: &Value) -> Self {
        Self {
            id: value["id"].as_str().unwrap().to_owned(),
            secret: value["secret"].as_str().unwrap().to_owned(),
        }
    }
}

struct Stack {
    outputs: HashMap<String, String>,
    resource_types: Vec<String>,
    policy: Value,
    admin: Key,
    worker: Key,
}

impl Stack {
    async fn deploy(endpoint: &str, name: &str, fifo: bool) -> Self {
        let out = tokio::process::Command::new(venv_python())
            .arg("-c")
            .arg(format!("{MOTO_IAM_PY}\n{DEPLOY}"))
            .args([
                endpoint,
                TEMPLATE,
                name,
                if fifo { "true" } else { "false" },
            ])
            .output()
            .await
            .expect("run the deploy script with the virtualenv's Python (scripts/dev-env.sh)");
        assert!(
            out.status.success(),
            "deploying the stack failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("the deploy script's JSON");
        assert_eq!(v["status"], "CREATE_COMPLETE", "{v}");
        Self {
            outputs: serde_json::from_value(v["outputs"].clone()).unwrap(),
            resource_types: serde_json::from_value(v["resource_types"].clone()).unwrap(),
            policy: v["policy"].clone(),
            admin: Key::from(&v["admin"]),
            worker: Key::from(&v["worker"]),
        }
    }

    fn output(&self, key: &str) -> String {
        self.outputs
            .get(key)
            .unwrap_or_else(|| panic!("no {key} output in {:?}", self.outputs))
            .clone()
    }
}

fn dynamodb_as(endpoint: &str, key: &Key) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(&key.id, &key.secret, None, None, "stack"))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

fn sqs_as(endpoint: &str, key: &Key) -> Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(&key.id, &key.secret, None, None, "stack"))
        .build();
    Client::from_conf(config)
}

async fn attributes(sqs: &Client, url: &str) -> HashMap<QueueAttributeName, String> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap_or_else(|e| panic!("attributes of {url}: {e:?}"))
        .attributes()
        .cloned()
        .unwrap_or_default()
}

/// The worker policy as resource ARN → actions.
fn grants(policy: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut grants: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for statement in policy["Statement"].as_array().unwrap() {
        assert_eq!(statement["Effect"], "Allow", "{statement}");
        let list = |v: &Value| -> Vec<String> {
            match v {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a.iter().map(|s| s.as_str().unwrap().to_owned()).collect(),
                other => panic!("unexpected {other}"),
            }
        };
        for resource in list(&statement["Resource"]) {
            grants
                .entry(resource)
                .or_default()
                .extend(list(&statement["Action"]));
        }
    }
    grants
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

async fn stack_runs_the_worker(fifo: bool) {
    let (moto, fake) = tokio::join!(
        Moto::start(),
        Fake::start(json!([receipt("r-paid", "o-paid", json!(3000), 1)]), &[])
    );
    let stack = Stack::deploy(&moto.endpoint, "rv", fifo).await;

    // Only the queues and the ledger: the ECS services, their roles and autoscaling are
    // behind CreateService. (moto's CloudFormation skips AWS::CloudWatch::Alarm and
    // AWS::SQS::QueuePolicy with a warning, so the alarms and the TLS-only queue policy are
    // covered by cfn-lint and checkov in scripts/validate-infra.sh, not here.)
    for t in &stack.resource_types {
        assert!(
            t == "AWS::SQS::Queue" || t == "AWS::IAM::ManagedPolicy" || t == "AWS::DynamoDB::Table",
            "unexpected {t} with CreateService=false: {:?}",
            stack.resource_types
        );
    }

    // The policy grants exactly the calls of the worker's runtime contract, per queue and
    // on the ledger (the sweep's Query on its index, and its notifications).
    let table = stack.output("LedgerTableArn");
    assert_eq!(
        grants(&stack.policy),
        BTreeMap::from([
            (
                stack.output("PurchaseQueueArn"),
                set(&[
                    "sqs:ChangeMessageVisibility",
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",
                    "sqs:ReceiveMessage",
                    "sqs:SendMessage",
                ]),
            ),
            (
                table.clone(),
                set(&[
                    "dynamodb:DescribeTable",
                    "dynamodb:GetItem",
                    "dynamodb:PutItem",
                ]),
            ),
            (format!("{table}/index/by_state"), set(&["dynamodb:Query"])),
            (
                stack.output("ResultQueueArn"),
                set(&["sqs:GetQueueAttributes", "sqs:SendMessage"]),
            ),
            (
                stack.output("PurchaseDeadLetterQueueArn"),
                set(&["sqs:GetQueueUrl", "sqs:SendMessage"]),
            ),
        ])
    );

    let sqs = sqs_as(&moto.endpoint, &stack.admin);
    let purchases = attributes(&sqs, &stack.output("PurchaseQueueUrl")).await;
    let results = attributes(&sqs, &stack.output("ResultQueueUrl")).await;
    let redrive = |attrs: &HashMap<QueueAttributeName, String>| -> Value {
        serde_json::from_str(&attrs[&QueueAttributeName::RedrivePolicy]).unwrap()
    };
    assert_eq!(
        redrive(&purchases)["deadLetterTargetArn"],
        stack.output("PurchaseDeadLetterQueueArn")
    );
    assert_eq!(redrive(&purchases)["maxReceiveCount"], 5);
    assert_eq!(
        redrive(&results)["deadLetterTargetArn"],
        stack.output("ResultDeadLetterQueueArn")
    );
    assert_eq!(purchases[&QueueAttributeName::VisibilityTimeout], "60");
    for (source, dlq) in [
        ("PurchaseQueueUrl", "PurchaseDeadLetterQueueUrl"),
        ("ResultQueueUrl", "ResultDeadLetterQueueUrl"),
    ] {
        let source = attributes(&sqs, &stack.output(source)).await;
        let dlq = attributes(&sqs, &stack.output(dlq)).await;
        let retention = |a: &HashMap<QueueAttributeName, String>| -> u64 {
            a[&QueueAttributeName::MessageRetentionPeriod]
                .parse()
                .unwrap()
        };
        assert_eq!(retention(&source), 4 * 86_400);
        assert_eq!(retention(&dlq), 14 * 86_400);
        for attrs in [&source, &dlq] {
            assert_eq!(attrs[&QueueAttributeName::SqsManagedSseEnabled], "true");
            let is_fifo = attrs
                .get(&QueueAttributeName::FifoQueue)
                .map(String::as_str);
            assert_eq!(is_fifo == Some("true"), fifo, "{attrs:?}");
            if fifo {
                assert_eq!(
                    attrs[&QueueAttributeName::ContentBasedDeduplication],
                    "false"
                );
            }
        }
    }

    // The ledger table as the worker needs it and as the issue's contract says.
    let ddb = dynamodb_as(&moto.endpoint, &stack.admin);
    let described = ddb
        .describe_table()
        .table_name(stack.output("LedgerTableName"))
        .send()
        .await
        .expect("describe the ledger table")
        .table
        .expect("a table");
    let keys: Vec<(String, String)> = described
        .key_schema()
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_owned(),
                k.key_type().as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(keys, [("receipt_id".to_owned(), "HASH".to_owned())]);
    assert_eq!(
        described
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|m| m.as_str()),
        Some("PAY_PER_REQUEST")
    );
    let indexes: Vec<&str> = described
        .global_secondary_indexes()
        .iter()
        .filter_map(|i| i.index_name())
        .collect();
    assert_eq!(indexes, ["by_state"]);

    let purchase_url = stack.output("PurchaseQueueUrl");
    let malformed = "this is not a purchase {";
    let mut message_ids = Vec::new();
    // The paid purchase twice (an app server that retried its enqueue): one fulfilment; and
    // its receipt named by another order: rejected as reused, after a read of the ledger.
    for (n, body) in [
        purchase("r-paid", "o-paid", json!(3000)).to_string(),
        malformed.to_owned(),
        purchase("r-paid", "o-paid", json!(3000)).to_string(),
        purchase("r-paid", "o-other", json!(3000)).to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut send = sqs
            .send_message()
            .queue_url(&purchase_url)
            .message_body(body);
        if fifo {
            send = send
                .message_group_id(format!("group-{n}"))
                .message_deduplication_id(format!("event-{n}"));
        }
        let sent = send.send().await.expect("send a purchase");
        message_ids.push(sent.message_id().unwrap().to_owned());
    }

    // The stack's queue URLs and the worker user's key; everything else as in a deployment.
    let env = [
        ("PURCHASE_QUEUE_URL", purchase_url.as_str()),
        ("RESULT_QUEUE_URL", &stack.output("ResultQueueUrl")),
        ("BOOTPAY_APPLICATION_ID", APP_ID),
        ("BOOTPAY_PRIVATE_KEY", PRIVATE_KEY),
        ("BOOTPAY_API_URL", &fake.api_url),
        ("AWS_ENDPOINT_URL", &moto.endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", &stack.worker.id),
        ("AWS_SECRET_ACCESS_KEY", &stack.worker.secret),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("RUST_LOG", "info"),
        ("BATCH_LINGER_MS", "5"),
        ("LEDGER_TABLE", &stack.output("LedgerTableName")),
        // A sweep a second after start-up: its lease, Query and notifications run under
        // the policy too.
        ("RECONCILE_INTERVAL_SECS", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut worker = Worker::spawn(&["run"], env, &[]).await;

    let mut seen = Vec::new();
    let mut decisions = Vec::new();
    for _ in 0..3 {
        let decision = receive_one(&sqs, &stack.output("ResultQueueUrl"), &worker).await;
        let body: Value = serde_json::from_str(decision.body().unwrap()).unwrap();
        assert_eq!(body["receipt_id"], "r-paid", "{body}");
        // `repeat` is only present, as true, on a repeat.
        seen.push((
            body["order_id"].as_str().unwrap().to_owned(),
            body["decision"].as_str().unwrap().to_owned(),
            body["reason"].as_str().unwrap().to_owned(),
            body["repeat"] == true,
        ));
        decisions.push(decision);
    }
    seen.sort();
    let reused_or_mismatch = seen[0].2.clone();
    assert!(
        ["receipt_reused", "order_mismatch"].contains(&reused_or_mismatch.as_str()),
        "{seen:?}"
    );
    let row = |order: &str, decision: &str, reason: &str, repeat| {
        (
            order.to_owned(),
            decision.to_owned(),
            reason.to_owned(),
            repeat,
        )
    };
    assert_eq!(
        seen,
        [
            // The ledger is read before this reject: `receipt_reused` once the paid
            // purchase is recorded, `order_mismatch` if it came first.
            row("o-other", "reject", &reused_or_mismatch, false),
            row("o-paid", "fulfill", "verified", false),
            row("o-paid", "fulfill", "verified", true),
        ],
        "one fulfilment, one repeat, one reuse"
    );
    if fifo {
        // Each decision in the receipt's group, deduplicated on its own purchase's id.
        let mut dedup_ids = Vec::new();
        for decision in &decisions {
            let attrs = decision.attributes().cloned().unwrap_or_default();
            assert_eq!(
                attrs
                    .get(&MessageSystemAttributeName::MessageGroupId)
                    .map(String::as_str),
                Some("r-paid")
            );
            dedup_ids.extend(
                attrs
                    .get(&MessageSystemAttributeName::MessageDeduplicationId)
                    .cloned(),
            );
        }
        dedup_ids.sort();
        let mut expected = vec![
            message_ids[0].clone(),
            message_ids[2].clone(),
            message_ids[3].clone(),
        ];
        expected.sort();
        assert_eq!(dedup_ids, expected);
    }
    let dead = receive_one(&sqs, &stack.output("PurchaseDeadLetterQueueUrl"), &worker).await;
    assert_eq!(dead.body(), Some(malformed));
    worker.wait_for_log(&["Sweep done."], WAIT).await;

    worker.signal("TERM");
    assert_eq!(worker.exit_code(WAIT).await, Some(0));
    // A denied call would show as a failed SQS call (moto answers JSON-protocol requests it
    // refuses with an XML error, which the SDK cannot parse, so no "AccessDenied" appears):
    // the only warning expected is the one about the malformed purchase.
    let logs = worker.logs();
    let unexpected: Vec<&String> = logs
        .iter()
        .filter(|l| (l.contains(" WARN ") || l.contains(" ERROR ")) && !l.contains("invalid_json"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "warnings or errors (a permission missing from the worker policy?):\n{}",
        logs.join("\n")
    );
}

/// Receives and deletes one message from `url`, or panics with the worker's logs.
async fn receive_one(sqs: &Client, url: &str, worker: &Worker) -> Message {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(1)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive");
        if let Some(message) = out.messages.unwrap_or_default().into_iter().next() {
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .expect("delete");
            return message;
        }
    }
    panic!(
        "nothing arrived on {url} within {WAIT:?}; worker logs:\n{}",
        worker.logs().join("\n")
    );
}

#[tokio::test]
async fn standard_queues_from_the_stack_run_the_worker_with_its_policy() {
    stack_runs_the_worker(false).await;
}

#[tokio::test]
async fn fifo_queues_from_the_stack_run_the_worker_with_its_policy() {
    stack_runs_the_worker(true).await;
}

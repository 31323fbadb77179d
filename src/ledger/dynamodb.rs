//! The ledger in DynamoDB: one item per receipt, keyed by `receipt_id` (what a webhook
//! carries), so every read that decides is a strongly consistent `GetItem` and every
//! change a conditional `PutItem` on the item's `version`. A refused write returns the
//! item as it is, so a new purchase costs one request (a create-only write), and so does
//! a repeat (the refused write).
//!
//! Attributes: `receipt_id` (S, the key), `state` (S), `version` (N), `created_at` and
//! `updated_at` (N, epoch ms), `purchase` (S, the purchase event's JSON, which keeps the
//! amount exactly as written), `order_id` (S, for people), `decision` (S, the decision
//! message's JSON, as published), `payment_status` (N), `cancelled_price` (N),
//! `deposit_due` (N, epoch ms), and `expires_at` (N, epoch s; the table's TTL) on
//! transient items only: `seen` and `pending`. Fulfilled, rejected, revoked and expired
//! items never expire.
//!
//! The GSI [`STATE_INDEX`] (`state`, `updated_at`) serves the sweep and `ledger list`.
//! A GSI is eventually consistent, so it only ever finds candidates; every decision
//! reads the item itself.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
    TimeToLiveSpecification,
};
use receipt_verifier_core::{
    DecisionMessage, LedgerEntry, LedgerError, LedgerState, PurchaseEvent, Written,
};
use serde_json::{Number, json};

use crate::observability::metrics;

/// The partition key: the contract names it.
pub const KEY: &str = "receipt_id";
/// The GSI by state and last change, for sweeps and listings.
pub const STATE_INDEX: &str = "by_state";
/// How long a transient item (`seen`, `pending`) is kept after its last change.
pub const TRANSIENT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

type Item = HashMap<String, AttributeValue>;

pub struct DynamoLedger {
    client: Client,
    table: String,
}

/// Why the table cannot serve as the ledger; found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(
        "ledger table {0} does not exist (create it with `receipt-verifier ledger init`, or \
         check LEDGER_TABLE, AWS_REGION and AWS_ENDPOINT_URL)"
    )]
    Missing(String),
    #[error("ledger table {table}: {problem}")]
    Unsuitable { table: String, problem: String },
    #[error("ledger table {table}: {action} failed: {cause}")]
    Aws {
        table: String,
        action: &'static str,
        cause: String,
    },
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Checks that the table exists with `receipt_id` (S) as its only key and carries the
    /// state index.
    ///
    /// # Errors
    /// [`TableError`] saying what is wrong.
    pub async fn check(&self) -> Result<(), TableError> {
        let described = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await;
        let table = match described {
            Ok(out) => out
                .table
                .ok_or_else(|| TableError::Missing(self.table.clone()))?,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                return Err(TableError::Missing(self.table.clone()));
            }
            Err(e) => {
                return Err(TableError::Aws {
                    table: self.table.clone(),
                    action: "DescribeTable",
                    cause: crate::error_chain(&e),
                });
            }
        };
        let unsuitable = |problem: &str| TableError::Unsuitable {
            table: self.table.clone(),
            problem: problem.to_owned(),
        };
        let keys = table.key_schema();
        let keyed_by_receipt = keys.len() == 1
            && keys[0].attribute_name() == KEY
            && *keys[0].key_type() == KeyType::Hash;
        if !keyed_by_receipt {
            return Err(unsuitable(
                "its key must be the partition key `receipt_id` alone, with no sort key",
            ));
        }
        let string_key = table
            .attribute_definitions()
            .iter()
            .any(|d| d.attribute_name() == KEY && *d.attribute_type() == ScalarAttributeType::S);
        if !string_key {
            return Err(unsuitable("`receipt_id` must be a string (S) attribute"));
        }
        let indexed = table
            .global_secondary_indexes()
            .iter()
            .any(|i| i.index_name() == Some(STATE_INDEX));
        if !indexed {
            return Err(unsuitable(&format!(
                "it has no global secondary index `{STATE_INDEX}` (state, updated_at); \
                 `receipt-verifier ledger init` creates the table with it"
            )));
        }
        Ok(())
    }

    /// Creates the table (on-demand, with the state index and the TTL attribute), unless
    /// it exists. Returns whether it was created.
    ///
    /// # Errors
    /// When DynamoDB refuses.
    pub async fn create(&self) -> Result<bool, TableError> {
        let aws = |action, e: &(dyn std::error::Error + 'static)| TableError::Aws {
            table: self.table.clone(),
            action,
            cause: crate::error_chain(e),
        };
        let key = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
        };
        let attribute = |name: &str, kind| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(kind)
                .build()
        };
        let built = (|| {
            Ok::<_, aws_sdk_dynamodb::error::BuildError>((
                key(KEY, KeyType::Hash)?,
                [
                    attribute(KEY, ScalarAttributeType::S)?,
                    attribute("state", ScalarAttributeType::S)?,
                    attribute("updated_at", ScalarAttributeType::N)?,
                ],
                GlobalSecondaryIndex::builder()
                    .index_name(STATE_INDEX)
                    .key_schema(key("state", KeyType::Hash)?)
                    .key_schema(key("updated_at", KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()?,
            ))
        })();
        let (table_key, [a, b, c], index) = built.map_err(|e| aws("CreateTable", &e))?;
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(table_key)
            .attribute_definitions(a)
            .attribute_definitions(b)
            .attribute_definitions(c)
            .global_secondary_indexes(index)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) =>
            {
                return Ok(false);
            }
            Err(e) => return Err(aws("CreateTable", &e)),
        }
        let ttl = TimeToLiveSpecification::builder()
            .attribute_name("expires_at")
            .enabled(true)
            .build()
            .map_err(|e| aws("UpdateTimeToLive", &e))?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(ttl)
            .send()
            .await
            .map_err(|e| aws("UpdateTimeToLive", &e))?;
        Ok(true)
    }

    /// The entry for `receipt_id`, read strongly consistently.
    ///
    /// # Errors
    /// When DynamoDB does not answer, or the item is not one this ledger wrote.
    pub async fn get(&self, receipt_id: &str) -> Result<Option<LedgerEntry>, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(receipt_id.to_owned()))
            .consistent_read(true)
            .send()
            .await;
        metrics::ledger_request("GetItem", if out.is_ok() { "ok" } else { "error" });
        let out = out.map_err(|e| ledger_error("GetItem", &e))?;
        out.item.map(|item| from_item(&item)).transpose()
    }

    /// Stores `entry` if the stored item still has `entry.version` (none for version 0).
    ///
    /// # Errors
    /// When DynamoDB does not answer.
    pub async fn write(&self, entry: &LedgerEntry) -> Result<Written, LedgerError> {
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(entry)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        request = if entry.version == 0 {
            request.condition_expression("attribute_not_exists(receipt_id)")
        } else {
            request
                .condition_expression("version = :read")
                .expression_attribute_values(":read", number(entry.version))
        };
        match request.send().await {
            Ok(_) => {
                metrics::ledger_request("PutItem", "ok");
                Ok(Written::Done)
            }
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                metrics::ledger_request("PutItem", "conflict");
                let now = match e.into_err() {
                    PutItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                Ok(Written::Conflict(
                    now.map(|item| from_item(&item)).transpose()?.map(Box::new),
                ))
            }
            Err(e) => {
                metrics::ledger_request("PutItem", "error");
                Err(ledger_error("PutItem", &e))
            }
        }
    }

    /// Entries in `state` changed at or after `since`, oldest first, at most `limit`; from
    /// the (eventually consistent) state index.
    ///
    /// # Errors
    /// When DynamoDB does not answer.
    pub async fn list(
        &self,
        state: LedgerState,
        since: SystemTime,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, LedgerError> {
        let mut entries = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(STATE_INDEX)
                .key_condition_expression("#state = :state AND updated_at >= :since")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":state", AttributeValue::S(state.as_str().into()))
                .expression_attribute_values(":since", number(epoch_ms(since)))
                .set_exclusive_start_key(start.take())
                .limit(
                    i32::try_from(limit.saturating_sub(entries.len()).clamp(1, 1000))
                        .unwrap_or(1000),
                )
                .send()
                .await;
            metrics::ledger_request("Query", if out.is_ok() { "ok" } else { "error" });
            let out = out.map_err(|e| ledger_error("Query", &e))?;
            for item in out.items() {
                entries.push(from_item(item)?);
            }
            start = out.last_evaluated_key;
            if start.is_none() || entries.len() >= limit {
                entries.truncate(limit);
                return Ok(entries);
            }
        }
    }
}

fn ledger_error(action: &'static str, error: &(dyn std::error::Error + 'static)) -> LedgerError {
    LedgerError::new(format!(
        "DynamoDB {action} failed: {}",
        crate::error_chain(error)
    ))
}

fn number(n: impl ToString) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_epoch_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The purchase event as JSON text: the contract's fields, the amount as written.
fn purchase_json(event: &PurchaseEvent) -> String {
    let mut value = json!({
        "receipt_id": event.receipt_id,
        "order_id": event.order_id,
        "price": event.price.as_number(),
    });
    let object = value.as_object_mut();
    if let Some(object) = object {
        if let Some(c) = &event.currency {
            object.insert("currency".into(), json!(c));
        }
        if let Some(m) = &event.metadata {
            object.insert("metadata".into(), m.clone());
        }
        if let Some(e) = &event.event_id {
            object.insert("event_id".into(), json!(e));
        }
    }
    value.to_string()
}

fn to_item(entry: &LedgerEntry) -> Item {
    let mut item = Item::from([
        (KEY.to_owned(), AttributeValue::S(entry.receipt_id.clone())),
        (
            "state".into(),
            AttributeValue::S(entry.state.as_str().into()),
        ),
        ("version".into(), number(entry.version + 1)),
        ("created_at".into(), number(epoch_ms(entry.created_at))),
        ("updated_at".into(), number(epoch_ms(entry.updated_at))),
    ]);
    if let Some(event) = &entry.purchase {
        item.insert("purchase".into(), AttributeValue::S(purchase_json(event)));
        item.insert("order_id".into(), AttributeValue::S(event.order_id.clone()));
    }
    if let Some(decision) = &entry.decision {
        item.insert("decision".into(), AttributeValue::S(decision.to_json()));
    }
    if let Some(status) = entry.payment_status {
        item.insert("payment_status".into(), number(status));
    }
    if let Some(cancelled) = &entry.cancelled_price {
        item.insert("cancelled_price".into(), number(cancelled));
    }
    if let Some(due) = entry.deposit_due {
        item.insert("deposit_due".into(), number(epoch_ms(due)));
    }
    if matches!(entry.state, LedgerState::Seen | LedgerState::Pending) {
        let expires = epoch_ms(entry.updated_at + TRANSIENT_TTL) / 1000;
        item.insert("expires_at".into(), number(expires));
    }
    item
}

/// An item back into an entry. An item this ledger did not write (a missing state, a
/// purchase that breaks the contract) is an error, never guessed at: deciding on it could
/// fulfil twice.
fn from_item(item: &Item) -> Result<LedgerEntry, LedgerError> {
    let receipt_id = string(item, KEY).unwrap_or_default();
    let corrupt = |what: &str| {
        LedgerError::new(format!(
            "ledger item {receipt_id:?} is not one this ledger wrote: {what}"
        ))
    };
    let state = string(item, "state")
        .and_then(|s| LedgerState::parse(&s))
        .ok_or_else(|| corrupt("no known `state`"))?;
    let version = unsigned(item, "version").ok_or_else(|| corrupt("no `version`"))?;
    let purchase = string(item, "purchase")
        .map(|text| PurchaseEvent::parse(&text))
        .transpose()
        .map_err(|e| corrupt(&format!("`purchase`: {e}")))?;
    let decision = string(item, "decision")
        .map(|text| serde_json::from_str::<DecisionMessage>(&text))
        .transpose()
        .map_err(|e| corrupt(&format!("`decision`: {e}")))?;
    if state.is_decided() && decision.is_none() {
        return Err(corrupt("a decided state without a `decision`"));
    }
    let updated_at = from_epoch_ms(unsigned(item, "updated_at").unwrap_or(0));
    Ok(LedgerEntry {
        receipt_id: receipt_id.clone(),
        state,
        purchase,
        decision,
        payment_status: numeric(item, "payment_status").and_then(|n| n.as_i64()),
        cancelled_price: numeric(item, "cancelled_price"),
        deposit_due: unsigned(item, "deposit_due").map(from_epoch_ms),
        created_at: unsigned(item, "created_at").map_or(updated_at, from_epoch_ms),
        updated_at,
        version,
    })
}

fn string(item: &Item, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}

fn numeric(item: &Item, name: &str) -> Option<Number> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn unsigned(item: &Item, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_survives_the_round_trip_through_an_item() {
        let event = PurchaseEvent::parse(
            r#"{"receipt_id":"r-1","order_id":"o-1","price":3000.50,"currency":"KRW","metadata":{"sku":"gems"},"event_id":"e-1"}"#,
        )
        .unwrap();
        let verdict = receipt_verifier_core::Verdict {
            reason: receipt_verifier_core::Reason::Verified,
            paid_price: Some(event.price.as_number().clone()),
            payment_status: Some(receipt_verifier_core::PaymentStatus::Paid),
        };
        let now = from_epoch_ms(1_764_633_600_123);
        let entry = LedgerEntry {
            purchase: Some(event.clone()),
            decision: Some(DecisionMessage::new(&event, &verdict, now)),
            payment_status: Some(1),
            cancelled_price: Some(0.into()),
            deposit_due: Some(from_epoch_ms(1_765_000_000_000)),
            version: 4,
            ..LedgerEntry::new("r-1", LedgerState::Fulfilled, now)
        };
        let item = to_item(&entry);
        assert!(
            !item.contains_key("expires_at"),
            "a fulfilled item never expires"
        );
        let back = from_item(&item).unwrap();
        assert_eq!(back.version, 5, "stored one version on");
        assert_eq!(LedgerEntry { version: 4, ..back }, entry);
        let pending = to_item(&LedgerEntry::new("r-2", LedgerState::Pending, now));
        assert!(pending.contains_key("expires_at"));
    }

    #[test]
    fn an_item_this_ledger_did_not_write_is_an_error_not_a_guess() {
        let mut item = to_item(&LedgerEntry::new(
            "r-1",
            LedgerState::Pending,
            SystemTime::now(),
        ));
        item.insert("state".into(), AttributeValue::S("fulfilled".into()));
        let error = from_item(&item).unwrap_err().to_string();
        assert!(error.contains("without a `decision`"), "{error}");
        item.insert("state".into(), AttributeValue::S("paid?".into()));
        assert!(from_item(&item).is_err());
    }
}

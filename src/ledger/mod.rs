//! The ledger adapters: DynamoDB behind the core's [`Ledger`] port, or none.
//!
//! - [`dynamodb`]: one item per receipt in the table `LEDGER_TABLE`, compare-and-set on a
//!   version attribute, strongly consistent reads; a GSI by state for sweeps and listings;
//! - [`sweep`]: the reconciliation sweep that re-checks receipts no webhook may report.

pub mod dynamodb;
pub mod sweep;

use receipt_verifier_core::{Ledger, LedgerEntry, LedgerError, NoLedger, Written};

pub use dynamodb::{DynamoLedger, TableError};

/// The ledger a runtime was configured with.
pub enum AnyLedger {
    /// `LEDGER_TABLE` unset: every purchase is verified as if new, as before the ledger.
    Off(NoLedger),
    DynamoDb(DynamoLedger),
}

impl AnyLedger {
    pub fn dynamodb(&self) -> Option<&DynamoLedger> {
        match self {
            Self::Off(_) => None,
            Self::DynamoDb(ledger) => Some(ledger),
        }
    }
}

// DynamoDB's calls are boxed: an AWS SDK request future is several KiB, and it would
// otherwise be part of every purchase's task, ledger or not, and be copied with it.
impl Ledger for AnyLedger {
    fn keeps_records(&self) -> bool {
        matches!(self, Self::DynamoDb(_))
    }

    async fn get(&self, receipt_id: &str) -> Result<Option<LedgerEntry>, LedgerError> {
        match self {
            Self::Off(off) => off.get(receipt_id).await,
            Self::DynamoDb(ledger) => Box::pin(ledger.get(receipt_id)).await,
        }
    }

    async fn write(&self, entry: &LedgerEntry) -> Result<Written, LedgerError> {
        match self {
            Self::Off(off) => off.write(entry).await,
            Self::DynamoDb(ledger) => Box::pin(ledger.write(entry)).await,
        }
    }
}

/// The ledger `LEDGER_TABLE` names, checked, or none when it is unset; its client's
/// timeouts are `connect` and `attempt`, as [`client`]'s.
///
/// # Errors
/// When the table does not exist or cannot serve as the ledger.
pub async fn open(
    table: Option<&str>,
    connect: std::time::Duration,
    attempt: std::time::Duration,
) -> Result<AnyLedger, TableError> {
    match table {
        Some(table) => Ok(AnyLedger::DynamoDb(
            open_table(table, connect, attempt).await?,
        )),
        None => Ok(AnyLedger::Off(NoLedger)),
    }
}

/// The ledger in `table`, checked; its client's timeouts are `connect` and `attempt`.
///
/// # Errors
/// When the table does not exist or cannot serve as the ledger.
pub async fn open_table(
    table: &str,
    connect: std::time::Duration,
    attempt: std::time::Duration,
) -> Result<DynamoLedger, TableError> {
    let ledger = DynamoLedger::new(client(connect, attempt).await, table);
    ledger.check().await?;
    Ok(ledger)
}

/// A DynamoDB client with [`crate::aws_config`]'s configuration and timeouts.
pub async fn client(
    connect: std::time::Duration,
    attempt: std::time::Duration,
) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&crate::aws_config(connect, attempt).await)
}

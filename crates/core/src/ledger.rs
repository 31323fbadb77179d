//! The `Ledger` port: what the core remembers about each receipt, so that a receipt is
//! fulfilled at most once, ever, and its later life (a deposit, a cancel) is followed.
//!
//! One [`LedgerEntry`] per receipt. Every change is a compare-and-set on the entry's
//! `version`: [`Ledger::write`] succeeds only if nobody changed the entry since it was
//! read, so two workers (or a worker and a notification) cannot both move it out of the
//! same state. DynamoDB implements the port in the root package; [`MemoryLedger`] serves
//! tests; [`NoLedger`] keeps the behaviour of a worker without one.

use std::time::SystemTime;

use serde_json::Number;

use crate::decision::DecisionMessage;
use crate::event::PurchaseEvent;

/// Where a receipt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LedgerState {
    /// Bootpay told us about the receipt before any purchase named it.
    Seen,
    /// A purchase names it; the payment is not final yet.
    Pending,
    /// A virtual account was issued; the buyer has not paid into it yet.
    AwaitingDeposit,
    Fulfilled,
    /// Rejected for the payment's own state (cancelled, not paid).
    Rejected,
    /// Fulfilled, then cancelled wholly or partly.
    Revoked,
    /// The deposit deadline passed without a deposit.
    Expired,
}

impl LedgerState {
    pub const ALL: [Self; 7] = [
        Self::Seen,
        Self::Pending,
        Self::AwaitingDeposit,
        Self::Fulfilled,
        Self::Rejected,
        Self::Revoked,
        Self::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seen => "seen",
            Self::Pending => "pending",
            Self::AwaitingDeposit => "awaiting_deposit",
            Self::Fulfilled => "fulfilled",
            Self::Rejected => "rejected",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// A decision was published for the purchase: a repeat of it gets the same one.
    pub fn is_decided(self) -> bool {
        matches!(
            self,
            Self::Fulfilled | Self::Rejected | Self::Revoked | Self::Expired
        )
    }

    /// Goods were handed out for it: a later cancel revokes them.
    pub fn was_fulfilled(self) -> bool {
        matches!(self, Self::Fulfilled | Self::Revoked)
    }
}

impl std::fmt::Display for LedgerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the ledger holds about one receipt.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    pub receipt_id: String,
    pub state: LedgerState,
    /// The purchase that owns the receipt (none while only [`LedgerState::Seen`]).
    pub purchase: Option<PurchaseEvent>,
    /// The latest decision published for it.
    pub decision: Option<DecisionMessage>,
    /// Bootpay's payment status when last looked at.
    pub payment_status: Option<i64>,
    /// The total cancelled when last looked at; a revocation is published once per change.
    pub cancelled_price: Option<Number>,
    /// The virtual account's deposit deadline.
    pub deposit_due: Option<SystemTime>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    /// 0 for an entry not yet written; each write adds one.
    pub version: u64,
}

impl LedgerEntry {
    /// A new entry, not yet written.
    pub fn new(receipt_id: &str, state: LedgerState, now: SystemTime) -> Self {
        Self {
            receipt_id: receipt_id.to_owned(),
            state,
            purchase: None,
            decision: None,
            payment_status: None,
            cancelled_price: None,
            deposit_due: None,
            created_at: now,
            updated_at: now,
            version: 0,
        }
    }

    /// Whether `event` is the purchase the entry holds: the same order, amount and
    /// currency (a retried enqueue of the same purchase).
    pub fn is_for(&self, event: &PurchaseEvent) -> bool {
        self.purchase.as_ref().is_some_and(|held| {
            held.order_id == event.order_id
                && held.price == event.price
                && match (&held.currency, &event.currency) {
                    (None, None) => true,
                    (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                    _ => false,
                }
        })
    }
}

/// The answer to a compare-and-set write.
#[derive(Debug)]
pub enum Written {
    Done,
    /// The entry changed since it was read (or exists, for a new one): here it is now.
    Conflict(Option<Box<LedgerEntry>>),
}

/// The ledger did not answer; nothing may be decided until it does.
#[derive(Debug)]
pub struct LedgerError(Box<dyn std::error::Error + Send + Sync>);

impl LedgerError {
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for LedgerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Reads and writes ledger entries. Reads are strongly consistent; writes are
/// compare-and-set on `version`.
pub trait Ledger: Send + Sync {
    /// Whether anything is kept. Without a ledger a purchase awaiting a deposit cannot be
    /// parked, and a notification has nothing to act on.
    fn keeps_records(&self) -> bool {
        true
    }

    /// The entry for `receipt_id`, if there is one.
    ///
    /// # Errors
    /// When the ledger does not answer.
    fn get(
        &self,
        receipt_id: &str,
    ) -> impl Future<Output = Result<Option<LedgerEntry>, LedgerError>> + Send;

    /// Writes `entry` (its `version` is the one read: 0 for a new entry) if the stored
    /// entry still has that version, storing it with `version + 1`.
    ///
    /// # Errors
    /// When the ledger does not answer; a lost race is [`Written::Conflict`], not an error.
    fn write(
        &self,
        entry: &LedgerEntry,
    ) -> impl Future<Output = Result<Written, LedgerError>> + Send;
}

impl<L: Ledger> Ledger for std::sync::Arc<L> {
    fn keeps_records(&self) -> bool {
        (**self).keeps_records()
    }

    fn get(
        &self,
        receipt_id: &str,
    ) -> impl Future<Output = Result<Option<LedgerEntry>, LedgerError>> + Send {
        (**self).get(receipt_id)
    }

    fn write(
        &self,
        entry: &LedgerEntry,
    ) -> impl Future<Output = Result<Written, LedgerError>> + Send {
        (**self).write(entry)
    }
}

/// No ledger: nothing is remembered, every purchase is verified as if new.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLedger;

impl Ledger for NoLedger {
    fn keeps_records(&self) -> bool {
        false
    }

    async fn get(&self, _: &str) -> Result<Option<LedgerEntry>, LedgerError> {
        Ok(None)
    }

    async fn write(&self, _: &LedgerEntry) -> Result<Written, LedgerError> {
        Ok(Written::Done)
    }
}

/// A ledger in memory, for tests of the core and of the runtimes.
#[cfg(any(test, feature = "stub"))]
#[derive(Debug, Default)]
pub struct MemoryLedger {
    entries: std::sync::Mutex<std::collections::HashMap<String, LedgerEntry>>,
    failing: std::sync::atomic::AtomicBool,
    requests: std::sync::atomic::AtomicUsize,
}

#[cfg(any(test, feature = "stub"))]
impl MemoryLedger {
    fn entries(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, LedgerEntry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn entry(&self, receipt_id: &str) -> Option<LedgerEntry> {
        self.entries().get(receipt_id).cloned()
    }

    /// Makes every call fail until set back.
    pub fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::Relaxed);
    }

    /// Reads and writes asked of the ledger so far, answered or not.
    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn check(&self) -> Result<(), LedgerError> {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(LedgerError::new("the ledger is unavailable"));
        }
        Ok(())
    }
}

#[cfg(any(test, feature = "stub"))]
impl Ledger for MemoryLedger {
    async fn get(&self, receipt_id: &str) -> Result<Option<LedgerEntry>, LedgerError> {
        self.check()?;
        Ok(self.entry(receipt_id))
    }

    async fn write(&self, entry: &LedgerEntry) -> Result<Written, LedgerError> {
        self.check()?;
        let mut entries = self.entries();
        let stored = entries.get(&entry.receipt_id).map_or(0, |e| e.version);
        if stored != entry.version {
            return Ok(Written::Conflict(
                entries.get(&entry.receipt_id).cloned().map(Box::new),
            ));
        }
        let mut new = entry.clone();
        new.version += 1;
        entries.insert(new.receipt_id.clone(), new);
        Ok(Written::Done)
    }
}

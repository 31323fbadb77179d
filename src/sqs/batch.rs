//! Groups single SQS operations (send, delete, change visibility) into batch calls of
//! up to ten entries, and hands each caller the result of its own entry.
//!
//! Written here rather than taken from a crate because the part that matters is
//! SQS-specific: a batch call can succeed while some of its entries fail, and each
//! entry's failure must reach the task that owns that message.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};

/// The most entries SQS accepts in one batch call.
pub const MAX_BATCH: usize = 10;
/// The most payload bytes put in one batch call. SQS's ceiling is the queue's maximum
/// message size (256 KiB on queues made before 2025, up to 1 MiB since); the lower one is
/// safe everywhere. An entry larger than this goes alone.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Why one entry of a batch did not go through.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct EntryError {
    pub code: String,
    pub message: String,
}

impl EntryError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// One kind of batch call.
pub trait Flush: Send + Sync + 'static {
    type Entry: Send + 'static;
    /// The bytes an entry counts for against [`MAX_BATCH_BYTES`].
    fn size(_entry: &Self::Entry) -> usize {
        0
    }
    /// Sends `entries` as one call and returns one result per entry, in order.
    fn flush(
        &self,
        entries: Vec<Self::Entry>,
    ) -> impl Future<Output = Vec<Result<(), EntryError>>> + Send;
}

type Job<E> = (E, oneshot::Sender<Result<(), EntryError>>);

/// A cloneable handle; the batching task ends once every handle is dropped and the
/// calls in progress have finished.
pub struct Batcher<E> {
    tx: mpsc::Sender<Job<E>>,
}

impl<E> Clone for Batcher<E> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<E: Send + 'static> Batcher<E> {
    /// Starts the batching task. A batch is sent when it holds [`MAX_BATCH`] entries or
    /// when `linger` has passed since its first entry arrived.
    pub fn spawn<F: Flush<Entry = E>>(
        flush: F,
        linger: Duration,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 64);
        let task = tokio::spawn(run(flush, rx, linger));
        (Self { tx }, task)
    }

    /// Queues `entry` and waits for the outcome of the call that carries it.
    ///
    /// # Errors
    /// The entry's own failure, or the whole call's.
    pub async fn submit(&self, entry: E) -> Result<(), EntryError> {
        let (done, outcome) = oneshot::channel();
        self.tx
            .send((entry, done))
            .await
            .map_err(|_| EntryError::new("Closed", "the batcher has stopped"))?;
        outcome
            .await
            .map_err(|_| EntryError::new("Dropped", "the batch call was abandoned"))?
    }
}

async fn run<F: Flush>(flush: F, mut rx: mpsc::Receiver<Job<F::Entry>>, linger: Duration) {
    let flush = std::sync::Arc::new(flush);
    let mut calls = JoinSet::new();
    // An entry that would have overflowed the previous batch starts the next one.
    let mut carried: Option<Job<F::Entry>> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => break,
            },
        };
        let mut bytes = F::size(&first.0);
        let mut batch = Vec::with_capacity(MAX_BATCH);
        batch.push(first);
        let deadline = Instant::now() + linger;
        while batch.len() < MAX_BATCH {
            match timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => {
                    let size = F::size(&job.0);
                    if bytes + size > MAX_BATCH_BYTES {
                        carried = Some(job);
                        break;
                    }
                    bytes += size;
                    batch.push(job);
                }
                Ok(None) | Err(_) => break,
            }
        }
        // Reap finished calls so the set does not grow without bound.
        while calls.try_join_next().is_some() {}
        let flush = flush.clone();
        // Boxed, so that the runtime moves a pointer rather than an SDK call's future.
        calls.spawn(Box::pin(async move {
            let (entries, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let count = entries.len();
            let mut results = flush.flush(entries).await;
            results.resize_with(count, || {
                Err(EntryError::new("MissingResult", "no result for this entry"))
            });
            for (waiter, result) in waiters.into_iter().zip(results) {
                // The caller may have stopped waiting (a heartbeat does not wait).
                let _ = waiter.send(result);
            }
        }));
    }
    while calls.join_next().await.is_some() {}
}

/// Maps a batch response's `successful`/`failed` ids (entry index as id) to per-entry results.
pub fn results_by_index(
    count: usize,
    failed: impl IntoIterator<Item = (String, EntryError)>,
    successful: impl IntoIterator<Item = String>,
) -> Vec<Result<(), EntryError>> {
    let mut results: Vec<Result<(), EntryError>> = (0..count)
        .map(|_| {
            Err(EntryError::new(
                "MissingResult",
                "SQS reported nothing for this entry",
            ))
        })
        .collect();
    for id in successful {
        if let Some(slot) = id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
            *slot = Ok(());
        }
    }
    for (id, error) in failed {
        if let Some(slot) = id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
            *slot = Err(error);
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records each call's size and fails entries whose value is odd.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<usize>>>);

    impl Flush for Recorder {
        type Entry = u32;
        async fn flush(&self, entries: Vec<u32>) -> Vec<Result<(), EntryError>> {
            self.0.lock().unwrap().push(entries.len());
            entries
                .iter()
                .map(|v| {
                    if v % 2 == 0 {
                        Ok(())
                    } else {
                        Err(EntryError::new("Odd", v.to_string()))
                    }
                })
                .collect()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn entries_are_grouped_by_ten_and_each_gets_its_own_result() {
        let recorder = Recorder::default();
        let (batcher, task) = Batcher::spawn(recorder.clone(), Duration::from_millis(50));
        let mut waits = JoinSet::new();
        for v in 0..25u32 {
            let b = batcher.clone();
            waits.spawn(async move { (v, b.submit(v).await) });
        }
        let mut seen = 0;
        while let Some(joined) = waits.join_next().await {
            let (v, result) = joined.unwrap();
            assert_eq!(result.is_ok(), v % 2 == 0, "entry {v}");
            seen += 1;
        }
        assert_eq!(seen, 25);
        drop(batcher);
        task.await.unwrap();
        let mut sizes = recorder.0.lock().unwrap().clone();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![5, 10, 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_entry_is_sent_after_the_linger() {
        let recorder = Recorder::default();
        let (batcher, _task) = Batcher::spawn(recorder.clone(), Duration::from_millis(20));
        let started = Instant::now();
        batcher.submit(2).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert_eq!(*recorder.0.lock().unwrap(), vec![1]);
    }

    /// Entries are sizes in bytes.
    #[derive(Clone, Default)]
    struct Sized(Arc<Mutex<Vec<Vec<usize>>>>);

    impl Flush for Sized {
        type Entry = usize;
        fn size(entry: &usize) -> usize {
            *entry
        }
        async fn flush(&self, entries: Vec<usize>) -> Vec<Result<(), EntryError>> {
            let results = entries.iter().map(|_| Ok(())).collect();
            self.0.lock().unwrap().push(entries);
            results
        }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_stay_under_the_payload_limit() {
        let recorder = Sized::default();
        let (batcher, task) = Batcher::spawn(recorder.clone(), Duration::from_millis(50));
        let sizes = [100_000, 100_000, 100_000, 300_000, 10, 10];
        let mut waits = JoinSet::new();
        for size in sizes {
            let b = batcher.clone();
            waits.spawn(async move { b.submit(size).await });
            // Keep the submission order deterministic.
            tokio::task::yield_now().await;
        }
        while let Some(joined) = waits.join_next().await {
            joined.unwrap().unwrap();
        }
        drop(batcher);
        task.await.unwrap();
        let batches = recorder.0.lock().unwrap().clone();
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), sizes.len());
        for batch in &batches {
            assert!(
                batch.len() == 1 || batch.iter().sum::<usize>() <= MAX_BATCH_BYTES,
                "{batches:?}"
            );
        }
        assert!(
            batches.contains(&vec![300_000]),
            "an oversized entry goes alone: {batches:?}"
        );
    }

    #[test]
    fn batch_responses_map_back_to_entries() {
        let results = results_by_index(
            3,
            [("1".to_string(), EntryError::new("X", "bad"))],
            ["0".to_string()],
        );
        assert!(results[0].is_ok());
        assert_eq!(results[1].as_ref().unwrap_err().code, "X");
        assert_eq!(results[2].as_ref().unwrap_err().code, "MissingResult");
    }
}

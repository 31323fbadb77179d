//! The purchase queues records come from, found from each record's `eventSourceARN` and
//! the queue's `RedrivePolicy`, once per execution environment.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_sqs::Client;
use tokio::sync::Mutex;

use super::Settings;
use super::record::RecordResult;
use crate::sqs::batch::Batcher;
use crate::sqs::queues::{self, SetupError};
use crate::sqs::{
    DeleteFlush, Flush, Outgoing, Publisher, SendFlush, Settler, VisibilityChanger, VisibilityFlush,
};

/// A purchase queue and what settling its records takes.
pub(super) struct Source {
    pub purchase_url: String,
    /// A FIFO queue: records of a message group are verified in order.
    pub fifo: bool,
    pub settler: Settler,
    pub visibility: VisibilityChanger,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("a record's eventSourceARN `{0}` is not an SQS queue's ARN")]
    NotAQueue(String),
    #[error("the purchase queue {arn} cannot be used: {cause}")]
    Unusable { arn: String, cause: String },
    #[error(transparent)]
    Setup(#[from] SetupError),
}

pub(super) struct Sources {
    sqs: Client,
    results: Batcher<Outgoing>,
    result_url: String,
    settings: Settings,
    /// Resolved sources by ARN. A failed resolution is not kept: the next invocation
    /// tries again.
    resolved: Mutex<HashMap<String, Arc<Source>>>,
}

impl Sources {
    pub fn new(
        sqs: Client,
        results: Batcher<Outgoing>,
        result_url: String,
        settings: Settings,
    ) -> Self {
        Self {
            sqs,
            results,
            result_url,
            settings,
            resolved: Mutex::new(HashMap::new()),
        }
    }

    /// The source queue with this ARN, resolved on first use.
    ///
    /// # Errors
    /// When the ARN names no usable queue, or the queue has no dead-letter queue.
    pub async fn get(&self, arn: &str) -> Result<Arc<Source>, SourceError> {
        let mut resolved = self.resolved.lock().await;
        if let Some(source) = resolved.get(arn) {
            return Ok(source.clone());
        }
        let source = Arc::new(self.resolve(arn).await?);
        resolved.insert(arn.to_owned(), source.clone());
        Ok(source)
    }

    async fn resolve(&self, arn: &str) -> Result<Source, SourceError> {
        let parts: Vec<&str> = arn.split(':').collect();
        let [_, _, "sqs", _, _, name] = parts.as_slice() else {
            return Err(SourceError::NotAQueue(arn.to_owned()));
        };
        let url = queues::queue_url_of_arn(&self.sqs, arn)
            .await
            .map_err(|e| SourceError::Unusable {
                arn: arn.to_owned(),
                cause: crate::error_chain(e.as_ref()),
            })?;
        let queue = queues::purchase_queue(&self.sqs, &url).await?;
        let linger = self.settings.batch_linger;
        let (dead_letters, _) = Batcher::spawn(
            SendFlush {
                sqs: self.sqs.clone(),
                queue_url: queue.dead_letter_url.clone(),
            },
            linger,
        );
        let (visibility, _) = Batcher::spawn(
            VisibilityFlush {
                sqs: self.sqs.clone(),
                queue_url: url.clone(),
            },
            linger,
        );
        let publisher = Publisher::new(
            self.results.clone(),
            &self.result_url,
            dead_letters,
            &queue.dead_letter_url,
        );
        tracing::info!(
            message = "Resolved a purchase queue.",
            purchase_queue = %url,
            dead_letter_queue = %queue.dead_letter_url,
            visibility_timeout_secs = queue.visibility_timeout.as_secs(),
            max_receive_count = queue.max_receive_count,
        );
        Ok(Source {
            fifo: name.ends_with(".fifo"),
            purchase_url: url,
            settler: Settler::new(publisher, self.settings.requeue),
            visibility: VisibilityChanger::new(visibility),
        })
    }

    /// Deletes the records that were settled (their decision or dead letter published),
    /// for an invocation that fails as a whole, so they are not decided twice. A delete
    /// that fails is logged; such a record is decided again later (at-least-once).
    pub async fn delete_settled(&self, results: &[RecordResult]) {
        let mut by_queue: HashMap<&str, Vec<String>> = HashMap::new();
        for (source, handle) in results.iter().filter_map(|r| r.settled.as_ref()) {
            by_queue
                .entry(source.purchase_url.as_str())
                .or_default()
                .push(handle.clone());
        }
        for (queue_url, handles) in by_queue {
            let deletes = DeleteFlush {
                sqs: self.sqs.clone(),
                queue_url: queue_url.to_owned(),
            };
            for chunk in handles.chunks(crate::sqs::MAX_BATCH) {
                for result in deletes.flush(chunk.to_vec()).await {
                    if let Err(e) = result {
                        tracing::warn!(
                            message = "Failed to delete a settled record of a failed invocation; it will be settled again.",
                            error = %e,
                        );
                    }
                }
            }
        }
    }
}

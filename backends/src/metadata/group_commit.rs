//! The group commit of file writes: writes queued while a transaction runs are committed together in
//! the next one, as many as are waiting (up to [`MAX_BATCH`]), so that one flush of the database's log
//! (and one turn of the event-order lock) serves them all. The engines provide the transaction
//! ([`CommitBatch`]); the retries are here, the queue in `batch_queue`.

use async_trait::async_trait;

use super::batch_queue::{self, Batch, Queue, Request};
use super::{NewEntry, PutOutcome, Quota, Result, failed_statement, query};

/// Most writes committed in one transaction.
pub(crate) const MAX_BATCH: usize = 64;

/// A write waiting for the group commit.
#[derive(Debug)]
pub(crate) struct PendingPut {
    /// The writer's key.
    pub(crate) public_key: String,
    /// What to write.
    pub(crate) entry: NewEntry,
    /// The quota of users without their own.
    pub(crate) default_quota: Quota,
}

/// One transaction over a batch of writes, as an engine runs it.
#[async_trait]
pub(crate) trait CommitBatch: Send + Sync + 'static {
    /// Commits `batch` in one transaction, one outcome per write in order; any error fails the whole
    /// transaction.
    async fn commit_batch(&self, batch: &[PendingPut]) -> Result<Vec<PutOutcome>>;
}

impl Request for PendingPut {
    type Answer = PutOutcome;
    const MAX_BATCH: usize = MAX_BATCH;
    const QUEUE_OPERATION: &'static str = "queue write";
    const OPERATION: &'static str = "commit write";
}

#[async_trait]
impl<E: CommitBatch> Batch<PendingPut> for E {
    async fn run(&self, batch: &[PendingPut]) -> Result<Vec<Result<PutOutcome>>> {
        match self.commit_batch(batch).await {
            Ok(outcomes) => Ok(outcomes.into_iter().map(Ok).collect()),
            // One write's statement failed and took the shared transaction with it: nothing was
            // committed, so each write is tried again in a transaction of its own.
            Err(err) if batch.len() > 1 && failed_statement(&err) => {
                let mut outcomes = Vec::with_capacity(batch.len());
                for pending in batch {
                    let alone = self.commit_batch(std::slice::from_ref(pending)).await;
                    outcomes.push(alone.and_then(|mut one| {
                        one.pop()
                            .ok_or_else(|| query(PendingPut::OPERATION)(sqlx::Error::RowNotFound))
                    }));
                }
                Ok(outcomes)
            }
            Err(err) => Err(err),
        }
    }
}

/// Starts the group commit over `engine`; writes are queued on the returned sender.
pub(crate) fn start(engine: impl CommitBatch) -> Queue<PendingPut> {
    batch_queue::start(engine)
}

/// Queues `public_key`'s write of `entry` and waits for its outcome.
pub(crate) async fn submit(
    queue: &Queue<PendingPut>,
    public_key: &str,
    entry: &NewEntry,
    default_quota: Quota,
) -> Result<PutOutcome> {
    let pending = PendingPut {
        public_key: public_key.to_string(),
        entry: entry.clone(),
        default_quota,
    };
    batch_queue::submit(queue, pending).await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::metadata::WriteMode;
    use crate::path::EntryPath;

    /// A database error such as a refused constraint.
    #[derive(Debug)]
    struct Refused;

    impl std::fmt::Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("refused")
        }
    }

    impl std::error::Error for Refused {}

    impl sqlx::error::DatabaseError for Refused {
        fn message(&self) -> &str {
            "refused"
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    /// Refuses every transaction that holds the path `/pub/bad`; records the batch sizes.
    #[derive(Default)]
    struct Engine {
        batches: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl CommitBatch for std::sync::Arc<Engine> {
        async fn commit_batch(&self, batch: &[PendingPut]) -> Result<Vec<PutOutcome>> {
            self.batches.lock().unwrap().push(batch.len());
            if batch.iter().any(|p| p.entry.path.as_str() == "/pub/bad") {
                return Err(query("write entry")(sqlx::Error::Database(Box::new(
                    Refused,
                ))));
            }
            Ok(batch.iter().map(|_| PutOutcome::QuotaExceeded).collect())
        }
    }

    fn pending(path: &str) -> PendingPut {
        let entry = NewEntry {
            path: EntryPath::parse(path).unwrap(),
            content_hash: [0; 32],
            content_length: 0,
            content_type: String::new(),
            blob_key: String::new(),
            now: 0,
            mode: WriteMode::Overwrite,
        };
        PendingPut {
            public_key: String::new(),
            entry,
            default_quota: Quota::Unlimited,
        }
    }

    #[tokio::test]
    async fn waiting_writes_share_a_transaction_and_a_failed_statement_fails_alone() {
        let engine = std::sync::Arc::new(Engine::default());
        let writes = ["/pub/a", "/pub/bad", "/pub/c"].map(pending).into();
        let outcomes = batch_queue::run_queued(engine.clone(), writes).await;
        assert_eq!(*engine.batches.lock().unwrap(), [3, 1, 1, 1]);
        let results: Vec<bool> = outcomes.iter().map(Result::is_ok).collect();
        assert_eq!(results, [true, false, true]);
    }
}

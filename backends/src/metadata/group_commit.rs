//! The group commit: writes queued while a transaction runs are committed together in the next one, as
//! many as are waiting (up to [`MAX_BATCH`]), so that one flush of the database's log (and one turn of
//! the event-order lock) serves them all. The engines provide the transaction ([`CommitBatch`]); the
//! batching and the retries are here.

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

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
    /// Where the outcome goes.
    pub(crate) reply: oneshot::Sender<Result<PutOutcome>>,
}

/// One transaction over a batch of writes, as an engine runs it.
#[async_trait]
pub(crate) trait CommitBatch: Send + Sync + 'static {
    /// Commits `batch` in one transaction, one outcome per write in order; any error fails the whole
    /// transaction.
    async fn commit_batch(&self, batch: &[PendingPut]) -> Result<Vec<PutOutcome>>;
}

/// Starts the group commit over `engine`; writes are queued on the returned sender.
pub(crate) fn start(engine: impl CommitBatch) -> mpsc::Sender<PendingPut> {
    let (sender, receiver) = mpsc::channel(MAX_BATCH * 4);
    tokio::spawn(run(engine, receiver));
    sender
}

/// Queues `public_key`'s write of `entry` and waits for its outcome.
pub(crate) async fn submit(
    queue: &mpsc::Sender<PendingPut>,
    public_key: &str,
    entry: &NewEntry,
    default_quota: Quota,
) -> Result<PutOutcome> {
    let (reply, outcome) = oneshot::channel();
    let pending = PendingPut {
        public_key: public_key.to_string(),
        entry: entry.clone(),
        default_quota,
        reply,
    };
    if queue.send(pending).await.is_err() {
        return Err(query("queue write")(sqlx::Error::PoolClosed));
    }
    outcome
        .await
        .unwrap_or_else(|_| Err(query("commit write")(sqlx::Error::PoolClosed)))
}

async fn run(engine: impl CommitBatch, mut receiver: mpsc::Receiver<PendingPut>) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let outcomes = commit(&engine, &batch).await;
        for (pending, outcome) in batch.into_iter().zip(outcomes) {
            let _ = pending.reply.send(outcome);
        }
    }
}

/// One outcome per write of `batch`.
async fn commit(engine: &impl CommitBatch, batch: &[PendingPut]) -> Vec<Result<PutOutcome>> {
    match engine.commit_batch(batch).await {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        // One write's statement failed and took the shared transaction with it: nothing was
        // committed, so each write is tried again in a transaction of its own.
        Err(err) if batch.len() > 1 && failed_statement(&err) => {
            let mut outcomes = Vec::with_capacity(batch.len());
            for pending in batch {
                let alone = engine.commit_batch(std::slice::from_ref(pending)).await;
                outcomes.push(alone.and_then(|mut one| {
                    one.pop()
                        .ok_or_else(|| query("commit write")(sqlx::Error::RowNotFound))
                }));
            }
            outcomes
        }
        Err(err) if batch.len() == 1 => vec![Err(err)],
        Err(err) => {
            let text = err.to_string();
            batch
                .iter()
                .map(|_| Err(query("commit write")(sqlx::Error::Protocol(text.clone()))))
                .collect()
        }
    }
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

    fn pending(path: &str) -> (PendingPut, oneshot::Receiver<Result<PutOutcome>>) {
        let (reply, outcome) = oneshot::channel();
        let entry = NewEntry {
            path: EntryPath::parse(path).unwrap(),
            content_hash: [0; 32],
            content_length: 0,
            content_type: String::new(),
            blob_key: String::new(),
            now: 0,
            mode: WriteMode::Overwrite,
        };
        let pending = PendingPut {
            public_key: String::new(),
            entry,
            default_quota: Quota::Unlimited,
            reply,
        };
        (pending, outcome)
    }

    #[tokio::test]
    async fn waiting_writes_share_a_transaction_and_a_failed_statement_fails_alone() {
        let engine = std::sync::Arc::new(Engine::default());
        let (sender, receiver) = mpsc::channel(MAX_BATCH * 4);
        let mut outcomes = Vec::new();
        for path in ["/pub/a", "/pub/bad", "/pub/c"] {
            let (pending, outcome) = pending(path);
            sender.send(pending).await.unwrap();
            outcomes.push(outcome);
        }
        drop(sender);
        run(engine.clone(), receiver).await;
        assert_eq!(*engine.batches.lock().unwrap(), [3, 1, 1, 1]);
        let results: Vec<bool> = futures_util::future::join_all(outcomes)
            .await
            .into_iter()
            .map(|outcome| outcome.unwrap().is_ok())
            .collect();
        assert_eq!(results, [true, false, true]);
    }
}

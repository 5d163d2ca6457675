//! The PoP nonce check (PROTOCOL-0.17 §7) as a group commit: nonces queued while a statement runs are
//! recorded together by the next one, up to [`MAX_BATCH`], so that one flush of the database's log
//! serves them all (a flood of proofs costs a statement per batch, not per proof). Each batch first
//! purges the nonces older than its window, then inserts its nonces in one statement that returns the
//! ones it recorded; a nonce it did not record was recorded before (a replay). The engines provide the
//! two statements ([`RecordNonces`]); the batch is here, the queue in `batch_queue`.

use std::collections::HashSet;

use async_trait::async_trait;

use super::Result;
use super::batch_queue::{self, Batch, Queue, Request};

/// Most nonces recorded by one statement (two parameters each).
pub(crate) const MAX_BATCH: usize = 256;

/// A nonce waiting to be checked.
#[derive(Debug)]
pub(crate) struct PendingNonce {
    /// The nonce.
    nonce: String,
    /// The time of the check, Unix seconds.
    now: i64,
    /// Nonces recorded before this time are forgotten first.
    oldest_kept: i64,
}

/// The two statements of a batch, as an engine runs them.
#[async_trait]
pub(crate) trait RecordNonces: Send + Sync + 'static {
    /// Deletes the nonces recorded before `oldest_kept`.
    async fn purge_nonces(&self, oldest_kept: i64) -> Result<()>;
    /// Records each (nonce, time) not recorded yet, in one statement; returns the nonces it recorded.
    async fn record_nonces(&self, nonces: &[(&str, i64)]) -> Result<Vec<String>>;
}

impl Request for PendingNonce {
    /// Whether the nonce was new.
    type Answer = bool;
    const MAX_BATCH: usize = MAX_BATCH;
    const QUEUE_OPERATION: &'static str = "queue PoP nonce";
    const OPERATION: &'static str = "record PoP nonce";
}

/// Starts the group commit over `engine`; checks are queued on the returned sender.
pub(crate) fn start(engine: impl RecordNonces) -> Queue<PendingNonce> {
    batch_queue::start(engine)
}

/// Queues the check of `nonce` at `now` (forgetting nonces older than `window` seconds) and waits for
/// its answer: whether the nonce was new.
pub(crate) async fn submit(
    queue: &Queue<PendingNonce>,
    nonce: &str,
    now: i64,
    window: i64,
) -> Result<bool> {
    let pending = PendingNonce {
        nonce: nonce.to_string(),
        now,
        oldest_kept: now.saturating_sub(window),
    };
    batch_queue::submit(queue, pending).await
}

#[async_trait]
impl<E: RecordNonces> Batch<PendingNonce> for E {
    async fn run(&self, batch: &[PendingNonce]) -> Result<Vec<Result<bool>>> {
        // The earliest window of the batch: nothing another check of the batch still holds is
        // forgotten.
        let oldest_kept = batch
            .iter()
            .map(|p| p.oldest_kept)
            .min()
            .unwrap_or(i64::MIN);
        // A failed clean-up does not fail the checks (§7).
        if let Err(err) = self.purge_nonces(oldest_kept).await {
            tracing::warn!(%err, "cannot purge old PoP nonces");
        }
        // Each nonce once, in one order: instances sharing a database lock the same nonces in the
        // same order, so their statements cannot deadlock.
        let mut rows: Vec<(&str, i64)> = batch.iter().map(|p| (p.nonce.as_str(), p.now)).collect();
        rows.sort_unstable();
        rows.dedup_by(|later, earlier| later.0 == earlier.0);
        let recorded = self.record_nonces(&rows).await?;
        // The first check of a nonce recorded by this batch gets it; a second one is a replay.
        let mut fresh: HashSet<String> = recorded.into_iter().collect();
        Ok(batch.iter().map(|p| Ok(fresh.remove(&p.nonce))).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Nonces in memory; records the statements it was asked to run.
    #[derive(Default)]
    struct Memory {
        nonces: Mutex<Vec<(String, i64)>>,
        calls: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl RecordNonces for std::sync::Arc<Memory> {
        async fn purge_nonces(&self, oldest_kept: i64) -> Result<()> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("purge {oldest_kept}"));
            self.nonces
                .lock()
                .unwrap()
                .retain(|(_, at)| *at >= oldest_kept);
            Ok(())
        }

        async fn record_nonces(&self, nonces: &[(&str, i64)]) -> Result<Vec<String>> {
            let listed: Vec<&str> = nonces.iter().map(|(n, _)| *n).collect();
            self.calls.lock().unwrap().push(listed.join(" "));
            let mut held = self.nonces.lock().unwrap();
            let mut recorded = Vec::new();
            for (nonce, at) in nonces {
                if !held.iter().any(|(n, _)| n == nonce) {
                    held.push((nonce.to_string(), *at));
                    recorded.push(nonce.to_string());
                }
            }
            Ok(recorded)
        }
    }

    fn pending((nonce, now): (&str, i64)) -> PendingNonce {
        PendingNonce {
            nonce: nonce.to_string(),
            now,
            oldest_kept: now - 360,
        }
    }

    #[tokio::test]
    async fn waiting_checks_share_a_statement_and_a_nonce_is_new_once() {
        let engine = std::sync::Arc::new(Memory::default());
        engine.nonces.lock().unwrap().push(("old".into(), 0));
        engine.nonces.lock().unwrap().push(("held".into(), 700));
        let checks = [
            ("b", 1000),
            ("a", 1001),
            ("b", 1001),
            ("held", 1000),
            ("old", 999),
        ];
        let answers = batch_queue::run_queued(engine.clone(), checks.map(pending).into()).await;
        // One batch: the purge for its earliest window, then the nonces once each, sorted.
        assert_eq!(*engine.calls.lock().unwrap(), ["purge 639", "a b held old"]);
        let answers: Vec<bool> = answers.into_iter().map(|answer| answer.unwrap()).collect();
        assert_eq!(answers, [true, true, false, false, true]);
    }
}

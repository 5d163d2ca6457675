//! The PoP nonce check (PROTOCOL-0.17 §7) as a group commit: nonces queued while a statement runs are
//! recorded together by the next one, up to [`MAX_BATCH`], so that one flush of the database's log
//! serves them all (a flood of proofs costs a statement per batch, not per proof). Each batch first
//! purges the nonces older than its window, then inserts its nonces in one statement that returns the
//! ones it recorded; a nonce it did not record was recorded before (a replay). The engines provide the
//! two statements ([`RecordNonces`]); the batching is here.

use std::collections::HashSet;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::{Result, query};

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
    /// Where the answer goes: whether the nonce was new.
    reply: oneshot::Sender<Result<bool>>,
}

/// The two statements of a batch, as an engine runs them.
#[async_trait]
pub(crate) trait RecordNonces: Send + Sync + 'static {
    /// Deletes the nonces recorded before `oldest_kept`.
    async fn purge_nonces(&self, oldest_kept: i64) -> Result<()>;
    /// Records each (nonce, time) not recorded yet, in one statement; returns the nonces it recorded.
    async fn record_nonces(&self, nonces: &[(&str, i64)]) -> Result<Vec<String>>;
}

/// Starts the group commit over `engine`; checks are queued on the returned sender.
pub(crate) fn start(engine: impl RecordNonces) -> mpsc::Sender<PendingNonce> {
    let (sender, receiver) = mpsc::channel(MAX_BATCH * 4);
    tokio::spawn(run(engine, receiver));
    sender
}

/// Queues the check of `nonce` at `now` (forgetting nonces older than `window` seconds) and waits for
/// its answer: whether the nonce was new.
pub(crate) async fn submit(
    queue: &mpsc::Sender<PendingNonce>,
    nonce: &str,
    now: i64,
    window: i64,
) -> Result<bool> {
    let (reply, answer) = oneshot::channel();
    let pending = PendingNonce {
        nonce: nonce.to_string(),
        now,
        oldest_kept: now.saturating_sub(window),
        reply,
    };
    if queue.send(pending).await.is_err() {
        return Err(query("queue PoP nonce")(sqlx::Error::PoolClosed));
    }
    answer
        .await
        .unwrap_or_else(|_| Err(query("record PoP nonce")(sqlx::Error::PoolClosed)))
}

async fn run(engine: impl RecordNonces, mut receiver: mpsc::Receiver<PendingNonce>) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let answers = record(&engine, &batch).await;
        for (pending, answer) in batch.into_iter().zip(answers) {
            let _ = pending.reply.send(answer);
        }
    }
}

/// One answer per check of `batch`.
async fn record(engine: &impl RecordNonces, batch: &[PendingNonce]) -> Vec<Result<bool>> {
    // The earliest window of the batch: nothing another check of the batch still holds is forgotten.
    let oldest_kept = batch
        .iter()
        .map(|p| p.oldest_kept)
        .min()
        .unwrap_or(i64::MIN);
    // A failed clean-up does not fail the checks (§7).
    if let Err(err) = engine.purge_nonces(oldest_kept).await {
        tracing::warn!(%err, "cannot purge old PoP nonces");
    }
    // Each nonce once, in one order: instances sharing a database lock the same nonces in the same
    // order, so their statements cannot deadlock.
    let mut rows: Vec<(&str, i64)> = batch.iter().map(|p| (p.nonce.as_str(), p.now)).collect();
    rows.sort_unstable();
    rows.dedup_by(|later, earlier| later.0 == earlier.0);
    match engine.record_nonces(&rows).await {
        Ok(recorded) => {
            // The first check of a nonce recorded by this batch gets it; a second one is a replay.
            let mut fresh: HashSet<String> = recorded.into_iter().collect();
            batch.iter().map(|p| Ok(fresh.remove(&p.nonce))).collect()
        }
        Err(err) if batch.len() == 1 => vec![Err(err)],
        Err(err) => {
            let text = err.to_string();
            batch
                .iter()
                .map(|_| {
                    Err(query("record PoP nonce")(sqlx::Error::Protocol(
                        text.clone(),
                    )))
                })
                .collect()
        }
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

    fn pending(nonce: &str, now: i64) -> (PendingNonce, oneshot::Receiver<Result<bool>>) {
        let (reply, answer) = oneshot::channel();
        let pending = PendingNonce {
            nonce: nonce.to_string(),
            now,
            oldest_kept: now - 360,
            reply,
        };
        (pending, answer)
    }

    #[tokio::test]
    async fn waiting_checks_share_a_statement_and_a_nonce_is_new_once() {
        let engine = std::sync::Arc::new(Memory::default());
        engine.nonces.lock().unwrap().push(("old".into(), 0));
        engine.nonces.lock().unwrap().push(("held".into(), 700));
        let (sender, receiver) = mpsc::channel(MAX_BATCH * 4);
        let mut answers = Vec::new();
        for (nonce, now) in [
            ("b", 1000),
            ("a", 1001),
            ("b", 1001),
            ("held", 1000),
            ("old", 999),
        ] {
            let (pending, answer) = pending(nonce, now);
            sender.send(pending).await.unwrap();
            answers.push(answer);
        }
        drop(sender);
        run(engine.clone(), receiver).await;
        // One batch: the purge for its earliest window, then the nonces once each, sorted.
        assert_eq!(*engine.calls.lock().unwrap(), ["purge 639", "a b held old"]);
        let answers: Vec<bool> = futures_util::future::join_all(answers)
            .await
            .into_iter()
            .map(|answer| answer.unwrap().unwrap())
            .collect();
        assert_eq!(answers, [true, true, false, false, true]);
    }
}

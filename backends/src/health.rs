//! Whether the database and the blob store answer. A watcher task probes the database twice a second, so
//! that while it is down requests can be refused at once with a reason instead of each waiting out
//! connection timeouts, and the blob store every five seconds (an S3 request costs money, and blob failures
//! surface quickly on their own); `/metrics` shows both. Recovery needs nothing from the operator: the next
//! probe that succeeds marks the dependency up again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use object_store::path::Path as BlobPath;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::task::JoinHandle;

use crate::Metadata;
use crate::blobs::PROBE_PREFIX;

/// How often the database is probed.
const EVERY: Duration = Duration::from_millis(500);
/// The blob store is probed on every this many database probes.
const BLOB_EVERY: u32 = 10;
/// A probe that takes longer than this counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The last probe's verdict on each dependency; both start up (the server checked them at start-up).
#[derive(Debug)]
pub struct Health {
    database: AtomicBool,
    blobs: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            database: AtomicBool::new(true),
            blobs: AtomicBool::new(true),
        }
    }
}

impl Health {
    /// Whether the metadata database answered the last probe.
    pub fn database_up(&self) -> bool {
        self.database.load(Ordering::Relaxed)
    }

    /// Whether the blob store answered the last probe.
    pub fn blobs_up(&self) -> bool {
        self.blobs.load(Ordering::Relaxed)
    }

    /// Records a verdict and logs a change.
    fn set(flag: &AtomicBool, what: &str, up: bool, err: Option<String>) {
        if flag.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("the {what} answers again");
            } else {
                tracing::error!(err = err.unwrap_or_default(), "the {what} does not answer");
            }
        }
    }
}

/// Probes both dependencies until aborted.
pub(crate) fn watch(
    health: Arc<Health>,
    metadata: Arc<dyn Metadata>,
    blobs: Arc<dyn ObjectStore>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let missing = BlobPath::from(format!("{PROBE_PREFIX}health"));
        let mut ticks = tokio::time::interval(EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for tick in 0u32.. {
            ticks.tick().await;
            let database = match tokio::time::timeout(PROBE_TIMEOUT, metadata.ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err("no answer within a second".to_string()),
            };
            Health::set(
                &health.database,
                "database",
                database.is_ok(),
                database.err(),
            );
            if tick % BLOB_EVERY == 0 {
                let blob = match tokio::time::timeout(PROBE_TIMEOUT, blobs.head(&missing)).await {
                    Ok(Ok(_) | Err(object_store::Error::NotFound { .. })) => Ok(()),
                    Ok(Err(err)) => Err(err.to_string()),
                    Err(_) => Err("no answer within a second".to_string()),
                };
                Health::set(&health.blobs, "blob store", blob.is_ok(), blob.err());
            }
        }
    })
}

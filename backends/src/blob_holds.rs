//! Holds on blob deletion, so that an online backup or user export can read every blob its metadata
//! snapshot names. A write deletes the blob it replaced right after its commit; a snapshot taken a moment
//! earlier still names that blob. While a [`Hold`] is placed, [`BlobHolds::active`] tells the Store to
//! leave replaced blobs in place (the sweeper removes them once no hold is left) and the sweeper to
//! delete nothing.
//!
//! A hold is a marker object under [`HOLDS_DIR`] in the blob store itself, so that every instance and
//! every process sharing the store sees it; it is live while its last write is younger than
//! [`HOLD_TTL`], and its holder rewrites it every [`HOLD_REFRESH`]. Instances check at most every
//! [`CHECK_TTL`]; a holder waits [`SETTLE`] after placing the marker before it takes its snapshot. So a
//! blob whose deletion was decided on a check that saw no hold was unreferenced before the marker was
//! written, hence before the snapshot: the snapshot never names it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use object_store::path::Path as BlobPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::task::JoinHandle;

/// The directory of hold markers (never user data: user blobs start with a z32 key).
pub const HOLDS_DIR: &str = "homestead-holds";
/// A marker not rewritten for this long is dead (its holder crashed).
pub const HOLD_TTL: Duration = Duration::from_secs(300);
/// How often a holder rewrites its marker.
pub const HOLD_REFRESH: Duration = Duration::from_secs(30);
/// How long one look at the markers is trusted.
pub const CHECK_TTL: Duration = Duration::from_secs(1);
/// How long a holder waits after writing its marker: longer than [`CHECK_TTL`] with a margin.
pub const SETTLE: Duration = Duration::from_secs(3);

/// Whether a blob key lies in the hold markers' directory.
pub fn is_hold_marker(key: &str) -> bool {
    key.strip_prefix(HOLDS_DIR)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// The check the Store and its sweeper make before deleting a blob; one per Store.
#[derive(Debug)]
pub struct BlobHolds {
    store: Arc<dyn ObjectStore>,
    /// When the last look was sent, and whether it saw a live hold.
    last: Mutex<Option<(Instant, bool)>>,
    /// Held while one caller looks: the others wait and take its answer.
    looking: tokio::sync::Mutex<()>,
}

impl BlobHolds {
    /// Checks for holds in `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            last: Mutex::new(None),
            looking: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether some hold is live, as seen at most [`CHECK_TTL`] ago. A failed look counts as a hold:
    /// keeping a blob too long costs space, deleting one a backup needs costs the backup. One look
    /// runs at a time; callers that waited for it take its answer.
    pub async fn active(&self) -> bool {
        if let Some(held) = self.recent() {
            return held;
        }
        let _looking = self.looking.lock().await;
        if let Some(held) = self.recent() {
            return held;
        }
        let sent = Instant::now();
        let held = match live_markers(self.store.as_ref()).await {
            Ok(live) => live > 0,
            Err(err) => {
                tracing::warn!(%err, "cannot look for backup holds; keeping replaced blobs");
                true
            }
        };
        *self.last.lock().expect("holds lock") = Some((sent, held));
        held
    }

    /// The answer of a look sent less than [`CHECK_TTL`] ago.
    fn recent(&self) -> Option<bool> {
        let last = *self.last.lock().expect("holds lock");
        last.and_then(|(sent, held)| (sent.elapsed() < CHECK_TTL).then_some(held))
    }
}

/// How many live markers the store holds.
async fn live_markers(store: &dyn ObjectStore) -> object_store::Result<usize> {
    let dir = BlobPath::from(HOLDS_DIR);
    let mut listing = store.list(Some(&dir));
    let mut live = 0;
    while let Some(meta) = listing.next().await.transpose()? {
        let age = age_of(meta.last_modified.timestamp_micros());
        if age < HOLD_TTL {
            live += 1;
        }
    }
    Ok(live)
}

/// How long ago a time in microseconds since the epoch was (zero for the future).
fn age_of(micros: i64) -> Duration {
    let now = crate::metadata::now_micros();
    Duration::from_micros(u64::try_from(now.saturating_sub(micros)).unwrap_or(0))
}

/// A placed hold: blobs stay until it is released (or its holder dies and [`HOLD_TTL`] passes).
#[derive(Debug)]
pub struct Hold {
    store: Arc<dyn ObjectStore>,
    marker: BlobPath,
    refresher: JoinHandle<()>,
}

impl Hold {
    /// Writes a fresh marker, keeps it fresh, and returns once every instance's check will see it.
    pub async fn place(store: Arc<dyn ObjectStore>) -> object_store::Result<Self> {
        let marker = BlobPath::from(format!("{HOLDS_DIR}/{:032x}", rand::random::<u128>()));
        store.put(&marker, marker_body()).await?;
        let refresher = tokio::spawn({
            let store = store.clone();
            let marker = marker.clone();
            async move {
                loop {
                    tokio::time::sleep(HOLD_REFRESH).await;
                    if let Err(err) = store.put(&marker, marker_body()).await {
                        tracing::warn!(%err, "cannot refresh the backup hold {marker}");
                    }
                }
            }
        });
        tokio::time::sleep(SETTLE).await;
        Ok(Self {
            store,
            marker,
            refresher,
        })
    }

    /// Removes the marker (and dead markers of crashed holders).
    pub async fn release(self) {
        self.refresher.abort();
        if let Err(err) = self.store.delete(&self.marker).await {
            tracing::warn!(%err, "cannot remove the backup hold {}", self.marker);
        }
        let dir = BlobPath::from(HOLDS_DIR);
        let mut listing = self.store.list(Some(&dir));
        while let Some(Ok(meta)) = listing.next().await {
            if age_of(meta.last_modified.timestamp_micros()) >= HOLD_TTL {
                let _ = self.store.delete(&meta.location).await;
            }
        }
    }
}

fn marker_body() -> PutPayload {
    PutPayload::from(format!("held at {}\n", crate::metadata::now_micros()))
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test]
    async fn a_hold_is_seen_while_placed_and_gone_after_release() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let holds = BlobHolds::new(store.clone());
        assert!(!holds.active().await);
        let hold = Hold::place(store.clone()).await.unwrap();
        // The earlier look is older than CHECK_TTL by the time the hold settled.
        assert!(holds.active().await);
        hold.release().await;
        *holds.last.lock().unwrap() = None;
        assert!(!holds.active().await);
    }

    /// Counts the listings the holds check sends.
    #[derive(Debug)]
    struct CountingLists {
        inner: InMemory,
        lists: std::sync::atomic::AtomicUsize,
    }

    impl std::fmt::Display for CountingLists {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "CountingLists")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for CountingLists {
        crate::blobs::forward_to_inner!(
            put_opts,
            put_multipart_opts,
            get_opts,
            delete_stream,
            list_with_delimiter,
            copy_opts
        );
        fn list(
            &self,
            prefix: Option<&BlobPath>,
        ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // A slow listing, as S3's: concurrent checks overlap it.
            let listing = self.inner.list(prefix);
            futures_util::stream::once(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                listing
            })
            .flatten()
            .boxed()
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_checks_share_one_look() {
        let counting = Arc::new(CountingLists {
            inner: InMemory::new(),
            lists: Default::default(),
        });
        let holds = Arc::new(BlobHolds::new(counting.clone()));
        let checks: Vec<_> = (0..32)
            .map(|_| {
                let holds = holds.clone();
                tokio::spawn(async move { holds.active().await })
            })
            .collect();
        for check in checks {
            assert!(!check.await.unwrap());
        }
        assert_eq!(counting.lists.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn markers_are_recognized_by_their_directory() {
        assert!(is_hold_marker("homestead-holds/abc"));
        assert!(!is_hold_marker("homestead-holdsx/abc"));
        assert!(!is_hold_marker("user/abc"));
    }
}

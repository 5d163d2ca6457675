//! The event tail and its subscribers (OPERATIONS.md §12.4). The [`Store`] owns the tail: one task per
//! process ([`Store::start_event_tail`]) reads newly committed events from the database, in id order.
//! The database is the source of truth; wake-ups come from this process's commits, from other
//! instances (PostgreSQL `LISTEN`), and from a periodic poll as a fallback, so instances sharing one
//! database see each other's writes. Each event evicts its path from the Store's entry cache, which is
//! how other instances' writes reach it, with or without subscribers; then it goes to every live
//! stream holding an [`EventBus`] receiver.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, broadcast};

use crate::Store;
use crate::metadata::{Event, EventFilter};

/// Events a subscriber may fall behind by before it is dropped.
pub const BUS_CAPACITY: usize = 1000;
/// Events read per database round trip.
const BATCH: u32 = 100;
/// Poll interval when no wake-up comes.
const POLL: Duration = Duration::from_secs(30);

/// A handle to subscribe to the events the Store's tail reads (see [`Store::event_bus`]).
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<Event>>,
}

impl EventBus {
    /// A receiver of every event committed after this call (and possibly a few before).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }

    /// How many live subscribers there are.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}

/// What the Store keeps for its tail: the wake-up of local commits and the subscribers' channel.
#[derive(Debug)]
pub(crate) struct EventTail {
    committed: Notify,
    sender: broadcast::Sender<Arc<Event>>,
}

impl EventTail {
    /// A tail with no subscribers, not yet followed.
    pub(crate) fn new() -> Self {
        Self {
            committed: Notify::new(),
            sender: broadcast::channel(BUS_CAPACITY).0,
        }
    }

    /// Wakes the tail: this process committed an event.
    pub(crate) fn wake(&self) {
        self.committed.notify_one();
    }

    /// A subscriber handle.
    pub(crate) fn bus(&self) -> EventBus {
        EventBus {
            sender: self.sender.clone(),
        }
    }
}

/// The id of the newest event, where a new tail starts.
pub(crate) async fn newest(store: &Store) -> crate::store::Result<u64> {
    let newest = EventFilter {
        reverse: true,
        ..EventFilter::default()
    };
    Ok(store
        .events(0, 1, &newest)
        .await?
        .first()
        .map_or(0, |e| e.id))
}

/// Follows the event log after `last` for as long as the task lives.
pub(crate) async fn follow(store: Store, mut last: u64) {
    let tail = store.event_tail();
    let remote = store.files().event_hints();
    loop {
        let remote_wake = async {
            match &remote {
                Some(hints) => hints.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tail.committed.notified() => {}
            _ = remote_wake => {}
            _ = tokio::time::sleep(POLL) => {}
        }
        loop {
            match store.events(last, BATCH, &EventFilter::default()).await {
                Ok(batch) => {
                    let full = batch.len() == BATCH as usize;
                    for event in batch {
                        last = event.id;
                        // Whichever instance wrote it, cached metadata of the path is stale now.
                        store.forget_entry(&event.user, &event.path);
                        // No subscriber is not an error.
                        let _ = tail.sender.send(Arc::new(event));
                    }
                    if !full {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "reading new events failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    tail.wake();
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use homestead_config::{DatabaseUrl, Storage, StorageType};

    use crate::metadata::{self, Quota, WriteMode, now_micros};
    use crate::store::WriteLimits;
    use crate::{BlobStore, EntryPath, Store};

    const OWNER: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";

    #[tokio::test]
    async fn the_tail_evicts_other_instances_writes_without_subscribers() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::sqlite_file(&dir.path().join("test.db"));
        let shared: std::sync::Arc<dyn metadata::Metadata> =
            std::sync::Arc::from(metadata::open(&url).await.unwrap());
        let memory = Storage {
            kind: StorageType::InMemory,
            ..Storage::default()
        };
        let blobs = BlobStore::open(&memory, dir.path()).unwrap();
        // Two instances over one database, each trusting its entry cache for an hour.
        let ttl = Duration::from_secs(3600);
        let here = Store::new(shared.clone(), &blobs, Quota::Unlimited, ttl);
        let there = Store::new(shared, &blobs, Quota::Unlimited, ttl);
        let accounts = here.accounts();
        accounts
            .create_user(OWNER, None, now_micros())
            .await
            .unwrap();
        let writer = accounts.user(OWNER).await.unwrap().unwrap();
        let path = EntryPath::parse("/pub/file").unwrap();
        let body = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"v"))]);
        let plan = there.prepare(&writer, &path, WriteMode::Overwrite);
        let plan = plan.await.unwrap().unwrap();
        there
            .commit(plan, body, WriteLimits::default())
            .await
            .unwrap();
        assert!(here.head(OWNER, &path).await.unwrap().is_some(), "cached");
        let tail = here.start_event_tail().await.unwrap();
        there.delete(OWNER, &path).await.unwrap();
        assert!(
            here.head(OWNER, &path).await.unwrap().is_some(),
            "stale until the tail reads the event"
        );
        // What a database hint (PostgreSQL `LISTEN`) does; SQLite has none, and the poll is slow.
        here.event_tail().wake();
        let evicted = async {
            while here.head(OWNER, &path).await.unwrap().is_some() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), evicted)
            .await
            .expect("evicted within 5 s");
        assert_eq!(here.event_bus().subscribers(), 0);
        tail.abort();
    }
}

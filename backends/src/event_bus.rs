//! The live event bus (OPERATIONS.md §12.4): one task per process reads newly committed events from the
//! database, in id order, and broadcasts them to every live stream. The database is the source of truth;
//! wake-ups come from this process's commits, from other instances (PostgreSQL `LISTEN`), and from a
//! periodic poll as a fallback, so instances sharing one database deliver each other's writes. Each
//! event also evicts its path from the Store's entry cache, which is how other instances' writes reach it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::Store;
use crate::metadata::{Event, EventFilter};

/// Events a subscriber may fall behind by before it is dropped.
pub const BUS_CAPACITY: usize = 1000;
/// Events read per database round trip.
const BATCH: u32 = 100;
/// Poll interval when no wake-up comes.
const POLL: Duration = Duration::from_secs(30);

/// Broadcasts committed events to live subscribers.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<Event>>,
}

impl EventBus {
    /// Starts broadcasting the events committed from now on; returns the bus and its task.
    pub async fn start(store: Store) -> crate::store::Result<(Self, JoinHandle<()>)> {
        let newest = EventFilter {
            reverse: true,
            ..EventFilter::default()
        };
        let last = store
            .events(0, 1, &newest)
            .await?
            .first()
            .map_or(0, |e| e.id);
        let (sender, _) = broadcast::channel(BUS_CAPACITY);
        let task = tokio::spawn(pump(store, sender.clone(), last));
        Ok((Self { sender }, task))
    }

    /// A receiver of every event committed after this call (and possibly a few before).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }

    /// How many live subscribers there are.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}

async fn pump(store: Store, sender: broadcast::Sender<Arc<Event>>, mut last: u64) {
    let local = store.events_committed();
    let remote = store.metadata().event_hints();
    loop {
        let remote_wake = async {
            match &remote {
                Some(hints) => hints.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = local.notified() => {}
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
                        let _ = sender.send(Arc::new(event));
                    }
                    if !full {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "reading new events failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    local.notify_one();
                    break;
                }
            }
        }
    }
}

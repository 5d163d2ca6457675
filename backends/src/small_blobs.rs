//! A bounded in-memory cache of small file contents, keyed by blob key. Blob keys are random and never
//! reused, and a blob is never rewritten, so a cached body can never be stale: no invalidation exists or is
//! needed. A read still asks the database which blob is current; the cache only spares the open and read.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

/// Bodies up to this size are cached.
pub const MAX_CACHED_BODY: u64 = 64 * 1024;
/// Total bytes kept, counted as [`cost`]; the oldest insertions go first.
pub const CAPACITY_BYTES: usize = 32 * 1024 * 1024;
/// What an entry costs beside its body and key bytes: the map's slot and its spare room, the key's and
/// body's handles, the queue's copy of the key's handle, and allocator headers.
const ENTRY_OVERHEAD: usize = 192;

/// The memory an entry holds, as the budget counts it.
fn cost(key: &str, body: &Bytes) -> usize {
    body.len() + 2 * key.len() + ENTRY_OVERHEAD
}

/// Small blob bodies by key, oldest evicted first.
#[derive(Debug, Default)]
pub struct SmallBlobs {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    bodies: HashMap<String, Bytes>,
    order: VecDeque<String>,
    bytes: usize,
}

impl SmallBlobs {
    /// The body of `key`, if cached.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.inner.lock().unwrap().bodies.get(key).cloned()
    }

    /// Keeps `body` as the content of `key`, evicting the oldest bodies beyond the capacity.
    pub fn insert(&self, key: &str, body: Bytes) {
        if body.len() as u64 > MAX_CACHED_BODY {
            return;
        }
        let mut inner = self.inner.lock().unwrap();
        if inner.bodies.contains_key(key) {
            return;
        }
        // A body may be a slice of a larger read buffer: keep a copy of its own size, so that the
        // cache never pins memory it does not count.
        let body = Bytes::copy_from_slice(&body);
        inner.bytes += cost(key, &body);
        inner.bodies.insert(key.to_string(), body);
        inner.order.push_back(key.to_string());
        while inner.bytes > CAPACITY_BYTES {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(evicted) = inner.bodies.remove(&oldest) {
                inner.bytes -= cost(&oldest, &evicted);
            }
        }
    }

    /// Forgets `key` (its blob was deleted), so memory goes to live files.
    pub fn remove(&self, key: &str) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(body) = inner.bodies.remove(key) {
            inner.bytes -= cost(key, &body);
            // Eviction skips keys already gone; compact now and then so the queue stays bounded.
            if inner.order.len() > 2 * inner.bodies.len() + 1024 {
                let Inner { bodies, order, .. } = &mut *inner;
                order.retain(|k| bodies.contains_key(k));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_small_bodies_and_evicts_the_oldest() {
        let cache = SmallBlobs::default();
        cache.insert("big", Bytes::from(vec![0; MAX_CACHED_BODY as usize + 1]));
        assert!(cache.get("big").is_none());
        let body = Bytes::from(vec![1; MAX_CACHED_BODY as usize]);
        let fits = CAPACITY_BYTES / cost("0", &body);
        for i in 0..=fits {
            cache.insert(&i.to_string(), body.clone());
        }
        assert!(cache.get("0").is_none(), "the oldest went first");
        assert_eq!(cache.get(&fits.to_string()), Some(body.clone()));
        cache.remove(&fits.to_string());
        assert!(cache.get(&fits.to_string()).is_none());
        assert!(cache.inner.lock().unwrap().bytes <= CAPACITY_BYTES);
    }

    #[test]
    fn tiny_bodies_are_counted_with_their_overhead() {
        let cache = SmallBlobs::default();
        let key = |i: usize| format!("{i:064}");
        let per_entry = cost(&key(0), &Bytes::from_static(b"x"));
        let fits = CAPACITY_BYTES / per_entry;
        for i in 0..fits + 1000 {
            cache.insert(&key(i), Bytes::from_static(b"x"));
        }
        let inner = cache.inner.lock().unwrap();
        assert!(inner.bodies.len() <= fits, "{} entries", inner.bodies.len());
        assert!(inner.bytes <= CAPACITY_BYTES);
    }
}

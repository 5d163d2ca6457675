//! A bounded in-memory cache of file metadata by owner and path, so that reads of hot files skip the
//! database.
//!
//! It is exact for this process's own writes: the [`Store`](crate::Store) forgets a path as soon as its
//! write or delete commits, before answering, and a read only caches what it fetched if no path was
//! forgotten meanwhile (a generation count), so a read racing a write cannot put back the old version.
//! Writes by other instances sharing one PostgreSQL database reach it through the Store's event tail,
//! which forgets the path of every event it reads (within milliseconds, on the `LISTEN` hint); and
//! every entry expires after [`TTL`] whatever happens, which bounds how stale another instance's write
//! can look.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metadata::Entry;

/// How long an entry is trusted at most, by default (`storage.entry_cache_ms`).
pub const TTL: Duration = Duration::from_secs(1);
/// Most entries kept; when full, expired entries go first, then all.
const CAPACITY: usize = 16_384;

/// File metadata by owner and path.
#[derive(Debug)]
pub struct EntryCache {
    inner: Mutex<Inner>,
    ttl: Duration,
}

#[derive(Debug, Default)]
struct Inner {
    /// By owner key followed by path.
    entries: HashMap<String, (Entry, Instant)>,
    /// Forgotten paths so far.
    generation: u64,
}

fn key(owner: &str, path: &str) -> String {
    let mut key = String::with_capacity(owner.len() + path.len());
    key.push_str(owner);
    key.push_str(path);
    key
}

impl EntryCache {
    /// A cache whose entries expire after `ttl` (zero: a cache that keeps nothing).
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            inner: Mutex::default(),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry of `owner`'s `path`, if cached within its time to live.
    pub fn get(&self, owner: &str, path: &str) -> Option<Entry> {
        let key = key(owner, path);
        let inner = self.lock();
        let (entry, at) = inner.entries.get(&key)?;
        (at.elapsed() < self.ttl).then(|| entry.clone())
    }

    /// Read before fetching from the database; pass it to [`EntryCache::insert`].
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Keeps `entry` of `owner`, fetched after [`EntryCache::generation`] returned `generation`, unless
    /// some path was forgotten since (the fetch may have seen a version older than a commit).
    pub fn insert(&self, owner: &str, entry: &Entry, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation || self.ttl.is_zero() {
            return;
        }
        if inner.entries.len() >= CAPACITY {
            let ttl = self.ttl;
            inner.entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if inner.entries.len() >= CAPACITY {
                inner.entries.clear();
            }
        }
        let key = key(owner, entry.path.as_str());
        inner.entries.insert(key, (entry.clone(), Instant::now()));
    }

    /// Forgets `owner`'s `path` (it was written or deleted).
    pub fn forget(&self, owner: &str, path: &str) {
        let key = key(owner, path);
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::EntryPath;

    const OWNER: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";

    fn entry(path: &str, blob_key: &str) -> Entry {
        Entry {
            path: EntryPath::try_from(crate::path::NormalizedPath::parse(path).unwrap()).unwrap(),
            content_hash: [0; 32],
            content_length: 1,
            content_type: "text/plain".into(),
            blob_key: blob_key.into(),
            created_at: 0,
            modified_at: 0,
        }
    }

    #[test]
    fn keeps_what_was_read_until_forgotten() {
        let cache = EntryCache::with_ttl(TTL);
        let generation = cache.generation();
        cache.insert(OWNER, &entry("/pub/a", "k1"), generation);
        assert_eq!(cache.get(OWNER, "/pub/a").unwrap().blob_key, "k1");
        assert!(cache.get(OWNER, "/pub/b").is_none());
        assert!(cache.get("other", "/pub/a").is_none());
        cache.forget(OWNER, "/pub/a");
        assert!(cache.get(OWNER, "/pub/a").is_none());
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let cache = EntryCache::with_ttl(TTL);
        let before = cache.generation();
        // A write commits and forgets its path while the read is in flight.
        cache.forget(OWNER, "/pub/a");
        cache.insert(OWNER, &entry("/pub/a", "old"), before);
        assert!(cache.get(OWNER, "/pub/a").is_none());
        // A read started after the write is kept.
        cache.insert(OWNER, &entry("/pub/a", "new"), cache.generation());
        assert_eq!(cache.get(OWNER, "/pub/a").unwrap().blob_key, "new");
    }

    #[test]
    fn a_zero_ttl_keeps_nothing() {
        let cache = EntryCache::with_ttl(Duration::ZERO);
        cache.insert(OWNER, &entry("/pub/a", "k1"), cache.generation());
        assert!(cache.get(OWNER, "/pub/a").is_none());
        assert!(cache.lock().entries.is_empty());
    }

    #[test]
    fn entries_expire() {
        let cache = EntryCache::with_ttl(Duration::from_millis(20));
        cache.insert(OWNER, &entry("/pub/a", "k1"), cache.generation());
        assert!(cache.get(OWNER, "/pub/a").is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(cache.get(OWNER, "/pub/a").is_none());
    }

    #[test]
    fn stays_within_its_capacity() {
        let cache = EntryCache::with_ttl(TTL);
        for i in 0..CAPACITY + 10 {
            let generation = cache.generation();
            cache.insert(OWNER, &entry(&format!("/pub/{i}"), "k"), generation);
        }
        assert!(cache.lock().entries.len() <= CAPACITY);
        let last = format!("/pub/{}", CAPACITY + 9);
        assert!(cache.get(OWNER, &last).is_some());
    }
}

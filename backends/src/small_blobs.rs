//! [`SmallBlobCache`]: an object store wrapper that keeps small blobs' contents in memory, bounded, by
//! key. Blob keys are random and never reused, and a blob is never rewritten, so a cached body can never
//! be stale: a delete through the wrapper forgets it, and no other invalidation exists or is needed. A
//! read still asks the database which blob is current; the cache only spares the open and read.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ObjectMeta, ObjectStore,
    RenameOptions, Result,
};

/// Bodies up to this size are cached.
pub const MAX_CACHED_BODY: u64 = 64 * 1024;
/// Total bytes kept, counted as [`cost`]; the oldest insertions go first.
pub const CAPACITY_BYTES: usize = 32 * 1024 * 1024;
/// What an entry costs beside its body, key and metadata strings: the map's slot (key, body and boxed
/// metadata handles) and its spare room (removals leave tombstones, so a map under churn may grow to
/// four times its live entries), the boxed metadata, the queue's copy of the key's handle, and
/// allocator headers.
const ENTRY_OVERHEAD: usize = 384;

/// The memory an entry holds, as the budget counts it: the key is kept three times (the map's, the
/// queue's, the metadata's location).
fn cost(key: &str, cached: &Cached) -> usize {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    cached.body.len()
        + 3 * key.len()
        + text(&cached.meta.e_tag)
        + text(&cached.meta.version)
        + ENTRY_OVERHEAD
}

/// A cached blob: its metadata (boxed, to keep the map's slots small) and body.
#[derive(Debug, Clone)]
struct Cached {
    meta: Box<ObjectMeta>,
    body: Bytes,
}

/// Small blob bodies and their metadata by key, oldest evicted first.
#[derive(Debug, Default)]
pub struct SmallBlobs {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    blobs: HashMap<String, Cached>,
    order: VecDeque<String>,
    bytes: usize,
}

impl SmallBlobs {
    /// The metadata and body of the blob at `key`, if cached.
    pub fn get(&self, key: &str) -> Option<(ObjectMeta, Bytes)> {
        let inner = self.inner.lock().unwrap();
        let cached = inner.blobs.get(key)?;
        Some((ObjectMeta::clone(&cached.meta), cached.body.clone()))
    }

    /// Keeps `body` as the content of the blob `meta` describes, evicting the oldest bodies beyond the
    /// capacity.
    pub fn insert(&self, meta: &ObjectMeta, body: Bytes) {
        if body.len() as u64 > MAX_CACHED_BODY {
            return;
        }
        let key = meta.location.as_ref();
        let mut inner = self.inner.lock().unwrap();
        if inner.blobs.contains_key(key) {
            return;
        }
        // A body may be a slice of a larger read buffer: keep a copy of its own size, so that the
        // cache never pins memory it does not count.
        let cached = Cached {
            meta: Box::new(meta.clone()),
            body: Bytes::copy_from_slice(&body),
        };
        inner.bytes += cost(key, &cached);
        inner.blobs.insert(key.to_string(), cached);
        inner.order.push_back(key.to_string());
        while inner.bytes > CAPACITY_BYTES {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(evicted) = inner.blobs.remove(&oldest) {
                inner.bytes -= cost(&oldest, &evicted);
            }
        }
    }

    /// Forgets `key` (its blob is deleted), so memory goes to live blobs.
    pub fn remove(&self, key: &str) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(cached) = inner.blobs.remove(key) {
            inner.bytes -= cost(key, &cached);
            // Eviction skips keys already gone; compact now and then so the queue stays bounded.
            if inner.order.len() > 2 * inner.blobs.len() + 1024 {
                let Inner { blobs, order, .. } = &mut *inner;
                order.retain(|k| blobs.contains_key(k));
            }
        }
    }
}

/// An object store whose whole reads of blobs up to [`MAX_CACHED_BODY`] bytes are served from a
/// [`SmallBlobs`] cache after the first.
#[derive(Debug)]
pub struct SmallBlobCache<T: ObjectStore> {
    inner: T,
    cache: Arc<SmallBlobs>,
}

impl<T: ObjectStore> SmallBlobCache<T> {
    /// Wraps `inner` with an empty cache.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            cache: Arc::default(),
        }
    }
}

impl<T: ObjectStore> fmt::Display for SmallBlobCache<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SmallBlobCache({})", self.inner)
    }
}

/// Whether a read asks for the whole current object, unconditionally: the only reads the cache serves.
fn whole(options: &GetOptions) -> bool {
    let GetOptions {
        if_match,
        if_none_match,
        if_modified_since,
        if_unmodified_since,
        range,
        version,
        head,
        extensions: _,
    } = options;
    if_match.is_none()
        && if_none_match.is_none()
        && if_modified_since.is_none()
        && if_unmodified_since.is_none()
        && range.is_none()
        && version.is_none()
        && !head
}

/// A read answered with `body` in one piece.
fn answer(meta: ObjectMeta, body: Bytes, attributes: Attributes) -> GetResult {
    GetResult {
        range: 0..meta.size,
        payload: GetResultPayload::Stream(futures_util::stream::once(async { Ok(body) }).boxed()),
        meta,
        attributes,
        extensions: Default::default(),
    }
}

#[async_trait]
impl<T: ObjectStore> ObjectStore for SmallBlobCache<T> {
    crate::blobs::forward_to_inner!(put_opts, put_multipart_opts, list, list_with_delimiter);
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if !whole(&options) {
            return self.inner.get_opts(location, options).await;
        }
        if let Some((meta, body)) = self.cache.get(location.as_ref()) {
            return Ok(answer(meta, body, Attributes::default()));
        }
        let read = self.inner.get_opts(location, options).await?;
        if read.meta.size > MAX_CACHED_BODY {
            return Ok(read);
        }
        let meta = read.meta.clone();
        let attributes = read.attributes.clone();
        let body = read.bytes().await?;
        // A body shorter or longer than its metadata says (a file being replaced under the reader) is
        // passed on, never kept.
        if body.len() as u64 == meta.size {
            self.cache.insert(&meta, body.clone());
        }
        Ok(answer(meta, body, attributes))
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let cache = self.cache.clone();
        let forgotten = locations.map(move |location| {
            if let Ok(location) = &location {
                cache.remove(location.as_ref());
            }
            location
        });
        self.inner.delete_stream(forgotten.boxed())
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.cache.remove(to.as_ref());
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.cache.remove(from.as_ref());
        self.cache.remove(to.as_ref());
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    fn meta(key: &str, size: usize) -> ObjectMeta {
        ObjectMeta {
            location: Path::from(key),
            last_modified: Default::default(),
            size: size as u64,
            e_tag: Some("etag".into()),
            version: None,
        }
    }

    fn cached(key: &str, body: &Bytes) -> Cached {
        Cached {
            meta: Box::new(meta(key, body.len())),
            body: body.clone(),
        }
    }

    #[test]
    fn keeps_small_bodies_and_evicts_the_oldest() {
        let cache = SmallBlobs::default();
        let big = Bytes::from(vec![0; MAX_CACHED_BODY as usize + 1]);
        cache.insert(&meta("big", big.len()), big);
        assert!(cache.get("big").is_none());
        let body = Bytes::from(vec![1; MAX_CACHED_BODY as usize]);
        let fits = CAPACITY_BYTES / cost("0", &cached("0", &body));
        for i in 0..=fits {
            cache.insert(&meta(&i.to_string(), body.len()), body.clone());
        }
        assert!(cache.get("0").is_none(), "the oldest went first");
        let (kept, kept_body) = cache.get(&fits.to_string()).unwrap();
        assert_eq!(
            (kept, kept_body),
            (meta(&fits.to_string(), body.len()), body)
        );
        cache.remove(&fits.to_string());
        assert!(cache.get(&fits.to_string()).is_none());
        assert!(cache.inner.lock().unwrap().bytes <= CAPACITY_BYTES);
    }

    #[test]
    fn tiny_bodies_are_counted_with_their_overhead() {
        let cache = SmallBlobs::default();
        let key = |i: usize| format!("{i:064}");
        let x = Bytes::from_static(b"x");
        let per_entry = cost(&key(0), &cached(&key(0), &x));
        let fits = CAPACITY_BYTES / per_entry;
        for i in 0..fits + 1000 {
            cache.insert(&meta(&key(i), 1), x.clone());
        }
        let inner = cache.inner.lock().unwrap();
        assert!(inner.blobs.len() <= fits, "{} entries", inner.blobs.len());
        assert!(inner.bytes <= CAPACITY_BYTES);
    }

    #[tokio::test]
    async fn whole_reads_of_small_blobs_come_from_the_cache_until_deleted() {
        let store = SmallBlobCache::new(InMemory::new());
        let small = Path::from("user/small");
        let large = Path::from("user/large");
        store.put(&small, b"small".to_vec().into()).await.unwrap();
        let big = vec![2u8; MAX_CACHED_BODY as usize + 1];
        store.put(&large, big.clone().into()).await.unwrap();
        let first = store.get(&small).await.unwrap();
        assert_eq!(first.range, 0..5);
        assert_eq!(first.bytes().await.unwrap(), "small");
        assert!(store.cache.get("user/small").is_some());
        assert_eq!(store.get(&large).await.unwrap().bytes().await.unwrap(), big);
        assert!(store.cache.get("user/large").is_none(), "too large to keep");
        // Behind the cache's back, the blob is gone: whole reads still come from the cache.
        store.inner.delete(&small).await.unwrap();
        let again = store.get(&small).await.unwrap();
        assert_eq!(again.meta.size, 5);
        assert_eq!(again.bytes().await.unwrap(), "small");
        // Ranged reads go to the store.
        let ranged = GetOptions {
            range: Some(object_store::GetRange::Bounded(0..2)),
            ..GetOptions::default()
        };
        assert!(store.get_opts(&small, ranged).await.is_err());
        // A delete through the wrapper forgets it.
        store.put(&small, b"small".to_vec().into()).await.unwrap();
        store.delete(&small).await.unwrap();
        assert!(store.cache.get("user/small").is_none());
        assert!(matches!(
            store.get(&small).await,
            Err(object_store::Error::NotFound { .. })
        ));
    }
}

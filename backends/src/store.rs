//! The [`Store`]: the only thing handlers call for files (accounts, grants and operations it hands out
//! as traits). It combines the metadata database and the blob store so that every write is atomic: a write
//! is prepared before its body is read ([`Store::prepare`]: refusals, the current version, the room
//! left); then ([`Store::commit`]) the body streams into a blob under a fresh key while its BLAKE3 hash,
//! length and content type are computed; one metadata transaction then checks the write's
//! [`WriteMode`] and the quota again, writes the entry, appends the event and moves the user's used
//! bytes; only then is the replaced blob deleted. A failed, refused or interrupted upload leaves the
//! previous version in place, and the sweeper removes blobs that no entry references.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path as BlobPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::blob_holds::BlobHolds;
use crate::blobs::BlobStore;
use crate::content_type;
use crate::entry_cache::EntryCache;
use crate::event_bus::{self, EventBus, EventTail};
use crate::health::Health;
use crate::listing;
use crate::metadata::{
    Accounts, Current, DeleteOutcome, Deleted, Entry, Event, EventFilter, Files, Grants, Locks,
    Metadata, MetadataError, Micros, NewEntry, Operations, PutOutcome, Quota, User, Version,
    WriteMode, now_micros,
};
use crate::path::{DirPath, EntryPath, NormalizedPath};
use crate::small_blobs::MAX_CACHED_BODY;

/// Bodies up to this size go up in one request; larger ones as multipart uploads in parts of this size.
const PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts uploaded at once; with [`PART_BYTES`] this bounds the memory one upload holds.
const PARTS_IN_FLIGHT: usize = 2;
/// Blob keys examined per metadata query by the sweeper.
const SWEEP_BATCH: usize = 500;

/// A body error raised by the client's stream.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Why a Store operation failed. Each variant names the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The user does not exist.
    #[error("{path}: no such user")]
    NoSuchUser {
        /// The path written.
        path: String,
    },
    /// The write would exceed the user's storage quota; nothing was stored.
    #[error("{path}: storage quota exceeded")]
    QuotaExceeded {
        /// The path written.
        path: String,
    },
    /// The current file (or its absence) is not what the write's or delete's [`WriteMode`] expects;
    /// nothing changed.
    #[error("{path}: the current version is not the expected one")]
    PreconditionFailed {
        /// The path written.
        path: String,
    },
    /// The body is larger than the allowed maximum; nothing was stored.
    #[error("{path}: body larger than {limit} bytes")]
    TooLarge {
        /// The path written.
        path: String,
        /// The maximum.
        limit: u64,
    },
    /// The client's body stream failed (disconnect, timeout); nothing was stored.
    #[error("{path}: reading the body failed: {source}")]
    Body {
        /// The path written.
        path: String,
        /// The cause.
        source: BodyError,
    },
    /// An entry exists but its blob does not: the store was tampered with or lost data.
    #[error("{path}: the blob {key} behind this entry is missing")]
    BlobMissing {
        /// The path read.
        path: String,
        /// The missing blob.
        key: String,
    },
    /// The blob store failed.
    #[error("{path}: blob store: {source}")]
    Blob {
        /// The path concerned.
        path: String,
        /// The cause.
        source: Box<object_store::Error>,
    },
    /// The path is too long for the database's index (PostgreSQL indexes at most about 2,700 bytes of a
    /// path that does not compress); nothing was stored.
    #[error("{path}: too long for the database's index")]
    PathTooLong {
        /// The path written.
        path: String,
    },
    /// The metadata database failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// Shorthand for results of this module.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// A one-line reason for a failure of a dependency, fit for a client: it says which dependency
    /// failed and whether to retry, never a path, a blob key or a directory.
    pub fn public_reason(&self) -> &'static str {
        match self {
            Self::Metadata(MetadataError::Query { source, .. }) => match source {
                // A full pool or a database that refuses connections: the health watcher, on its own
                // connection, tells the two apart for the operator.
                sqlx::Error::PoolTimedOut => {
                    "Storage unavailable: no database connection in time, try again"
                }
                sqlx::Error::Database(db)
                    if matches!(
                        db.code().as_deref(),
                        Some(QUERY_CANCELED | SQLITE_INTERRUPT)
                    ) =>
                {
                    "Storage busy: the database query took too long"
                }
                _ => "Storage unavailable: the database failed",
            },
            Self::Metadata(_) => "Storage unavailable: the database failed",
            _ => "Storage unavailable: the blob store failed",
        }
    }
}

/// PostgreSQL's SQLSTATE for a statement cancelled by `statement_timeout`.
const QUERY_CANCELED: &str = "57014";
/// SQLite's result code for a statement interrupted by the read connections' busy guard.
pub(crate) const SQLITE_INTERRUPT: &str = "9";

/// Limits of one write beyond the user's quota.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteLimits {
    /// Refuse bodies longer than this.
    pub max_bytes: Option<u64>,
}

/// A committed write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The PUT event.
    pub event_id: u64,
    /// Length in bytes.
    pub content_length: u64,
    /// The new version (its ETag is the one reads show).
    pub version: Version,
}

/// Why a write is refused before its body is read (see [`Store::prepare`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The user is disabled: they may read and delete but not write.
    Disabled,
    /// The user's write allow-list does not include the path.
    NotAllowed,
}

/// A write checked before its body is read: whose file, which versions it may replace and the room
/// the body has. [`Store::commit`] carries it out.
#[derive(Debug, Clone)]
pub struct WritePlan {
    owner: String,
    path: EntryPath,
    mode: WriteMode,
    room: Option<u64>,
}

impl WritePlan {
    /// The most bytes the body may have within the user's quota; None when unlimited. The commit
    /// checks again, exactly, under the user's row lock.
    pub fn room(&self) -> Option<u64> {
        self.room
    }
}

/// A byte range of a read, as in an HTTP `Range: bytes=` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `start-end`, both inclusive.
    Bounded(u64, u64),
    /// `start-`.
    From(u64),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The inclusive `(first, last)` byte positions within a file of `length` bytes, or None when the
    /// range is unsatisfiable.
    pub fn resolve(self, length: u64) -> Option<(u64, u64)> {
        let (first, last) = match self {
            Self::Bounded(first, last) if first <= last => {
                (first, last.min(length.checked_sub(1)?))
            }
            Self::Bounded(..) => return None,
            Self::From(first) => (first, length.checked_sub(1)?),
            Self::Suffix(0) => return None,
            Self::Suffix(n) => (length.saturating_sub(n), length.checked_sub(1)?),
        };
        (first <= last).then_some((first, last))
    }
}

/// Conditions and range of a read.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// The `If-None-Match` header.
    pub if_none_match: Option<String>,
    /// The `If-Modified-Since` header, as Unix seconds.
    pub if_modified_since: Option<i64>,
    /// The requested range.
    pub range: Option<ByteRange>,
}

/// The bytes of a read, streamed from the blob store.
pub type Body = BoxStream<'static, Result<Bytes>>;

/// How a read ended.
pub enum Read {
    /// No such file (or user).
    NotFound,
    /// The client's copy is current.
    NotModified(Entry),
    /// The whole file.
    Full(Entry, Body),
    /// Bytes `first..=last` of the file.
    Partial {
        /// The file.
        entry: Entry,
        /// First byte sent.
        first: u64,
        /// Last byte sent.
        last: u64,
        /// The bytes.
        body: Body,
    },
    /// The range lies outside the file.
    Unsatisfiable(Entry),
}

impl Entry {
    /// The strong ETag: the quoted base64 of the BLAKE3 hash.
    pub fn etag(&self) -> String {
        self.version().etag()
    }

    /// Last modification, in Unix seconds.
    pub fn modified_secs(&self) -> i64 {
        self.modified_at.div_euclid(1_000_000)
    }

    /// Whether a conditional GET may answer 304 (PROTOCOL.md §8.7): `If-None-Match` names the current
    /// ETag exactly; or, without `If-None-Match`, `If-Modified-Since` is at or after the last write.
    pub fn not_modified(&self, options: &ReadOptions) -> bool {
        match (&options.if_none_match, options.if_modified_since) {
            (Some(tags), _) => {
                let etag = self.etag();
                tags.split(',').any(|tag| tag.trim() == etag)
            }
            (None, Some(since)) => since >= self.modified_secs(),
            (None, None) => false,
        }
    }
}

/// What a listing asks for (PROTOCOL.md §9).
#[derive(Debug, Clone)]
pub struct ListRequest {
    /// The directory.
    pub dir: DirPath,
    /// Exclusive start (a normalized path; it need not exist).
    pub cursor: Option<NormalizedPath>,
    /// At most this many entries.
    pub limit: u32,
    /// Descending order.
    pub reverse: bool,
    /// Direct children only, sub-directories once each with a trailing `/`.
    pub shallow: bool,
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Blobs older than the grace period that were checked.
    pub examined: usize,
    /// Unreferenced blobs deleted.
    pub deleted: usize,
    /// Staging files of interrupted filesystem uploads removed.
    pub staging: usize,
}

/// Metadata and blobs, kept consistent. Cheap to clone: one shared allocation.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Parts>,
}

#[derive(Debug)]
struct Parts {
    metadata: Arc<dyn Metadata>,
    /// The blob store (its object store for reads and writes, itself for sweeping staging files).
    blob_store: BlobStore,
    default_quota: Quota,
    /// The event tail: woken after every commit that appended an event; its subscribers' channel.
    events: EventTail,
    health: Arc<Health>,
    entries: EntryCache,
    /// Whether a backup or export holds replaced blobs (see [`crate::blob_holds`]).
    holds: BlobHolds,
}

impl Store {
    /// A store over a metadata database and a blob store, with the server's default quota, keeping
    /// files' metadata in memory for `entry_ttl` at most (see [`crate::entry_cache`]).
    pub fn new(
        metadata: Arc<dyn Metadata>,
        blobs: &BlobStore,
        default_quota: Quota,
        entry_ttl: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Parts {
                metadata,
                default_quota,
                events: EventTail::new(),
                health: Arc::default(),
                entries: EntryCache::with_ttl(entry_ttl),
                holds: BlobHolds::new(blobs.objects().clone()),
                blob_store: blobs.clone(),
            }),
        }
    }

    /// The object store behind the blob store.
    fn blobs(&self) -> &Arc<dyn ObjectStore> {
        self.inner.blob_store.objects()
    }

    /// The blob store (what it is, and the volume space of a filesystem one).
    pub fn blob_store(&self) -> &BlobStore {
        &self.inner.blob_store
    }

    /// Whether the database and the blob store answer, as last probed.
    pub fn health(&self) -> &Health {
        &self.inner.health
    }

    /// Starts following the event log from its newest event (see [`crate::event_bus`]): evicting
    /// cached metadata of paths written by other instances, and publishing every event to the
    /// [`EventBus`] subscribers. Run one per Store for as long as it serves.
    pub async fn start_event_tail(&self) -> Result<tokio::task::JoinHandle<()>> {
        let last = event_bus::newest(self).await?;
        Ok(tokio::spawn(event_bus::follow(self.clone(), last)))
    }

    /// A handle to subscribe to the events the tail reads.
    pub fn event_bus(&self) -> EventBus {
        self.inner.events.bus()
    }

    /// The event tail's state.
    pub(crate) fn event_tail(&self) -> &EventTail {
        &self.inner.events
    }

    /// Starts probing the database and the blob store (see [`crate::health`]).
    pub fn watch_health(&self) -> tokio::task::JoinHandle<()> {
        crate::health::watch(
            self.inner.health.clone(),
            self.inner.metadata.clone(),
            self.blobs().clone(),
        )
    }

    /// A write or delete of `owner`'s `path` committed: forgets its cached metadata and wakes this
    /// process's event tail (the write's transaction told other instances).
    fn committed(&self, owner: &str, path: &EntryPath) {
        self.forget_entry(owner, path.as_str());
        self.inner.events.wake();
    }

    /// Entries and the event log.
    pub(crate) fn files(&self) -> &(dyn Files + 'static) {
        self.inner.metadata.as_ref()
    }

    /// Users, sessions, signup tokens, used AuthToken ids and PKARR packets.
    pub fn accounts(&self) -> &dyn Accounts {
        self.inner.metadata.as_ref()
    }

    /// Stored grants, their bearer sessions and the PoP nonces already used.
    pub fn grants(&self) -> &dyn Grants {
        self.inner.metadata.as_ref()
    }

    /// WebDAV write locks on users' file paths, shared by every instance on this database.
    pub fn locks(&self) -> &dyn Locks {
        self.inner.metadata.as_ref()
    }

    /// The engine, totals, connection pools and shutdown of the metadata database.
    pub fn operations(&self) -> &dyn Operations {
        self.inner.metadata.as_ref()
    }

    /// Prepares `user`'s write of `path` in `mode` before its body is read: refuses a disabled user,
    /// then a path outside the user's write allow-list, then (as [`StoreError::PreconditionFailed`]) a
    /// current file that `mode` does not admit; otherwise computes the room left for the body within
    /// the user's quota. It reads the current version at most once: from the database when `mode` is
    /// conditional (a stale cached entry must not refuse a write the commit would admit), else through
    /// the entry cache and only when the quota depends on it. The commit checks `mode` again.
    pub async fn prepare(
        &self,
        user: &User,
        path: &EntryPath,
        mode: WriteMode,
    ) -> Result<std::result::Result<WritePlan, Refusal>> {
        if user.disabled {
            return Ok(Err(Refusal::Disabled));
        }
        if !user.limits.may_write(path.as_str()) {
            return Ok(Err(Refusal::NotAllowed));
        }
        let quota = user.quota.unwrap_or(self.inner.default_quota);
        let current = if mode != WriteMode::Overwrite {
            let current = self.inner.metadata.entry(&user.public_key, path).await?;
            if !mode.admits(current.as_ref().map(Current::from).as_ref()) {
                return Err(StoreError::PreconditionFailed {
                    path: path.to_string(),
                });
            }
            current
        } else if matches!(quota, Quota::Bytes(_)) {
            self.head(&user.public_key, path).await?
        } else {
            None
        };
        let room = match quota {
            Quota::Unlimited => None,
            Quota::Bytes(_) => quota_cap(quota, user.used_bytes, current.map(|e| e.content_length)),
        };
        Ok(Ok(WritePlan {
            owner: user.public_key.clone(),
            path: path.clone(),
            mode,
            room,
        }))
    }

    /// Carries out a plan: streams `body` into a fresh blob (stopping as soon as it exceeds the plan's
    /// room or `limits`), then commits it as the new version of the path if the current version is
    /// still one that the plan's mode may replace (checked again under the user's row lock). On any
    /// error nothing changes and the new blob is removed.
    pub async fn commit<S, E>(
        &self,
        plan: WritePlan,
        body: S,
        limits: WriteLimits,
    ) -> Result<Written>
    where
        S: futures_util::Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: Into<BodyError>,
    {
        let WritePlan {
            owner,
            path,
            mode,
            room,
        } = plan;
        let path_text = || path.to_string();
        let owner = owner.as_str();
        let key = BlobPath::from(format!("{owner}/{:032x}", rand::random::<u128>()));
        let blob = BlobWrite::new(self.blobs().clone(), key.clone());
        let streamed = blob.stream(body, &path, limits.max_bytes, room).await?;
        let entry = NewEntry {
            path: path.clone(),
            content_hash: streamed.hash,
            content_length: streamed.length,
            content_type: content_type::infer(&streamed.head, path.file_name()),
            blob_key: key.to_string(),
            now: now_micros(),
            mode,
        };
        let outcome = self
            .inner
            .metadata
            .commit_put(owner, &entry, self.inner.default_quota)
            .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(err) => {
                self.delete_blob_quietly(&key).await;
                if err.exceeds_a_limit() {
                    return Err(StoreError::PathTooLong { path: path_text() });
                }
                return Err(err.into());
            }
        };
        match outcome {
            PutOutcome::Committed {
                replaced_blob,
                event_id,
            } => {
                self.committed(owner, &path);
                if let Some(old) = replaced_blob {
                    self.release_replaced_blob(&BlobPath::from(old)).await;
                }
                Ok(Written {
                    event_id,
                    content_length: entry.content_length,
                    version: Version(entry.content_hash),
                })
            }
            PutOutcome::QuotaExceeded => {
                self.delete_blob_quietly(&key).await;
                Err(StoreError::QuotaExceeded { path: path_text() })
            }
            PutOutcome::PreconditionFailed => {
                self.delete_blob_quietly(&key).await;
                Err(StoreError::PreconditionFailed { path: path_text() })
            }
            PutOutcome::NoSuchUser => {
                self.delete_blob_quietly(&key).await;
                Err(StoreError::NoSuchUser { path: path_text() })
            }
        }
    }

    /// A file's metadata, without its bytes: from the entry cache, else from the database (then cached).
    pub async fn head(&self, owner: &str, path: &EntryPath) -> Result<Option<Entry>> {
        let cache = &self.inner.entries;
        if let Some(entry) = cache.get(owner, path.as_str()) {
            return Ok(Some(entry));
        }
        let generation = cache.generation();
        let entry = self.inner.metadata.entry(owner, path).await?;
        if let Some(entry) = &entry {
            cache.insert(owner, entry, generation);
        }
        Ok(entry)
    }

    /// Forgets the cached metadata of `owner`'s `path`: it was written or deleted, here or (told by the
    /// event tail) by another instance.
    pub(crate) fn forget_entry(&self, owner: &str, path: &str) {
        self.inner.entries.forget(owner, path);
    }

    /// Reads a file, honouring conditions and a byte range.
    pub async fn get(&self, owner: &str, path: &EntryPath, options: &ReadOptions) -> Result<Read> {
        match self.read(owner, path, options).await {
            // The entry named a blob that a newer write has replaced and deleted since it was read (or
            // cached): forget it and read again.
            Err(StoreError::BlobMissing { .. }) => {
                self.forget_entry(owner, path.as_str());
                self.read(owner, path, options).await
            }
            read => read,
        }
    }

    /// [`Store::get`] once.
    async fn read(&self, owner: &str, path: &EntryPath, options: &ReadOptions) -> Result<Read> {
        let Some(entry) = self.head(owner, path).await? else {
            return Ok(Read::NotFound);
        };
        if entry.not_modified(options) {
            return Ok(Read::NotModified(entry));
        }
        let range = match options.range {
            None => None,
            Some(range) => match range.resolve(entry.content_length) {
                Some(bounds) => Some(bounds),
                None => return Ok(Read::Unsatisfiable(entry)),
            },
        };
        if entry.content_length == 0 {
            return Ok(Read::Full(entry, futures_util::stream::empty().boxed()));
        }
        if entry.content_length <= MAX_CACHED_BODY {
            return self.get_small(entry, path, range).await;
        }
        let get = GetOptions {
            range: range.map(|(first, last)| GetRange::Bounded(first..last + 1)),
            ..GetOptions::default()
        };
        let key = BlobPath::from(entry.blob_key.as_str());
        let result = self
            .blobs()
            .get_opts(&key, get)
            .await
            .map_err(|e| blob_error(path, &entry.blob_key, e))?;
        let shown = path.to_string();
        let body = result
            .into_stream()
            .map_err(move |source| StoreError::Blob {
                path: shown.clone(),
                source: Box::new(source),
            })
            .boxed();
        Ok(match range {
            None => Read::Full(entry, body),
            Some((first, last)) => Read::Partial {
                entry,
                first,
                last,
                body,
            },
        })
    }

    /// A small file, read whole (the blob store's [`crate::small_blobs`] cache spares most reads).
    async fn get_small(
        &self,
        entry: Entry,
        path: &EntryPath,
        range: Option<(u64, u64)>,
    ) -> Result<Read> {
        let key = BlobPath::from(entry.blob_key.as_str());
        let read = self.blobs().get(&key).await;
        let read = read.map_err(|e| blob_error(path, &entry.blob_key, e))?;
        let body = read.bytes().await;
        let body = body.map_err(|e| blob_error(path, &entry.blob_key, e))?;
        // A blob of another length than its entry says is not served: it is missing or torn.
        if body.len() as u64 != entry.content_length {
            return Err(StoreError::BlobMissing {
                path: path.to_string(),
                key: entry.blob_key.clone(),
            });
        }
        let one = |bytes: Bytes| futures_util::stream::once(async move { Ok(bytes) }).boxed();
        Ok(match range {
            None => Read::Full(entry, one(body)),
            Some((first, last)) => Read::Partial {
                entry,
                first,
                last,
                body: one(body.slice(first as usize..=last as usize)),
            },
        })
    }

    /// Deletes a file; None when there was no such file.
    pub async fn delete(&self, owner: &str, path: &EntryPath) -> Result<Option<u64>> {
        self.delete_if(owner, path, &WriteMode::Overwrite).await
    }

    /// Deletes a file if `mode` admits it, checked under the user's row lock; None when there was no
    /// such file (and `mode` admits that), [`StoreError::PreconditionFailed`] when `mode` refuses.
    pub async fn delete_if(
        &self,
        owner: &str,
        path: &EntryPath,
        mode: &WriteMode,
    ) -> Result<Option<u64>> {
        let outcome = self
            .inner
            .metadata
            .commit_delete(owner, path, mode, now_micros());
        let Deleted { blob_key, event_id } = match outcome.await? {
            DeleteOutcome::Deleted(deleted) => deleted,
            DeleteOutcome::NotFound => return Ok(None),
            DeleteOutcome::PreconditionFailed => {
                return Err(StoreError::PreconditionFailed {
                    path: path.to_string(),
                });
            }
        };
        self.committed(owner, path);
        self.release_replaced_blob(&BlobPath::from(blob_key)).await;
        Ok(Some(event_id))
    }

    /// Lists a directory as normalized paths; None when no file lies under it.
    pub async fn list(&self, owner: &str, request: &ListRequest) -> Result<Option<Vec<String>>> {
        Ok(listing::list(self.files(), owner, request).await?)
    }

    /// A page of the event log after `cursor` (see [`EventFilter`]).
    pub async fn events(
        &self,
        cursor: u64,
        limit: u32,
        filter: &EventFilter,
    ) -> Result<Vec<Event>> {
        Ok(self.inner.metadata.events(cursor, limit, filter).await?)
    }

    /// The id of the event committed at exactly `created_at` (legacy timestamp cursors).
    pub async fn event_id_at(&self, created_at: Micros) -> Result<Option<u64>> {
        Ok(self.inner.metadata.event_id_at(created_at).await?)
    }

    /// The server's default storage quota.
    pub fn default_quota(&self) -> Quota {
        self.inner.default_quota
    }

    /// Deletes blobs older than `grace` that no entry references: leftovers of crashed or refused
    /// uploads, and replaced blobs whose deletion failed; and first the staging files that crashed
    /// filesystem uploads left (a failure there is logged, and the blobs are swept still). The grace
    /// period protects uploads that have written their blob but not yet committed.
    pub async fn sweep(&self, grace: Duration) -> Result<SweepReport> {
        let blob_error = |source| StoreError::Blob {
            path: "(sweep)".into(),
            source: Box::new(source),
        };
        let mut report = SweepReport::default();
        match self.inner.blob_store.sweep_staging(grace).await {
            Ok(removed) => report.staging = removed,
            Err(err) => tracing::warn!(%err, "sweeping staging files failed"),
        }
        let cutoff = cutoff_micros(grace);
        let mut listing = self.blobs().list(None);
        let mut batch = Vec::with_capacity(SWEEP_BATCH);
        loop {
            let next = listing.next().await.transpose().map_err(blob_error)?;
            if let Some(meta) = &next
                && meta.last_modified.timestamp_micros() <= cutoff
                && !meta
                    .location
                    .as_ref()
                    .starts_with(crate::blobs::PROBE_PREFIX)
                && !crate::blob_holds::is_hold_marker(meta.location.as_ref())
            {
                batch.push(meta.location.to_string());
            }
            if batch.len() >= SWEEP_BATCH || (next.is_none() && !batch.is_empty()) {
                // A backup may still need blobs that are unreferenced by now: sweep another time.
                if self.inner.holds.active().await {
                    return Ok(report);
                }
                report.examined += batch.len();
                let unreferenced = self.inner.metadata.unreferenced_blobs(&batch).await?;
                // A slow query may have outlasted the hold's settling time: look again.
                if self.inner.holds.active().await {
                    return Ok(report);
                }
                for key in unreferenced {
                    match self.blobs().delete(&BlobPath::from(key.as_str())).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => report.deleted += 1,
                        Err(err) => {
                            tracing::warn!(%key, %err, "sweep: cannot delete an orphaned blob")
                        }
                    }
                }
                batch.clear();
            }
            if next.is_none() {
                return Ok(report);
            }
        }
    }

    /// Deletes a blob that a committed write or delete replaced, unless a backup holds blobs: then the
    /// sweeper removes it once the hold is gone.
    async fn release_replaced_blob(&self, key: &BlobPath) {
        if !self.inner.holds.active().await {
            self.delete_blob_quietly(key).await;
        }
    }

    async fn delete_blob_quietly(&self, key: &BlobPath) {
        match self.blobs().delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            // Not fatal: the sweeper removes it later.
            Err(err) => tracing::warn!(%key, %err, "cannot delete an unreferenced blob"),
        }
    }
}

/// Maps a failed blob read of `path`: a missing blob is named as such, anything else is a store failure.
fn blob_error(path: &EntryPath, key: &str, source: object_store::Error) -> StoreError {
    match source {
        object_store::Error::NotFound { .. } => StoreError::BlobMissing {
            path: path.to_string(),
            key: key.to_string(),
        },
        source => StoreError::Blob {
            path: path.to_string(),
            source: Box::new(source),
        },
    }
}

fn cutoff_micros(grace: Duration) -> Micros {
    now_micros() - i64::try_from(grace.as_micros()).unwrap_or(i64::MAX)
}

/// The largest body that can still fit the quota, given the version it replaces.
fn quota_cap(quota: Quota, used: i64, old_length: Option<u64>) -> Option<u64> {
    match quota {
        Quota::Unlimited => None,
        Quota::Bytes(limit) => {
            let free = limit as i64 - used;
            let cap = match old_length {
                // An overwrite no larger than the old version only frees space.
                Some(old) => (free + old as i64).max(old as i64),
                None => free - crate::metadata::FILE_OVERHEAD_BYTES,
            };
            Some(cap.max(0) as u64)
        }
    }
}

/// One blob being written: a single PUT while the body fits one part, a multipart upload beyond.
struct BlobWrite {
    blobs: Arc<dyn ObjectStore>,
    key: BlobPath,
}

/// What streaming a body produced.
struct Streamed {
    hash: [u8; 32],
    length: u64,
    head: Vec<u8>,
}

impl BlobWrite {
    fn new(blobs: Arc<dyn ObjectStore>, key: BlobPath) -> Self {
        Self { blobs, key }
    }

    async fn stream<S, E>(
        &self,
        mut body: S,
        path: &EntryPath,
        max_bytes: Option<u64>,
        quota_cap: Option<u64>,
    ) -> Result<Streamed>
    where
        S: futures_util::Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: Into<BodyError>,
    {
        let blob_error = |source| StoreError::Blob {
            path: path.to_string(),
            source: Box::new(source),
        };
        let mut hasher = blake3::Hasher::new();
        let mut length: u64 = 0;
        let mut head = Vec::new();
        let mut buffer: Vec<Bytes> = Vec::new();
        let mut buffered = 0usize;
        let mut upload: Option<WriteMultipart> = None;
        let failure = loop {
            let chunk = match body.next().await {
                None => break None,
                Some(Err(err)) => {
                    break Some(StoreError::Body {
                        path: path.to_string(),
                        source: err.into(),
                    });
                }
                Some(Ok(chunk)) => chunk,
            };
            length += chunk.len() as u64;
            if let Some(limit) = max_bytes.filter(|limit| length > *limit) {
                break Some(StoreError::TooLarge {
                    path: path.to_string(),
                    limit,
                });
            }
            if quota_cap.is_some_and(|cap| length > cap) {
                break Some(StoreError::QuotaExceeded {
                    path: path.to_string(),
                });
            }
            hasher.update(&chunk);
            if head.len() < content_type::SNIFF_BYTES {
                let take = (content_type::SNIFF_BYTES - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            match &mut upload {
                Some(writer) => {
                    if let Err(err) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                        break Some(blob_error(err));
                    }
                    writer.put(chunk);
                }
                None => {
                    buffered += chunk.len();
                    buffer.push(chunk);
                    if buffered > PART_BYTES {
                        match self.blobs.put_multipart(&self.key).await {
                            Ok(multipart) => {
                                let mut writer =
                                    WriteMultipart::new_with_chunk_size(multipart, PART_BYTES);
                                for part in buffer.drain(..) {
                                    writer.put(part);
                                }
                                upload = Some(writer);
                            }
                            Err(err) => break Some(blob_error(err)),
                        }
                    }
                }
            }
        };
        if let Some(err) = failure {
            if let Some(writer) = upload {
                let _ = writer.abort().await;
            }
            return Err(err);
        }
        match upload {
            Some(writer) => {
                writer.finish().await.map_err(blob_error)?;
            }
            None => {
                let payload = PutPayload::from_iter(buffer);
                self.blobs
                    .put(&self.key, payload)
                    .await
                    .map_err(blob_error)?;
            }
        }
        Ok(Streamed {
            hash: *hasher.finalize().as_bytes(),
            length,
            head,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_like_http() {
        assert_eq!(ByteRange::Bounded(0, 4).resolve(10), Some((0, 4)));
        assert_eq!(ByteRange::Bounded(5, 100).resolve(10), Some((5, 9)));
        assert_eq!(ByteRange::Bounded(10, 12).resolve(10), None);
        assert_eq!(ByteRange::Bounded(4, 2).resolve(10), None);
        assert_eq!(ByteRange::From(7).resolve(10), Some((7, 9)));
        assert_eq!(ByteRange::From(10).resolve(10), None);
        assert_eq!(ByteRange::Suffix(3).resolve(10), Some((7, 9)));
        assert_eq!(ByteRange::Suffix(30).resolve(10), Some((0, 9)));
        assert_eq!(ByteRange::Suffix(0).resolve(10), None);
        assert_eq!(ByteRange::From(0).resolve(0), None);
    }

    #[test]
    fn quota_cap_counts_the_overhead_of_new_files_only() {
        assert_eq!(quota_cap(Quota::Unlimited, 5, None), None);
        assert_eq!(quota_cap(Quota::Bytes(1_048_576), 0, None), Some(1_048_320));
        assert_eq!(quota_cap(Quota::Bytes(1000), 856, Some(600)), Some(744));
        assert_eq!(quota_cap(Quota::Bytes(100), 500, None), Some(0));
        assert_eq!(quota_cap(Quota::Bytes(100), 500, Some(400)), Some(400));
    }

    fn entry(hash: u8, modified_at: Micros) -> Entry {
        Entry {
            path: EntryPath::parse("/pub/a").unwrap(),
            content_hash: [hash; 32],
            content_length: 1,
            content_type: "text/plain".into(),
            blob_key: "k".into(),
            created_at: modified_at,
            modified_at,
        }
    }

    #[test]
    fn conditional_reads_follow_the_reference() {
        let e = entry(0, 1_700_000_000_500_000);
        let etag = e.etag();
        assert_eq!(etag.len(), 46);
        let with = |inm: Option<&str>, ims: Option<i64>| ReadOptions {
            if_none_match: inm.map(str::to_string),
            if_modified_since: ims,
            range: None,
        };
        assert!(e.not_modified(&with(Some(&format!("\"x\", {etag}")), None)));
        assert!(!e.not_modified(&with(Some("*"), None)));
        assert!(!e.not_modified(&with(Some(&format!("W/{etag}")), None)));
        assert!(e.not_modified(&with(None, Some(1_700_000_000))));
        assert!(!e.not_modified(&with(None, Some(1_699_999_999))));
        // If-None-Match present and not matching: If-Modified-Since is ignored.
        assert!(!e.not_modified(&with(Some("\"other\""), Some(1_800_000_000))));
    }

    #[test]
    fn etag_matches_the_spec_vectors() {
        let hash = |bytes: &[u8]| Entry {
            content_hash: *blake3::hash(bytes).as_bytes(),
            ..entry(0, 0)
        };
        assert_eq!(
            hash(b"").etag(),
            "\"rxNJufX5oaagQE3qNtzJSZvLJcmtwRK3zJqTyuQfMmI=\""
        );
        assert_eq!(
            hash(b"hello").etag(),
            "\"6o8WPbOGgpJeRJHF5Y1Ls1Bu+MFOt4qG6QjFYkpnIA8=\""
        );
    }
}

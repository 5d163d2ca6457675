//! The files side of the metadata database, which the [`Store`](crate::Store) owns: entries, their
//! commits (a write or a delete with its event, in one transaction), path scans for listings and the
//! event log.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{Micros, Quota, Result};
use crate::path::EntryPath;

/// Bytes every stored file counts beyond its length (OPERATIONS.md §8.1).
pub const FILE_OVERHEAD_BYTES: i64 = 256;

/// A stored file's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its path.
    pub path: EntryPath,
    /// BLAKE3 of the content.
    pub content_hash: [u8; 32],
    /// Length in bytes.
    pub content_length: u64,
    /// Inferred content type.
    pub content_type: String,
    /// Key of the blob that holds the bytes.
    pub blob_key: String,
    /// First write.
    pub created_at: Micros,
    /// Last write.
    pub modified_at: Micros,
}

impl Entry {
    /// This version of the file, for a [`WriteMode`].
    pub fn version(&self) -> Version {
        Version(self.content_hash)
    }
}

/// One version of a file: the BLAKE3 hash of its content, which its strong ETag shows (two writes of
/// the same bytes are the same version, as HTTP's entity tags see it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version(pub [u8; 32]);

impl Version {
    /// The version an entity tag's opaque part (between the quotes) names, or None when it names none
    /// this server hands out: such a tag matches no file.
    pub fn from_opaque_tag(opaque: &[u8]) -> Option<Self> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(opaque)
            .ok()?;
        bytes.try_into().ok().map(Self)
    }

    /// The strong ETag: the quoted base64 of the hash.
    pub fn etag(&self) -> String {
        use base64::Engine;
        format!(
            "\"{}\"",
            base64::engine::general_purpose::STANDARD.encode(self.0)
        )
    }
}

/// Which current file a write or a delete may replace (after `object_store`'s `PutMode`, extended to
/// the preconditions of RFC 9110 §13.1). Checked before the body is read and again, decisively, under
/// the user's row lock in the commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WriteMode {
    /// Whatever is there (a plain PUT).
    #[default]
    Overwrite,
    /// Nothing: the file must not exist (`If-None-Match: *`).
    Create,
    /// Any current file, but one must exist (`If-Match: *`).
    Replace,
    /// A current file that is one of these versions (`If-Match` with a list of strong tags; an empty
    /// list admits nothing).
    Update(Vec<Version>),
    /// No file, or a current file that is none of these versions (`If-None-Match` with a list).
    Except(Vec<Version>),
    /// No file, or a current file last modified at or before this Unix second
    /// (`If-Unmodified-Since`).
    UnmodifiedSince(i64),
    /// All of these.
    All(Vec<WriteMode>),
}

/// What a [`WriteMode`] is checked against: the current file's version and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Current {
    /// Its version.
    pub(crate) version: Version,
    /// Its last write.
    pub(crate) modified_at: Micros,
}

impl From<&Entry> for Current {
    fn from(entry: &Entry) -> Self {
        Self {
            version: entry.version(),
            modified_at: entry.modified_at,
        }
    }
}

impl WriteMode {
    /// Whether the current file (None: no file) may be replaced or deleted.
    pub(crate) fn admits(&self, current: Option<&Current>) -> bool {
        match self {
            Self::Overwrite => true,
            Self::Create => current.is_none(),
            Self::Replace => current.is_some(),
            Self::Update(versions) => current.is_some_and(|c| versions.contains(&c.version)),
            Self::Except(versions) => current.is_none_or(|c| !versions.contains(&c.version)),
            Self::UnmodifiedSince(secs) => {
                current.is_none_or(|c| c.modified_at.div_euclid(1_000_000) <= *secs)
            }
            Self::All(modes) => modes.iter().all(|mode| mode.admits(current)),
        }
    }
}

/// What a write commits, once its blob is complete.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Where.
    pub path: EntryPath,
    /// BLAKE3 of the content.
    pub content_hash: [u8; 32],
    /// Length in bytes.
    pub content_length: u64,
    /// Inferred content type.
    pub content_type: String,
    /// The freshly written blob.
    pub blob_key: String,
    /// Commit time.
    pub now: Micros,
    /// Which current version it may replace.
    pub mode: WriteMode,
}

/// How a write's commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// Committed; the blob of the version it replaced, if any, is no longer referenced.
    Committed {
        /// The replaced version's blob.
        replaced_blob: Option<String>,
        /// The PUT event appended.
        event_id: u64,
    },
    /// The user's quota would be exceeded: nothing changed.
    QuotaExceeded,
    /// The current version is not the one the [`WriteMode`] expects: nothing changed.
    PreconditionFailed,
    /// No such user: nothing changed.
    NoSuchUser,
}

/// How a delete's commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Removed.
    Deleted(Deleted),
    /// No such file (or no such user), and the [`WriteMode`] admits that: nothing changed.
    NotFound,
    /// The current file (or its absence) is not what the [`WriteMode`] expects: nothing changed.
    PreconditionFailed,
}

/// What a delete's commit removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// The blob that is no longer referenced.
    pub blob_key: String,
    /// The DEL event appended.
    pub event_id: u64,
}

/// A range of paths under a directory, in one direction, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathScan {
    /// Only paths `>= from`.
    pub from: String,
    /// Only paths `< until`.
    pub until: String,
    /// Descending order.
    pub reverse: bool,
    /// At most this many paths.
    pub limit: u32,
}

/// `PUT` or `DEL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOp {
    /// A file was written.
    Put,
    /// A file was deleted.
    Del,
}

impl EventOp {
    /// The wire and column form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Put => "PUT",
            Self::Del => "DEL",
        }
    }
}

/// An event of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the log, increasing in commit order.
    pub id: u64,
    /// What happened.
    pub op: EventOp,
    /// The user's z32 key.
    pub user: String,
    /// The file's path.
    pub path: String,
    /// BLAKE3 of the new content, for PUT.
    pub content_hash: Option<[u8; 32]>,
    /// Commit time.
    pub created_at: Micros,
}

/// Which events a page holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only these users, each after (before, when `reverse`) its own cursor; `None` = everyone after the
    /// page's cursor.
    pub users: Option<Vec<(String, u64)>>,
    /// Only these paths: one ending in `/` is a directory (every path below it), another a file (that
    /// path alone); empty = every path.
    pub paths: Vec<String>,
    /// Newest first.
    pub reverse: bool,
}

/// Entries and the event log. Handlers never see it: the Store is its only caller.
#[async_trait]
pub trait Files: Send + Sync + Debug {
    /// A file's metadata.
    async fn entry(&self, public_key: &str, path: &EntryPath) -> Result<Option<Entry>>;
    /// In one transaction (shared with concurrent writes): checks the mode and the quota under the
    /// user's row lock, writes the entry, moves the used bytes and appends the PUT event.
    async fn commit_put(
        &self,
        public_key: &str,
        entry: &NewEntry,
        default_quota: Quota,
    ) -> Result<PutOutcome>;
    /// In one transaction: checks the mode under the user's row lock, removes the entry, credits the
    /// used bytes and appends the DEL event.
    async fn commit_delete(
        &self,
        public_key: &str,
        path: &EntryPath,
        mode: &WriteMode,
        now: Micros,
    ) -> Result<DeleteOutcome>;
    /// Paths of a user's files within a range, ordered bytewise.
    async fn scan_paths(&self, public_key: &str, scan: &PathScan) -> Result<Vec<String>>;
    /// Which of these blob keys no entry references.
    async fn unreferenced_blobs(&self, keys: &[String]) -> Result<Vec<String>>;

    /// A page of the event log after (before, when reversed) `cursor`.
    async fn events(&self, cursor: u64, limit: u32, filter: &EventFilter) -> Result<Vec<Event>>;
    /// The id of the event committed at exactly this time (legacy timestamp cursors).
    async fn event_id_at(&self, created_at: Micros) -> Result<Option<u64>>;
    /// Wakes when another instance may have committed events (PostgreSQL `LISTEN events`); None when
    /// only this process writes the database.
    fn event_hints(&self) -> Option<Arc<Notify>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current(hash: u8, modified_secs: i64) -> Current {
        Current {
            version: Version([hash; 32]),
            modified_at: modified_secs * 1_000_000 + 999_999,
        }
    }

    #[test]
    fn write_modes_admit_the_files_they_name() {
        let (a, b) = (current(1, 100), current(2, 100));
        let (some_a, some_b) = (Some(&a), Some(&b));
        assert!(WriteMode::Overwrite.admits(None));
        assert!(WriteMode::Overwrite.admits(some_a));
        assert!(WriteMode::Create.admits(None));
        assert!(!WriteMode::Create.admits(some_a));
        assert!(!WriteMode::Replace.admits(None));
        assert!(WriteMode::Replace.admits(some_a));
        let update = WriteMode::Update(vec![Version([9; 32]), a.version]);
        assert!(update.admits(some_a));
        assert!(!update.admits(some_b));
        assert!(!update.admits(None));
        assert!(!WriteMode::Update(Vec::new()).admits(some_a));
        let except = WriteMode::Except(vec![a.version]);
        assert!(!except.admits(some_a));
        assert!(except.admits(some_b));
        assert!(except.admits(None));
        // Whole seconds, as HTTP dates have them.
        assert!(WriteMode::UnmodifiedSince(100).admits(some_a));
        assert!(!WriteMode::UnmodifiedSince(99).admits(some_a));
        assert!(WriteMode::UnmodifiedSince(0).admits(None));
        let all = WriteMode::All(vec![WriteMode::Replace, WriteMode::Except(vec![a.version])]);
        assert!(all.admits(some_b));
        assert!(!all.admits(some_a));
        assert!(!all.admits(None));
    }

    #[test]
    fn versions_round_trip_through_their_etags() {
        let version = Version(*blake3::hash(b"hello").as_bytes());
        let etag = version.etag();
        assert_eq!(etag, "\"6o8WPbOGgpJeRJHF5Y1Ls1Bu+MFOt4qG6QjFYkpnIA8=\"");
        let opaque = etag.trim_matches('"').as_bytes();
        assert_eq!(Version::from_opaque_tag(opaque), Some(version));
        assert_eq!(Version::from_opaque_tag(b"aGVsbG8="), None);
        assert_eq!(Version::from_opaque_tag(b"not base64!"), None);
    }
}

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
    /// This version of the file, for a [`WriteMode::Update`].
    pub fn version(&self) -> Version {
        Version(self.blob_key.clone())
    }
}

/// One version of a file: the key of its blob, fresh for every write (so two writes of the same bytes
/// are two versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub(crate) String);

/// Which current version a write may replace (after `object_store`'s `PutMode`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WriteMode {
    /// Whatever is there (a plain PUT).
    #[default]
    Overwrite,
    /// Nothing: the file must not exist.
    Create,
    /// Exactly this version.
    Update(Version),
}

impl WriteMode {
    /// Whether a file whose current version has the blob `current` (None: no file) may be replaced.
    pub(crate) fn admits(&self, current: Option<&str>) -> bool {
        match self {
            Self::Overwrite => true,
            Self::Create => current.is_none(),
            Self::Update(Version(expected)) => current == Some(expected.as_str()),
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
    /// Only paths starting with one of these strings; empty = every path.
    pub path_prefixes: Vec<String>,
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
    /// In one transaction: removes the entry, credits the used bytes and appends the DEL event; None when
    /// there was no such file.
    async fn commit_delete(
        &self,
        public_key: &str,
        path: &EntryPath,
        now: Micros,
    ) -> Result<Option<Deleted>>;
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

    #[test]
    fn write_modes_admit_the_versions_they_name() {
        assert!(WriteMode::Overwrite.admits(None));
        assert!(WriteMode::Overwrite.admits(Some("a")));
        assert!(WriteMode::Create.admits(None));
        assert!(!WriteMode::Create.admits(Some("a")));
        let update = WriteMode::Update(Version("a".into()));
        assert!(update.admits(Some("a")));
        assert!(!update.admits(Some("b")));
        assert!(!update.admits(None));
    }
}

//! The metadata database: users, sessions, signup tokens, entries and the event log, behind the
//! [`Metadata`] trait with a PostgreSQL and a SQLite implementation. Both run the same SQL (written once,
//! in [`sql`]) except for the few statements where the engines differ: row locking, the event-order lock
//! and how a write transaction starts.

mod postgres;
mod sql;
mod sqlite;

use std::fmt::Debug;

use async_trait::async_trait;
use homestead_config::{DatabaseKind, DatabaseUrl, redact_url};

pub use postgres::PostgresMetadata;
pub use sqlite::SqliteMetadata;

use crate::path::EntryPath;

/// Microseconds since the Unix epoch.
pub type Micros = i64;

/// Bytes every stored file counts beyond its length (OPERATIONS.md §8.1).
pub const FILE_OVERHEAD_BYTES: i64 = 256;

/// Why a metadata operation failed. Every variant names the operation.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// Connecting failed (bad URL, server down, database missing, file not writable).
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL, password hidden.
        url: String,
        /// The cause.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("cannot migrate {url}: {source}")]
    Migrate {
        /// The URL, password hidden.
        url: String,
        /// The cause.
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("metadata database: {operation}: {source}")]
    Query {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        source: sqlx::Error,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = MetadataError> = std::result::Result<T, E>;

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// z32 public key.
    pub public_key: String,
    /// Disabled users may read and delete but not write.
    pub disabled: bool,
    /// Sum of (length + 256) over the user's files.
    pub used_bytes: i64,
    /// The user's own quota, overriding the server default.
    pub quota: Option<Quota>,
    /// Sign-up time.
    pub created_at: Micros,
    /// The user's own rates, bursts and write allow-list.
    pub limits: UserLimits,
}

/// Per-user settings beyond the storage quota (OPERATIONS.md §5.4), kept as JSON. A rate is
/// `"unlimited"` or a bandwidth such as `"10mb/s"`; absent means the server default.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserLimits {
    /// Download speed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_read: Option<String>,
    /// Upload speed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_write: Option<String>,
    /// Download burst, in the rate's unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_read_burst: Option<u32>,
    /// Upload burst, in the rate's unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_write_burst: Option<u32>,
    /// Paths the user may write: entries ending in `/` are prefixes; absent = anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_write_paths: Option<Vec<String>>,
}

impl UserLimits {
    /// The column value: None when everything is default.
    pub fn to_column(&self) -> Option<String> {
        (self != &Self::default()).then(|| serde_json::to_string(self).unwrap_or_default())
    }

    /// Reads the column; an unreadable value counts as all-default (and is logged).
    pub fn from_column(column: Option<String>) -> Self {
        column
            .and_then(|text| {
                serde_json::from_str(&text)
                    .map_err(|err| tracing::error!(%err, "unreadable user limits"))
                    .ok()
            })
            .unwrap_or_default()
    }

    /// Whether the allow-list lets the user write `path`.
    pub fn may_write(&self, path: &str) -> bool {
        self.allowed_write_paths.as_ref().is_none_or(|allowed| {
            allowed.iter().any(|entry| {
                if entry.ends_with('/') {
                    path.starts_with(entry.as_str())
                } else {
                    path == entry
                }
            })
        })
    }
}

/// A storage quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// No limit.
    Unlimited,
    /// At most this many bytes (counting 256 per file).
    Bytes(u64),
}

impl Quota {
    fn to_column(self) -> i64 {
        match self {
            Self::Unlimited => -1,
            Self::Bytes(n) => i64::try_from(n).unwrap_or(i64::MAX),
        }
    }

    fn from_column(value: Option<i64>) -> Option<Self> {
        value.map(|v| match u64::try_from(v) {
            Ok(n) => Self::Bytes(n),
            Err(_) => Self::Unlimited,
        })
    }

    /// Whether a change of `delta` bytes on top of `used` stays within this quota (reaching it exactly
    /// is allowed; shrinking is always allowed).
    pub fn allows(self, used: i64, delta: i64) -> bool {
        match self {
            Self::Unlimited => true,
            Self::Bytes(limit) => {
                let after = used.saturating_add(delta);
                delta <= 0 || after <= 0 || (after as u64) <= limit
            }
        }
    }
}

/// How a sign-up ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupOutcome {
    /// The user was created (and the token, if any, consumed).
    Created,
    /// A user with that key exists.
    UserExists,
    /// No such signup token.
    TokenUnknown,
    /// The token was already redeemed.
    TokenUsed,
}

/// A signup token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignupTokenRecord {
    /// The token text.
    pub token: String,
    /// Creation time.
    pub created_at: Micros,
    /// Who redeemed it.
    pub used_by: Option<String>,
}

/// A session as stored (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The capabilities string.
    pub capabilities: String,
    /// Creation time.
    pub created_at: Micros,
    /// The session's user, read with it.
    pub user: User,
}

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
}

/// A write waiting for the group commit: concurrent writes share one transaction, so that one flush of
/// the database's log (and one turn of the event-order lock) serves them all.
#[derive(Debug)]
pub(crate) struct PendingPut {
    pub(crate) public_key: String,
    pub(crate) entry: NewEntry,
    pub(crate) default_quota: Quota,
    pub(crate) reply: tokio::sync::oneshot::Sender<Result<PutOutcome>>,
}

/// Most writes committed in one transaction.
pub(crate) const MAX_BATCH: usize = 64;

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

/// Totals over the whole server, for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Registered users.
    pub users: u64,
    /// Disabled users.
    pub disabled_users: u64,
    /// Sum of the users' used bytes.
    pub used_bytes: u64,
    /// Signup tokens ever minted.
    pub signup_tokens: u64,
    /// Signup tokens not yet redeemed.
    pub unused_signup_tokens: u64,
}

/// The metadata database. Handlers never see it: the Store is its only caller.
#[async_trait]
pub trait Metadata: Send + Sync + Debug {
    /// Which engine.
    fn kind(&self) -> DatabaseKind;

    /// Creates a user; with a token, consumes it in the same transaction (so a token is single-use even
    /// under a race).
    async fn create_user(
        &self,
        public_key: &str,
        token: Option<&str>,
        now: Micros,
    ) -> Result<SignupOutcome>;
    /// A user by key.
    async fn user(&self, public_key: &str) -> Result<Option<User>>;
    /// Disables or enables a user; false when there is no such user.
    async fn set_disabled(&self, public_key: &str, disabled: bool) -> Result<bool>;
    /// Sets or clears (None = server default) a user's quota; false when there is no such user.
    async fn set_quota(&self, public_key: &str, quota: Option<Quota>) -> Result<bool>;
    /// Sets a user's storage quota and other limits together; false when there is no such user.
    async fn set_limits(
        &self,
        public_key: &str,
        quota: Option<Quota>,
        limits: &UserLimits,
    ) -> Result<bool>;

    /// Stores a new signup token, with the quota and limits its user will get.
    async fn create_signup_token(
        &self,
        token: &str,
        now: Micros,
        quota: Option<Quota>,
        limits: &UserLimits,
    ) -> Result<()>;
    /// A signup token by text.
    async fn signup_token(&self, token: &str) -> Result<Option<SignupTokenRecord>>;

    /// Stores a session under the hash of its secret; false when there is no such user.
    async fn create_session(
        &self,
        secret_hash: &[u8; 32],
        public_key: &str,
        capabilities: &str,
        now: Micros,
    ) -> Result<bool>;
    /// A session by the hash of its secret.
    async fn session(&self, secret_hash: &[u8; 32]) -> Result<Option<SessionRecord>>;
    /// Deletes a session; false when there was none.
    async fn delete_session(&self, secret_hash: &[u8; 32]) -> Result<bool>;

    /// Records an AuthToken id as used until `expires_at`, purging expired ids; false if it was used
    /// already (a replay).
    async fn use_auth_token(
        &self,
        token_id: &[u8],
        expires_at: Micros,
        now: Micros,
    ) -> Result<bool>;

    /// A file's metadata.
    async fn entry(&self, public_key: &str, path: &EntryPath) -> Result<Option<Entry>>;
    /// In one transaction: checks the quota, writes the entry, moves the used bytes and appends the PUT event.
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

    /// A page of the event log after (before, when reversed) `cursor`.
    async fn events(&self, cursor: u64, limit: u32, filter: &EventFilter) -> Result<Vec<Event>>;
    /// The id of the event committed at exactly this time (legacy timestamp cursors).
    async fn event_id_at(&self, created_at: Micros) -> Result<Option<u64>>;

    /// Every enabled user with the PKARR packet last stored for them (for the user keys republisher).
    async fn active_users_with_packets(&self) -> Result<Vec<(String, Option<Vec<u8>>)>>;
    /// Stores a user's latest signed PKARR packet.
    async fn store_pkarr_packet(&self, public_key: &str, packet: &[u8]) -> Result<()>;
    /// Users ordered by key, after `after`, at most `limit`.
    async fn list_users(&self, after: Option<&str>, limit: u32) -> Result<Vec<User>>;
    /// Signup tokens ordered by text, after `after`, at most `limit`.
    async fn list_signup_tokens(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SignupTokenRecord>>;
    /// Counts for the admin info.
    async fn counts(&self) -> Result<Counts>;

    /// Connections of each connection pool: (pool name, open, idle).
    fn pool_stats(&self) -> Vec<(&'static str, u32, u32)>;

    /// Wakes when another instance may have committed events (PostgreSQL `LISTEN events`); None when
    /// only this process writes the database.
    fn event_hints(&self) -> Option<std::sync::Arc<tokio::sync::Notify>>;

    /// Which of these blob keys no entry references.
    async fn unreferenced_blobs(&self, keys: &[String]) -> Result<Vec<String>>;

    /// Runs a trivial query: whether the database answers.
    async fn ping(&self) -> Result<()>;

    /// Closes every connection (at shutdown).
    async fn close(&self);
}

/// Connects to the database a URL names and applies pending migrations.
pub async fn open(url: &DatabaseUrl) -> Result<Box<dyn Metadata>> {
    let shown = redact_url(url.as_str());
    Ok(match url.kind() {
        DatabaseKind::Postgres => Box::new(PostgresMetadata::open(url.as_str(), &shown).await?),
        DatabaseKind::Sqlite => Box::new(SqliteMetadata::open(url.as_str(), &shown).await?),
    })
}

fn query(operation: &'static str) -> impl FnOnce(sqlx::Error) -> MetadataError {
    move |source| MetadataError::Query { operation, source }
}

impl MetadataError {
    /// Whether the database refused a value as too large for it (PostgreSQL's `program_limit_exceeded`,
    /// e.g. a path too long for its index): the client's doing, not an outage.
    pub fn exceeds_a_limit(&self) -> bool {
        matches!(
            self,
            Self::Query { source: sqlx::Error::Database(err), .. } if err.code().as_deref() == Some("54000")
        )
    }
}

/// Whether the database refused one statement (a constraint, a bad value) rather than the connection or
/// the transaction failing: then the other writes of a group commit deserve a transaction of their own.
fn failed_statement(err: &MetadataError) -> bool {
    matches!(
        err,
        MetadataError::Query {
            source: sqlx::Error::Database(_),
            ..
        }
    )
}

fn hash32(bytes: Vec<u8>) -> [u8; 32] {
    bytes.try_into().unwrap_or([0; 32])
}

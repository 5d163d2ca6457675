//! The metadata database, split by job into five traits: [`Files`] (entries and the event log, which
//! the Store owns), [`Accounts`] (users, sessions, signup tokens, used AuthToken ids, PKARR packets),
//! [`Grants`] (stored grants, their bearer sessions, used PoP nonces), [`Locks`] (WebDAV write locks) and
//! [`Operations`] (engine, counts, pools, ping). A PostgreSQL and a SQLite implementation run the same SQL (written once, in the `sql`
//! module) except for the few statements where the engines differ: row locking, the event-order lock
//! and how a write transaction starts.

mod accounts;
mod batch_queue;
mod files;
mod grants;
mod group_commit;
mod locks;
mod operations;
mod pop_nonces;
mod postgres;
mod rate_buckets;
mod sql;
mod sqlite;
pub mod user_transfer;

use std::time::{SystemTime, UNIX_EPOCH};

use homestead_config::{DatabaseKind, DatabaseUrl, redact_url};

pub use accounts::{
    Accounts, NewSession, NewSignupToken, Quota, SessionRecord, SignupOutcome, SignupTokenRecord,
    TokenPage, TokenState, User, UserLimits, UserOrder, UserPage, UserState,
};
pub(crate) use files::Current;
pub use files::{
    DeleteOutcome, Deleted, Entry, Event, EventFilter, EventOp, FILE_OVERHEAD_BYTES, Files,
    NewEntry, PathScan, PutOutcome, Version, WriteMode,
};
pub use grants::{BearerRecord, GrantRecord, Grants, MintBearer, MintOutcome, NewGrant};
pub use locks::{LockRefresh, Locks, NewLock, TakeOutcome};
pub use operations::{Counts, Operations};
pub use postgres::PostgresMetadata;
pub use rate_buckets::RateBuckets;
pub use sqlite::SqliteMetadata;

/// Microseconds since the Unix epoch.
pub type Micros = i64;

/// The current time, as stored.
pub fn now_micros() -> Micros {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

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

/// The whole metadata database: one engine implements all five jobs.
pub trait Metadata: Files + Accounts + Grants + Locks + Operations {}

impl<T: Files + Accounts + Grants + Locks + Operations> Metadata for T {}

/// Connects to the database a URL names and applies pending migrations.
pub async fn open(url: &DatabaseUrl) -> Result<Box<dyn Metadata>> {
    let shown = redact_url(url.as_str());
    Ok(match url.kind() {
        DatabaseKind::Postgres => Box::new(PostgresMetadata::open(url.as_str(), &shown).await?),
        DatabaseKind::Sqlite => Box::new(SqliteMetadata::open(url.as_str(), &shown).await?),
    })
}

pub(crate) fn query(operation: &'static str) -> impl FnOnce(sqlx::Error) -> MetadataError {
    move |source| MetadataError::Query { operation, source }
}

impl MetadataError {
    /// Whether the database refused a value as too large for it (PostgreSQL's `program_limit_exceeded`,
    /// e.g. a path too long for its index): the client's doing, not an outage.
    pub(crate) fn exceeds_a_limit(&self) -> bool {
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

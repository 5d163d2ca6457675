//! SQLite: the embedded default. Reads use a pool; writes go through a single connection, since SQLite
//! allows one writer at a time anyway, which also serializes quota checks and event ids.

use std::str::FromStr;
use std::time::{Duration, Instant};

use homestead_config::DatabaseKind;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use super::sql::{impl_metadata, lock_statements, read_for_put, read_grant, upsert_entry};
use super::{MetadataError, Result};
use crate::revocations::Revocations;

/// The longest a read connection may stay busy without a pause before its statement is interrupted
/// (PostgreSQL's `statement_timeout` does the same there).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// A pause this long between two progress calls means the busy statement ended and another began.
const STATEMENT_GAP: Duration = Duration::from_millis(50);
/// Virtual-machine instructions between two progress calls: a few milliseconds of work.
const PROGRESS_OPS: i32 = 100_000;

/// A progress handler that interrupts (returns false) once its connection has been busy for `limit`.
/// SQLite calls it only while a statement runs, every [`PROGRESS_OPS`] instructions, so a gap of more
/// than [`STATEMENT_GAP`] since the last call starts a new count; short statements never call it.
fn busy_guard(limit: Duration) -> impl FnMut() -> bool + Send + 'static {
    let mut last = Instant::now();
    let mut busy_since = last;
    move || {
        let now = Instant::now();
        if now.duration_since(last) > STATEMENT_GAP {
            busy_since = now;
        }
        last = now;
        now.duration_since(busy_since) < limit
    }
}

/// Pool options whose connections each get a [`busy_guard`] of `limit`, called every `ops` instructions.
fn guarded(options: SqlitePoolOptions, ops: i32, limit: Duration) -> SqlitePoolOptions {
    options.after_connect(move |conn, _| {
        Box::pin(async move {
            conn.lock_handle()
                .await?
                .set_progress_handler(ops, busy_guard(limit));
            Ok(())
        })
    })
}

/// Metadata in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteMetadata {
    read: SqlitePool,
    write: SqlitePool,
    /// The health probe's own connection, so that a busy pool never reads as a database that is down.
    probe: SqlitePool,
    puts: super::batch_queue::Queue<super::group_commit::PendingPut>,
    nonces: super::batch_queue::Queue<super::pop_nonces::PendingNonce>,
    /// Revocations, announced by this process after each commit (one process owns the file).
    revocations: Revocations,
}

impl SqliteMetadata {
    /// The single writer connection holds the write transaction: nobody else can change the grant.
    const LOCK_GRANT: &'static str = read_grant!();
    const READ_FOR_PUT: &'static str = read_for_put!();
    /// The entry alone (SQLite has no writes inside `WITH`); the usage and the event follow separately.
    const WRITE_PUT: &'static str = upsert_entry!();
    const WRITE_PUT_WHOLE: bool = false;
    /// The single writer connection orders events, and one process owns the file, so there is nobody
    /// to wake.
    const BEGIN_WRITE: Option<&'static str> = None;
    /// No other process to tell: revocations are announced on the feed after the commit.
    const NOTIFY_REVOCATION: Option<&'static str> = None;
    /// One writer connection beside the readers.
    const SEPARATE_WRITE_POOL: bool = true;
    // The database's clock in milliseconds (the Julian day of 'now', fixed for the whole statement).
    lock_statements!("CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)");

    fn hints(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }

    fn stop_listening(&self) {}

    /// One instance owns the file: its buckets stay in memory.
    fn shared_rate_buckets(&self) -> Option<super::RateBuckets> {
        None
    }

    /// Opens (creating if needed) and migrates; `shown` is the URL for errors.
    pub async fn open(url: &str, shown: &str) -> Result<Self> {
        let connect = |source| MetadataError::Connect {
            url: shown.to_string(),
            source,
        };
        // WAL lets reads run beside the writer; FULL sync makes a commit survive a power cut.
        let options = SqliteConnectOptions::from_str(url)
            .map_err(connect)?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(connect)?;
        sqlx::migrate!("../migrations/sqlite")
            .run(&write)
            .await
            .map_err(|source| MetadataError::Migrate {
                url: shown.to_string(),
                source,
            })?;
        let probe = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(1))
            .connect_lazy_with(options.clone().read_only(true));
        let read = guarded(SqlitePoolOptions::new(), PROGRESS_OPS, STATEMENT_TIMEOUT)
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            // A page of a listing or of the event log is up to 1,000 rows: let the connection's thread
            // hand them all over without waiting for the reader to take each batch of the default 50.
            .connect_with(options.read_only(true).row_buffer_size(1024))
            .await
            .map_err(connect)?;
        Ok(Self {
            read,
            puts: super::group_commit::start(write.clone()),
            nonces: super::pop_nonces::start(write.clone()),
            write,
            probe,
            revocations: Revocations::new(true),
        })
    }
}

impl_metadata!(SqliteMetadata, Sqlite, DatabaseKind::Sqlite);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SQLITE_INTERRUPT;

    #[tokio::test]
    async fn a_statement_that_runs_too_long_is_interrupted() {
        let pool = guarded(SqlitePoolOptions::new(), 1000, Duration::from_millis(200))
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) \
                       SELECT count(*) FROM n";
        let started = Instant::now();
        let err = sqlx::query(endless).execute(&pool).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let code = err.as_database_error().and_then(|e| e.code()).unwrap();
        assert_eq!(code, SQLITE_INTERRUPT, "{err}");
        // The connection serves the next statement.
        sqlx::query("SELECT 1").execute(&pool).await.unwrap();
    }
}

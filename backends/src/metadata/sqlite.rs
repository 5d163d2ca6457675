//! SQLite: the embedded default. Reads use a pool; writes go through a single connection, since SQLite
//! allows one writer at a time anyway, which also serializes quota checks and event ids.

use std::str::FromStr;
use std::time::Duration;

use homestead_config::DatabaseKind;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use super::sql::{impl_metadata, read_for_put, upsert_entry};
use super::{MetadataError, Result};

/// Metadata in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteMetadata {
    read: SqlitePool,
    write: SqlitePool,
    /// The health probe's own connection, so that a busy pool never reads as a database that is down.
    probe: SqlitePool,
    puts: tokio::sync::mpsc::Sender<super::PendingPut>,
}

impl SqliteMetadata {
    const LOCK_USER: &'static str =
        "SELECT id, used_bytes, quota_bytes FROM users WHERE public_key = $1";
    const READ_FOR_PUT: &'static str = read_for_put!();
    /// The entry alone (SQLite has no writes inside `WITH`); the usage and the event follow separately.
    const WRITE_PUT: &'static str = upsert_entry!();
    const WRITE_PUT_WHOLE: bool = false;
    /// The single writer connection orders events, and one process owns the file, so there is nobody
    /// to wake.
    const BEGIN_WRITE: Option<&'static str> = None;
    /// One writer connection beside the readers.
    const SEPARATE_WRITE_POOL: bool = true;

    fn hints(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }

    fn stop_listening(&self) {}

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
        let read = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            // A page of a listing or of the event log is up to 1,000 rows: let the connection's thread
            // hand them all over without waiting for the reader to take each batch of the default 50.
            .connect_with(options.read_only(true).row_buffer_size(1024))
            .await
            .map_err(connect)?;
        Ok(Self {
            read,
            puts: Self::start_group_commit(write.clone()),
            write,
            probe,
        })
    }
}

impl_metadata!(SqliteMetadata, Sqlite, DatabaseKind::Sqlite);

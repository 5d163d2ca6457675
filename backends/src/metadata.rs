//! The metadata database: a connection pool to PostgreSQL or SQLite, migrated at start-up with the plain
//! SQL files of `migrations/postgres` and `migrations/sqlite`.

use std::str::FromStr;
use std::time::Duration;

use homestead_config::{DatabaseKind, DatabaseUrl, redact_url};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// How long start-up waits for the database before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the metadata database could not be opened.
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
}

/// A migrated connection pool to one of the two supported engines.
#[derive(Debug, Clone)]
pub enum MetadataDb {
    /// PostgreSQL: production and scale-out.
    Postgres(PgPool),
    /// SQLite: the embedded default.
    Sqlite(SqlitePool),
}

impl MetadataDb {
    /// Connects and applies pending migrations.
    pub async fn open(url: &DatabaseUrl) -> Result<Self, MetadataError> {
        let shown = redact_url(url.as_str());
        let connect = |source| MetadataError::Connect {
            url: shown.clone(),
            source,
        };
        let migrate = |source| MetadataError::Migrate {
            url: shown.clone(),
            source,
        };
        match url.kind() {
            DatabaseKind::Postgres => {
                let options = PgConnectOptions::from_str(url.as_str()).map_err(connect)?;
                let pool = PgPoolOptions::new()
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(connect)?;
                sqlx::migrate!("../migrations/postgres")
                    .run(&pool)
                    .await
                    .map_err(migrate)?;
                Ok(Self::Postgres(pool))
            }
            DatabaseKind::Sqlite => {
                // FULL sync: a committed write survives a power cut, not only a process crash.
                let options = SqliteConnectOptions::from_str(url.as_str())
                    .map_err(connect)?
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5));
                let pool = SqlitePoolOptions::new()
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(connect)?;
                sqlx::migrate!("../migrations/sqlite")
                    .run(&pool)
                    .await
                    .map_err(migrate)?;
                Ok(Self::Sqlite(pool))
            }
        }
    }

    /// The engine in use, for logs.
    pub fn kind(&self) -> DatabaseKind {
        match self {
            Self::Postgres(_) => DatabaseKind::Postgres,
            Self::Sqlite(_) => DatabaseKind::Sqlite,
        }
    }

    /// Closes every connection (at shutdown).
    pub async fn close(&self) {
        match self {
            Self::Postgres(pool) => pool.close().await,
            Self::Sqlite(pool) => pool.close().await,
        }
    }
}

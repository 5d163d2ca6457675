//! A plain connection to the metadata database for the operator commands (backup, restore, user
//! export and import), which run beside a serving instance or before one starts: no group commit, no
//! `LISTEN`, no statement timeout (a snapshot of a large database takes as long as it takes).

use std::str::FromStr;
use std::time::Duration;

use homestead_config::{DatabaseKind, DatabaseUrl, redact_url};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use crate::metadata::MetadataError;

/// One engine's pool, with the URL (password hidden) for messages.
#[derive(Debug, Clone)]
pub enum Database {
    /// A SQLite file.
    Sqlite(SqlitePool, String),
    /// A PostgreSQL database.
    Postgres(PgPool, String),
}

/// Runs one body against whichever pool a [`Database`] holds, `$pool` bound to it: sqlx's pool types
/// differ per engine, so the body is written once and compiled for each.
macro_rules! with_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::database::Database::Sqlite($pool, _) => $body,
            $crate::database::Database::Postgres($pool, _) => $body,
        }
    };
}

/// The newest migration this build knows for an engine.
pub fn known_schema_version(kind: DatabaseKind) -> i64 {
    let migrator = match kind {
        DatabaseKind::Sqlite => sqlx::migrate!("../migrations/sqlite"),
        DatabaseKind::Postgres => sqlx::migrate!("../migrations/postgres"),
    };
    migrator
        .iter()
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0)
}

impl Database {
    /// Connects without migrating; a SQLite file must exist unless `create` is set.
    pub async fn connect(url: &DatabaseUrl, create: bool) -> Result<Self, MetadataError> {
        let shown = redact_url(url.as_str());
        let connect = |source| MetadataError::Connect {
            url: shown.clone(),
            source,
        };
        Ok(match url.kind() {
            DatabaseKind::Sqlite => {
                let options = SqliteConnectOptions::from_str(url.as_str())
                    .map_err(connect)?
                    .create_if_missing(create)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(30));
                let pool = SqlitePoolOptions::new()
                    .max_connections(2)
                    .connect_with(options)
                    .await
                    .map_err(connect)?;
                Self::Sqlite(pool, shown)
            }
            DatabaseKind::Postgres => {
                let options = PgConnectOptions::from_str(url.as_str()).map_err(connect)?;
                let pool = PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
                    .map_err(connect)?;
                Self::Postgres(pool, shown)
            }
        })
    }

    /// Brings the schema up to this build's migrations.
    pub async fn migrate(&self) -> Result<(), MetadataError> {
        let migrated = match self {
            Self::Sqlite(pool, _) => sqlx::migrate!("../migrations/sqlite").run(pool).await,
            Self::Postgres(pool, _) => sqlx::migrate!("../migrations/postgres").run(pool).await,
        };
        migrated.map_err(|source| MetadataError::Migrate {
            url: self.shown().to_string(),
            source,
        })
    }

    /// The newest migration applied to the database (None: never migrated).
    pub async fn schema_version(&self) -> Result<Option<i64>, MetadataError> {
        const EXISTS_SQLITE: &str =
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'";
        const EXISTS_PG: &str = "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() \
             AND tablename = '_sqlx_migrations'";
        const NEWEST: &str = "SELECT MAX(version) FROM _sqlx_migrations WHERE success";
        let exists = match self {
            Self::Sqlite(..) => EXISTS_SQLITE,
            Self::Postgres(..) => EXISTS_PG,
        };
        let query = || crate::metadata::query("read the schema version");
        with_pool!(self, |pool| {
            let tables: i64 = sqlx::query_scalar(exists)
                .fetch_one(pool)
                .await
                .map_err(query())?;
            if tables == 0 {
                return Ok(None);
            }
            sqlx::query_scalar::<_, Option<i64>>(NEWEST)
                .fetch_one(pool)
                .await
                .map_err(query())
        })
    }

    /// Whether the database holds no account or file data: no users, signup tokens, entries or events
    /// (tables that do not exist yet count as empty).
    pub async fn is_empty(&self) -> Result<bool, MetadataError> {
        if self.schema_version().await?.is_none() {
            return Ok(true);
        }
        const ANY_ROW: &str = "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM users LIMIT 1) u) \
             + (SELECT COUNT(*) FROM (SELECT 1 FROM signup_tokens LIMIT 1) t) \
             + (SELECT COUNT(*) FROM (SELECT 1 FROM entries LIMIT 1) e) \
             + (SELECT COUNT(*) FROM (SELECT 1 FROM events LIMIT 1) v)";
        let rows: i64 = with_pool!(self, |pool| sqlx::query_scalar(ANY_ROW)
            .fetch_one(pool)
            .await)
        .map_err(crate::metadata::query("look for existing data"))?;
        Ok(rows == 0)
    }

    /// The URL with its password hidden.
    pub fn shown(&self) -> &str {
        match self {
            Self::Sqlite(_, shown) | Self::Postgres(_, shown) => shown,
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }
}

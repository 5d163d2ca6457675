//! PostgreSQL: production and scale-out. Several instances may share one database; a write locks its
//! user's row, and event inserts take a transaction-scoped advisory lock so that ids become visible in
//! increasing order (OPERATIONS.md §12.3).

use std::str::FromStr;
use std::time::Duration;

use homestead_config::DatabaseKind;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};

use super::{MetadataError, Result, sql::impl_metadata};

/// Metadata in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresMetadata {
    read: PgPool,
    write: PgPool,
}

impl PostgresMetadata {
    const LOCK_USER: &'static str =
        "SELECT id, used_bytes, quota_bytes FROM users WHERE public_key = $1 FOR UPDATE";
    /// The reference's lock key: "events" in ASCII.
    const EVENT_ORDER_LOCK: Option<&'static str> =
        Some("SELECT pg_advisory_xact_lock(7311142570157080576)");

    /// Connects and migrates; `shown` is the URL with its password hidden, for errors.
    pub async fn open(url: &str, shown: &str) -> Result<Self> {
        let connect = |source| MetadataError::Connect {
            url: shown.to_string(),
            source,
        };
        let options = PgConnectOptions::from_str(url).map_err(connect)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(connect)?;
        sqlx::migrate!("../migrations/postgres")
            .run(&pool)
            .await
            .map_err(|source| MetadataError::Migrate {
                url: shown.to_string(),
                source,
            })?;
        Ok(Self {
            read: pool.clone(),
            write: pool,
        })
    }
}

impl_metadata!(PostgresMetadata, Postgres, DatabaseKind::Postgres);

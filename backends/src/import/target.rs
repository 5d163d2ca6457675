//! Homestead's own metadata database as the import writes it: the tables of `migrations/`, written
//! with statements that insert or bring a row up to date, so that running the import again changes
//! nothing and an interrupted run is finished by the next. One SQL text for both engines.

use std::str::FromStr;
use std::time::Duration;

use homestead_config::{DatabaseKind, DatabaseUrl, redact_url};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use super::{ImportError, RefEntry, RefEvent, RefGrantSession, RefToken, RefUser};
use crate::metadata::FILE_OVERHEAD_BYTES;
use crate::metadata::GrantRecord;

const UPSERT_USER: &str = "INSERT INTO users (public_key, disabled, quota_bytes, limits, created_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (public_key) DO UPDATE SET disabled = excluded.disabled, \
     quota_bytes = excluded.quota_bytes, limits = excluded.limits, created_at = excluded.created_at";
const UPSERT_TOKEN: &str = "INSERT INTO signup_tokens (token, created_at, used_by, used_at, quota_bytes, limits) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (token) DO UPDATE SET created_at = excluded.created_at, \
     used_by = excluded.used_by, used_at = excluded.used_at, quota_bytes = excluded.quota_bytes, \
     limits = excluded.limits";
const INSERT_SESSION: &str = "INSERT INTO sessions (secret_hash, user_id, capabilities, created_at) \
     SELECT $1, id, $2, $3 FROM users WHERE public_key = $4 ON CONFLICT (secret_hash) DO NOTHING";
const UPSERT_GRANT: &str = "INSERT INTO grants \
     (id, user_id, client_id, cnf, capabilities, issued_at, expires_at, revoked_at, created_at) \
     SELECT $1, id, $3, $4, $5, $6, $7, $8, $9 FROM users WHERE public_key = $2 \
     ON CONFLICT (id) DO UPDATE SET revoked_at = excluded.revoked_at";
const INSERT_GRANT_SESSION: &str = "INSERT INTO grant_sessions (token_hash, grant_id, expires_at, created_at) \
     SELECT $1, id, $3, $4 FROM grants WHERE id = $2 ON CONFLICT DO NOTHING";
const INSERT_POP_NONCE: &str =
    "INSERT INTO pop_nonces (nonce, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING";
const ENTRY: &str = "SELECT e.content_hash, e.blob_key FROM entries e JOIN users u ON u.id = e.user_id \
     WHERE u.public_key = $1 AND e.path = $2";
const UPSERT_ENTRY: &str = "INSERT INTO entries \
     (user_id, path, content_hash, content_length, content_type, blob_key, created_at, modified_at) \
     SELECT id, $2, $3, $4, $5, $6, $7, $8 FROM users WHERE public_key = $1 \
     ON CONFLICT (user_id, path) DO UPDATE SET content_hash = excluded.content_hash, \
     content_length = excluded.content_length, content_type = excluded.content_type, \
     blob_key = excluded.blob_key, created_at = excluded.created_at, modified_at = excluded.modified_at";
const INSERT_EVENT: &str = "INSERT INTO events (id, op, user_id, path, content_hash, created_at) \
     SELECT $1, $2, id, $4, $5, $6 FROM users WHERE public_key = $3 ON CONFLICT (id) DO NOTHING";
const EVENT: &str = "SELECT e.op, u.public_key, e.path FROM events e JOIN users u ON u.id = e.user_id \
     WHERE e.id = $1";
const MAX_EVENT: &str = "SELECT MAX(id) FROM events";
const USER_KEY_IDS: &str = "SELECT id, public_key FROM users WHERE id > $1 ORDER BY id LIMIT 1000";
/// Usage as the write path keeps it: the files' lengths plus the per-file overhead.
const RECOUNT_USAGE: &str = "UPDATE users SET used_bytes = COALESCE((SELECT SUM(content_length + $1) \
     FROM entries WHERE entries.user_id = users.id), 0)";
/// New events continue after the imported ids (SQLite's AUTOINCREMENT follows explicit ids itself).
const EVENT_SEQUENCE: &str =
    "SELECT setval(pg_get_serial_sequence('events', 'id'), (SELECT MAX(id) FROM events))";

#[derive(Debug, Clone)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to the engine's pool: the same code, type-checked per engine.
macro_rules! on_pool {
    ($self:expr, $pool:ident => $body:expr) => {
        match &$self.pool {
            Pool::Postgres($pool) => $body,
            Pool::Sqlite($pool) => $body,
        }
    };
}

/// Homestead's metadata database, migrated, as the import writes it.
#[derive(Debug, Clone)]
pub struct TargetDb {
    pool: Pool,
    shown: String,
}

impl TargetDb {
    /// Migrates the database the URL names (creating a SQLite file if needed) and connects.
    pub async fn open(url: &DatabaseUrl) -> Result<Self, ImportError> {
        let shown = redact_url(url.as_str());
        let migrated = crate::metadata::open(url)
            .await
            .map_err(|source| ImportError::Target {
                what: source.to_string(),
                cause: None,
            })?;
        drop(migrated);
        let connect = |source| ImportError::Target {
            what: format!("cannot connect to {shown}"),
            cause: Some(source),
        };
        let pool = match url.kind() {
            DatabaseKind::Postgres => {
                let options = PgConnectOptions::from_str(url.as_str()).map_err(connect)?;
                Pool::Postgres(
                    PgPoolOptions::new()
                        .max_connections(2)
                        .connect_with(options)
                        .await
                        .map_err(connect)?,
                )
            }
            DatabaseKind::Sqlite => {
                let options = SqliteConnectOptions::from_str(url.as_str())
                    .map_err(connect)?
                    .journal_mode(SqliteJournalMode::Wal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10));
                Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_with(options)
                        .await
                        .map_err(connect)?,
                )
            }
        };
        Ok(Self { pool, shown })
    }

    fn failed(&self, what: &'static str) -> impl FnOnce(sqlx::Error) -> ImportError + '_ {
        move |source| ImportError::Target {
            what: format!("{}: writing {what}", self.shown),
            cause: Some(source),
        }
    }

    /// The highest event id (0 without events).
    pub async fn max_event_id(&self) -> Result<i64, ImportError> {
        let id: Option<i64> = on_pool!(self, pool => sqlx::query_scalar(MAX_EVENT)
            .fetch_one(pool)
            .await
            .map_err(self.failed("events"))?);
        Ok(id.unwrap_or(0))
    }

    /// The event with this id, as (op, user key, path).
    pub async fn event(&self, id: i64) -> Result<Option<(String, String, String)>, ImportError> {
        on_pool!(self, pool => {
            let row = sqlx::query(EVENT).bind(id).fetch_optional(pool).await.map_err(self.failed("events"))?;
            Ok(row.map(|row| (row.get(0), row.get(1), row.get(2))))
        })
    }

    /// Every user key, a page at a time, to `seen`.
    pub async fn user_keys(&self, mut seen: impl FnMut(String)) -> Result<(), ImportError> {
        let mut after = 0i64;
        loop {
            let page: Vec<(i64, String)> = on_pool!(self, pool => sqlx::query_as(USER_KEY_IDS)
                .bind(after)
                .fetch_all(pool)
                .await
                .map_err(self.failed("users"))?);
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = *last;
            page.into_iter().for_each(|(_, key)| seen(key));
        }
    }

    /// Inserts or updates a user.
    pub async fn put_user(&self, user: &RefUser) -> Result<(), ImportError> {
        let (quota, limits) = user.limits.converted();
        on_pool!(self, pool => sqlx::query(UPSERT_USER)
            .bind(&user.public_key)
            .bind(user.disabled)
            .bind(quota)
            .bind(limits.as_deref())
            .bind(user.created_at)
            .execute(pool)
            .await
            .map_err(self.failed("users"))
            .map(drop)?);
        Ok(())
    }

    /// Inserts or updates a signup token.
    pub async fn put_token(&self, token: &RefToken) -> Result<(), ImportError> {
        let (quota, limits) = token.limits.converted();
        on_pool!(self, pool => sqlx::query(UPSERT_TOKEN)
            .bind(&token.token)
            .bind(token.created_at)
            .bind(token.used_by.as_deref())
            .bind(token.used_at)
            .bind(quota)
            .bind(limits.as_deref())
            .execute(pool)
            .await
            .map_err(self.failed("signup_tokens"))
            .map(drop)?);
        Ok(())
    }

    /// Stores a session under the hash of its secret, unless stored already.
    pub async fn put_session(
        &self,
        secret_hash: &[u8; 32],
        public_key: &str,
        capabilities: &str,
        created_at: i64,
    ) -> Result<(), ImportError> {
        on_pool!(self, pool => sqlx::query(INSERT_SESSION)
            .bind(secret_hash.as_slice())
            .bind(capabilities)
            .bind(created_at)
            .bind(public_key)
            .execute(pool)
            .await
            .map_err(self.failed("sessions"))
            .map(drop)?);
        Ok(())
    }

    /// Inserts a grant, or brings its revocation up to date.
    pub async fn put_grant(&self, grant: &GrantRecord) -> Result<(), ImportError> {
        on_pool!(self, pool => sqlx::query(UPSERT_GRANT)
            .bind(&grant.id)
            .bind(&grant.public_key)
            .bind(&grant.client_id)
            .bind(&grant.cnf)
            .bind(&grant.capabilities)
            .bind(grant.issued_at)
            .bind(grant.expires_at)
            .bind(grant.revoked_at)
            .bind(grant.created_at)
            .execute(pool)
            .await
            .map_err(self.failed("grants"))
            .map(drop)?);
        Ok(())
    }

    /// Stores a grant's bearer session, unless the grant has one already.
    pub async fn put_grant_session(&self, session: &RefGrantSession) -> Result<(), ImportError> {
        on_pool!(self, pool => sqlx::query(INSERT_GRANT_SESSION)
            .bind(&session.token_hash)
            .bind(&session.grant_id)
            .bind(session.expires_at)
            .bind(session.created_at)
            .execute(pool)
            .await
            .map_err(self.failed("grant_sessions"))
            .map(drop)?);
        Ok(())
    }

    /// Records a PoP nonce as used.
    pub async fn put_pop_nonce(&self, nonce: &str, created_at: i64) -> Result<(), ImportError> {
        on_pool!(self, pool => sqlx::query(INSERT_POP_NONCE)
            .bind(nonce)
            .bind(created_at)
            .execute(pool)
            .await
            .map_err(self.failed("pop_nonces"))
            .map(drop)?);
        Ok(())
    }

    /// The hash and blob key of a user's file, if stored.
    pub async fn entry(
        &self,
        public_key: &str,
        path: &str,
    ) -> Result<Option<(Vec<u8>, String)>, ImportError> {
        on_pool!(self, pool => {
            let row = sqlx::query(ENTRY)
                .bind(public_key)
                .bind(path)
                .fetch_optional(pool)
                .await
                .map_err(self.failed("entries"))?;
            Ok(row.map(|row| (row.get(0), row.get(1))))
        })
    }

    /// Inserts or replaces a file's entry, its body being in the blob `blob_key` already.
    pub async fn put_entry(&self, entry: &RefEntry, blob_key: &str) -> Result<(), ImportError> {
        on_pool!(self, pool => sqlx::query(UPSERT_ENTRY)
            .bind(&entry.public_key)
            .bind(&entry.path)
            .bind(&entry.content_hash)
            .bind(entry.content_length)
            .bind(&entry.content_type)
            .bind(blob_key)
            .bind(entry.created_at)
            .bind(entry.modified_at)
            .execute(pool)
            .await
            .map_err(self.failed("entries"))
            .map(drop)?);
        Ok(())
    }

    /// Appends events under their own ids, in one transaction; ids stored already are left alone.
    pub async fn put_events(&self, events: &[RefEvent]) -> Result<(), ImportError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(self.failed("events"))?;
            for event in events {
                sqlx::query(INSERT_EVENT)
                    .bind(event.id)
                    .bind(&event.op)
                    .bind(&event.public_key)
                    .bind(&event.path)
                    .bind(event.content_hash.as_deref())
                    .bind(event.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.failed("events"))?;
            }
            tx.commit().await.map_err(self.failed("events"))?;
        });
        // At once, not at the end: a server started after an interrupted run must not reuse these ids.
        if let Pool::Postgres(pool) = &self.pool
            && !events.is_empty()
        {
            sqlx::query(EVENT_SEQUENCE)
                .execute(pool)
                .await
                .map_err(self.failed("events"))?;
        }
        Ok(())
    }

    /// Counts every user's usage from their entries.
    pub async fn finish(&self) -> Result<(), ImportError> {
        on_pool!(self, pool => sqlx::query(RECOUNT_USAGE)
            .bind(FILE_OVERHEAD_BYTES)
            .execute(pool)
            .await
            .map_err(self.failed("users"))
            .map(drop)?);
        Ok(())
    }

    /// Closes the connections.
    pub async fn close(self) {
        on_pool!(self, pool => pool.close().await);
    }
}

//! The reference homeserver's PostgreSQL database, read only: one connection whose session refuses
//! writes, inside one `REPEATABLE READ READ ONLY` transaction, so every page comes from the same snapshot
//! and nothing on the reference's side can change. Tables and columns as OPERATIONS.md §12.2 describes
//! them at 0.9.3, and as the reference's own migrations add them later (grants, token redemption times).

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{ConnectOptions, Connection, Postgres, Row};

use super::{
    ImportError, RefEntry, RefEvent, RefGrantSession, RefLimits, RefSession, RefToken, RefUser,
};
use crate::metadata::GrantRecord;

/// The migrations of pubky-homeserver 0.9.3, by the names its `migrations` table stores.
const SCHEMA_0_9_3: &[&str] = &[
    "m20250806_create_user",
    "m20250812_create_signup_code",
    "m20250813_create_session",
    "m20250814_create_event",
    "m20250815_create_entry",
    "m20251014_enhance_events_table",
    "m20260327_add_quota_columns",
    "m20260507_add_allowed_write_paths",
];
/// What 0.17.1 adds, by the names its own migrator stores (read from the published crate): grants with
/// their bearer sessions and PoP nonces, token redemption times, capabilities normalized, WebDAV locks
/// (`entry_locks`, not imported: a lock lasts minutes and the reference is stopped for the switch) and
/// entry paths in the "C" collation.
const SCHEMA_0_17_ADDS: &[&str] = &[
    "m20260325_create_grant_sessions",
    "m20260609_add_signup_code_used_at",
    "m20260723_sanitize_capabilities",
    "m20260921_create_entry_locks",
    "m20261002_entry_path_c_collation",
];

/// Which reference schema a database has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// pubky-homeserver 0.9.3: cookie sessions only.
    V0_9_3,
    /// pubky-homeserver 0.17.1: also grants, bearer sessions, PoP nonces and `signup_codes.used_at`.
    V0_17_1,
}

impl Schema {
    /// The version, for messages.
    pub fn version(self) -> &'static str {
        match self {
            Self::V0_9_3 => "0.9.3",
            Self::V0_17_1 => "0.17.1",
        }
    }

    /// Tells the schema from the applied migrations' names (in any order).
    pub fn of(applied: &[String]) -> Option<Self> {
        let mut applied: Vec<&str> = applied.iter().map(String::as_str).collect();
        applied.sort_unstable();
        let mut old: Vec<&str> = SCHEMA_0_9_3.to_vec();
        old.sort_unstable();
        if applied == old {
            return Some(Self::V0_9_3);
        }
        let mut new = old;
        new.extend_from_slice(SCHEMA_0_17_ADDS);
        new.sort_unstable();
        (applied == new).then_some(Self::V0_17_1)
    }
}

/// A timestamp column (UTC without time zone) as microseconds since the Unix epoch.
macro_rules! micros {
    ($column:literal) => {
        concat!(
            "CAST(EXTRACT(EPOCH FROM ",
            $column,
            ") * 1000000 AS BIGINT)"
        )
    };
}
/// A timestamp column as seconds since the Unix epoch.
macro_rules! seconds {
    ($column:literal) => {
        concat!("CAST(FLOOR(EXTRACT(EPOCH FROM ", $column, ")) AS BIGINT)")
    };
}

const USERS: &str = concat!(
    "SELECT id, public_key, disabled, ",
    micros!("created_at"),
    ", quota_storage_mb, quota_rate_read, quota_rate_write, quota_rate_read_burst, \
     quota_rate_write_burst, allowed_write_paths FROM users WHERE id > $1 ORDER BY id LIMIT $2"
);
/// 0.9.3 keeps no redemption time: the redeeming user's sign-up time is it (one transaction did both).
const TOKENS_0_9_3: &str = concat!(
    "SELECT s.id, ",
    micros!("s.created_at"),
    ", s.used_by, (SELECT ",
    micros!("u.created_at"),
    " FROM users u WHERE u.public_key = s.used_by), s.quota_storage_mb, s.quota_rate_read, \
     s.quota_rate_write, s.quota_rate_read_burst, s.quota_rate_write_burst, s.allowed_write_paths \
     FROM signup_codes s WHERE s.id > $1 ORDER BY s.id LIMIT $2"
);
const TOKENS_0_17_1: &str = concat!(
    "SELECT s.id, ",
    micros!("s.created_at"),
    ", s.used_by, ",
    micros!("s.used_at"),
    ", s.quota_storage_mb, s.quota_rate_read, s.quota_rate_write, s.quota_rate_read_burst, \
     s.quota_rate_write_burst, s.allowed_write_paths \
     FROM signup_codes s WHERE s.id > $1 ORDER BY s.id LIMIT $2"
);
const SESSIONS: &str = concat!(
    "SELECT s.id, s.secret, u.public_key, s.capabilities, ",
    micros!("s.created_at"),
    " FROM sessions s JOIN users u ON u.id = s.\"user\" WHERE s.id > $1 ORDER BY s.id LIMIT $2"
);
const ENTRIES: &str = concat!(
    "SELECT e.id, u.public_key, e.path, e.content_hash, e.content_length, e.content_type, ",
    micros!("e.created_at"),
    ", ",
    micros!("e.modified_at"),
    " FROM entries e JOIN users u ON u.id = e.\"user\" WHERE e.id > $1 ORDER BY e.id LIMIT $2"
);
const EVENTS: &str = concat!(
    "SELECT ev.id, ev.\"type\", u.public_key, ev.path, ev.content_hash, ",
    micros!("ev.created_at"),
    " FROM events ev JOIN users u ON u.id = ev.\"user\" WHERE ev.id > $1 ORDER BY ev.id LIMIT $2"
);
const GRANTS: &str = concat!(
    "SELECT g.id, u.public_key, g.client_id, g.client_cnf_key, g.capabilities, g.issued_at, \
     g.expires_at, g.revoked_at, ",
    seconds!("g.created_at"),
    " FROM grants g JOIN users u ON u.id = g.\"user\" WHERE g.id > $1 ORDER BY g.id LIMIT $2"
);
/// 0.17.1 keeps one bearer session per grant (a new one replaces the old), but its table does not enforce
/// it; Homestead keeps one, so should a grant have several, the one that lasts longest comes over.
const GRANT_SESSIONS: &str = concat!(
    "SELECT DISTINCT ON (grant_id) token_hash, grant_id, expires_at, ",
    seconds!("created_at"),
    " FROM grant_sessions WHERE grant_id > $1 ORDER BY grant_id, expires_at DESC, id DESC LIMIT $2"
);
const POP_NONCES: &str = concat!(
    "SELECT nonce, ",
    seconds!("created_at"),
    " FROM pop_nonces WHERE nonce > $1 ORDER BY nonce LIMIT $2"
);

/// The reference's database, opened read only.
#[derive(Debug)]
pub struct ReferenceDb {
    conn: PgConnection,
    schema: Schema,
    shown: String,
}

impl ReferenceDb {
    /// Connects (`shown` is the URL with its password hidden), refuses writes for the session, opens
    /// the snapshot and tells the schema.
    pub async fn open(url: &str, shown: &str) -> Result<Self, ImportError> {
        let connect = |source: sqlx::Error| ImportError::Reference {
            what: format!("cannot connect to {shown}"),
            cause: Some(source),
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(connect)?
            .options([("default_transaction_read_only", "on")])
            .disable_statement_logging();
        let mut conn = options.connect().await.map_err(connect)?;
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut conn)
            .await
            .map_err(connect)?;
        let has_migrations: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = 'migrations')",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(connect)?;
        if !has_migrations {
            return Err(ImportError::Reference {
                what: format!(
                    "{shown} is not a pubky-homeserver database: it has no `migrations` table"
                ),
                cause: None,
            });
        }
        let applied: Vec<String> = sqlx::query_scalar("SELECT name FROM migrations ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .map_err(connect)?;
        let schema = Schema::of(&applied).ok_or_else(|| ImportError::Reference {
            what: format!(
                "{shown}: unknown pubky-homeserver schema version (migrations applied: {}); \
                 known: 0.9.3 and 0.17.1",
                applied.join(", ")
            ),
            cause: None,
        })?;
        Ok(Self {
            conn,
            schema,
            shown: shown.to_string(),
        })
    }

    /// The schema found.
    pub fn schema(&self) -> Schema {
        self.schema
    }

    fn failed(&self, what: &'static str) -> impl FnOnce(sqlx::Error) -> ImportError + '_ {
        move |source| ImportError::Reference {
            what: format!("{}: reading {what}", self.shown),
            cause: Some(source),
        }
    }

    /// Reads the columns of a row of `table`.
    fn columns<'r>(&'r self, row: &'r PgRow, table: &'static str) -> Columns<'r> {
        Columns {
            row,
            shown: &self.shown,
            table,
        }
    }

    /// How many files the reference lists and their total length.
    pub async fn entry_totals(&mut self) -> Result<(u64, u64), ImportError> {
        let row = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(content_length), 0) AS BIGINT) FROM entries",
        )
        .fetch_one(&mut self.conn)
        .await
        .map_err(|e| ImportError::Reference {
            what: format!("{}: counting entries", self.shown),
            cause: Some(e),
        })?;
        let columns = self.columns(&row, "entries");
        let count: i64 = columns.get(0)?;
        let bytes: i64 = columns.get(1)?;
        Ok((count.max(0) as u64, bytes.max(0) as u64))
    }

    /// Whether a user with this key exists.
    pub async fn has_user(&mut self, public_key: &str) -> Result<bool, ImportError> {
        let found: Option<i32> = sqlx::query_scalar("SELECT id FROM users WHERE public_key = $1")
            .bind(public_key)
            .fetch_optional(&mut self.conn)
            .await
            .map_err(|e| ImportError::Reference {
                what: format!("{}: reading users", self.shown),
                cause: Some(e),
            })?;
        Ok(found.is_some())
    }

    /// Users with an id above `after`, in id order.
    pub async fn users(&mut self, after: i64, limit: i64) -> Result<Vec<RefUser>, ImportError> {
        let rows = sqlx::query(USERS)
            .bind(after as i32)
            .bind(limit)
            .fetch_all(&mut self.conn)
            .await;
        let rows = rows.map_err(self.failed("users"))?;
        rows.iter()
            .map(|row| {
                let c = self.columns(row, "users");
                let id = i64::from(c.get::<i32>(0)?);
                let public_key: String = c.get(1)?;
                if !super::is_public_key(&public_key) {
                    return Err(ImportError::Reference {
                        what: format!(
                            "{}: user {id} has the key {public_key:?}, which is not a public key \
                             (52 characters of z-base-32)",
                            self.shown
                        ),
                        cause: None,
                    });
                }
                Ok(RefUser {
                    id,
                    public_key,
                    disabled: c.get(2)?,
                    created_at: c.get(3)?,
                    limits: c.limits(4)?,
                })
            })
            .collect()
    }

    /// Signup tokens after `after`, in text order.
    pub async fn tokens(&mut self, after: &str, limit: i64) -> Result<Vec<RefToken>, ImportError> {
        let statement = match self.schema {
            Schema::V0_9_3 => TOKENS_0_9_3,
            Schema::V0_17_1 => TOKENS_0_17_1,
        };
        let rows = sqlx::query(statement)
            .bind(after)
            .bind(limit)
            .fetch_all(&mut self.conn)
            .await;
        let rows = rows.map_err(self.failed("signup_codes"))?;
        rows.iter()
            .map(|row| {
                let c = self.columns(row, "signup_codes");
                let used_by: Option<String> = c.get(2)?;
                let created_at: i64 = c.get(1)?;
                let used_at: Option<i64> = c.get(3)?;
                Ok(RefToken {
                    token: c.get(0)?,
                    created_at,
                    // A token redeemed by a user deleted since keeps its creation time as the best guess.
                    used_at: used_by.as_ref().map(|_| used_at.unwrap_or(created_at)),
                    used_by,
                    limits: c.limits(4)?,
                })
            })
            .collect()
    }

    /// Cookie sessions with an id above `after`.
    pub async fn sessions(
        &mut self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<RefSession>, ImportError> {
        let rows = sqlx::query(SESSIONS)
            .bind(after as i32)
            .bind(limit)
            .fetch_all(&mut self.conn)
            .await;
        let rows = rows.map_err(self.failed("sessions"))?;
        rows.iter()
            .map(|row| {
                let c = self.columns(row, "sessions");
                Ok(RefSession {
                    id: i64::from(c.get::<i32>(0)?),
                    secret: c.get(1)?,
                    public_key: c.get(2)?,
                    capabilities: c.get(3)?,
                    created_at: c.get(4)?,
                })
            })
            .collect()
    }

    /// Entries with an id above `after`.
    pub async fn entries(&mut self, after: i64, limit: i64) -> Result<Vec<RefEntry>, ImportError> {
        let rows = sqlx::query(ENTRIES)
            .bind(after)
            .bind(limit)
            .fetch_all(&mut self.conn)
            .await;
        let rows = rows.map_err(self.failed("entries"))?;
        rows.iter()
            .map(|row| {
                let c = self.columns(row, "entries");
                Ok(RefEntry {
                    id: c.get(0)?,
                    public_key: c.get(1)?,
                    path: c.get(2)?,
                    content_hash: c.get(3)?,
                    content_length: c.get(4)?,
                    content_type: c.get(5)?,
                    created_at: c.get(6)?,
                    modified_at: c.get(7)?,
                })
            })
            .collect()
    }

    /// Events with an id above `after`, in id order.
    pub async fn events(&mut self, after: i64, limit: i64) -> Result<Vec<RefEvent>, ImportError> {
        let rows = sqlx::query(EVENTS)
            .bind(after)
            .bind(limit)
            .fetch_all(&mut self.conn)
            .await;
        let rows = rows.map_err(self.failed("events"))?;
        rows.iter()
            .map(|row| {
                let c = self.columns(row, "events");
                Ok(RefEvent {
                    id: c.get(0)?,
                    op: c.get(1)?,
                    public_key: c.get(2)?,
                    path: c.get(3)?,
                    content_hash: c.get(4)?,
                    created_at: c.get(5)?,
                })
            })
            .collect()
    }

    /// Grants after `after` (0.17.1 only; empty on 0.9.3).
    pub async fn grants(
        &mut self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<GrantRecord>, ImportError> {
        if self.schema == Schema::V0_9_3 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(GRANTS)
            .bind(after)
            .bind(limit)
            .fetch_all(&mut self.conn)
            .await;
        let rows = rows.map_err(self.failed("grants"))?;
        rows.iter()
            .map(|row| {
                let c = self.columns(row, "grants");
                Ok(GrantRecord {
                    id: c.get(0)?,
                    public_key: c.get(1)?,
                    client_id: c.get(2)?,
                    cnf: c.get(3)?,
                    capabilities: c.get(4)?,
                    issued_at: c.get(5)?,
                    expires_at: c.get(6)?,
                    revoked_at: c.get(7)?,
                    created_at: c.get(8)?,
                })
            })
            .collect()
    }

    /// The longest-lasting bearer session of each grant after `after` (0.17.1 only).
    pub async fn grant_sessions(
        &mut self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<RefGrantSession>, ImportError> {
        if self.schema == Schema::V0_9_3 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(GRANT_SESSIONS)
            .bind(after)
            .bind(limit)
            .fetch_all(&mut self.conn)
            .await;
        let rows = rows.map_err(self.failed("grant_sessions"))?;
        rows.iter()
            .map(|row| {
                let c = self.columns(row, "grant_sessions");
                Ok(RefGrantSession {
                    token_hash: c.get(0)?,
                    grant_id: c.get(1)?,
                    expires_at: c.get(2)?,
                    created_at: c.get(3)?,
                })
            })
            .collect()
    }

    /// PoP nonces after `after` (0.17.1 only), with their time in seconds.
    pub async fn pop_nonces(
        &mut self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, ImportError> {
        if self.schema == Schema::V0_9_3 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(POP_NONCES)
            .bind(after)
            .bind(limit)
            .fetch_all(&mut self.conn)
            .await;
        let rows = rows.map_err(self.failed("pop_nonces"))?;
        rows.iter()
            .map(|row| {
                let c = self.columns(row, "pop_nonces");
                Ok((c.get(0)?, c.get(1)?))
            })
            .collect()
    }

    /// Ends the snapshot (nothing was written) and closes the connection.
    pub async fn close(mut self) {
        let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
        let _ = self.conn.close().await;
    }
}

/// The columns of one row, read with the import's error (a NULL or a type the import does not
/// expect ends it with one line that names the table and column).
struct Columns<'r> {
    row: &'r PgRow,
    shown: &'r str,
    table: &'static str,
}

impl<'r> Columns<'r> {
    fn get<T>(&self, index: usize) -> Result<T, ImportError>
    where
        T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
    {
        self.row
            .try_get(index)
            .map_err(|source| ImportError::Reference {
                what: format!("{}: reading {}", self.shown, self.table),
                cause: Some(source),
            })
    }

    /// The six quota columns starting at `first`.
    fn limits(&self, first: usize) -> Result<RefLimits, ImportError> {
        Ok(RefLimits {
            storage_mb: self.get(first)?,
            rate_read: self.get(first + 1)?,
            rate_write: self.get(first + 2)?,
            rate_read_burst: self.get(first + 3)?,
            rate_write_burst: self.get(first + 4)?,
            allowed_write_paths: self.get(first + 5)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn schemas_are_told_by_their_migrations() {
        assert_eq!(Schema::of(&names(SCHEMA_0_9_3)), Some(Schema::V0_9_3));
        let mut newer = names(SCHEMA_0_9_3);
        newer.extend(names(SCHEMA_0_17_ADDS));
        newer.reverse();
        assert_eq!(Schema::of(&newer), Some(Schema::V0_17_1));
        assert_eq!(Schema::of(&names(&SCHEMA_0_9_3[..5])), None);
        newer.pop();
        assert_eq!(Schema::of(&newer), None, "one 0.17.1 migration missing");
        let mut unknown = names(SCHEMA_0_9_3);
        unknown.push("m20990101_future".into());
        assert_eq!(Schema::of(&unknown), None);
    }
}

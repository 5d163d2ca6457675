//! One user's entries read out for `homestead export-user` (inside one read transaction, so that the
//! manifest and the bodies show the same moment) and written in for `homestead import-user` (sign-up,
//! entries, their PUT events and the usage in one transaction: all of it or nothing).

use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Sqlite};

use super::{FILE_OVERHEAD_BYTES, Micros, Quota, Result, query, sql};
use crate::database::Database;

/// An entry as a user archive carries it, with the blob holding its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// The normalized path, `/pub/...` or `/priv/...`.
    pub path: String,
    /// BLAKE3 of the body.
    pub hash: [u8; 32],
    /// Bytes.
    pub length: u64,
    /// The stored content type.
    pub content_type: String,
    /// When the path was first written.
    pub created_at: Micros,
    /// When it was last written.
    pub modified_at: Micros,
    /// The blob key (on export: where the body is; on import: where it was staged).
    pub blob_key: String,
}

type EntryRow = (String, Vec<u8>, i64, String, i64, i64, String);

const USER_ENTRIES: &str = "SELECT e.path, e.content_hash, e.content_length, e.content_type, e.created_at, \
     e.modified_at, e.blob_key FROM entries e JOIN users u ON u.id = e.user_id \
     WHERE u.public_key = $1 ORDER BY e.path";
const COUNT_USER: &str = "SELECT COUNT(*) FROM users WHERE public_key = $1";
const USER_TOTALS: &str = "SELECT COUNT(*), CAST(COALESCE(SUM(e.content_length), 0) AS BIGINT) \
     FROM entries e JOIN users u ON u.id = e.user_id WHERE u.public_key = $1";

fn entry(row: EntryRow) -> UserEntry {
    let (path, hash, length, content_type, created_at, modified_at, blob_key) = row;
    UserEntry {
        path,
        hash: hash.try_into().unwrap_or([0; 32]),
        length: u64::try_from(length).unwrap_or(0),
        content_type,
        created_at,
        modified_at,
        blob_key,
    }
}

/// A read transaction over one user's entries: every read through it shows the same moment.
pub struct UserSnapshot {
    conn: SnapshotConn,
    user: String,
}

enum SnapshotConn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

/// Runs one body on the snapshot's connection, `$conn` bound to it, for either engine.
macro_rules! with_conn {
    ($snapshot:expr, |$conn:ident| $body:expr) => {
        match $snapshot {
            SnapshotConn::Sqlite($conn) => $body,
            SnapshotConn::Postgres($conn) => $body,
        }
    };
}

impl UserSnapshot {
    /// Opens the transaction; None when there is no such user.
    pub async fn open(db: &Database, user: &str) -> Result<Option<Self>> {
        let mut conn = match db {
            Database::Sqlite(pool, _) => {
                SnapshotConn::Sqlite(pool.acquire().await.map_err(query("connect"))?)
            }
            Database::Postgres(pool, _) => {
                SnapshotConn::Postgres(pool.acquire().await.map_err(query("connect"))?)
            }
        };
        let begin = match conn {
            SnapshotConn::Sqlite(_) => "BEGIN",
            SnapshotConn::Postgres(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        };
        let exists: i64 = with_conn!(&mut conn, |c| {
            sqlx::query(begin)
                .execute(&mut **c)
                .await
                .map_err(query("begin the export"))?;
            sqlx::query_scalar(COUNT_USER)
                .bind(user)
                .fetch_one(&mut **c)
                .await
                .map_err(query("look up the user"))?
        });
        let snapshot = Self {
            conn,
            user: user.to_string(),
        };
        if exists == 0 {
            snapshot.close().await?;
            return Ok(None);
        }
        Ok(Some(snapshot))
    }

    /// How many entries the user has and their bytes.
    pub async fn totals(&mut self) -> Result<(u64, u64)> {
        let user = self.user.as_str();
        let (files, bytes): (i64, i64) = with_conn!(&mut self.conn, |c| {
            sqlx::query_as(USER_TOTALS)
                .bind(user)
                .fetch_one(&mut **c)
                .await
                .map_err(query("count the user's entries"))?
        });
        Ok((files as u64, bytes as u64))
    }

    /// The user's entries by path; the same list each time within this snapshot.
    pub fn entries(&mut self) -> BoxStream<'_, Result<UserEntry>> {
        let user = self.user.as_str();
        with_conn!(&mut self.conn, |c| sqlx::query_as::<_, EntryRow>(
            USER_ENTRIES
        )
        .bind(user)
        .fetch(&mut **c)
        .map_ok(entry)
        .map_err(|err| query("list the user's entries")(err))
        .boxed())
    }

    /// Ends the transaction.
    pub async fn close(mut self) -> Result<()> {
        with_conn!(&mut self.conn, |c| sqlx::query("COMMIT")
            .execute(&mut **c)
            .await
            .map(drop)
            .map_err(query("end the export"))?);
        Ok(())
    }
}

/// How an import ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Committed: the user (created if absent) has the entries, each with a new PUT event.
    Imported {
        /// Whether the user was created (and the token, if given, consumed).
        created: bool,
    },
    /// The user exists and has files.
    NotEmpty,
    /// The user is absent, sign-up needs a token, and none was given.
    TokenMissing,
    /// No such signup token.
    TokenUnknown,
    /// The signup token was already used.
    TokenUsed,
    /// The entries do not fit the user's quota: `needed` bytes (256 per file included).
    QuotaExceeded {
        /// Bytes the import needs.
        needed: u64,
    },
}

/// What an import writes.
#[derive(Debug, Clone, Copy)]
pub struct Import<'a> {
    /// The user's key.
    pub user: &'a str,
    /// A signup token to consume when the user is created.
    pub token: Option<&'a str>,
    /// Whether creating the user needs a token.
    pub token_required: bool,
    /// The entries, their blobs already staged.
    pub entries: &'a [UserEntry],
    /// The server's default quota.
    pub default_quota: Quota,
    /// Now: the user's sign-up time if created; event times count up from it.
    pub now: Micros,
}

/// The event-order lock and the wake-up of other instances (see the PostgreSQL engine).
const PG_BEGIN_WRITE: &str =
    "SELECT pg_advisory_xact_lock(7311142570157080576), pg_notify('events', '')";
const INSERT_ENTRY: &str = "INSERT INTO entries (user_id, path, content_hash, content_length, \
     content_type, blob_key, created_at, modified_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const INSERT_EVENT: &str = "INSERT INTO events (op, user_id, path, content_hash, created_at) VALUES ('PUT', $1, $2, $3, $4)";
const ANY_ENTRY: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM entries WHERE user_id = $1 LIMIT 1) e";
const USER_QUOTA: &str = "SELECT id, quota_bytes FROM users WHERE public_key = $1";
const SET_USED: &str = "UPDATE users SET used_bytes = $1 WHERE id = $2";

/// Writes an import in one transaction (see [`ImportOutcome`]); nothing changes unless it is
/// `Imported`.
pub async fn import_user(db: &Database, import: &Import<'_>) -> Result<ImportOutcome> {
    // The writes, as an async block whose early returns are refusals: the caller commits or rolls back
    // explicitly (a dropped transaction rolls back only when its connection is next used, and would
    // hold SQLite's write lock meanwhile).
    macro_rules! run {
        ($tx:ident, $pg:expr) => {
            async {
                if $pg {
                    sqlx::query(PG_BEGIN_WRITE)
                        .execute(&mut *$tx)
                        .await
                        .map_err(query("take the event-order lock"))?;
                }
                let found: Option<(i64, Option<i64>)> = sqlx::query_as(USER_QUOTA)
                    .bind(import.user)
                    .fetch_optional(&mut *$tx)
                    .await
                    .map_err(query("look up the user"))?;
                let created = found.is_none();
                let (user_id, quota) = match found {
                    Some((id, quota)) => {
                        let any: i64 = sqlx::query_scalar(ANY_ENTRY)
                            .bind(id)
                            .fetch_one(&mut *$tx)
                            .await
                            .map_err(query("look for the user's entries"))?;
                        if any > 0 {
                            return Ok(ImportOutcome::NotEmpty);
                        }
                        (id, quota)
                    }
                    None => {
                        if import.token_required && import.token.is_none() {
                            return Ok(ImportOutcome::TokenMissing);
                        }
                        let mut granted: (Option<i64>, Option<String>) = (None, None);
                        if let Some(token) = import.token {
                            let row: Option<(Option<String>, Option<i64>, Option<String>)> =
                                sqlx::query_as(sql::TOKEN_FOR_SIGNUP)
                                    .bind(token)
                                    .fetch_optional(&mut *$tx)
                                    .await
                                    .map_err(query("look up signup token"))?;
                            match row {
                                None => return Ok(ImportOutcome::TokenUnknown),
                                Some((Some(_), _, _)) => return Ok(ImportOutcome::TokenUsed),
                                Some((None, quota, limits)) => granted = (quota, limits),
                            }
                            let claimed = sqlx::query(sql::REDEEM_TOKEN)
                                .bind(import.user)
                                .bind(import.now)
                                .bind(token)
                                .execute(&mut *$tx)
                                .await
                                .map_err(query("redeem signup token"))?;
                            if claimed.rows_affected() != 1 {
                                return Ok(ImportOutcome::TokenUsed);
                            }
                        }
                        sqlx::query(sql::INSERT_USER)
                            .bind(import.user)
                            .bind(import.now)
                            .bind(granted.0)
                            .bind(granted.1)
                            .execute(&mut *$tx)
                            .await
                            .map_err(query("create user"))?;
                        let id: i64 = sqlx::query_scalar(sql::USER_ID)
                            .bind(import.user)
                            .fetch_one(&mut *$tx)
                            .await
                            .map_err(query("look up the user"))?;
                        (id, granted.0)
                    }
                };
                let needed: u64 = import
                    .entries
                    .iter()
                    .map(|e| e.length + FILE_OVERHEAD_BYTES as u64)
                    .sum();
                let quota = Quota::from_column(quota).unwrap_or(import.default_quota);
                if !quota.allows(0, i64::try_from(needed).unwrap_or(i64::MAX)) {
                    return Ok(ImportOutcome::QuotaExceeded { needed });
                }
                for (n, e) in import.entries.iter().enumerate() {
                    sqlx::query(INSERT_ENTRY)
                        .bind(user_id)
                        .bind(&e.path)
                        .bind(&e.hash[..])
                        .bind(e.length as i64)
                        .bind(&e.content_type)
                        .bind(&e.blob_key)
                        .bind(e.created_at)
                        .bind(e.modified_at)
                        .execute(&mut *$tx)
                        .await
                        .map_err(query("insert an entry"))?;
                    sqlx::query(INSERT_EVENT)
                        .bind(user_id)
                        .bind(&e.path)
                        .bind(&e.hash[..])
                        .bind(import.now + n as i64)
                        .execute(&mut *$tx)
                        .await
                        .map_err(query("append an event"))?;
                }
                sqlx::query(SET_USED)
                    .bind(i64::try_from(needed).unwrap_or(i64::MAX))
                    .bind(user_id)
                    .execute(&mut *$tx)
                    .await
                    .map_err(query("set the usage"))?;
                Ok(ImportOutcome::Imported { created })
            }
        };
    }
    macro_rules! finish {
        ($tx:ident, $outcome:expr) => {
            match $outcome {
                Ok(imported @ ImportOutcome::Imported { .. }) => {
                    $tx.commit().await.map_err(query("commit the import"))?;
                    Ok(imported)
                }
                refused => {
                    $tx.rollback()
                        .await
                        .map_err(query("roll the import back"))?;
                    refused
                }
            }
        };
    }
    match db {
        Database::Sqlite(pool, _) => {
            let mut conn = pool.acquire().await.map_err(query("connect"))?;
            let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE")
                .await
                .map_err(query("begin the import"))?;
            let outcome: Result<ImportOutcome> = run!(tx, false).await;
            finish!(tx, outcome)
        }
        Database::Postgres(pool, _) => {
            let mut tx = pool.begin().await.map_err(query("begin the import"))?;
            let outcome: Result<ImportOutcome> = run!(tx, true).await;
            finish!(tx, outcome)
        }
    }
}

#[cfg(test)]
mod tests {
    use homestead_config::DatabaseUrl;

    use super::*;

    fn entry(path: &str) -> UserEntry {
        UserEntry {
            path: path.into(),
            hash: [3; 32],
            length: 10,
            content_type: "text/plain".into(),
            created_at: 5,
            modified_at: 6,
            blob_key: format!("u/{path}"),
        }
    }

    #[tokio::test]
    async fn an_import_is_whole_or_refused_and_reads_back_in_one_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::connect(&DatabaseUrl::sqlite_file(&dir.path().join("m.db")), true)
            .await
            .unwrap();
        db.migrate().await.unwrap();
        let entries = [entry("/priv/x"), entry("/pub/a")];
        let mut import = Import {
            user: "u",
            token: None,
            token_required: true,
            entries: &entries,
            default_quota: Quota::Unlimited,
            now: 100,
        };
        assert_eq!(
            import_user(&db, &import).await.unwrap(),
            ImportOutcome::TokenMissing
        );
        import.token = Some("nope");
        assert_eq!(
            import_user(&db, &import).await.unwrap(),
            ImportOutcome::TokenUnknown
        );
        import.token_required = false;
        import.token = None;
        import.default_quota = Quota::Bytes(500);
        let refused = import_user(&db, &import).await.unwrap();
        assert_eq!(refused, ImportOutcome::QuotaExceeded { needed: 532 });
        assert!(
            UserSnapshot::open(&db, "u").await.unwrap().is_none(),
            "nothing imported"
        );
        import.default_quota = Quota::Unlimited;
        let done = import_user(&db, &import).await.unwrap();
        assert_eq!(done, ImportOutcome::Imported { created: true });
        assert_eq!(
            import_user(&db, &import).await.unwrap(),
            ImportOutcome::NotEmpty
        );

        let mut snapshot = UserSnapshot::open(&db, "u").await.unwrap().unwrap();
        assert_eq!(snapshot.totals().await.unwrap(), (2, 20));
        let read: Vec<UserEntry> = snapshot.entries().try_collect().await.unwrap();
        assert_eq!(read, entries);
        snapshot.close().await.unwrap();
        let Database::Sqlite(pool, _) = &db else {
            unreachable!()
        };
        let events: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT op, path, created_at FROM events ORDER BY id")
                .fetch_all(pool)
                .await
                .unwrap();
        assert_eq!(
            events,
            [
                ("PUT".into(), "/priv/x".into(), 100),
                ("PUT".into(), "/pub/a".into(), 101)
            ]
        );
    }
}

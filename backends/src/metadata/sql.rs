//! The SQL both engines share, as one `impl Metadata` written once and instantiated for each engine's
//! concrete sqlx types (a macro, because code generic over `sqlx::Database` drowns in trait bounds).
//!
//! The engine module provides: fields `read` (a pool for reads), `write` (a pool whose transactions
//! write) and `puts` (the sender of the group commit, from `start_group_commit(write)`), and constants
//! `LOCK_USER` (select a user's row for the rest of the transaction), `READ_FOR_PUT` (the same, joined
//! with the entry at a path), `WRITE_PUT` (the statement that writes a file's entry from the parameters
//! user id, path, hash, length, type, blob key, time and new usage) and `WRITE_PUT_WHOLE` (whether it
//! also moves the usage and appends the PUT event, returning its id), `BEGIN_WRITE` (the first statement of every write
//! transaction: makes event ids visible in increasing order and wakes other instances at the commit, or
//! `None`),
//! `SEPARATE_WRITE_POOL` (whether `write` is a pool of its own rather than a clone of `read`), and methods
//! `hints()` and `stop_listening()` for the wake-ups other instances send.

/// The statement that inserts or replaces a file's entry: parameters user id, path, hash, length, type,
/// blob key and time (as created and modified time); a literal, for `concat!`.
macro_rules! upsert_entry {
    () => {
        "INSERT INTO entries (user_id, path, content_hash, content_length, content_type, blob_key, created_at, modified_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
         ON CONFLICT (user_id, path) DO UPDATE SET content_hash = excluded.content_hash, \
         content_length = excluded.content_length, content_type = excluded.content_type, \
         blob_key = excluded.blob_key, modified_at = excluded.modified_at"
    };
}

/// The statement that reads a user's id, usage and quota joined with their entry at a path (or NULLs):
/// parameters public key and path; a literal, for `concat!`.
macro_rules! read_for_put {
    () => {
        "SELECT u.id, u.used_bytes, u.quota_bytes, e.content_length, e.blob_key \
         FROM users u LEFT JOIN entries e ON e.user_id = u.id AND e.path = $2 \
         WHERE u.public_key = $1"
    };
}

macro_rules! impl_metadata {
    ($engine:ty, $db:ty, $kind:expr) => {
        #[async_trait::async_trait]
        impl $crate::metadata::Metadata for $engine {
            fn kind(&self) -> homestead_config::DatabaseKind {
                $kind
            }

            async fn create_user(
                &self,
                public_key: &str,
                token: Option<&str>,
                now: $crate::metadata::Micros,
            ) -> $crate::metadata::Result<$crate::metadata::SignupOutcome> {
                use $crate::metadata::{SignupOutcome, query};
                let mut tx = self.write.begin().await.map_err(query("begin sign-up"))?;
                let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE public_key = $1")
                    .bind(public_key)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(query("look up user"))?;
                if exists.is_some() {
                    return Ok(SignupOutcome::UserExists);
                }
                let mut granted: (Option<i64>, Option<String>) = (None, None);
                if let Some(token) = token {
                    let row: Option<(Option<String>, Option<i64>, Option<String>)> = sqlx::query_as(
                        "SELECT used_by, quota_bytes, limits FROM signup_tokens WHERE token = $1",
                    )
                    .bind(token)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(query("look up signup token"))?;
                    match row {
                        None => return Ok(SignupOutcome::TokenUnknown),
                        Some((Some(_), _, _)) => return Ok(SignupOutcome::TokenUsed),
                        Some((None, quota, limits)) => granted = (quota, limits),
                    }
                    // The `used_by IS NULL` guard makes the token single-use even if two sign-ups race.
                    let claimed = sqlx::query(
                        "UPDATE signup_tokens SET used_by = $1, used_at = $2 WHERE token = $3 AND used_by IS NULL",
                    )
                    .bind(public_key)
                    .bind(now)
                    .bind(token)
                    .execute(&mut *tx)
                    .await
                    .map_err(query("redeem signup token"))?;
                    if claimed.rows_affected() != 1 {
                        return Ok(SignupOutcome::TokenUsed);
                    }
                }
                let inserted = sqlx::query(
                    "INSERT INTO users (public_key, created_at, quota_bytes, limits) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (public_key) DO NOTHING",
                )
                .bind(public_key)
                .bind(now)
                .bind(granted.0)
                .bind(granted.1)
                .execute(&mut *tx)
                .await
                .map_err(query("create user"))?;
                if inserted.rows_affected() != 1 {
                    return Ok(SignupOutcome::UserExists);
                }
                tx.commit().await.map_err(query("commit sign-up"))?;
                Ok(SignupOutcome::Created)
            }

            async fn user(&self, public_key: &str) -> $crate::metadata::Result<Option<$crate::metadata::User>> {
                use $crate::metadata::{Quota, User, query};
                let row: Option<(bool, i64, Option<i64>, i64, Option<String>)> = sqlx::query_as(
                    "SELECT disabled, used_bytes, quota_bytes, created_at, limits FROM users WHERE public_key = $1",
                )
                .bind(public_key)
                .fetch_optional(&self.read)
                .await
                .map_err(query("read user"))?;
                Ok(row.map(|(disabled, used_bytes, quota, created_at, limits)| User {
                    public_key: public_key.to_string(),
                    disabled,
                    used_bytes,
                    quota: Quota::from_column(quota),
                    created_at,
                    limits: $crate::metadata::UserLimits::from_column(limits),
                }))
            }

            async fn set_disabled(&self, public_key: &str, disabled: bool) -> $crate::metadata::Result<bool> {
                let done = sqlx::query("UPDATE users SET disabled = $1 WHERE public_key = $2")
                    .bind(disabled)
                    .bind(public_key)
                    .execute(&self.write)
                    .await
                    .map_err($crate::metadata::query("disable user"))?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_quota(
                &self,
                public_key: &str,
                quota: Option<$crate::metadata::Quota>,
            ) -> $crate::metadata::Result<bool> {
                let done = sqlx::query("UPDATE users SET quota_bytes = $1 WHERE public_key = $2")
                    .bind(quota.map($crate::metadata::Quota::to_column))
                    .bind(public_key)
                    .execute(&self.write)
                    .await
                    .map_err($crate::metadata::query("set quota"))?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_limits(
                &self,
                public_key: &str,
                quota: Option<$crate::metadata::Quota>,
                limits: &$crate::metadata::UserLimits,
            ) -> $crate::metadata::Result<bool> {
                let done = sqlx::query("UPDATE users SET quota_bytes = $1, limits = $2 WHERE public_key = $3")
                    .bind(quota.map(|q| q.to_column()))
                    .bind(limits.to_column())
                    .bind(public_key)
                    .execute(&self.write)
                    .await
                    .map_err($crate::metadata::query("set limits"))?;
                Ok(done.rows_affected() == 1)
            }

            async fn create_signup_token(
                &self,
                token: &str,
                now: $crate::metadata::Micros,
                quota: Option<$crate::metadata::Quota>,
                limits: &$crate::metadata::UserLimits,
            ) -> $crate::metadata::Result<()> {
                sqlx::query("INSERT INTO signup_tokens (token, created_at, quota_bytes, limits) VALUES ($1, $2, $3, $4)")
                    .bind(token)
                    .bind(now)
                    .bind(quota.map(|q| q.to_column()))
                    .bind(limits.to_column())
                    .execute(&self.write)
                    .await
                    .map_err($crate::metadata::query("create signup token"))?;
                Ok(())
            }

            async fn signup_token(
                &self,
                token: &str,
            ) -> $crate::metadata::Result<Option<$crate::metadata::SignupTokenRecord>> {
                let row: Option<(i64, Option<String>)> =
                    sqlx::query_as("SELECT created_at, used_by FROM signup_tokens WHERE token = $1")
                        .bind(token)
                        .fetch_optional(&self.read)
                        .await
                        .map_err($crate::metadata::query("read signup token"))?;
                Ok(row.map(|(created_at, used_by)| $crate::metadata::SignupTokenRecord {
                    token: token.to_string(),
                    created_at,
                    used_by,
                }))
            }

            async fn create_session(
                &self,
                secret_hash: &[u8; 32],
                public_key: &str,
                capabilities: &str,
                now: $crate::metadata::Micros,
            ) -> $crate::metadata::Result<bool> {
                let done = sqlx::query(
                    "INSERT INTO sessions (secret_hash, user_id, capabilities, created_at) \
                     SELECT $1, id, $2, $3 FROM users WHERE public_key = $4",
                )
                .bind(&secret_hash[..])
                .bind(capabilities)
                .bind(now)
                .bind(public_key)
                .execute(&self.write)
                .await
                .map_err($crate::metadata::query("create session"))?;
                Ok(done.rows_affected() == 1)
            }

            async fn session(
                &self,
                secret_hash: &[u8; 32],
            ) -> $crate::metadata::Result<Option<$crate::metadata::SessionRecord>> {
                use $crate::metadata::{Quota, SessionRecord, User, UserLimits};
                type Row = (String, i64, String, bool, i64, Option<i64>, i64, Option<String>);
                let row: Option<Row> = sqlx::query_as(
                    "SELECT s.capabilities, s.created_at, \
                     u.public_key, u.disabled, u.used_bytes, u.quota_bytes, u.created_at, u.limits \
                     FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.secret_hash = $1",
                )
                .bind(&secret_hash[..])
                .fetch_optional(&self.read)
                .await
                .map_err($crate::metadata::query("read session"))?;
                Ok(row.map(
                    |(capabilities, created_at, public_key, disabled, used_bytes, quota, signed_up, limits)| SessionRecord {
                        capabilities,
                        created_at,
                        user: User {
                            public_key,
                            disabled,
                            used_bytes,
                            quota: Quota::from_column(quota),
                            created_at: signed_up,
                            limits: UserLimits::from_column(limits),
                        },
                    },
                ))
            }

            async fn delete_session(&self, secret_hash: &[u8; 32]) -> $crate::metadata::Result<bool> {
                let done = sqlx::query("DELETE FROM sessions WHERE secret_hash = $1")
                    .bind(&secret_hash[..])
                    .execute(&self.write)
                    .await
                    .map_err($crate::metadata::query("delete session"))?;
                Ok(done.rows_affected() == 1)
            }

            async fn use_auth_token(
                &self,
                token_id: &[u8],
                expires_at: $crate::metadata::Micros,
                now: $crate::metadata::Micros,
            ) -> $crate::metadata::Result<bool> {
                use $crate::metadata::query;
                let mut tx = self.write.begin().await.map_err(query("begin token use"))?;
                sqlx::query("DELETE FROM used_auth_tokens WHERE expires_at < $1")
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(query("purge used tokens"))?;
                let done = sqlx::query(
                    "INSERT INTO used_auth_tokens (token_id, expires_at) VALUES ($1, $2) ON CONFLICT (token_id) DO NOTHING",
                )
                .bind(token_id)
                .bind(expires_at)
                .execute(&mut *tx)
                .await
                .map_err(query("record token use"))?;
                tx.commit().await.map_err(query("commit token use"))?;
                Ok(done.rows_affected() == 1)
            }

            async fn entry(
                &self,
                public_key: &str,
                path: &$crate::path::EntryPath,
            ) -> $crate::metadata::Result<Option<$crate::metadata::Entry>> {
                let row: Option<(Vec<u8>, i64, String, String, i64, i64)> = sqlx::query_as(
                    "SELECT e.content_hash, e.content_length, e.content_type, e.blob_key, e.created_at, e.modified_at \
                     FROM entries e JOIN users u ON u.id = e.user_id WHERE u.public_key = $1 AND e.path = $2",
                )
                .bind(public_key)
                .bind(path.as_str())
                .fetch_optional(&self.read)
                .await
                .map_err($crate::metadata::query("read entry"))?;
                Ok(row.map(|(hash, length, content_type, blob_key, created_at, modified_at)| {
                    $crate::metadata::Entry {
                        path: path.clone(),
                        content_hash: $crate::metadata::hash32(hash),
                        content_length: length as u64,
                        content_type,
                        blob_key,
                        created_at,
                        modified_at,
                    }
                }))
            }

            async fn commit_put(
                &self,
                public_key: &str,
                entry: &$crate::metadata::NewEntry,
                default_quota: $crate::metadata::Quota,
            ) -> $crate::metadata::Result<$crate::metadata::PutOutcome> {
                use $crate::metadata::{PendingPut, query};
                let (reply, outcome) = tokio::sync::oneshot::channel();
                let pending = PendingPut {
                    public_key: public_key.to_string(),
                    entry: entry.clone(),
                    default_quota,
                    reply,
                };
                if self.puts.send(pending).await.is_err() {
                    return Err(query("queue write")(sqlx::Error::PoolClosed));
                }
                outcome
                    .await
                    .unwrap_or_else(|_| Err(query("commit write")(sqlx::Error::PoolClosed)))
            }

            async fn commit_delete(
                &self,
                public_key: &str,
                path: &$crate::path::EntryPath,
                now: $crate::metadata::Micros,
            ) -> $crate::metadata::Result<Option<$crate::metadata::Deleted>> {
                use $crate::metadata::{Deleted, FILE_OVERHEAD_BYTES, query};
                let mut tx = self.write.begin().await.map_err(query("begin delete"))?;
                // The event-order lock before any user row, as the group commit takes them.
                Self::begin_write(&mut tx).await?;
                let user: Option<(i64, i64, Option<i64>)> = sqlx::query_as(Self::LOCK_USER)
                    .bind(public_key)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(query("lock user"))?;
                let Some((user_id, used, _)) = user else {
                    return Ok(None);
                };
                let old: Option<(i64, String)> = sqlx::query_as(
                    "DELETE FROM entries WHERE user_id = $1 AND path = $2 RETURNING content_length, blob_key",
                )
                .bind(user_id)
                .bind(path.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(query("delete entry"))?;
                let Some((length, blob_key)) = old else {
                    return Ok(None);
                };
                sqlx::query("UPDATE users SET used_bytes = $1 WHERE id = $2")
                    .bind((used - length - FILE_OVERHEAD_BYTES).max(0))
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(query("update used bytes"))?;
                let event_id = Self::append_event(&mut tx, "DEL", user_id, path.as_str(), None, now).await?;
                tx.commit().await.map_err(query("commit delete"))?;
                Ok(Some(Deleted { blob_key, event_id }))
            }

            async fn scan_paths(
                &self,
                public_key: &str,
                scan: &$crate::metadata::PathScan,
            ) -> $crate::metadata::Result<Vec<String>> {
                let sql = if scan.reverse {
                    "SELECT e.path FROM entries e JOIN users u ON u.id = e.user_id \
                     WHERE u.public_key = $1 AND e.path >= $2 AND e.path < $3 ORDER BY e.path DESC LIMIT $4"
                } else {
                    "SELECT e.path FROM entries e JOIN users u ON u.id = e.user_id \
                     WHERE u.public_key = $1 AND e.path >= $2 AND e.path < $3 ORDER BY e.path ASC LIMIT $4"
                };
                sqlx::query_scalar(sql)
                    .bind(public_key)
                    .bind(&scan.from)
                    .bind(&scan.until)
                    .bind(i64::from(scan.limit))
                    .fetch_all(&self.read)
                    .await
                    .map_err($crate::metadata::query("list entries"))
            }

            async fn events(
                &self,
                cursor: u64,
                limit: u32,
                filter: &$crate::metadata::EventFilter,
            ) -> $crate::metadata::Result<Vec<$crate::metadata::Event>> {
                use $crate::metadata::{Event, EventOp, hash32, query};
                let mut sql = sqlx::QueryBuilder::<$db>::new(
                    "SELECT e.id, e.op, u.public_key, e.path, e.content_hash, e.created_at \
                     FROM events e JOIN users u ON u.id = e.user_id WHERE ",
                );
                let after = if filter.reverse { " AND e.id < " } else { " AND e.id > " };
                match &filter.users {
                    Some(users) => {
                        sql.push("(");
                        for (i, (user, user_cursor)) in users.iter().enumerate() {
                            if i > 0 {
                                sql.push(" OR ");
                            }
                            sql.push("(u.public_key = ").push_bind(user.clone());
                            // A reversed scan from cursor 0 means "from the newest".
                            let bound = if filter.reverse && *user_cursor == 0 { i64::MAX } else { *user_cursor as i64 };
                            sql.push(after).push_bind(bound).push(")");
                        }
                        if users.is_empty() {
                            sql.push("FALSE");
                        }
                        sql.push(")");
                    }
                    None => {
                        let bound = if filter.reverse && cursor == 0 { i64::MAX } else { cursor as i64 };
                        sql.push("TRUE").push(after).push_bind(bound);
                    }
                }
                if !filter.path_prefixes.is_empty() {
                    sql.push(" AND (");
                    for (i, prefix) in filter.path_prefixes.iter().enumerate() {
                        if i > 0 {
                            sql.push(" OR ");
                        }
                        sql.push("substr(e.path, 1, ")
                            .push_bind(i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX))
                            .push(") = ")
                            .push_bind(prefix.clone());
                    }
                    sql.push(")");
                }
                sql.push(if filter.reverse { " ORDER BY e.id DESC" } else { " ORDER BY e.id ASC" });
                sql.push(" LIMIT ").push_bind(i64::from(limit));
                let rows: Vec<(i64, String, String, String, Option<Vec<u8>>, i64)> = sql
                    .build_query_as()
                    .fetch_all(&self.read)
                    .await
                    .map_err(query("read events"))?;
                Ok(rows
                    .into_iter()
                    .map(|(id, op, user, path, hash, created_at)| Event {
                        id: id as u64,
                        op: if op == "DEL" { EventOp::Del } else { EventOp::Put },
                        user,
                        path,
                        content_hash: hash.map(hash32),
                        created_at,
                    })
                    .collect())
            }

            async fn event_id_at(&self, created_at: $crate::metadata::Micros) -> $crate::metadata::Result<Option<u64>> {
                let id: Option<i64> = sqlx::query_scalar("SELECT MIN(id) FROM events WHERE created_at = $1")
                    .bind(created_at)
                    .fetch_one(&self.read)
                    .await
                    .map_err($crate::metadata::query("find event by time"))?;
                Ok(id.map(|id| id as u64))
            }

            async fn active_users_with_packets(&self) -> $crate::metadata::Result<Vec<(String, Option<Vec<u8>>)>> {
                sqlx::query_as("SELECT public_key, pkarr_packet FROM users WHERE NOT disabled ORDER BY id")
                    .fetch_all(&self.read)
                    .await
                    .map_err($crate::metadata::query("list users for republishing"))
            }

            async fn store_pkarr_packet(&self, public_key: &str, packet: &[u8]) -> $crate::metadata::Result<()> {
                sqlx::query("UPDATE users SET pkarr_packet = $1 WHERE public_key = $2")
                    .bind(packet)
                    .bind(public_key)
                    .execute(&self.write)
                    .await
                    .map_err($crate::metadata::query("store a user's PKARR packet"))?;
                Ok(())
            }

            async fn list_users(&self, after: Option<&str>, limit: u32) -> $crate::metadata::Result<Vec<$crate::metadata::User>> {
                use $crate::metadata::{Quota, User, query};
                let rows: Vec<(String, bool, i64, Option<i64>, i64, Option<String>)> = sqlx::query_as(
                    "SELECT public_key, disabled, used_bytes, quota_bytes, created_at, limits FROM users \
                     WHERE public_key > $1 ORDER BY public_key LIMIT $2",
                )
                .bind(after.unwrap_or_default())
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await
                .map_err(query("list users"))?;
                Ok(rows
                    .into_iter()
                    .map(|(public_key, disabled, used_bytes, quota, created_at, limits)| User {
                        public_key,
                        disabled,
                        used_bytes,
                        quota: Quota::from_column(quota),
                        created_at,
                        limits: $crate::metadata::UserLimits::from_column(limits),
                    })
                    .collect())
            }

            async fn list_signup_tokens(
                &self,
                after: Option<&str>,
                limit: u32,
            ) -> $crate::metadata::Result<Vec<$crate::metadata::SignupTokenRecord>> {
                let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(
                    "SELECT token, created_at, used_by FROM signup_tokens WHERE token > $1 ORDER BY token LIMIT $2",
                )
                .bind(after.unwrap_or_default())
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await
                .map_err($crate::metadata::query("list signup tokens"))?;
                Ok(rows
                    .into_iter()
                    .map(|(token, created_at, used_by)| $crate::metadata::SignupTokenRecord { token, created_at, used_by })
                    .collect())
            }

            async fn counts(&self) -> $crate::metadata::Result<$crate::metadata::Counts> {
                let (users, disabled_users, used_bytes): (i64, i64, i64) = sqlx::query_as(
                    "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN disabled THEN 1 ELSE 0 END), 0) AS BIGINT), \
                     CAST(COALESCE(SUM(used_bytes), 0) AS BIGINT) FROM users",
                )
                .fetch_one(&self.read)
                .await
                .map_err($crate::metadata::query("count users"))?;
                let (tokens, unused): (i64, i64) = sqlx::query_as(
                    "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN used_by IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT) \
                     FROM signup_tokens",
                )
                .fetch_one(&self.read)
                .await
                .map_err($crate::metadata::query("count signup tokens"))?;
                let count = |n: i64| u64::try_from(n).unwrap_or(0);
                Ok($crate::metadata::Counts {
                    users: count(users),
                    disabled_users: count(disabled_users),
                    used_bytes: count(used_bytes),
                    signup_tokens: count(tokens),
                    unused_signup_tokens: count(unused),
                })
            }

            fn pool_stats(&self) -> Vec<(&'static str, u32, u32)> {
                let stat = |name, pool: &sqlx::Pool<$db>| (name, pool.size(), u32::try_from(pool.num_idle()).unwrap_or(u32::MAX));
                if Self::SEPARATE_WRITE_POOL {
                    vec![stat("read", &self.read), stat("write", &self.write)]
                } else {
                    vec![stat("main", &self.read)]
                }
            }

            fn event_hints(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
                self.hints()
            }

            async fn unreferenced_blobs(&self, keys: &[String]) -> $crate::metadata::Result<Vec<String>> {
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                let mut sql = sqlx::QueryBuilder::<$db>::new("SELECT blob_key FROM entries WHERE blob_key IN (");
                let mut list = sql.separated(", ");
                for key in keys {
                    list.push_bind(key.clone());
                }
                sql.push(")");
                let referenced: std::collections::HashSet<String> = sql
                    .build_query_scalar()
                    .fetch_all(&self.read)
                    .await
                    .map_err($crate::metadata::query("find referenced blobs"))?
                    .into_iter()
                    .collect();
                Ok(keys.iter().filter(|k| !referenced.contains(*k)).cloned().collect())
            }

            async fn ping(&self) -> $crate::metadata::Result<()> {
                sqlx::query("SELECT 1")
                    .execute(&self.probe)
                    .await
                    .map_err($crate::metadata::query("ping"))?;
                Ok(())
            }

            async fn close(&self) {
                self.stop_listening();
                self.read.close().await;
                self.write.close().await;
                self.probe.close().await;
            }
        }

        impl $engine {
            /// Starts a write transaction with the engine's `BEGIN_WRITE`, if it has one.
            async fn begin_write(tx: &mut sqlx::Transaction<'_, $db>) -> $crate::metadata::Result<()> {
                if let Some(lock) = Self::BEGIN_WRITE {
                    sqlx::query(lock)
                        .execute(&mut **tx)
                        .await
                        .map_err($crate::metadata::query("lock event order"))?;
                }
                Ok(())
            }

            /// Starts the group commit on `pool`: writes queued on the returned sender are committed
            /// together, as many as are waiting (up to `MAX_BATCH`), one transaction at a time.
            fn start_group_commit(
                pool: sqlx::Pool<$db>,
            ) -> tokio::sync::mpsc::Sender<$crate::metadata::PendingPut> {
                let (sender, receiver) = tokio::sync::mpsc::channel($crate::metadata::MAX_BATCH * 4);
                tokio::spawn(Self::group_commit(pool, receiver));
                sender
            }

            async fn group_commit(
                pool: sqlx::Pool<$db>,
                mut receiver: tokio::sync::mpsc::Receiver<$crate::metadata::PendingPut>,
            ) {
                while let Some(first) = receiver.recv().await {
                    let mut batch = vec![first];
                    while batch.len() < $crate::metadata::MAX_BATCH {
                        match receiver.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    let outcomes = match Self::commit_batch(&pool, &batch).await {
                        // One write's statement failed and took the shared transaction with it: nothing
                        // was committed, so each write is tried again in a transaction of its own.
                        Err(err) if batch.len() > 1 && $crate::metadata::failed_statement(&err) => {
                            let mut outcomes = Vec::with_capacity(batch.len());
                            for pending in &batch {
                                let alone = Self::commit_batch(&pool, std::slice::from_ref(pending)).await;
                                outcomes.push(alone.and_then(|mut one| {
                                    one.pop().ok_or_else(|| $crate::metadata::query("commit write")(sqlx::Error::RowNotFound))
                                }));
                            }
                            outcomes
                        }
                        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
                        Err(err) if batch.len() == 1 => vec![Err(err)],
                        Err(err) => {
                            let text = err.to_string();
                            batch
                                .iter()
                                .map(|_| Err($crate::metadata::query("commit write")(sqlx::Error::Protocol(text.clone()))))
                                .collect()
                        }
                    };
                    for (pending, outcome) in batch.into_iter().zip(outcomes) {
                        let _ = pending.reply.send(outcome);
                    }
                }
            }

            /// Commits `batch` in one transaction; any error fails the whole transaction (see
            /// [`failed_statement`](crate::metadata::failed_statement) for when the writes are retried alone).
            async fn commit_batch(
                pool: &sqlx::Pool<$db>,
                batch: &[$crate::metadata::PendingPut],
            ) -> $crate::metadata::Result<Vec<$crate::metadata::PutOutcome>> {
                use $crate::metadata::query;
                let mut tx = pool.begin().await.map_err(query("begin write"))?;
                // The order lock first, then user rows, in every write transaction: no deadlock between
                // instances or with deletes.
                Self::begin_write(&mut tx).await?;
                let mut outcomes = Vec::with_capacity(batch.len());
                for pending in batch {
                    outcomes.push(Self::put_in_tx(&mut tx, &pending.public_key, &pending.entry, pending.default_quota).await?);
                }
                tx.commit().await.map_err(query("commit write"))?;
                Ok(outcomes)
            }

            /// One write inside the batch's transaction: checks the quota under the user's row lock,
            /// records the entry, the user's usage and the event.
            async fn put_in_tx(
                tx: &mut sqlx::Transaction<'_, $db>,
                public_key: &str,
                entry: &$crate::metadata::NewEntry,
                default_quota: $crate::metadata::Quota,
            ) -> $crate::metadata::Result<$crate::metadata::PutOutcome> {
                use $crate::metadata::{FILE_OVERHEAD_BYTES, PutOutcome, Quota, query};
                // The caller holds the event-order lock, so no other write can change this path's entry
                // before the commit; the user's row lock guards usage against the admin.
                let read: Option<(i64, i64, Option<i64>, Option<i64>, Option<String>)> =
                    sqlx::query_as(Self::READ_FOR_PUT)
                        .bind(public_key)
                        .bind(entry.path.as_str())
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(query("lock user"))?;
                let Some((user_id, used, quota, old_length, old_blob)) = read else {
                    return Ok(PutOutcome::NoSuchUser);
                };
                let new_length = entry.content_length as i64;
                let delta = match old_length {
                    Some(old_length) => new_length - old_length,
                    None => new_length + FILE_OVERHEAD_BYTES,
                };
                let limit = Quota::from_column(quota).unwrap_or(default_quota);
                if !limit.allows(used, delta) {
                    return Ok(PutOutcome::QuotaExceeded);
                }
                let used = (used + delta).max(0);
                let write = sqlx::query(Self::WRITE_PUT)
                    .bind(user_id)
                    .bind(entry.path.as_str())
                    .bind(&entry.content_hash[..])
                    .bind(new_length)
                    .bind(&entry.content_type)
                    .bind(&entry.blob_key)
                    .bind(entry.now)
                    .bind(used);
                let event_id = if Self::WRITE_PUT_WHOLE {
                    let row = write.fetch_one(&mut **tx).await.map_err(query("write entry"))?;
                    let id: i64 = sqlx::Row::try_get(&row, 0).map_err(query("write entry"))?;
                    id as u64
                } else {
                    write.execute(&mut **tx).await.map_err(query("write entry"))?;
                    sqlx::query("UPDATE users SET used_bytes = $1 WHERE id = $2")
                        .bind(used)
                        .bind(user_id)
                        .execute(&mut **tx)
                        .await
                        .map_err(query("update used bytes"))?;
                    Self::append_event(tx, "PUT", user_id, entry.path.as_str(), Some(&entry.content_hash[..]), entry.now).await?
                };
                Ok(PutOutcome::Committed {
                    // Never the new blob itself, whatever the database said.
                    replaced_blob: old_blob.filter(|old| *old != entry.blob_key),
                    event_id,
                })
            }

            /// Appends an event inside the caller's transaction and returns its id.
            async fn append_event(
                tx: &mut sqlx::Transaction<'_, $db>,
                op: &str,
                user_id: i64,
                path: &str,
                content_hash: Option<&[u8]>,
                now: $crate::metadata::Micros,
            ) -> $crate::metadata::Result<u64> {
                use $crate::metadata::query;
                // The caller took the event-order lock when its transaction began.
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO events (op, user_id, path, content_hash, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                )
                .bind(op)
                .bind(user_id)
                .bind(path)
                .bind(content_hash)
                .bind(now)
                .fetch_one(&mut **tx)
                .await
                .map_err(query("append event"))?;
                Ok(id as u64)
            }
        }
    };
}

pub(crate) use {impl_metadata, read_for_put, upsert_entry};

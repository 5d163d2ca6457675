//! The SQL both engines share: statements as named constants, rows mapped to types by plain functions,
//! the decisions of a write and of a bearer mint from their locked reads and the statements built at
//! run time; and a macro that implements [`Files`], [`Accounts`], [`Grants`], [`Locks`] and
//! [`Operations`] for one engine by naming its sqlx database type in plain code that binds, runs and
//! maps (a macro, because code generic over `sqlx::Database` drowns in trait bounds).
//!
//! The engine module provides: fields `read` (a pool for reads), `write` (a pool whose transactions
//! write), `probe` (the health probe's pool), `puts` (the sender of the group commit, from
//! `group_commit::start(write)`) and `nonces` (the sender of the PoP nonce checks, from
//! `pop_nonces::start(write)`), and constants `READ_FOR_PUT` (select a user's row for the rest of
//! the transaction, joined with the entry at a path), `LOCK_GRANT` (a grant's
//! row, as [`read_grant`] reads it, for the rest of the transaction), `WRITE_PUT` (the statement
//! that writes a file's entry from the parameters user id, path, hash, length, type, blob key, time and
//! new usage) and `WRITE_PUT_WHOLE` (whether it also moves the usage and appends the PUT event,
//! returning its id), `BEGIN_WRITE` (the first statement of every write transaction: makes event ids
//! visible in increasing order and wakes other instances at the commit, or `None`),
//! `SEPARATE_WRITE_POOL` (whether `write` is a pool of its own rather than a clone of `read`), the lock
//! statements of [`lock_statements!`] built on its database clock, `NOTIFY_REVOCATION` (a statement
//! announcing the payload `$1` of a revocation with its transaction's commit, or `None`: the engine then
//! announces on its field `revocations` itself), and methods `hints()` and `stop_listening()` for the
//! wake-ups other instances send.
//!
//! [`Files`]: super::Files
//! [`Accounts`]: super::Accounts
//! [`Grants`]: super::Grants
//! [`Locks`]: super::Locks
//! [`Operations`]: super::Operations

use super::{
    BearerRecord, Counts, Current, DeleteOutcome, Entry, Event, EventFilter, EventOp,
    FILE_OVERHEAD_BYTES, GrantRecord, MintOutcome, NewEntry, NewGrant, PutOutcome, Quota,
    SessionRecord, SignupTokenRecord, TokenState, User, UserLimits, UserOrder, UserPage, UserState,
    Version, WriteMode,
};
use crate::path::EntryPath;

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
/// parameters public key and path; a literal, for `concat!`. Its row is a [`PutRow`].
macro_rules! read_for_put {
    () => {
        "SELECT u.id, u.used_bytes, u.quota_bytes, e.content_length, e.blob_key, e.content_hash, \
         e.modified_at \
         FROM users u LEFT JOIN entries e ON e.user_id = u.id AND e.path = $2 \
         WHERE u.public_key = $1"
    };
}

// Accounts.

/// A user's id by key.
pub(super) const USER_ID: &str = "SELECT id FROM users WHERE public_key = $1";
/// What sign-up needs of a token: who redeemed it, and the quota and limits it grants.
pub(super) const TOKEN_FOR_SIGNUP: &str =
    "SELECT used_by, quota_bytes, limits FROM signup_tokens WHERE token = $1";
/// Redeems a token: parameters user, time, token. The `used_by IS NULL` guard makes the token
/// single-use even if two sign-ups race.
pub(super) const REDEEM_TOKEN: &str =
    "UPDATE signup_tokens SET used_by = $1, used_at = $2 WHERE token = $3 AND used_by IS NULL";
/// Creates a user: parameters key, time, quota, limits.
pub(super) const INSERT_USER: &str = "INSERT INTO users (public_key, created_at, quota_bytes, limits) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (public_key) DO NOTHING";
/// The columns of a [`UserRow`] from `users`; a literal, for `concat!`.
macro_rules! user_columns {
    () => {
        "public_key, disabled, used_bytes, quota_bytes, created_at, limits"
    };
}

/// A user by key, as a [`UserRow`].
pub(super) const USER: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM users WHERE public_key = $1"
);
/// Where a user listing's cursor user stands: sign-up time, usage and id, as a [`CursorRow`].
pub(super) const USER_POSITION: &str =
    "SELECT created_at, used_bytes, id FROM users WHERE public_key = $1";
/// Parameters flag, key.
pub(super) const SET_DISABLED: &str = "UPDATE users SET disabled = $1 WHERE public_key = $2";
/// Parameters quota, key.
pub(super) const SET_QUOTA: &str = "UPDATE users SET quota_bytes = $1 WHERE public_key = $2";
/// Parameters quota, limits, key.
pub(super) const SET_LIMITS: &str =
    "UPDATE users SET quota_bytes = $1, limits = $2 WHERE public_key = $3";
/// Parameters token, time, quota, limits.
pub(super) const INSERT_SIGNUP_TOKEN: &str =
    "INSERT INTO signup_tokens (token, created_at, quota_bytes, limits) VALUES ($1, $2, $3, $4)";
/// The columns of a [`TokenRow`]; a literal, for `concat!`.
macro_rules! token_columns {
    () => {
        "SELECT token, created_at, used_by, used_at, quota_bytes, limits FROM signup_tokens"
    };
}

/// A token by text, as a [`TokenRow`].
pub(super) const SIGNUP_TOKEN: &str = concat!(token_columns!(), " WHERE token = $1");
/// Parameters secret hash, capabilities, time, key.
pub(super) const INSERT_SESSION: &str = "INSERT INTO sessions (secret_hash, user_id, capabilities, created_at) \
     SELECT $1, id, $2, $3 FROM users WHERE public_key = $4";
/// A session with its user, as a [`SessionRow`].
pub(super) const SESSION: &str = "SELECT s.capabilities, s.created_at, \
     u.public_key, u.disabled, u.used_bytes, u.quota_bytes, u.created_at, u.limits \
     FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.secret_hash = $1";
/// Parameter secret hash.
pub(super) const DELETE_SESSION: &str = "DELETE FROM sessions WHERE secret_hash = $1";
/// Parameter the current time.
pub(super) const PURGE_USED_TOKENS: &str = "DELETE FROM used_auth_tokens WHERE expires_at < $1";
/// Parameters token id, expiry; affects no row on a replay.
pub(super) const INSERT_USED_TOKEN: &str = "INSERT INTO used_auth_tokens (token_id, expires_at) \
     VALUES ($1, $2) ON CONFLICT (token_id) DO NOTHING";
/// Every enabled user with their packet.
pub(super) const ACTIVE_USERS_WITH_PACKETS: &str =
    "SELECT public_key, pkarr_packet FROM users WHERE NOT disabled ORDER BY id";
/// Parameters packet, key.
pub(super) const STORE_PKARR_PACKET: &str =
    "UPDATE users SET pkarr_packet = $1 WHERE public_key = $2";

// Grants.

/// The columns of a [`GrantRow`] from `grants g JOIN users u`; a literal, for `concat!`.
macro_rules! grant_columns {
    () => {
        "g.id, u.public_key, g.client_id, g.cnf, g.capabilities, g.issued_at, g.expires_at, \
         g.revoked_at, g.created_at"
    };
}

/// The statement that reads a grant by id (parameter 1) with its user's key, as a [`GrantRow`]; a
/// literal, for `concat!`.
macro_rules! read_grant {
    () => {
        concat!(
            "SELECT ",
            $crate::metadata::sql::grant_columns!(),
            " FROM grants g JOIN users u ON u.id = g.user_id WHERE g.id = $1"
        )
    };
}

/// Parameter the oldest time kept.
pub(super) const PURGE_POP_NONCES: &str = "DELETE FROM pop_nonces WHERE created_at < $1";
/// Parameters id, user id, client id, cnf, capabilities, issue time, expiry, time; a grant stored
/// already is left as it is.
pub(super) const INSERT_GRANT: &str = "INSERT INTO grants \
     (id, user_id, client_id, cnf, capabilities, issued_at, expires_at, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING";
/// A grant by id, as a [`GrantRow`].
pub(super) const GRANT: &str = read_grant!();
/// Parameter grant id.
pub(super) const DELETE_GRANT_SESSIONS: &str = "DELETE FROM grant_sessions WHERE grant_id = $1";
/// Parameters token hash, grant id, expiry, time.
pub(super) const INSERT_GRANT_SESSION: &str = "INSERT INTO grant_sessions (token_hash, grant_id, expires_at, created_at) \
     VALUES ($1, $2, $3, $4)";
/// A live bearer with its grant and user, as a [`BearerRow`]: parameters token hash, the time.
pub(super) const BEARER: &str = "SELECT g.id, g.client_id, g.cnf, g.capabilities, g.issued_at, g.expires_at, \
     g.revoked_at, g.created_at, s.expires_at, \
     u.public_key, u.disabled, u.used_bytes, u.quota_bytes, u.created_at, u.limits \
     FROM grant_sessions s JOIN grants g ON g.id = s.grant_id JOIN users u ON u.id = g.user_id \
     WHERE s.token_hash = $1 AND s.expires_at > $2 AND g.revoked_at IS NULL AND g.expires_at > $2";
/// Parameters time, grant id.
pub(super) const REVOKE_GRANT: &str = "UPDATE grants SET revoked_at = $1 WHERE id = $2";
/// A user's live grants, as [`GrantRow`]s: parameters key, the time.
pub(super) const LIVE_GRANTS: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM grants g JOIN users u ON u.id = g.user_id \
     WHERE u.public_key = $1 AND g.revoked_at IS NULL AND g.expires_at > $2 \
     ORDER BY g.created_at, g.id"
);

// Locks.

/// Deletes the lock with a token on a path, expired or not: parameters owner key, path, token.
pub(super) const RELEASE_LOCK: &str = "DELETE FROM entry_locks \
     WHERE user_id = (SELECT id FROM users WHERE public_key = $1) AND path = $2 AND token = $3";

/// The lock statements (PROTOCOL-0.17 §17) as associated constants of an engine whose current time, in
/// milliseconds since the Unix epoch on the database's clock, is the SQL expression `$now`: every lifetime
/// is computed in SQL, so instances with different clocks agree on it.
macro_rules! lock_statements {
    ($now:literal) => {
        /// Deletes the expired locks of every path.
        const SWEEP_LOCKS: &'static str =
            concat!("DELETE FROM entry_locks WHERE expires_at <= ", $now);
        /// Inserts a lock, or replaces an expired one on its path, in one statement: parameters owner
        /// key, path, token, seconds; returns the token when the path was taken (no row: a live lock
        /// holds it, or there is no such user).
        const TAKE_LOCK: &'static str = concat!(
            "INSERT INTO entry_locks (user_id, path, token, expires_at) SELECT id, $2, $3, ",
            $now,
            " + $4 * 1000 FROM users WHERE public_key = $1 \
             ON CONFLICT (user_id, path) DO UPDATE SET token = excluded.token, \
             expires_at = excluded.expires_at WHERE entry_locks.expires_at <= ",
            $now,
            " RETURNING token"
        );
        /// The token of the live lock on a path: parameters owner key, path.
        const LIVE_LOCK: &'static str = concat!(
            "SELECT l.token FROM entry_locks l JOIN users u ON u.id = l.user_id \
             WHERE u.public_key = $1 AND l.path = $2 AND l.expires_at > ",
            $now
        );
        /// Restarts a live lock's lifetime, possibly shortening it: parameters token, seconds.
        const REFRESH_LOCK: &'static str = concat!(
            "UPDATE entry_locks SET expires_at = ",
            $now,
            " + $2 * 1000 WHERE token = $1 AND expires_at > ",
            $now
        );
        /// Pushes a live lock's expiry to at least now + the seconds, never shortening it: parameters
        /// token, seconds.
        const KEEP_LOCK_ALIVE: &'static str = concat!(
            "UPDATE entry_locks SET expires_at = CASE WHEN expires_at < ",
            $now,
            " + $2 * 1000 THEN ",
            $now,
            " + $2 * 1000 ELSE expires_at END WHERE token = $1 AND expires_at > ",
            $now
        );
    };
}

// Files.

/// An entry by user key and path, as an [`EntryRow`].
pub(super) const ENTRY: &str = "SELECT e.content_hash, e.content_length, e.content_type, e.blob_key, \
     e.created_at, e.modified_at \
     FROM entries e JOIN users u ON u.id = e.user_id WHERE u.public_key = $1 AND e.path = $2";
/// Parameters user id, path; returns the removed entry's length and blob.
pub(super) const DELETE_ENTRY: &str =
    "DELETE FROM entries WHERE user_id = $1 AND path = $2 RETURNING content_length, blob_key";
/// Parameters usage, user id.
pub(super) const SET_USED_BYTES: &str = "UPDATE users SET used_bytes = $1 WHERE id = $2";
/// Parameters op, user id, path, hash, time; returns the id.
pub(super) const INSERT_EVENT: &str = "INSERT INTO events (op, user_id, path, content_hash, created_at) \
     VALUES ($1, $2, $3, $4, $5) RETURNING id";
/// Paths in a range, ascending: parameters key, from, until, limit.
pub(super) const SCAN_PATHS: &str = "SELECT e.path FROM entries e JOIN users u ON u.id = e.user_id \
     WHERE u.public_key = $1 AND e.path >= $2 AND e.path < $3 ORDER BY e.path ASC LIMIT $4";
/// [`SCAN_PATHS`], descending.
pub(super) const SCAN_PATHS_REVERSE: &str = "SELECT e.path FROM entries e JOIN users u ON u.id = e.user_id \
     WHERE u.public_key = $1 AND e.path >= $2 AND e.path < $3 ORDER BY e.path DESC LIMIT $4";
/// Parameter the time.
pub(super) const EVENT_ID_AT: &str = "SELECT MIN(id) FROM events WHERE created_at = $1";

// Operations.

/// Users, disabled users and used bytes.
pub(super) const COUNT_USERS: &str = "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN disabled THEN 1 ELSE 0 END), 0) AS BIGINT), \
     CAST(COALESCE(SUM(used_bytes), 0) AS BIGINT) FROM users";
/// Tokens and unused tokens.
pub(super) const COUNT_SIGNUP_TOKENS: &str = "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN used_by IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT) \
     FROM signup_tokens";
/// PoP nonces held.
pub(super) const COUNT_POP_NONCES: &str = "SELECT COUNT(*) FROM pop_nonces";
/// The health probe.
pub(super) const PING: &str = "SELECT 1";

/// A parameter of a statement built at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Param {
    /// Text.
    Text(String),
    /// A 64-bit integer.
    BigInt(i64),
    /// A 32-bit integer (where the function called takes an `integer`).
    Int(i32),
}

/// The statement finding which of `count` blob keys (its parameters) an entry references.
pub(super) fn referenced_blobs(count: usize) -> String {
    let list: Vec<String> = (1..=count).map(|n| format!("${n}")).collect();
    format!(
        "SELECT blob_key FROM entries WHERE blob_key IN ({})",
        list.join(", ")
    )
}

/// The statement recording `count` nonces (parameters nonce, time for each) and returning those it
/// recorded (a nonce recorded already is left as it is).
pub(super) fn insert_pop_nonces(count: usize) -> String {
    let rows: Vec<String> = (0..count)
        .map(|n| format!("(${}, ${})", 2 * n + 1, 2 * n + 2))
        .collect();
    format!(
        "INSERT INTO pop_nonces (nonce, created_at) VALUES {} \
         ON CONFLICT (nonce) DO NOTHING RETURNING nonce",
        rows.join(", ")
    )
}

/// The keys of `keys` that are not `referenced`, in order.
pub(super) fn unreferenced(keys: &[String], referenced: Vec<String>) -> Vec<String> {
    let referenced: std::collections::HashSet<String> = referenced.into_iter().collect();
    keys.iter()
        .filter(|key| !referenced.contains(*key))
        .cloned()
        .collect()
}

/// The statement and parameters of a page of events (as [`EventRow`]s) after (before, when reversed)
/// `cursor`, or each user's own cursor.
pub(super) fn events(cursor: u64, limit: u32, filter: &EventFilter) -> (String, Vec<Param>) {
    let mut statement = String::from(
        "SELECT e.id, e.op, u.public_key, e.path, e.content_hash, e.created_at \
         FROM events e JOIN users u ON u.id = e.user_id WHERE ",
    );
    let mut params = Vec::new();
    let mut bind = |statement: &mut String, param: Param| {
        params.push(param);
        statement.push_str(&format!("${}", params.len()));
    };
    let after = if filter.reverse {
        " AND e.id < "
    } else {
        " AND e.id > "
    };
    // A reversed scan from cursor 0 means "from the newest".
    let bound = |cursor: u64| match filter.reverse && cursor == 0 {
        true => i64::MAX,
        false => cursor as i64,
    };
    match &filter.users {
        Some(users) => {
            let mut any = Vec::new();
            for (user, user_cursor) in users {
                let mut one = String::from("(u.public_key = ");
                bind(&mut one, Param::Text(user.clone()));
                one.push_str(after);
                bind(&mut one, Param::BigInt(bound(*user_cursor)));
                one.push(')');
                any.push(one);
            }
            if any.is_empty() {
                any.push("FALSE".into());
            }
            statement.push_str(&format!("({})", any.join(" OR ")));
        }
        None => {
            statement.push_str("TRUE");
            statement.push_str(after);
            bind(&mut statement, Param::BigInt(bound(cursor)));
        }
    }
    if !filter.paths.is_empty() {
        let mut any = Vec::new();
        for path in &filter.paths {
            let mut one = String::new();
            if path.ends_with('/') {
                one.push_str("substr(e.path, 1, ");
                let length = i32::try_from(path.chars().count()).unwrap_or(i32::MAX);
                bind(&mut one, Param::Int(length));
                one.push_str(") = ");
            } else {
                one.push_str("e.path = ");
            }
            bind(&mut one, Param::Text(path.clone()));
            any.push(one);
        }
        statement.push_str(&format!(" AND ({})", any.join(" OR ")));
    }
    statement.push_str(match filter.reverse {
        true => " ORDER BY e.id DESC LIMIT ",
        false => " ORDER BY e.id ASC LIMIT ",
    });
    bind(&mut statement, Param::BigInt(i64::from(limit)));
    (statement, params)
}

/// The statement of a page of users (as [`UserRow`]s), keyset-paginated on (order column, id): with a
/// cursor, parameters the cursor user's order value, id, then the limit; without, the limit alone.
/// Sign-up time has an index on (created_at, id); usage has none, so that the writes that move it keep
/// touching no index of `users` (a listing by usage reads the table once and sorts it).
pub(super) fn users_page(page: &UserPage<'_>) -> String {
    let column = match page.order {
        UserOrder::CreatedAt => "created_at",
        UserOrder::UsedBytes => "used_bytes",
    };
    let (after, direction) = match page.reverse {
        false => (">", "ASC"),
        true => ("<", "DESC"),
    };
    let mut conditions = Vec::new();
    match page.state {
        UserState::All => {}
        UserState::Enabled => conditions.push("NOT disabled".to_string()),
        UserState::Disabled => conditions.push("disabled".to_string()),
    }
    let limit = if page.after.is_some() {
        conditions.push(format!("({column}, id) {after} ($1, $2)"));
        "$3"
    } else {
        "$1"
    };
    let conditions = match conditions.is_empty() {
        true => "TRUE".to_string(),
        false => conditions.join(" AND "),
    };
    format!(
        concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE {} ORDER BY {} {}, id {} LIMIT {}"
        ),
        conditions, column, direction, direction, limit
    )
}

/// The order value and id of a user listing's cursor from its [`CursorRow`].
pub(super) fn user_position(
    order: UserOrder,
    (created_at, used_bytes, id): CursorRow,
) -> (i64, i64) {
    match order {
        UserOrder::CreatedAt => (created_at, id),
        UserOrder::UsedBytes => (used_bytes, id),
    }
}

/// The statement of a page of signup tokens (as [`TokenRow`]s) by text: parameters the text to start
/// after (`""` for the first page) and the limit.
pub(super) fn tokens_page(state: TokenState) -> &'static str {
    match state {
        TokenState::All => concat!(
            token_columns!(),
            " WHERE token > $1 ORDER BY token LIMIT $2"
        ),
        TokenState::Used => concat!(
            token_columns!(),
            " WHERE token > $1 AND used_by IS NOT NULL ORDER BY token LIMIT $2"
        ),
        TokenState::Unused => concat!(
            token_columns!(),
            " WHERE token > $1 AND used_by IS NULL ORDER BY token LIMIT $2"
        ),
    }
}

// Rows.

/// Key, disabled, used bytes, quota, sign-up time, limits.
pub(super) type UserRow = (String, bool, i64, Option<i64>, i64, Option<String>);
/// Capabilities and creation time, then the user's [`UserRow`].
pub(super) type SessionRow = (
    String,
    i64,
    String,
    bool,
    i64,
    Option<i64>,
    i64,
    Option<String>,
);
/// Token, creation time, redeemer, redemption time, quota, limits.
pub(super) type TokenRow = (
    String,
    i64,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);
/// A user's sign-up time, usage and id.
pub(super) type CursorRow = (i64, i64, i64);
/// Id, user key, client id, cnf, capabilities, issue time, expiry, revocation, creation time.
pub(super) type GrantRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    i64,
);
/// A [`GrantRow`] without the user key, the bearer's expiry, then the user's [`UserRow`].
pub(super) type BearerRow = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    i64,
    i64,
    String,
    bool,
    i64,
    Option<i64>,
    i64,
    Option<String>,
);
/// Hash, length, type, blob key, creation and modification time.
pub(super) type EntryRow = (Vec<u8>, i64, String, String, i64, i64);
/// Id, op, user key, path, hash, time.
pub(super) type EventRow = (i64, String, String, String, Option<Vec<u8>>, i64);
/// User id, used bytes, own quota, then the current entry's length, blob, hash and modification time
/// (NULLs when none).
pub(super) type PutRow = (
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<Vec<u8>>,
    Option<i64>,
);

/// A user from a [`UserRow`].
pub(super) fn user(row: UserRow) -> User {
    let (public_key, disabled, used_bytes, quota, created_at, limits) = row;
    User {
        public_key,
        disabled,
        used_bytes,
        quota: Quota::from_column(quota),
        created_at,
        limits: UserLimits::from_column(limits),
    }
}

/// A session from a [`SessionRow`].
pub(super) fn session(row: SessionRow) -> SessionRecord {
    let (capabilities, created_at, public_key, disabled, used_bytes, quota, signed_up, limits) =
        row;
    SessionRecord {
        capabilities,
        created_at,
        user: user((public_key, disabled, used_bytes, quota, signed_up, limits)),
    }
}

/// A grant from a [`GrantRow`].
pub(super) fn grant(row: GrantRow) -> GrantRecord {
    GrantRecord {
        id: row.0,
        public_key: row.1,
        client_id: row.2,
        cnf: row.3,
        capabilities: row.4,
        issued_at: row.5,
        expires_at: row.6,
        revoked_at: row.7,
        created_at: row.8,
    }
}

/// A bearer from a [`BearerRow`].
pub(super) fn bearer(row: BearerRow) -> BearerRecord {
    let (id, client_id, cnf, capabilities, issued_at, grant_expires_at, revoked_at, created_at) =
        (row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7);
    let user = user((row.9, row.10, row.11, row.12, row.13, row.14));
    BearerRecord {
        grant: GrantRecord {
            id,
            public_key: user.public_key.clone(),
            client_id,
            cnf,
            capabilities,
            issued_at,
            expires_at: grant_expires_at,
            revoked_at,
            created_at,
        },
        expires_at: row.8,
        user,
    }
}

/// Decides a mint from the grant as stored and locked: [`MintOutcome::Minted`] with it when `grant`
/// is its owner's and it is neither revoked nor expired at `now`, else the refusal (ownership first).
pub(super) fn mint_check(stored: GrantRecord, grant: &NewGrant, now: i64) -> MintOutcome {
    if stored.public_key != grant.public_key || stored.cnf != grant.cnf {
        MintOutcome::NotOwner
    } else if stored.revoked_at.is_some() {
        MintOutcome::Revoked
    } else if stored.expires_at <= now {
        MintOutcome::Expired
    } else {
        MintOutcome::Minted(stored)
    }
}

/// A signup token from a [`TokenRow`].
pub(super) fn signup_token(row: TokenRow) -> SignupTokenRecord {
    let (token, created_at, used_by, used_at, quota, limits) = row;
    SignupTokenRecord {
        token,
        created_at,
        used_by,
        used_at,
        quota: Quota::from_column(quota),
        limits: UserLimits::from_column(limits),
    }
}

/// The entry at `path` from an [`EntryRow`].
pub(super) fn entry(path: &EntryPath, row: EntryRow) -> Entry {
    let (hash, length, content_type, blob_key, created_at, modified_at) = row;
    Entry {
        path: path.clone(),
        content_hash: hash32(hash),
        content_length: length as u64,
        content_type,
        blob_key,
        created_at,
        modified_at,
    }
}

/// An event from an [`EventRow`].
pub(super) fn event((id, op, user, path, hash, created_at): EventRow) -> Event {
    Event {
        id: id as u64,
        op: if op == "DEL" {
            EventOp::Del
        } else {
            EventOp::Put
        },
        user,
        path,
        content_hash: hash.map(hash32),
        created_at,
    }
}

/// The totals from the rows of [`COUNT_USERS`], [`COUNT_SIGNUP_TOKENS`] and [`COUNT_POP_NONCES`].
pub(super) fn counts(users: (i64, i64, i64), tokens: (i64, i64), pop_nonces: i64) -> Counts {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Counts {
        users: count(users.0),
        disabled_users: count(users.1),
        used_bytes: count(users.2),
        signup_tokens: count(tokens.0),
        unused_signup_tokens: count(tokens.1),
        pop_nonces: count(pop_nonces),
    }
}

fn hash32(bytes: Vec<u8>) -> [u8; 32] {
    bytes.try_into().unwrap_or([0; 32])
}

/// How one write of a group commit goes on, decided from its locked read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PutStep {
    /// Refused: nothing is written.
    Refuse(PutOutcome),
    /// Write the entry and set the user's usage to `used`.
    Write {
        /// The user's row.
        user_id: i64,
        /// The usage after the write.
        used: i64,
        /// The blob of the version replaced (never the new blob itself).
        replaced_blob: Option<String>,
    },
}

/// The current file of a [`PutRow`], as a [`WriteMode`] sees it.
fn current(hash: Option<Vec<u8>>, modified_at: Option<i64>) -> Option<Current> {
    Some(Current {
        version: Version(hash32(hash?)),
        modified_at: modified_at?,
    })
}

/// Decides a write from its [`PutRow`] (None: no such user): the mode first, then the quota.
pub(super) fn put_step(read: Option<PutRow>, entry: &NewEntry, default_quota: Quota) -> PutStep {
    let Some((user_id, used, quota, old_length, old_blob, old_hash, old_modified)) = read else {
        return PutStep::Refuse(PutOutcome::NoSuchUser);
    };
    if !entry.mode.admits(current(old_hash, old_modified).as_ref()) {
        return PutStep::Refuse(PutOutcome::PreconditionFailed);
    }
    let new_length = entry.content_length as i64;
    let delta = match old_length {
        Some(old_length) => new_length - old_length,
        None => new_length + FILE_OVERHEAD_BYTES,
    };
    let limit = Quota::from_column(quota).unwrap_or(default_quota);
    if !limit.allows(used, delta) {
        return PutStep::Refuse(PutOutcome::QuotaExceeded);
    }
    PutStep::Write {
        user_id,
        used: (used + delta).max(0),
        replaced_blob: old_blob.filter(|old| *old != entry.blob_key),
    }
}

/// How a delete goes on, decided from its locked read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DeleteStep {
    /// Refused, or nothing to delete: nothing changes.
    Refuse(DeleteOutcome),
    /// Delete the entry of the user's row `user_id`, whose usage is `used`.
    Delete {
        /// The user's row.
        user_id: i64,
        /// The usage before the delete.
        used: i64,
    },
}

/// Decides a delete in `mode` from its [`PutRow`] (None: no such user, which is no such file).
pub(super) fn delete_step(read: Option<PutRow>, mode: &WriteMode) -> DeleteStep {
    let (user_id, used, current) = match read {
        Some((user_id, used, _, _, _, hash, modified_at)) => {
            (Some(user_id), used, current(hash, modified_at))
        }
        None => (None, 0, None),
    };
    if !mode.admits(current.as_ref()) {
        return DeleteStep::Refuse(DeleteOutcome::PreconditionFailed);
    }
    match (user_id, current) {
        (Some(user_id), Some(_)) => DeleteStep::Delete { user_id, used },
        _ => DeleteStep::Refuse(DeleteOutcome::NotFound),
    }
}

/// The usage after deleting a file of `length` bytes.
pub(super) fn used_after_delete(used: i64, length: i64) -> i64 {
    (used - length - FILE_OVERHEAD_BYTES).max(0)
}

macro_rules! impl_metadata {
    ($engine:ty, $db:ty, $kind:expr) => {
        const _: () = {
            use $crate::metadata::{
                Accounts, BearerRecord, Counts, DeleteOutcome, Deleted, Entry, Event, EventFilter,
                Files, GrantRecord, Grants, LockRefresh, Locks, Micros, MintBearer, MintOutcome,
                NewEntry, NewLock, NewSession, NewSignupToken, Operations, PathScan, PutOutcome,
                Quota, Result, SessionRecord, SignupOutcome, SignupTokenRecord, TakeOutcome,
                TokenPage, User, UserLimits, UserPage, WriteMode, group_commit, pop_nonces, query,
                sql,
            };
            use $crate::path::EntryPath;
            use $crate::revocations::{Revocations, Revoked};

            type Engine = $engine;
            type Db = $db;
            const KIND: homestead_config::DatabaseKind = $kind;

            #[async_trait::async_trait]
            impl Accounts for Engine {
                async fn create_user(
                    &self,
                    public_key: &str,
                    token: Option<&str>,
                    now: Micros,
                ) -> Result<SignupOutcome> {
                    let mut tx = self.write.begin().await.map_err(query("begin sign-up"))?;
                    let exists: Option<i64> = sqlx::query_scalar(sql::USER_ID)
                        .bind(public_key)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(query("look up user"))?;
                    if exists.is_some() {
                        return Ok(SignupOutcome::UserExists);
                    }
                    let mut granted: (Option<i64>, Option<String>) = (None, None);
                    if let Some(token) = token {
                        let row: Option<(Option<String>, Option<i64>, Option<String>)> =
                            sqlx::query_as(sql::TOKEN_FOR_SIGNUP)
                                .bind(token)
                                .fetch_optional(&mut *tx)
                                .await
                                .map_err(query("look up signup token"))?;
                        match row {
                            None => return Ok(SignupOutcome::TokenUnknown),
                            Some((Some(_), _, _)) => return Ok(SignupOutcome::TokenUsed),
                            Some((None, quota, limits)) => granted = (quota, limits),
                        }
                        let claimed = sqlx::query(sql::REDEEM_TOKEN)
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
                    let inserted = sqlx::query(sql::INSERT_USER)
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

                async fn user(&self, public_key: &str) -> Result<Option<User>> {
                    let select = sqlx::query_as(sql::USER).bind(public_key);
                    self.read_one(select, "read user", sql::user).await
                }

                async fn set_disabled(&self, public_key: &str, disabled: bool) -> Result<bool> {
                    self.changes_one(
                        sqlx::query(sql::SET_DISABLED)
                            .bind(disabled)
                            .bind(public_key),
                        "disable user",
                    )
                    .await
                }

                async fn set_quota(&self, public_key: &str, quota: Option<Quota>) -> Result<bool> {
                    self.changes_one(
                        sqlx::query(sql::SET_QUOTA)
                            .bind(quota.map(Quota::to_column))
                            .bind(public_key),
                        "set quota",
                    )
                    .await
                }

                async fn set_limits(
                    &self,
                    public_key: &str,
                    quota: Option<Quota>,
                    limits: &UserLimits,
                ) -> Result<bool> {
                    self.changes_one(
                        sqlx::query(sql::SET_LIMITS)
                            .bind(quota.map(Quota::to_column))
                            .bind(limits.to_column())
                            .bind(public_key),
                        "set limits",
                    )
                    .await
                }

                async fn list_users(&self, page: &UserPage<'_>) -> Result<Option<Vec<User>>> {
                    let statement = sql::users_page(page);
                    let mut select = sqlx::query_as::<_, sql::UserRow>(&statement);
                    if let Some(after) = page.after {
                        let position = sqlx::query_as(sql::USER_POSITION).bind(after);
                        let read = self.read_one(position, "read user listing cursor", |row| {
                            sql::user_position(page.order, row)
                        });
                        let Some((value, id)) = read.await? else {
                            return Ok(None);
                        };
                        select = select.bind(value).bind(id);
                    }
                    let rows = select
                        .bind(i64::from(page.limit))
                        .fetch_all(&self.read)
                        .await
                        .map_err(query("list users"))?;
                    Ok(Some(rows.into_iter().map(sql::user).collect()))
                }

                async fn create_signup_token(&self, token: &NewSignupToken<'_>) -> Result<()> {
                    sqlx::query(sql::INSERT_SIGNUP_TOKEN)
                        .bind(token.token)
                        .bind(token.created_at)
                        .bind(token.quota.map(Quota::to_column))
                        .bind(token.limits.to_column())
                        .execute(&self.write)
                        .await
                        .map_err(query("create signup token"))?;
                    Ok(())
                }

                async fn signup_token(&self, token: &str) -> Result<Option<SignupTokenRecord>> {
                    let select = sqlx::query_as(sql::SIGNUP_TOKEN).bind(token);
                    self.read_one(select, "read signup token", sql::signup_token)
                        .await
                }

                async fn list_signup_tokens(
                    &self,
                    page: &TokenPage<'_>,
                ) -> Result<Vec<SignupTokenRecord>> {
                    let rows: Vec<sql::TokenRow> = sqlx::query_as(sql::tokens_page(page.state))
                        .bind(page.after.unwrap_or_default())
                        .bind(i64::from(page.limit))
                        .fetch_all(&self.read)
                        .await
                        .map_err(query("list signup tokens"))?;
                    Ok(rows.into_iter().map(sql::signup_token).collect())
                }

                async fn create_session(&self, session: &NewSession<'_>) -> Result<bool> {
                    self.changes_one(
                        sqlx::query(sql::INSERT_SESSION)
                            .bind(&session.secret_hash[..])
                            .bind(session.capabilities)
                            .bind(session.created_at)
                            .bind(session.public_key),
                        "create session",
                    )
                    .await
                }

                async fn session(&self, secret_hash: &[u8; 32]) -> Result<Option<SessionRecord>> {
                    let select = sqlx::query_as(sql::SESSION).bind(&secret_hash[..]);
                    self.read_one(select, "read session", sql::session).await
                }

                async fn delete_session(&self, secret_hash: &[u8; 32]) -> Result<bool> {
                    let mut tx = self.write.begin().await.map_err(query("begin sign-out"))?;
                    let done = sqlx::query(sql::DELETE_SESSION)
                        .bind(&secret_hash[..])
                        .execute(&mut *tx)
                        .await
                        .map_err(query("delete session"))?;
                    if done.rows_affected() != 1 {
                        return Ok(false);
                    }
                    let revoked = Revoked::cookie_session(secret_hash);
                    self.commit_revocation(tx, revoked).await?;
                    Ok(true)
                }

                async fn use_auth_token(
                    &self,
                    token_id: &[u8],
                    expires_at: Micros,
                    now: Micros,
                ) -> Result<bool> {
                    let mut tx = self.write.begin().await.map_err(query("begin token use"))?;
                    sqlx::query(sql::PURGE_USED_TOKENS)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(query("purge used tokens"))?;
                    let done = sqlx::query(sql::INSERT_USED_TOKEN)
                        .bind(token_id)
                        .bind(expires_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(query("record token use"))?;
                    tx.commit().await.map_err(query("commit token use"))?;
                    Ok(done.rows_affected() == 1)
                }

                async fn active_users_with_packets(
                    &self,
                ) -> Result<Vec<(String, Option<Vec<u8>>)>> {
                    sqlx::query_as(sql::ACTIVE_USERS_WITH_PACKETS)
                        .fetch_all(&self.read)
                        .await
                        .map_err(query("list users for republishing"))
                }

                async fn store_pkarr_packet(&self, public_key: &str, packet: &[u8]) -> Result<()> {
                    sqlx::query(sql::STORE_PKARR_PACKET)
                        .bind(packet)
                        .bind(public_key)
                        .execute(&self.write)
                        .await
                        .map_err(query("store a user's PKARR packet"))?;
                    Ok(())
                }
            }

            #[async_trait::async_trait]
            impl Grants for Engine {
                async fn use_pop_nonce(&self, nonce: &str, now: i64, window: i64) -> Result<bool> {
                    pop_nonces::submit(&self.nonces, nonce, now, window).await
                }

                async fn mint_bearer(&self, mint: &MintBearer<'_>) -> Result<MintOutcome> {
                    let MintBearer {
                        ref grant,
                        token_hash,
                        expires_at,
                        now,
                    } = *mint;
                    let mut tx = self
                        .write
                        .begin()
                        .await
                        .map_err(query("begin bearer mint"))?;
                    let user_id: Option<i64> = sqlx::query_scalar(sql::USER_ID)
                        .bind(grant.public_key)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(query("look up user"))?;
                    let Some(user_id) = user_id else {
                        return Ok(MintOutcome::NoUser);
                    };
                    sqlx::query(sql::INSERT_GRANT)
                        .bind(grant.id)
                        .bind(user_id)
                        .bind(grant.client_id)
                        .bind(grant.cnf)
                        .bind(grant.capabilities)
                        .bind(grant.issued_at)
                        .bind(grant.expires_at)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(query("store grant"))?;
                    // Locked until the commit: a revocation waits for this mint, or this mint
                    // sees the revocation.
                    let stored: Option<sql::GrantRow> = sqlx::query_as(Self::LOCK_GRANT)
                        .bind(grant.id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(query("lock grant"))?;
                    // None: the user was deleted since it was looked up.
                    let Some(stored) = stored else {
                        return Ok(MintOutcome::NoUser);
                    };
                    let stored = match sql::mint_check(sql::grant(stored), grant, now) {
                        MintOutcome::Minted(stored) => stored,
                        refused => return Ok(refused),
                    };
                    sqlx::query(sql::DELETE_GRANT_SESSIONS)
                        .bind(grant.id)
                        .execute(&mut *tx)
                        .await
                        .map_err(query("delete earlier bearers"))?;
                    sqlx::query(sql::INSERT_GRANT_SESSION)
                        .bind(&token_hash[..])
                        .bind(grant.id)
                        .bind(expires_at)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(query("store bearer"))?;
                    tx.commit().await.map_err(query("commit bearer mint"))?;
                    Ok(MintOutcome::Minted(stored))
                }

                async fn bearer(
                    &self,
                    token_hash: &[u8; 32],
                    now: i64,
                ) -> Result<Option<BearerRecord>> {
                    let select = sqlx::query_as(sql::BEARER).bind(&token_hash[..]).bind(now);
                    self.read_one(select, "read bearer", sql::bearer).await
                }

                async fn grant(&self, id: &str) -> Result<Option<GrantRecord>> {
                    let select = sqlx::query_as(sql::GRANT).bind(id);
                    self.read_one(select, "read grant", sql::grant).await
                }

                async fn revoke_grant(&self, id: &str, now: i64) -> Result<bool> {
                    let mut tx = self
                        .write
                        .begin()
                        .await
                        .map_err(query("begin revocation"))?;
                    let done = sqlx::query(sql::REVOKE_GRANT)
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(query("revoke grant"))?;
                    if done.rows_affected() != 1 {
                        return Ok(false);
                    }
                    sqlx::query(sql::DELETE_GRANT_SESSIONS)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(query("delete bearers"))?;
                    self.commit_revocation(tx, Revoked::Grant(id.to_string()))
                        .await?;
                    Ok(true)
                }

                async fn live_grants(
                    &self,
                    public_key: &str,
                    now: i64,
                ) -> Result<Vec<GrantRecord>> {
                    let rows: Vec<sql::GrantRow> = sqlx::query_as(sql::LIVE_GRANTS)
                        .bind(public_key)
                        .bind(now)
                        .fetch_all(&self.read)
                        .await
                        .map_err(query("list live grants"))?;
                    Ok(rows.into_iter().map(sql::grant).collect())
                }

                fn revocations(&self) -> Revocations {
                    self.revocations.clone()
                }
            }

            #[async_trait::async_trait]
            impl Locks for Engine {
                async fn take_lock(&self, lock: &NewLock<'_>) -> Result<TakeOutcome> {
                    let NewLock {
                        owner,
                        path,
                        token,
                        seconds,
                    } = *lock;
                    // A failed clean-up does not fail the lock: the insert replaces an expired lock
                    // on its own path anyway.
                    if let Err(err) = sqlx::query(Self::SWEEP_LOCKS).execute(&self.write).await {
                        tracing::warn!(%err, "cannot delete expired locks");
                    }
                    let taken: Option<String> = sqlx::query_scalar(Self::TAKE_LOCK)
                        .bind(owner)
                        .bind(path.as_str())
                        .bind(token)
                        .bind(i64::from(seconds))
                        .fetch_optional(&self.write)
                        .await
                        .map_err(query("take lock"))?;
                    if taken.is_some() {
                        return Ok(TakeOutcome::Taken);
                    }
                    let user: Option<i64> = sqlx::query_scalar(sql::USER_ID)
                        .bind(owner)
                        .fetch_optional(&self.read)
                        .await
                        .map_err(query("look up user"))?;
                    Ok(match user {
                        Some(_) => TakeOutcome::Locked,
                        None => TakeOutcome::NoSuchUser,
                    })
                }

                async fn refresh_lock(&self, refresh: &LockRefresh<'_>) -> Result<Option<String>> {
                    let LockRefresh {
                        owner,
                        path,
                        tokens,
                        seconds,
                    } = *refresh;
                    // One lock per path: find it, then refresh it if it is still live.
                    let Some(live) = self.live_lock(owner, path).await? else {
                        return Ok(None);
                    };
                    if !tokens.contains(&live) {
                        return Ok(None);
                    }
                    let done = sqlx::query(Self::REFRESH_LOCK)
                        .bind(&live)
                        .bind(i64::from(seconds))
                        .execute(&self.write)
                        .await
                        .map_err(query("refresh lock"))?;
                    Ok((done.rows_affected() == 1).then_some(live))
                }

                async fn release_lock(
                    &self,
                    owner: &str,
                    path: &EntryPath,
                    token: &str,
                ) -> Result<bool> {
                    self.changes_one(
                        sqlx::query(sql::RELEASE_LOCK)
                            .bind(owner)
                            .bind(path.as_str())
                            .bind(token),
                        "release lock",
                    )
                    .await
                }

                async fn live_lock(&self, owner: &str, path: &EntryPath) -> Result<Option<String>> {
                    let select = sqlx::query_as(Self::LIVE_LOCK)
                        .bind(owner)
                        .bind(path.as_str());
                    self.read_one(select, "read lock", |(token,): (String,)| token)
                        .await
                }

                async fn keep_lock_alive(&self, token: &str, seconds: u32) -> Result<bool> {
                    self.changes_one(
                        sqlx::query(Self::KEEP_LOCK_ALIVE)
                            .bind(token)
                            .bind(i64::from(seconds)),
                        "keep lock alive",
                    )
                    .await
                }
            }

            #[async_trait::async_trait]
            impl Files for Engine {
                async fn entry(&self, public_key: &str, path: &EntryPath) -> Result<Option<Entry>> {
                    let select = sqlx::query_as(sql::ENTRY)
                        .bind(public_key)
                        .bind(path.as_str());
                    self.read_one(select, "read entry", |row| sql::entry(path, row))
                        .await
                }

                async fn commit_put(
                    &self,
                    public_key: &str,
                    entry: &NewEntry,
                    default_quota: Quota,
                ) -> Result<PutOutcome> {
                    group_commit::submit(&self.puts, public_key, entry, default_quota).await
                }

                async fn commit_delete(
                    &self,
                    public_key: &str,
                    path: &EntryPath,
                    mode: &WriteMode,
                    now: Micros,
                ) -> Result<DeleteOutcome> {
                    let mut tx = self.write.begin().await.map_err(query("begin delete"))?;
                    // The event-order lock before any user row, as the group commit takes them.
                    Self::begin_write(&mut tx).await?;
                    let read: Option<sql::PutRow> = sqlx::query_as(Self::READ_FOR_PUT)
                        .bind(public_key)
                        .bind(path.as_str())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(query("lock user"))?;
                    let (user_id, used) = match sql::delete_step(read, mode) {
                        sql::DeleteStep::Refuse(outcome) => return Ok(outcome),
                        sql::DeleteStep::Delete { user_id, used } => (user_id, used),
                    };
                    let old: Option<(i64, String)> = sqlx::query_as(sql::DELETE_ENTRY)
                        .bind(user_id)
                        .bind(path.as_str())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(query("delete entry"))?;
                    let Some((length, blob_key)) = old else {
                        return Ok(DeleteOutcome::NotFound);
                    };
                    sqlx::query(sql::SET_USED_BYTES)
                        .bind(sql::used_after_delete(used, length))
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(query("update used bytes"))?;
                    let event_id =
                        Self::append_event(&mut tx, "DEL", user_id, path.as_str(), None, now)
                            .await?;
                    tx.commit().await.map_err(query("commit delete"))?;
                    Ok(DeleteOutcome::Deleted(Deleted { blob_key, event_id }))
                }

                async fn scan_paths(
                    &self,
                    public_key: &str,
                    scan: &PathScan,
                ) -> Result<Vec<String>> {
                    let statement = if scan.reverse {
                        sql::SCAN_PATHS_REVERSE
                    } else {
                        sql::SCAN_PATHS
                    };
                    sqlx::query_scalar(statement)
                        .bind(public_key)
                        .bind(&scan.from)
                        .bind(&scan.until)
                        .bind(i64::from(scan.limit))
                        .fetch_all(&self.read)
                        .await
                        .map_err(query("list entries"))
                }

                async fn unreferenced_blobs(&self, keys: &[String]) -> Result<Vec<String>> {
                    if keys.is_empty() {
                        return Ok(Vec::new());
                    }
                    let statement = sql::referenced_blobs(keys.len());
                    let mut select = sqlx::query_scalar(&statement);
                    for key in keys {
                        select = select.bind(key);
                    }
                    let referenced: Vec<String> = select
                        .fetch_all(&self.read)
                        .await
                        .map_err(query("find referenced blobs"))?;
                    Ok(sql::unreferenced(keys, referenced))
                }

                async fn events(
                    &self,
                    cursor: u64,
                    limit: u32,
                    filter: &EventFilter,
                ) -> Result<Vec<Event>> {
                    let (statement, params) = sql::events(cursor, limit, filter);
                    let mut select = sqlx::query_as::<_, sql::EventRow>(&statement);
                    for param in params {
                        select = match param {
                            sql::Param::Text(text) => select.bind(text),
                            sql::Param::BigInt(n) => select.bind(n),
                            sql::Param::Int(n) => select.bind(n),
                        };
                    }
                    let rows = select
                        .fetch_all(&self.read)
                        .await
                        .map_err(query("read events"))?;
                    Ok(rows.into_iter().map(sql::event).collect())
                }

                async fn event_id_at(&self, created_at: Micros) -> Result<Option<u64>> {
                    let id: Option<i64> = sqlx::query_scalar(sql::EVENT_ID_AT)
                        .bind(created_at)
                        .fetch_one(&self.read)
                        .await
                        .map_err(query("find event by time"))?;
                    Ok(id.map(|id| id as u64))
                }

                fn event_hints(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
                    self.hints()
                }
            }

            #[async_trait::async_trait]
            impl Operations for Engine {
                fn kind(&self) -> homestead_config::DatabaseKind {
                    KIND
                }

                async fn counts(&self) -> Result<Counts> {
                    let users: (i64, i64, i64) = sqlx::query_as(sql::COUNT_USERS)
                        .fetch_one(&self.read)
                        .await
                        .map_err(query("count users"))?;
                    let tokens: (i64, i64) = sqlx::query_as(sql::COUNT_SIGNUP_TOKENS)
                        .fetch_one(&self.read)
                        .await
                        .map_err(query("count signup tokens"))?;
                    let pop_nonces: i64 = sqlx::query_scalar(sql::COUNT_POP_NONCES)
                        .fetch_one(&self.read)
                        .await
                        .map_err(query("count PoP nonces"))?;
                    Ok(sql::counts(users, tokens, pop_nonces))
                }

                fn pool_stats(&self) -> Vec<(&'static str, u32, u32)> {
                    let stat = |name, pool: &sqlx::Pool<Db>| {
                        (
                            name,
                            pool.size(),
                            u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
                        )
                    };
                    if Self::SEPARATE_WRITE_POOL {
                        vec![stat("read", &self.read), stat("write", &self.write)]
                    } else {
                        vec![stat("main", &self.read)]
                    }
                }

                async fn ping(&self) -> Result<()> {
                    sqlx::query(sql::PING)
                        .execute(&self.probe)
                        .await
                        .map_err(query("ping"))?;
                    Ok(())
                }

                fn rate_buckets(&self) -> Option<crate::metadata::RateBuckets> {
                    self.shared_rate_buckets()
                }

                async fn close(&self) {
                    self.stop_listening();
                    self.read.close().await;
                    self.write.close().await;
                    self.probe.close().await;
                }
            }

            impl Engine {
                /// The row `select` reads from the read pool, mapped by `map`; None when there is
                /// none.
                async fn read_one<'q, R, T>(
                    &self,
                    select: sqlx::query::QueryAs<'q, Db, R, <Db as sqlx::Database>::Arguments<'q>>,
                    operation: &'static str,
                    map: impl FnOnce(R) -> T,
                ) -> Result<Option<T>>
                where
                    R: Send + Unpin + for<'r> sqlx::FromRow<'r, <Db as sqlx::Database>::Row>,
                {
                    let row = select
                        .fetch_optional(&self.read)
                        .await
                        .map_err(query(operation))?;
                    Ok(row.map(map))
                }

                /// Whether `statement`, run on the write pool, changed exactly one row.
                async fn changes_one<'q>(
                    &self,
                    statement: sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>>,
                    operation: &'static str,
                ) -> Result<bool> {
                    let done = statement
                        .execute(&self.write)
                        .await
                        .map_err(query(operation))?;
                    Ok(done.rows_affected() == 1)
                }

                /// Commits a revocation's transaction and announces it: inside the transaction
                /// with the engine's `NOTIFY_REVOCATION` (delivered with the commit), else on the
                /// process's own feed once committed.
                async fn commit_revocation(
                    &self,
                    mut tx: sqlx::Transaction<'_, Db>,
                    revoked: Revoked,
                ) -> Result<()> {
                    if let Some(notify) = Self::NOTIFY_REVOCATION {
                        sqlx::query(notify)
                            .bind(revoked.payload())
                            .execute(&mut *tx)
                            .await
                            .map_err(query("announce revocation"))?;
                    }
                    tx.commit().await.map_err(query("commit revocation"))?;
                    if Self::NOTIFY_REVOCATION.is_none() {
                        self.revocations.announce(revoked);
                    }
                    Ok(())
                }

                /// Starts a write transaction with the engine's `BEGIN_WRITE`, if it has one.
                async fn begin_write(tx: &mut sqlx::Transaction<'_, Db>) -> Result<()> {
                    if let Some(lock) = Self::BEGIN_WRITE {
                        sqlx::query(lock)
                            .execute(&mut **tx)
                            .await
                            .map_err(query("lock event order"))?;
                    }
                    Ok(())
                }

                /// One write inside the batch's transaction: checks the mode and the quota
                /// under the user's row lock, records the entry, the user's usage and the event.
                async fn put_in_tx(
                    tx: &mut sqlx::Transaction<'_, Db>,
                    pending: &group_commit::PendingPut,
                ) -> Result<PutOutcome> {
                    let entry = &pending.entry;
                    // The caller holds the event-order lock, so no other write can change this
                    // path's entry before the commit; the user's row lock guards usage against
                    // the admin.
                    let read: Option<sql::PutRow> = sqlx::query_as(Self::READ_FOR_PUT)
                        .bind(&pending.public_key)
                        .bind(entry.path.as_str())
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(query("lock user"))?;
                    let (user_id, used, replaced_blob) =
                        match sql::put_step(read, entry, pending.default_quota) {
                            sql::PutStep::Refuse(outcome) => return Ok(outcome),
                            sql::PutStep::Write {
                                user_id,
                                used,
                                replaced_blob,
                            } => (user_id, used, replaced_blob),
                        };
                    let write = sqlx::query(Self::WRITE_PUT)
                        .bind(user_id)
                        .bind(entry.path.as_str())
                        .bind(&entry.content_hash[..])
                        .bind(entry.content_length as i64)
                        .bind(&entry.content_type)
                        .bind(&entry.blob_key)
                        .bind(entry.now)
                        .bind(used);
                    let event_id = if Self::WRITE_PUT_WHOLE {
                        let row = write
                            .fetch_one(&mut **tx)
                            .await
                            .map_err(query("write entry"))?;
                        let id: i64 = sqlx::Row::try_get(&row, 0).map_err(query("write entry"))?;
                        id as u64
                    } else {
                        write
                            .execute(&mut **tx)
                            .await
                            .map_err(query("write entry"))?;
                        sqlx::query(sql::SET_USED_BYTES)
                            .bind(used)
                            .bind(user_id)
                            .execute(&mut **tx)
                            .await
                            .map_err(query("update used bytes"))?;
                        Self::append_event(
                            tx,
                            "PUT",
                            user_id,
                            entry.path.as_str(),
                            Some(&entry.content_hash[..]),
                            entry.now,
                        )
                        .await?
                    };
                    Ok(PutOutcome::Committed {
                        replaced_blob,
                        event_id,
                    })
                }

                /// Appends an event inside the caller's transaction and returns its id.
                async fn append_event(
                    tx: &mut sqlx::Transaction<'_, Db>,
                    op: &str,
                    user_id: i64,
                    path: &str,
                    content_hash: Option<&[u8]>,
                    now: Micros,
                ) -> Result<u64> {
                    // The caller took the event-order lock when its transaction began.
                    let id: i64 = sqlx::query_scalar(sql::INSERT_EVENT)
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

            #[async_trait::async_trait]
            impl pop_nonces::RecordNonces for sqlx::Pool<Db> {
                async fn purge_nonces(&self, oldest_kept: i64) -> Result<()> {
                    sqlx::query(sql::PURGE_POP_NONCES)
                        .bind(oldest_kept)
                        .execute(self)
                        .await
                        .map_err(query("purge PoP nonces"))?;
                    Ok(())
                }

                async fn record_nonces(&self, nonces: &[(&str, i64)]) -> Result<Vec<String>> {
                    let statement = sql::insert_pop_nonces(nonces.len());
                    let mut insert = sqlx::query_scalar(&statement);
                    for (nonce, now) in nonces {
                        insert = insert.bind(*nonce).bind(*now);
                    }
                    insert
                        .fetch_all(self)
                        .await
                        .map_err(query("record PoP nonces"))
                }
            }

            #[async_trait::async_trait]
            impl group_commit::CommitBatch for sqlx::Pool<Db> {
                async fn commit_batch(
                    &self,
                    batch: &[group_commit::PendingPut],
                ) -> Result<Vec<PutOutcome>> {
                    let mut tx = self.begin().await.map_err(query("begin write"))?;
                    // The order lock first, then user rows, in every write transaction: no
                    // deadlock between instances or with deletes.
                    Engine::begin_write(&mut tx).await?;
                    let mut outcomes = Vec::with_capacity(batch.len());
                    for pending in batch {
                        outcomes.push(Engine::put_in_tx(&mut tx, pending).await?);
                    }
                    tx.commit().await.map_err(query("commit write"))?;
                    Ok(outcomes)
                }
            }
        };
    };
}

pub(crate) use {
    grant_columns, impl_metadata, lock_statements, read_for_put, read_grant, upsert_entry,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn new_entry(length: u64, blob_key: &str) -> NewEntry {
        NewEntry {
            path: EntryPath::parse("/pub/a").unwrap(),
            content_hash: [0; 32],
            content_length: length,
            content_type: "text/plain".into(),
            blob_key: blob_key.into(),
            now: 0,
            mode: WriteMode::Overwrite,
        }
    }

    /// The locked read of a user (id 7, 400 bytes used, default quota) with a 50-byte file "old" whose
    /// content hash is all ones, modified at 5 s.
    fn file_row() -> Option<PutRow> {
        Some((
            7,
            400,
            None,
            Some(50),
            Some("old".to_string()),
            Some(vec![1; 32]),
            Some(5_000_000),
        ))
    }

    #[test]
    fn a_write_is_checked_for_its_user_then_its_mode_then_the_quota() {
        let new = new_entry(100, "new");
        let bytes = |n| Quota::Bytes(n);
        let step = |read, mode: &WriteMode, quota| {
            let entry = NewEntry {
                mode: mode.clone(),
                ..new.clone()
            };
            put_step(read, &entry, quota)
        };
        assert_eq!(
            step(None, &WriteMode::Overwrite, Quota::Unlimited),
            PutStep::Refuse(PutOutcome::NoSuchUser)
        );
        let old = Version([1; 32]);
        let existing = file_row();
        assert_eq!(
            step(existing.clone(), &WriteMode::Create, bytes(0)),
            PutStep::Refuse(PutOutcome::PreconditionFailed)
        );
        assert_eq!(
            step(
                existing.clone(),
                &WriteMode::Update(vec![Version([2; 32])]),
                bytes(0)
            ),
            PutStep::Refuse(PutOutcome::PreconditionFailed)
        );
        assert_eq!(
            step(existing.clone(), &WriteMode::Overwrite, bytes(449)),
            PutStep::Refuse(PutOutcome::QuotaExceeded)
        );
        assert_eq!(
            step(existing.clone(), &WriteMode::Update(vec![old]), bytes(450)),
            PutStep::Write {
                user_id: 7,
                used: 450,
                replaced_blob: Some("old".into())
            }
        );
        // A new file counts its overhead; the user's own quota overrides the default.
        let absent = Some((7, 0, Some(356), None, None, None, None));
        assert_eq!(
            step(absent, &WriteMode::Create, bytes(0)),
            PutStep::Write {
                user_id: 7,
                used: 356,
                replaced_blob: None
            }
        );
    }

    #[test]
    fn the_new_blob_is_never_reported_as_replaced() {
        let read = Some((
            1,
            0,
            None,
            Some(100),
            Some("same".to_string()),
            Some(vec![0; 32]),
            Some(0),
        ));
        let step = put_step(read, &new_entry(100, "same"), Quota::Unlimited);
        assert!(matches!(
            step,
            PutStep::Write {
                replaced_blob: None,
                ..
            }
        ));
    }

    #[test]
    fn a_delete_is_checked_for_its_mode_then_its_file() {
        let file = file_row();
        let none = Some((7, 400, None, None, None, None, None));
        let delete = DeleteStep::Delete {
            user_id: 7,
            used: 400,
        };
        let refused = DeleteStep::Refuse(DeleteOutcome::PreconditionFailed);
        let not_found = DeleteStep::Refuse(DeleteOutcome::NotFound);
        assert_eq!(delete_step(file.clone(), &WriteMode::Overwrite), delete);
        let matching = WriteMode::Update(vec![Version([1; 32])]);
        assert_eq!(delete_step(file.clone(), &matching), delete);
        let other = WriteMode::Update(vec![Version([2; 32])]);
        assert_eq!(delete_step(file.clone(), &other), refused);
        assert_eq!(delete_step(file.clone(), &WriteMode::Create), refused);
        assert_eq!(
            delete_step(file.clone(), &WriteMode::UnmodifiedSince(4)),
            refused
        );
        assert_eq!(delete_step(file, &WriteMode::UnmodifiedSince(5)), delete);
        // No file: a mode that needs one refuses; one that does not finds nothing to delete.
        assert_eq!(delete_step(none.clone(), &matching), refused);
        assert_eq!(delete_step(none.clone(), &WriteMode::Replace), refused);
        assert_eq!(delete_step(none.clone(), &WriteMode::Create), not_found);
        assert_eq!(delete_step(none, &WriteMode::Overwrite), not_found);
        assert_eq!(delete_step(None, &WriteMode::Overwrite), not_found);
        assert_eq!(delete_step(None, &matching), refused);
    }

    #[test]
    fn event_pages_bind_every_value() {
        let (all, params) = events(
            0,
            10,
            &EventFilter {
                reverse: true,
                ..Default::default()
            },
        );
        assert!(
            all.ends_with("WHERE TRUE AND e.id < $1 ORDER BY e.id DESC LIMIT $2"),
            "{all}"
        );
        assert_eq!(params, [Param::BigInt(i64::MAX), Param::BigInt(10)]);
        let filter = EventFilter {
            users: Some(vec![("a".into(), 5), ("b".into(), 0)]),
            paths: vec!["/pub/é/".into(), "/pub/f".into()],
            reverse: false,
        };
        let (some, params) = events(99, 3, &filter);
        assert!(
            some.ends_with(
                "WHERE ((u.public_key = $1 AND e.id > $2) OR (u.public_key = $3 AND e.id > $4)) \
                 AND (substr(e.path, 1, $5) = $6 OR e.path = $7) ORDER BY e.id ASC LIMIT $8"
            ),
            "{some}"
        );
        assert_eq!(params[4], Param::Int(7));
        assert_eq!(params.len(), 8);
        let nobody = EventFilter {
            users: Some(Vec::new()),
            ..Default::default()
        };
        assert!(events(0, 1, &nobody).0.contains("WHERE (FALSE) ORDER BY"));
        assert_eq!(
            referenced_blobs(3),
            "SELECT blob_key FROM entries WHERE blob_key IN ($1, $2, $3)"
        );
        assert_eq!(
            insert_pop_nonces(2),
            "INSERT INTO pop_nonces (nonce, created_at) VALUES ($1, $2), ($3, $4) \
             ON CONFLICT (nonce) DO NOTHING RETURNING nonce"
        );
        let keys = ["a".to_string(), "b".into(), "c".into()];
        assert_eq!(unreferenced(&keys, vec!["b".into()]), ["a", "c"]);
    }

    #[test]
    fn a_mint_checks_ownership_then_revocation_then_expiry() {
        let presented = NewGrant {
            id: "g",
            public_key: "alice",
            client_id: "app",
            cnf: "client",
            capabilities: "/:rw",
            issued_at: 1,
            expires_at: 100,
        };
        let stored = grant((
            "g".into(),
            "alice".into(),
            "first app".into(),
            "client".into(),
            "/pub/:r".into(),
            1,
            50,
            None,
            7,
        ));
        let check = |stored: &GrantRecord, presented: &NewGrant, now| {
            mint_check(stored.clone(), presented, now)
        };
        assert_eq!(
            check(&stored, &presented, 49),
            MintOutcome::Minted(stored.clone()),
            "the stored row wins over the presented one"
        );
        assert_eq!(check(&stored, &presented, 50), MintOutcome::Expired);
        let revoked = GrantRecord {
            revoked_at: Some(10),
            ..stored.clone()
        };
        assert_eq!(check(&revoked, &presented, 60), MintOutcome::Revoked);
        let other_user = NewGrant {
            public_key: "bob",
            ..presented
        };
        let other_key = NewGrant {
            cnf: "other",
            ..presented
        };
        assert_eq!(check(&revoked, &other_user, 60), MintOutcome::NotOwner);
        assert_eq!(check(&revoked, &other_key, 60), MintOutcome::NotOwner);
    }

    #[test]
    fn a_bearer_row_carries_its_grant_and_user() {
        let mapped = bearer((
            "g".into(),
            "app".into(),
            "client".into(),
            "/:rw".into(),
            1,
            100,
            None,
            7,
            60,
            "alice".into(),
            false,
            0,
            None,
            3,
            None,
        ));
        assert_eq!(
            (mapped.grant.public_key.as_str(), mapped.grant.expires_at),
            ("alice", 100)
        );
        assert_eq!((mapped.expires_at, mapped.user.created_at), (60, 3));
    }

    #[test]
    fn one_user_row_mapping_serves_users_and_sessions() {
        let row: UserRow = (
            "key".into(),
            true,
            5,
            Some(-1),
            9,
            Some(r#"{"rate_read":"1mb/s"}"#.into()),
        );
        let mapped = user(row);
        assert_eq!(mapped.quota, Some(Quota::Unlimited));
        assert_eq!(mapped.limits.rate_read.as_deref(), Some("1mb/s"));
        let session = session((
            "caps".into(),
            3,
            "key".into(),
            true,
            5,
            Some(-1),
            9,
            Some(r#"{"rate_read":"1mb/s"}"#.into()),
        ));
        assert_eq!(session.user, mapped);
        assert_eq!(used_after_delete(300, 100), 0);
    }
}

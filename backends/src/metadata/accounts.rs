//! The accounts side of the metadata database: users with their quotas and limits, sessions, signup
//! tokens, the ids of used AuthTokens and the users' PKARR packets.

use std::fmt::Debug;

use async_trait::async_trait;

use super::{Micros, Result};

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// z32 public key.
    pub public_key: String,
    /// Disabled users may read and delete but not write.
    pub disabled: bool,
    /// Sum of (length + 256) over the user's files.
    pub used_bytes: i64,
    /// The user's own quota, overriding the server default.
    pub quota: Option<Quota>,
    /// Sign-up time.
    pub created_at: Micros,
    /// The user's own rates, bursts and write allow-list.
    pub limits: UserLimits,
}

/// Per-user settings beyond the storage quota (OPERATIONS.md §5.4), kept as JSON. A rate is
/// `"unlimited"` or a bandwidth such as `"10mb/s"`; absent means the server default.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserLimits {
    /// Download speed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_read: Option<String>,
    /// Upload speed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_write: Option<String>,
    /// Download burst, in the rate's unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_read_burst: Option<u32>,
    /// Upload burst, in the rate's unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_write_burst: Option<u32>,
    /// Paths the user may write: entries ending in `/` are prefixes; absent = anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_write_paths: Option<Vec<String>>,
}

impl UserLimits {
    /// The column value: None when everything is default.
    pub(crate) fn to_column(&self) -> Option<String> {
        (self != &Self::default()).then(|| serde_json::to_string(self).unwrap_or_default())
    }

    /// Reads the column; an unreadable value counts as all-default (and is logged).
    pub(crate) fn from_column(column: Option<String>) -> Self {
        column
            .and_then(|text| {
                serde_json::from_str(&text)
                    .map_err(|err| tracing::error!(%err, "unreadable user limits"))
                    .ok()
            })
            .unwrap_or_default()
    }

    /// Whether the allow-list lets the user write `path`.
    pub fn may_write(&self, path: &str) -> bool {
        self.allowed_write_paths.as_ref().is_none_or(|allowed| {
            allowed.iter().any(|entry| {
                if entry.ends_with('/') {
                    path.starts_with(entry.as_str())
                } else {
                    path == entry
                }
            })
        })
    }
}

/// A storage quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// No limit.
    Unlimited,
    /// At most this many bytes (counting 256 per file).
    Bytes(u64),
}

impl Quota {
    /// The column value: -1 for unlimited.
    pub(crate) fn to_column(self) -> i64 {
        match self {
            Self::Unlimited => -1,
            Self::Bytes(n) => i64::try_from(n).unwrap_or(i64::MAX),
        }
    }

    /// Reads the column (NULL: the server default).
    pub(crate) fn from_column(value: Option<i64>) -> Option<Self> {
        value.map(|v| match u64::try_from(v) {
            Ok(n) => Self::Bytes(n),
            Err(_) => Self::Unlimited,
        })
    }

    /// Whether a change of `delta` bytes on top of `used` stays within this quota (reaching it exactly
    /// is allowed; shrinking is always allowed).
    pub(crate) fn allows(self, used: i64, delta: i64) -> bool {
        match self {
            Self::Unlimited => true,
            Self::Bytes(limit) => {
                let after = used.saturating_add(delta);
                delta <= 0 || after <= 0 || (after as u64) <= limit
            }
        }
    }
}

/// How a sign-up ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupOutcome {
    /// The user was created (and the token, if any, consumed).
    Created,
    /// A user with that key exists.
    UserExists,
    /// No such signup token.
    TokenUnknown,
    /// The token was already redeemed.
    TokenUsed,
}

/// A signup token to store, with what its user will get.
#[derive(Debug, Clone, Copy)]
pub struct NewSignupToken<'a> {
    /// The token text.
    pub token: &'a str,
    /// Creation time.
    pub created_at: Micros,
    /// The quota its user will get (None: the server default).
    pub quota: Option<Quota>,
    /// The other limits its user will get.
    pub limits: &'a UserLimits,
}

/// A session to store under the hash of its secret (the secret itself is never stored).
#[derive(Debug, Clone, Copy)]
pub struct NewSession<'a> {
    /// SHA-256 of the secret.
    pub secret_hash: &'a [u8; 32],
    /// Whose session.
    pub public_key: &'a str,
    /// Its capabilities, as a capability list string.
    pub capabilities: &'a str,
    /// Creation time.
    pub created_at: Micros,
}

/// A signup token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignupTokenRecord {
    /// The token text.
    pub token: String,
    /// Creation time.
    pub created_at: Micros,
    /// Who redeemed it.
    pub used_by: Option<String>,
    /// When it was redeemed.
    pub used_at: Option<Micros>,
    /// The quota its user gets (None: the server default).
    pub quota: Option<Quota>,
    /// The other limits its user gets.
    pub limits: UserLimits,
}

/// Which users a listing holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserState {
    /// Every user.
    #[default]
    All,
    /// Users who may write.
    Enabled,
    /// Disabled users.
    Disabled,
}

/// The column a user listing is ordered by (the user's id breaks ties).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserOrder {
    /// Sign-up time.
    #[default]
    CreatedAt,
    /// Storage used.
    UsedBytes,
}

/// A page of a user listing: keyset pagination on (order column, id).
#[derive(Debug, Clone, Copy)]
pub struct UserPage<'a> {
    /// The last user of the previous page: the page holds users strictly after (before, when
    /// reversed) it.
    pub after: Option<&'a str>,
    /// At most this many users.
    pub limit: u32,
    /// Which users.
    pub state: UserState,
    /// The order.
    pub order: UserOrder,
    /// Descending instead of ascending.
    pub reverse: bool,
}

/// Which signup tokens a listing holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenState {
    /// Every token.
    #[default]
    All,
    /// Redeemed tokens.
    Used,
    /// Tokens not redeemed yet.
    Unused,
}

/// A page of a signup token listing, ordered by token text.
#[derive(Debug, Clone, Copy)]
pub struct TokenPage<'a> {
    /// The page holds tokens strictly greater than this one.
    pub after: Option<&'a str>,
    /// At most this many tokens.
    pub limit: u32,
    /// Which tokens.
    pub state: TokenState,
}

/// A session as stored (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The capabilities string.
    pub capabilities: String,
    /// Creation time.
    pub created_at: Micros,
    /// The session's user, read with it.
    pub user: User,
}

/// Users, sessions, signup tokens, used AuthToken ids and PKARR packets. Times are passed in (see
/// [`now_micros`](super::now_micros)).
#[async_trait]
pub trait Accounts: Send + Sync + Debug {
    /// Creates a user; with a token, consumes it in the same transaction (so a token is single-use even
    /// under a race).
    async fn create_user(
        &self,
        public_key: &str,
        token: Option<&str>,
        now: Micros,
    ) -> Result<SignupOutcome>;
    /// A user by key.
    async fn user(&self, public_key: &str) -> Result<Option<User>>;
    /// Disables or enables a user; false when there is no such user.
    async fn set_disabled(&self, public_key: &str, disabled: bool) -> Result<bool>;
    /// Sets or clears (None = server default) a user's quota; false when there is no such user.
    async fn set_quota(&self, public_key: &str, quota: Option<Quota>) -> Result<bool>;
    /// Sets a user's storage quota and other limits together; false when there is no such user.
    async fn set_limits(
        &self,
        public_key: &str,
        quota: Option<Quota>,
        limits: &UserLimits,
    ) -> Result<bool>;
    /// A page of users (PROTOCOL-0.17 §19.1); None when `page.after` names no user.
    async fn list_users(&self, page: &UserPage<'_>) -> Result<Option<Vec<User>>>;

    /// Stores a new signup token, with the quota and limits its user will get.
    async fn create_signup_token(&self, token: &NewSignupToken<'_>) -> Result<()>;
    /// A signup token by text.
    async fn signup_token(&self, token: &str) -> Result<Option<SignupTokenRecord>>;
    /// A page of signup tokens, ordered by text.
    async fn list_signup_tokens(&self, page: &TokenPage<'_>) -> Result<Vec<SignupTokenRecord>>;

    /// Stores a session under the hash of its secret; false when there is no such user.
    async fn create_session(&self, session: &NewSession<'_>) -> Result<bool>;
    /// A session by the hash of its secret, with its user.
    async fn session(&self, secret_hash: &[u8; 32]) -> Result<Option<SessionRecord>>;
    /// Deletes a session; false when there was none.
    async fn delete_session(&self, secret_hash: &[u8; 32]) -> Result<bool>;

    /// Records an AuthToken id as used until `expires_at`, purging expired ids; false if it was used
    /// already (a replay).
    async fn use_auth_token(
        &self,
        token_id: &[u8],
        expires_at: Micros,
        now: Micros,
    ) -> Result<bool>;

    /// Every enabled user with the PKARR packet last stored for them (for the user keys republisher).
    async fn active_users_with_packets(&self) -> Result<Vec<(String, Option<Vec<u8>>)>>;
    /// Stores a user's latest signed PKARR packet.
    async fn store_pkarr_packet(&self, public_key: &str, packet: &[u8]) -> Result<()>;
}

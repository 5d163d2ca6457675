//! The grant side of the metadata database (PROTOCOL-0.17 §7–§9): grants stored on their first
//! exchange, their bearer sessions (one live bearer per grant, stored as the SHA-256 of the token) and
//! the global set of PoP nonces already used. Times here are Unix **seconds**, the unit of the grant and
//! PoP claims, unlike the microseconds of the other tables.

use std::fmt::Debug;

use async_trait::async_trait;

use super::{Result, User};

/// A grant to store on its first exchange (`POST /auth/grant/session`).
#[derive(Debug, Clone, Copy)]
pub struct NewGrant<'a> {
    /// The grant's `jti`.
    pub id: &'a str,
    /// z32 of the user who issued it (`iss`).
    pub public_key: &'a str,
    /// The application's self-declared id.
    pub client_id: &'a str,
    /// z32 of the client key the grant is bound to.
    pub cnf: &'a str,
    /// The capabilities in display form, comma-joined, in grant order.
    pub capabilities: &'a str,
    /// `iat`, Unix seconds.
    pub issued_at: i64,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
}

/// A bearer to mint (`POST /auth/grant/session`): the grant its exchange presents, the new token's
/// hash and the bearer's expiry.
#[derive(Debug, Clone, Copy)]
pub struct MintBearer<'a> {
    /// The grant as presented, stored unless a grant with its id is.
    pub grant: NewGrant<'a>,
    /// SHA-256 of the bearer token.
    pub token_hash: &'a [u8; 32],
    /// When the bearer stops working, Unix seconds.
    pub expires_at: i64,
    /// The time of the exchange, Unix seconds.
    pub now: i64,
}

/// A grant as stored: what its first exchange presented, and whether it was revoked since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// The grant's `jti`.
    pub id: String,
    /// z32 of the grant's user.
    pub public_key: String,
    /// The application's self-declared id.
    pub client_id: String,
    /// z32 of the client key the grant is bound to.
    pub cnf: String,
    /// The capabilities in display form, comma-joined, in grant order.
    pub capabilities: String,
    /// `iat`, Unix seconds.
    pub issued_at: i64,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
    /// When it was revoked (the latest revocation), Unix seconds.
    pub revoked_at: Option<i64>,
    /// When it was first stored, Unix seconds.
    pub created_at: i64,
}

/// A live bearer with its grant and the grant's user, read together in one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerRecord {
    /// The bearer's grant.
    pub grant: GrantRecord,
    /// When the bearer stops working, Unix seconds.
    pub expires_at: i64,
    /// The grant's user.
    pub user: User,
}

/// How minting a bearer ended; only [`MintOutcome::Minted`] changed anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MintOutcome {
    /// The grant is stored and the new bearer replaced its earlier ones; the grant as stored (its
    /// `created_at` is the time of its first exchange).
    Minted(GrantRecord),
    /// No user has the grant's key.
    NoUser,
    /// A grant with this id is stored for another user or another client key.
    NotOwner,
    /// The stored grant is revoked.
    Revoked,
    /// The stored grant has expired.
    Expired,
}

/// Stored grants, their bearer sessions and the PoP nonces already used. Times are Unix seconds,
/// passed in.
#[async_trait]
pub trait Grants: Send + Sync + Debug {
    /// Consumes a PoP nonce (§7): first deletes the nonces recorded before `now - window` (a failure of
    /// that clean-up is logged and ignored), then records `nonce` at `now`. False when it was recorded
    /// already (a replay); of concurrent calls with one nonce exactly one gets true.
    async fn use_pop_nonce(&self, nonce: &str, now: i64, window: i64) -> Result<bool>;
    /// Stores `mint.grant` unless a grant with its id is stored, then mints a bearer for the stored
    /// grant (§9.2 steps 6–7), in one transaction with the grant's row locked: refuses a grant stored
    /// for another user or client key before touching any bearer, then a revoked or expired
    /// (`expires_at <= mint.now`) one; otherwise replaces every earlier bearer of the grant with
    /// `mint.token_hash`, valid until `mint.expires_at`.
    async fn mint_bearer(&self, mint: &MintBearer<'_>) -> Result<MintOutcome>;
    /// The bearer with this hash (§8.3), with its grant and user, if the bearer and its grant have not
    /// expired at `now` and the grant is not revoked.
    async fn bearer(&self, token_hash: &[u8; 32], now: i64) -> Result<Option<BearerRecord>>;
    /// A stored grant by id, revoked or not.
    async fn grant(&self, id: &str) -> Result<Option<GrantRecord>>;
    /// Revokes a grant (§9.4) in one transaction: sets its `revoked_at` to `now` (overwriting an earlier
    /// revocation) and deletes all its bearers. False when there is no such grant.
    async fn revoke_grant(&self, id: &str, now: i64) -> Result<bool>;
    /// The user's grants neither revoked nor expired at `now` (§9.5), in the order they were first
    /// stored (then by id).
    async fn live_grants(&self, public_key: &str, now: i64) -> Result<Vec<GrantRecord>>;
    /// The feed of this process's private streams: every committed revocation (a grant revoked, a
    /// cookie session deleted), on any instance sharing the database.
    fn revocations(&self) -> crate::revocations::Revocations;
}

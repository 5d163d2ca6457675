//! The operator's side of the metadata database: which engine, totals, connection pools, liveness and
//! shutdown.

use std::fmt::Debug;

use async_trait::async_trait;
use homestead_config::DatabaseKind;

use super::Result;

/// Totals over the whole server, for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Registered users.
    pub users: u64,
    /// Disabled users.
    pub disabled_users: u64,
    /// Sum of the users' used bytes.
    pub used_bytes: u64,
    /// Signup tokens ever minted.
    pub signup_tokens: u64,
    /// Signup tokens not yet redeemed.
    pub unused_signup_tokens: u64,
    /// PoP nonces held for the replay window.
    pub pop_nonces: u64,
}

/// What operators and the health watcher ask of the database.
#[async_trait]
pub trait Operations: Send + Sync + Debug {
    /// Which engine.
    fn kind(&self) -> DatabaseKind;
    /// Counts for the admin info.
    async fn counts(&self) -> Result<Counts>;
    /// Connections of each connection pool: (pool name, open, idle).
    fn pool_stats(&self) -> Vec<(&'static str, u32, u32)>;
    /// Runs a trivial query on a connection of its own: whether the database answers.
    async fn ping(&self) -> Result<()>;
    /// Closes every connection (at shutdown).
    async fn close(&self);
    /// The request-rate buckets every instance on this database shares (PostgreSQL); None where one
    /// instance owns the database (SQLite), whose buckets stay in memory.
    fn rate_buckets(&self) -> Option<super::RateBuckets>;
}

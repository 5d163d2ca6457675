//! WebDAV write locks (PROTOCOL-0.17 §17): at most one exclusive lock per file path of a user, whether a
//! file is stored there or not. Locks live in the metadata database, so every instance sharing it honours
//! a lock another one granted, and a crash of the granting instance loses none. Every lifetime is measured
//! on the database's clock, in SQL (milliseconds since the Unix epoch), never on an instance's own clock:
//! instances whose clocks drift apart still agree on when a lock ends. A lock is live while the
//! database's clock is before its expiry.

use std::fmt::Debug;

use async_trait::async_trait;

use super::Result;
use crate::path::EntryPath;

/// How taking a lock ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeOutcome {
    /// The lock is granted (inserted, or replacing an expired lock on the path).
    Taken,
    /// A live lock holds the path (its holder's included); nothing changed.
    Locked,
    /// The owner is not a user.
    NoSuchUser,
}

/// A lock to take: `token` on `owner`'s `path` for `seconds`.
#[derive(Debug, Clone, Copy)]
pub struct NewLock<'a> {
    /// The z32 key of the path's owner.
    pub owner: &'a str,
    /// The locked file path.
    pub path: &'a EntryPath,
    /// The lock token (without the `opaquelocktoken:` prefix).
    pub token: &'a str,
    /// The lifetime.
    pub seconds: u32,
}

/// A refresh of a lock: the live lock on `owner`'s `path` named by one of `tokens`, for `seconds`.
#[derive(Debug, Clone, Copy)]
pub struct LockRefresh<'a> {
    /// The z32 key of the path's owner.
    pub owner: &'a str,
    /// The locked file path.
    pub path: &'a EntryPath,
    /// The tokens the request presents.
    pub tokens: &'a [String],
    /// The new lifetime.
    pub seconds: u32,
}

/// Exclusive write locks on users' file paths. Lifetimes are whole seconds from the database's "now".
#[async_trait]
pub trait Locks: Send + Sync + Debug {
    /// Takes `lock` (§17.2 step 6): first deletes the expired
    /// locks of every path (a failure of that clean-up is logged and ignored), then, in one statement,
    /// inserts the lock or replaces an expired one on the path. Of racing calls on one path at most one
    /// gets [`TakeOutcome::Taken`].
    async fn take_lock(&self, lock: &NewLock<'_>) -> Result<TakeOutcome>;
    /// Refreshes the live lock on the refresh's path when its token is one of its `tokens` (§17.3): its expiry
    /// becomes now + `seconds` (which may shorten it). The refreshed token; None when no live lock on the
    /// path has one of them.
    async fn refresh_lock(&self, refresh: &LockRefresh<'_>) -> Result<Option<String>>;
    /// Deletes the lock `token` on `owner`'s `path`, expired or not (§17.7). False when there is none.
    async fn release_lock(&self, owner: &str, path: &EntryPath, token: &str) -> Result<bool>;
    /// The token of the live lock on `owner`'s `path`, if any.
    async fn live_lock(&self, owner: &str, path: &EntryPath) -> Result<Option<String>>;
    /// Pushes the live lock `token`'s expiry to at least now + `seconds`, never shortening it (a write
    /// under the lock keeps it alive, §17.4). False when the lock is not live any more.
    async fn keep_lock_alive(&self, token: &str, seconds: u32) -> Result<bool>;
}

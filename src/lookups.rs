//! The Store behind the middleware's lookup traits: cookie sessions and grant sessions' bearers by the hash
//! of their secret, with their user's record (the account the bandwidth layer and the handlers then use),
//! that user's bandwidth, and the rate limiter's buckets shared through PostgreSQL.

use homestead_backends::metadata::{User, now_micros};
use homestead_backends::{Store, StoreError};
use std::str::FromStr;
use std::time::Duration;

use homestead_config::{Bandwidth, DefaultQuotas};
use homestead_middleware::{
    BandwidthPolicy, Credential, CredentialLookup, GrantSession, Rate, Session, UserRates,
};
use pubky_common::capabilities::Capabilities;

use crate::session_cookie::secret_hash;

/// Credentials and their users from the Store; users' bandwidth from their own settings, else the
/// configured defaults.
#[derive(Debug, Clone)]
pub struct StoreCredentials {
    /// Where sessions and users are.
    pub store: Store,
    /// `[default_quotas]`.
    pub defaults: DefaultQuotas,
}

impl CredentialLookup for StoreCredentials {
    type Error = StoreError;
    type Account = User;

    async fn lookup(
        &self,
        credential: &Credential,
    ) -> Result<Option<(Session, User)>, Self::Error> {
        // Both are looked up by SHA-256: the database never sees a secret, and comparing hashes leaks
        // nothing useful about it. One query each, with the user: no cache, so a revocation or sign-out
        // on any instance counts at once.
        let (user, capabilities, created_at, grant) = match credential {
            Credential::Cookie { secret } => {
                let hash = secret_hash(secret);
                let Some(record) = self.store.accounts().session(&hash).await? else {
                    return Ok(None);
                };
                (record.user, record.capabilities, record.created_at, None)
            }
            Credential::Bearer { token } => {
                let now = unix_seconds();
                let hash = secret_hash(token);
                let Some(record) = self.store.grants().bearer(&hash, now).await? else {
                    return Ok(None);
                };
                let grant = GrantSession {
                    grant_id: record.grant.id,
                    client_id: record.grant.client_id,
                    token_expires_at: u64::try_from(record.expires_at).unwrap_or(0),
                    grant_expires_at: u64::try_from(record.grant.expires_at).unwrap_or(0),
                };
                let created_at = record.grant.created_at.saturating_mul(1_000_000);
                (
                    record.user,
                    record.grant.capabilities,
                    created_at,
                    Some(grant),
                )
            }
        };
        let Ok(key) = pkarr::PublicKey::try_from(user.public_key.as_str()) else {
            tracing::error!(key = %user.public_key, "a stored session names an invalid key");
            return Ok(None);
        };
        // A list that does not parse grants nothing.
        let session = Session {
            user: key,
            capabilities: Capabilities::from_str(&capabilities).unwrap_or_default(),
            created_at,
            grant,
        };
        Ok(Some((session, user)))
    }
}

/// The current Unix time in whole seconds (the unit of grant authentication).
pub fn unix_seconds() -> i64 {
    now_micros() / 1_000_000
}

/// A configured bandwidth as a rate, with a burst in the bandwidth's unit.
pub fn rate(bandwidth: Bandwidth, burst: Option<u32>) -> Rate {
    Rate {
        bytes: bandwidth.amount.saturating_mul(bandwidth.unit_bytes),
        period: Duration::from_secs(bandwidth.per.seconds()),
        burst_bytes: burst.map(|b| u64::from(b).saturating_mul(bandwidth.unit_bytes)),
    }
}

/// A user's rate: their own (`"unlimited"`: none) with their burst, else the default with its burst.
fn resolve(
    own: Option<&str>,
    own_burst: Option<u32>,
    default: Option<Bandwidth>,
    default_burst: Option<u32>,
) -> Option<Rate> {
    match own {
        Some("unlimited") => None,
        Some(text) => Bandwidth::try_from(text.to_string())
            .ok()
            .map(|b| rate(b, own_burst)),
        None => default.map(|b| rate(b, default_burst)),
    }
}

impl BandwidthPolicy for StoreCredentials {
    fn user_rates(&self, user: &User) -> UserRates {
        let limits = &user.limits;
        let d = &self.defaults;
        UserRates {
            read: resolve(
                limits.rate_read.as_deref(),
                limits.rate_read_burst,
                d.rate_read,
                d.rate_read_burst.map(|b| b.get()),
            ),
            write: resolve(
                limits.rate_write.as_deref(),
                limits.rate_write_burst,
                d.rate_write,
                d.rate_write_burst.map(|b| b.get()),
            ),
        }
    }
}

/// The rate limiter's shared buckets in the PostgreSQL database every instance uses.
#[derive(Debug)]
pub struct DatabaseBuckets {
    /// The bucket table.
    pub buckets: homestead_backends::metadata::RateBuckets,
    /// Whose health watcher says whether the database answers.
    pub store: Store,
}

impl homestead_middleware::SharedBuckets for DatabaseBuckets {
    fn spend(
        &self,
        bucket: String,
        interval: Duration,
        tolerance: Duration,
    ) -> homestead_middleware::SpendFuture {
        // While the health watcher finds the database down (it logs that), the request passes at once:
        // the database guard behind answers 503 to whatever needs the database, without this check
        // first waiting out its timeout.
        if !self.store.health().database_up() {
            return Box::pin(std::future::ready(Ok(None)));
        }
        let buckets = self.buckets.clone();
        Box::pin(async move {
            buckets
                .spend(&bucket, interval, tolerance)
                .await
                .map_err(Into::into)
        })
    }
}

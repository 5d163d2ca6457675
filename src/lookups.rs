//! The Store behind the middleware's lookup traits: sessions by the hash of their secret (with their
//! user's record, which the bandwidth and quota layers and the handlers then use), signup tokens by their
//! text, quota room by user and path.

use homestead_backends::metadata::{Quota, User};
use homestead_backends::{EntryPath, Store, StoreError};
use std::time::Duration;

use homestead_config::{Bandwidth, DefaultQuotas};
use homestead_middleware::{
    BandwidthPolicy, QuotaLedger, Rate, Session, SessionLookup, SignupTokens, TokenStatus,
    UserRates,
};

use crate::authorization::check_write;
use crate::routes::storage::decode_path;
use crate::session_cookie::secret_hash;
use homestead_middleware::tenant::storage_path;

/// Sessions from the Store.
#[derive(Debug, Clone)]
pub struct StoreSessions(pub Store);

impl SessionLookup for StoreSessions {
    type Error = StoreError;
    type Account = User;

    async fn lookup(&self, secret: &str) -> Result<Option<(Session, User)>, Self::Error> {
        // Looked up by SHA-256: the database never sees the secret, and comparing hashes leaks nothing
        // useful about it.
        let Some(record) = self.0.accounts().session(&secret_hash(secret)).await? else {
            return Ok(None);
        };
        let Ok(public_key) = pkarr::PublicKey::try_from(record.user.public_key.as_str()) else {
            tracing::error!(key = %record.user.public_key, "a stored session names an invalid key");
            return Ok(None);
        };
        let session = Session {
            public_key,
            capabilities: record.capabilities,
            created_at: record.created_at,
        };
        Ok(Some((session, record.user)))
    }
}

/// Signup tokens from the Store.
#[derive(Debug, Clone)]
pub struct StoreSignupTokens(pub Store);

impl SignupTokens for StoreSignupTokens {
    type Error = StoreError;

    async fn status(&self, token: &str) -> Result<TokenStatus, Self::Error> {
        Ok(match self.0.accounts().signup_token(token).await? {
            None => TokenStatus::Unknown,
            Some(record) if record.used_by.is_some() => TokenStatus::Used,
            Some(_) => TokenStatus::Unused,
        })
    }
}

/// Quota room from the Store.
#[derive(Debug, Clone)]
pub struct StoreQuotas(pub Store);

impl QuotaLedger for StoreQuotas {
    type Error = StoreError;
    type Account = User;

    async fn admits(
        &self,
        session: &Session,
        user: &User,
        path: &str,
        length: u64,
    ) -> Result<bool, Self::Error> {
        let Some(path) = decode_path(storage_path(path))
            .ok()
            .and_then(|p| EntryPath::try_from(p).ok())
        else {
            return Ok(true);
        };
        if check_write(Some(session), &path).is_err() {
            return Ok(true);
        }
        // Under no quota there is no room to measure (and nothing to read).
        if user.quota.unwrap_or(self.0.default_quota()) == Quota::Unlimited {
            return Ok(true);
        }
        // A refused write is answered by the handler, with its own reason.
        let Ok(plan) = self.0.prepare(user, &path).await? else {
            return Ok(true);
        };
        Ok(plan.room().is_none_or(|room| length <= room))
    }
}

/// Users' bandwidth from their own settings, else the configured defaults.
#[derive(Debug, Clone)]
pub struct StoreBandwidth {
    /// `[default_quotas]`.
    pub defaults: DefaultQuotas,
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

impl BandwidthPolicy for StoreBandwidth {
    type Account = User;

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

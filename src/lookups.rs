//! The Store behind the middleware's lookup traits: sessions by the hash of their secret, with their
//! user's record (the account the bandwidth layer and the handlers then use) and that user's bandwidth.

use homestead_backends::metadata::User;
use homestead_backends::{Store, StoreError};
use std::str::FromStr;
use std::time::Duration;

use homestead_config::{Bandwidth, DefaultQuotas};
use homestead_middleware::{
    BandwidthPolicy, Credential, CredentialLookup, Rate, Session, UserRates,
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
        let Credential::Cookie { secret } = credential;
        // Looked up by SHA-256: the database never sees the secret, and comparing hashes leaks nothing
        // useful about it.
        let Some(record) = self.store.accounts().session(&secret_hash(secret)).await? else {
            return Ok(None);
        };
        let Ok(user) = pkarr::PublicKey::try_from(record.user.public_key.as_str()) else {
            tracing::error!(key = %record.user.public_key, "a stored session names an invalid key");
            return Ok(None);
        };
        // A list that does not parse grants nothing.
        let capabilities = Capabilities::from_str(&record.capabilities).unwrap_or_default();
        let session = Session {
            user,
            capabilities,
            created_at: record.created_at,
        };
        Ok(Some((session, record.user)))
    }
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

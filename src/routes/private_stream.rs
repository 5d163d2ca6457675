//! What makes an event stream private (PROTOCOL-0.17.md §15.2, §15.4): the identity that may open one,
//! the credential it stays bound to, and the guard that ends it once that credential is revoked.
//!
//! A guard subscribes to the revocation feed before it re-reads its credential, so no revocation falls
//! between the two. While streaming it ends on a signal naming its credential, on a lost feed, and, before
//! any private event goes out, it re-reads its credential in the database: an event read after a
//! revocation committed is never sent, however late the signal.

use homestead_backends::Store;
use homestead_backends::revocations::Revoked;
use homestead_middleware::auth::{bearer_token, session_secret};
use homestead_middleware::{Authentication, Credential, CredentialLookup, Principal};
use http::{HeaderMap, StatusCode, header};
use tokio::sync::broadcast::{self, error::TryRecvError};

use crate::authorization::cross_site;
use crate::http_error::HttpError;
use crate::lookups::StoreCredentials;
use crate::routes::AppState;
use crate::session_cookie::secret_hash;

/// The credential a private stream is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Binding {
    /// A bearer's grant: revoking the grant ends the stream, rotating its bearer does not.
    Grant(String),
    /// A cookie session, by the SHA-256 of its secret.
    Cookie([u8; 32]),
}

impl Binding {
    /// The credential that proved `principal` (a bearer without a grant names none, and never stands).
    fn of(principal: &Principal) -> Self {
        match &principal.via {
            Credential::Cookie { secret } => Self::Cookie(secret_hash(secret)),
            Credential::Bearer { .. } => Self::Grant(
                principal
                    .grant
                    .as_ref()
                    .map(|grant| grant.grant_id.clone())
                    .unwrap_or_default(),
            ),
        }
    }

    /// Whether `revoked` ends a stream bound to this credential.
    fn ended_by(&self, revoked: &Revoked) -> bool {
        match revoked {
            Revoked::Unknown => true,
            Revoked::Grant(id) => matches!(self, Self::Grant(own) if own == id),
            cookie @ Revoked::CookieSession(_) => {
                matches!(self, Self::Cookie(hash) if Revoked::cookie_session(hash) == *cookie)
            }
        }
    }

    /// Whether the credential still stands in the database (a grant not revoked, a cookie session not
    /// signed out). A failed read counts as no: a stream fails closed.
    async fn stands(&self, store: &Store) -> bool {
        let read = match self {
            Self::Grant(id) => store
                .grants()
                .grant(id)
                .await
                .map(|grant| grant.is_some_and(|grant| grant.revoked_at.is_none())),
            Self::Cookie(hash) => store
                .accounts()
                .session(hash)
                .await
                .map(|session| session.is_some()),
        };
        read.unwrap_or_else(|err| {
            tracing::warn!(%err, "re-reading a private stream's credential failed; ending it");
            false
        })
    }
}

/// The identity a private stream of `user` acts as (§15.2): with an `Authorization: Bearer` header
/// only a bearer counts; else the request's own principal (a cookie of the tenant); else the session
/// cookie named after `user` itself, if it is a session of `user`. A cookie a browser sends for another
/// site's page counts for nothing ([`crate::authorization::private_identity`]).
pub async fn identity(
    app: &AppState,
    headers: &HeaderMap,
    authentication: &Authentication,
    user: Option<&pkarr::PublicKey>,
) -> Result<Option<Principal>, HttpError> {
    let principal = match authentication {
        Authentication::Authenticated(principal) => Some(principal.as_ref()),
        _ => None,
    };
    let bearer_header = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|value| value.as_bytes().starts_with(b"Bearer "));
    if bearer_header {
        let by_bearer = principal.filter(|p| {
            matches!(p.via, Credential::Bearer { .. }) && bearer_token(headers).is_some()
        });
        return Ok(by_bearer.cloned());
    }
    if cross_site(headers) {
        return Ok(None);
    }
    if let Some(principal) = principal {
        return Ok(Some(principal.clone()));
    }
    let Some(user) = user else {
        return Ok(None);
    };
    let Some(secret) = session_secret(headers, &user.to_string()) else {
        return Ok(None);
    };
    let lookup = StoreCredentials {
        store: app.store.clone(),
        defaults: app.default_quotas.clone(),
    };
    let credential = Credential::Cookie { secret };
    let found = lookup.lookup(&credential).await?;
    Ok(found
        .filter(|(session, _)| session.user == *user)
        .map(|(session, _)| Principal::new(session, credential)))
}

/// Keeps a private stream bound to the credential that opened it.
#[derive(Debug)]
pub struct Guard {
    binding: Binding,
    signals: broadcast::Receiver<Revoked>,
    store: Store,
    /// Signals were missed: the credential is re-read before the stream goes on.
    missed: bool,
}

impl Guard {
    /// Binds a stream to `principal`'s credential (§15.1 steps 8–9): 503 while revocations cannot be
    /// followed, 401 when the credential no longer stands.
    pub async fn open(store: &Store, principal: &Principal) -> Result<Self, HttpError> {
        let Some(signals) = store.grants().revocations().subscribe() else {
            return Err(HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Private event streams are temporarily unavailable",
            ));
        };
        let binding = Binding::of(principal);
        if !binding.stands(store).await {
            return Err(HttpError::new(StatusCode::UNAUTHORIZED, "Unauthorized"));
        }
        Ok(Self {
            binding,
            signals,
            store: store.clone(),
            missed: false,
        })
    }

    /// Whether the stream must end now: a pending signal names its credential (all are drained, without
    /// waiting), or signals were missed and the credential no longer stands.
    pub async fn ends_now(&mut self) -> bool {
        loop {
            match self.signals.try_recv() {
                Ok(revoked) if self.binding.ended_by(&revoked) => return true,
                Ok(_) => {}
                Err(TryRecvError::Lagged(_)) => self.missed = true,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return true,
            }
        }
        !self.recheck_if_missed().await
    }

    /// Whether the credential still stands in the database: checked before private events go out, so
    /// that an event committed after a revocation never does, however late its signal.
    pub async fn stands(&self) -> bool {
        self.binding.stands(&self.store).await
    }

    /// After missed signals, whether the credential still stands (true when none were missed). The flag
    /// is cleared only by a successful check, so a check cut short is made again.
    async fn recheck_if_missed(&mut self) -> bool {
        if self.missed {
            if !self.stands().await {
                return false;
            }
            self.missed = false;
        }
        true
    }

    /// Waits until the stream must end: a signal names its credential, the feed is lost, or, after
    /// missed signals, the credential no longer stands. Safe to cancel and call again.
    pub async fn ended(&mut self) {
        loop {
            if !self.recheck_if_missed().await {
                return;
            }
            match self.signals.recv().await {
                Ok(revoked) if self.binding.ended_by(&revoked) => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => self.missed = true,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_ends_only_streams_of_its_credential() {
        let grant = Binding::Grant("g1".into());
        let cookie = Binding::Cookie([7; 32]);
        assert!(grant.ended_by(&Revoked::Grant("g1".into())));
        assert!(!grant.ended_by(&Revoked::Grant("g2".into())));
        assert!(!grant.ended_by(&Revoked::cookie_session(&[7; 32])));
        assert!(cookie.ended_by(&Revoked::cookie_session(&[7; 32])));
        assert!(!cookie.ended_by(&Revoked::cookie_session(&[8; 32])));
        assert!(!cookie.ended_by(&Revoked::Grant("g1".into())));
        for binding in [grant, cookie] {
            assert!(
                binding.ended_by(&Revoked::Unknown),
                "a lost feed ends every stream"
            );
        }
    }
}

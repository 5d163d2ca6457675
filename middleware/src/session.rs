//! The session of a request (PROTOCOL.md §6.5): the cookie named after the [`Tenant`]'s key, if its value
//! has the 26 characters of a session secret, looked up through a [`SessionLookup`]. The outcome is stored
//! as a [`SessionState`] extension, so that handlers can tell "no cookie" from "unknown session"; what the
//! lookup read about the session's user (its [`SessionLookup::Account`]) is attached beside it, so that
//! later layers and handlers need not read the user again. A failed lookup (database down) answers 503 at
//! once.
//!
//! ```
//! # use homestead_middleware::session::{Session, SessionLayer, SessionLookup};
//! #[derive(Clone)]
//! struct NoSessions;
//!
//! impl SessionLookup for NoSessions {
//!     type Error = std::convert::Infallible;
//!     type Account = ();
//!     async fn lookup(&self, _secret: &str) -> Result<Option<(Session, ())>, Self::Error> {
//!         Ok(None)
//!     }
//! }
//!
//! let layer = SessionLayer::new(NoSessions);
//! ```

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response, StatusCode, header};
use percent_encoding::percent_decode_str;
use pkarr::PublicKey;
use tower::{Layer, Service};

use crate::plain_text::plain_text;
use crate::tenant::Tenant;

/// Length of a session secret: 16 bytes in Crockford base32.
pub const SECRET_LEN: usize = 26;

/// A stored session, as the lookup returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Whose session.
    pub public_key: PublicKey,
    /// Its capabilities, as a capability list string.
    pub capabilities: String,
    /// Creation time, microseconds since the epoch.
    pub created_at: i64,
}

/// What the session cookie of a request amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// No tenant, or no cookie named after it with a secret-shaped value.
    NoCookie,
    /// A secret that names no session.
    Unknown(String),
    /// A live session.
    Found {
        /// The cookie's secret.
        secret: String,
        /// The session.
        session: Box<Session>,
    },
}

/// Finds sessions by secret; the app implements it with the Store.
pub trait SessionLookup: Clone + Send + Sync + 'static {
    /// Why a lookup could not be done.
    type Error: Display + Send;
    /// What the lookup read about the session's user, attached to the request as an extension.
    type Account: Clone + Send + Sync + 'static;

    /// The session of `secret`, if any, with its user's account.
    fn lookup(
        &self,
        secret: &str,
    ) -> impl Future<Output = Result<Option<(Session, Self::Account)>, Self::Error>> + Send;
}

/// The session of a request when it belongs to the request's tenant (None without a [`SessionLayer`]
/// in front).
pub fn own_session<B>(request: &Request<B>) -> Option<&Session> {
    let Tenant(tenant) = request.extensions().get::<Tenant>()?;
    match request.extensions().get::<SessionState>()? {
        SessionState::Found { session, .. } if session.public_key == *tenant => Some(session),
        _ => None,
    }
}

/// [`own_session`] with the account the lookup attached.
pub fn tenant_session<B, A: Send + Sync + 'static>(request: &Request<B>) -> Option<(&Session, &A)> {
    Some((own_session(request)?, request.extensions().get::<A>()?))
}

/// The value of the last cookie named `name` across all `Cookie` headers (percent-decoded), if it has
/// the length of a session secret.
pub fn session_secret(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(key, _)| {
            percent_decode_str(key)
                .decode_utf8()
                .is_ok_and(|k| k == name)
        })
        .filter_map(|(_, value)| {
            percent_decode_str(value)
                .decode_utf8()
                .ok()
                .map(|v| v.into_owned())
        })
        .next_back()
        .filter(|secret| secret.len() == SECRET_LEN)
}

/// Adds the [`SessionState`] extension.
#[derive(Debug, Clone)]
pub struct SessionLayer<L> {
    lookup: L,
}

impl<L> SessionLayer<L> {
    /// A layer that finds sessions through `lookup`.
    pub fn new(lookup: L) -> Self {
        Self { lookup }
    }
}

impl<S, L: Clone> Layer<S> for SessionLayer<L> {
    type Service = SessionService<S, L>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            lookup: self.lookup.clone(),
        }
    }
}

/// The service of [`SessionLayer`].
#[derive(Debug, Clone)]
pub struct SessionService<S, L> {
    inner: S,
    lookup: L,
}

impl<S, L, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S, L>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    L: SessionLookup,
    ReqBody: Send + 'static,
    ResBody: From<String>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone that was made ready serves this request; the fresh clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let lookup = self.lookup.clone();
        Box::pin(async move {
            let secret = request
                .extensions()
                .get::<Tenant>()
                .and_then(|tenant| session_secret(request.headers(), &tenant.0.to_string()));
            let state = match secret {
                None => SessionState::NoCookie,
                Some(secret) => match lookup.lookup(&secret).await {
                    Ok(Some((session, account))) => {
                        request.extensions_mut().insert(account);
                        SessionState::Found {
                            secret,
                            session: Box::new(session),
                        }
                    }
                    Ok(None) => SessionState::Unknown(secret),
                    Err(err) => {
                        tracing::warn!(%err, "session lookup failed");
                        return Ok(plain_text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "Storage unavailable: the session lookup failed".into(),
                        ));
                    }
                },
            };
            request.extensions_mut().insert(state);
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

    const A: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";
    const SECRET: &str = "6HHZ06GHB964CZMDAA0WCNV2C8";

    #[derive(Clone)]
    struct Fixed(Result<Option<&'static str>, &'static str>);

    /// The account attached with a found session.
    #[derive(Debug, Clone, PartialEq)]
    struct Account(&'static str);

    impl SessionLookup for Fixed {
        type Error = &'static str;
        type Account = Account;

        async fn lookup(&self, secret: &str) -> Result<Option<(Session, Account)>, Self::Error> {
            let found = self.0?;
            Ok(found.filter(|known| *known == secret).map(|_| {
                let session = Session {
                    public_key: PublicKey::try_from(A).unwrap(),
                    capabilities: "/:rw".into(),
                    created_at: 0,
                };
                (session, Account("alice"))
            }))
        }
    }

    async fn state(lookup: Fixed, tenant: bool, cookies: &[&str]) -> Response<String> {
        let mut request = Request::builder().uri("/session");
        for cookie in cookies {
            request = request.header(header::COOKIE, *cookie);
        }
        let mut request = request.body(()).unwrap();
        if tenant {
            request
                .extensions_mut()
                .insert(Tenant(PublicKey::try_from(A).unwrap()));
        }
        ServiceBuilder::new()
            .layer(SessionLayer::new(lookup))
            .service_fn(|req: Request<()>| async move {
                let state = req.extensions().get::<SessionState>().cloned();
                let account = tenant_session::<_, Account>(&req).map(|(_, account)| account);
                let account = account.map_or(String::new(), |a| format!(" with {}", a.0));
                Ok::<_, Infallible>(Response::new(format!("{state:?}{account}")))
            })
            .oneshot(request)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn finds_the_session_of_the_tenants_cookie() {
        let cookie = format!("other=1; {A}={SECRET}");
        let body = state(Fixed(Ok(Some(SECRET))), true, &[&cookie])
            .await
            .into_body();
        assert!(body.starts_with("Some(Found"), "{body}");
        assert!(body.ends_with(" with alice"), "{body}");
        // The last cookie of that name wins, across headers.
        let first = format!("{A}=AAAAAAAAAAAAAAAAAAAAAAAAAA");
        let body = state(Fixed(Ok(Some(SECRET))), true, &[&first, &cookie])
            .await
            .into_body();
        assert!(body.starts_with("Some(Found"), "{body}");
    }

    #[tokio::test]
    async fn tells_no_cookie_from_unknown_session() {
        let cookie = format!("{A}={SECRET}");
        let body = state(Fixed(Ok(None)), true, &[&cookie]).await.into_body();
        assert_eq!(body, format!("Some(Unknown(\"{SECRET}\"))"));
        let short = format!("{A}=SHORT");
        assert_eq!(
            state(Fixed(Ok(Some(SECRET))), true, &[&short])
                .await
                .into_body(),
            "Some(NoCookie)"
        );
        assert_eq!(
            state(Fixed(Ok(Some(SECRET))), false, &[&cookie])
                .await
                .into_body(),
            "Some(NoCookie)"
        );
        let other_user = format!("tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qy={SECRET}");
        assert_eq!(
            state(Fixed(Ok(Some(SECRET))), true, &[&other_user])
                .await
                .into_body(),
            "Some(NoCookie)"
        );
    }

    #[tokio::test]
    async fn a_failed_lookup_answers_503() {
        let cookie = format!("{A}={SECRET}");
        let response = state(Fixed(Err("database down")), true, &[&cookie]).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.into_body(),
            "Storage unavailable: the session lookup failed",
            "a fixed reason: the error may name internals"
        );
    }
}

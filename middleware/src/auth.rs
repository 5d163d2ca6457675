//! Who is making a request (PROTOCOL.md §6.5, PROTOCOL-0.17.md §10): the request's [`Credential`] (a
//! grant session's bearer token in `Authorization`, else the cookie named after the [`Tenant`]'s key), looked
//! up through a [`CredentialLookup`]. A bearer that resolves wins and cookies are not read; one that does
//! not falls back to the cookie. A cookie only proves a session of the tenant's own user. The outcome is
//! stored as an [`Authentication`] extension, so that handlers can tell "no credential" from "unknown
//! credential"; a found credential becomes a [`Principal`] (user, typed capabilities, and the credential it
//! came by), and what the lookup read about the user (its [`CredentialLookup::Account`], the one account
//! type of the stack) is attached beside it as an [`Account`], so that later layers and handlers need not
//! read the user again. A failed lookup (database down) answers 503 at once.
//!
//! ```
//! # use homestead_middleware::auth::{AuthLayer, Credential, CredentialLookup, Session};
//! #[derive(Clone)]
//! struct NoSessions;
//!
//! impl CredentialLookup for NoSessions {
//!     type Error = std::convert::Infallible;
//!     type Account = ();
//!     async fn lookup(&self, _credential: &Credential) -> Result<Option<(Session, ())>, Self::Error> {
//!         Ok(None)
//!     }
//! }
//!
//! let layer = AuthLayer::new(NoSessions);
//! ```

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response, StatusCode, header};
use percent_encoding::percent_decode_str;
use pkarr::PublicKey;
use pubky_common::capabilities::Capabilities;
use tower::{Layer, Service};

use crate::plain_text::plain_text;
use crate::tenant::Tenant;

/// Length of a session secret: 16 bytes in Crockford base32.
pub const SECRET_LEN: usize = 26;

/// Length of a bearer token: 32 bytes in base64url without padding.
pub const BEARER_LEN: usize = 43;

/// What a request presents to prove who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// The secret of the session cookie named after the tenant.
    Cookie {
        /// The cookie's value.
        secret: String,
    },
    /// The token of a grant session, from `Authorization: Bearer <token>`.
    Bearer {
        /// The token (any 43 bytes of UTF-8: it is looked up, not parsed).
        token: String,
    },
}

/// What a grant session adds to its user, capabilities and creation time (those of its stored grant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantSession {
    /// The grant's id (`jti`).
    pub grant_id: String,
    /// The application the grant names.
    pub client_id: String,
    /// When the bearer stops working, Unix seconds.
    pub token_expires_at: u64,
    /// When the grant ends, Unix seconds.
    pub grant_expires_at: u64,
}

/// A live session, as the lookup returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Whose session.
    pub user: PublicKey,
    /// What the session may do, parsed once by the lookup.
    pub capabilities: Capabilities,
    /// Creation time, microseconds since the epoch.
    pub created_at: i64,
    /// The grant, for a bearer session.
    pub grant: Option<GrantSession>,
}

/// An authenticated request's user, what it may do, and the credential that proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who.
    pub user: PublicKey,
    /// What the session may do.
    pub capabilities: Capabilities,
    /// When the session was created, microseconds since the epoch.
    pub created_at: i64,
    /// The grant, for a bearer session.
    pub grant: Option<GrantSession>,
    /// How the request proved it.
    pub via: Credential,
}

impl Principal {
    /// The principal of `session`, proved by `via`.
    pub fn new(session: Session, via: Credential) -> Self {
        Self {
            user: session.user,
            capabilities: session.capabilities,
            created_at: session.created_at,
            grant: session.grant,
            via,
        }
    }
}

/// What a request's credential amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// No bearer token, and no tenant or no cookie for it.
    NoCredential,
    /// A credential that names no session.
    Unknown(Credential),
    /// A live session.
    Authenticated(Box<Principal>),
}

impl Authentication {
    /// The credential the request presented, known or not (sign-out ends it either way).
    pub fn credential(&self) -> Option<&Credential> {
        match self {
            Self::NoCredential => None,
            Self::Unknown(credential) => Some(credential),
            Self::Authenticated(principal) => Some(&principal.via),
        }
    }
}

/// What the lookup read about an authenticated user, attached beside the [`Authentication`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account<A>(pub A);

/// Finds the session of a credential; the app implements it with the Store. Its `Account` is the one
/// account type of the stack: the layers that read accounts take it from here.
pub trait CredentialLookup: Clone + Send + Sync + 'static {
    /// Why a lookup could not be done.
    type Error: Display + Send;
    /// What the lookup reads about the session's user, attached to the request as an [`Account`].
    type Account: Clone + Send + Sync + 'static;

    /// The session `credential` names, if any, with its user's account.
    fn lookup(
        &self,
        credential: &Credential,
    ) -> impl Future<Output = Result<Option<(Session, Self::Account)>, Self::Error>> + Send;
}

/// The principal of a request when it is the request's tenant (None without an [`AuthLayer`] in front).
pub fn own_principal<B>(request: &Request<B>) -> Option<&Principal> {
    let Tenant(tenant) = request.extensions().get::<Tenant>()?;
    match request.extensions().get::<Authentication>()? {
        Authentication::Authenticated(principal) if principal.user == *tenant => Some(principal),
        _ => None,
    }
}

/// [`own_principal`] with the account the lookup of `L` attached.
pub fn own_account<B, L: CredentialLookup>(
    request: &Request<B>,
) -> Option<(&Principal, &L::Account)> {
    let Account(account) = request.extensions().get::<Account<L::Account>>()?;
    Some((own_principal(request)?, account))
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

/// The bearer token of the first `Authorization` header, if it is exactly `Bearer ` and 43 bytes.
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let token = value.strip_prefix(b"Bearer ")?;
    if token.len() != BEARER_LEN {
        return None;
    }
    String::from_utf8(token.to_vec()).ok()
}

/// The credentials a request presents, in the order they are tried: its bearer token, then the tenant's
/// session cookie.
fn credentials<B>(request: &Request<B>) -> impl Iterator<Item = Credential> {
    let bearer = bearer_token(request.headers()).map(|token| Credential::Bearer { token });
    let cookie = request
        .extensions()
        .get::<Tenant>()
        .and_then(|Tenant(tenant)| session_secret(request.headers(), &tenant.to_string()))
        .map(|secret| Credential::Cookie { secret });
    bearer.into_iter().chain(cookie)
}

/// Whether `session` may stand for the request: a cookie proves only a session of the tenant's user.
fn proves<B>(request: &Request<B>, credential: &Credential, session: &Session) -> bool {
    match credential {
        Credential::Bearer { .. } => true,
        Credential::Cookie { .. } => request
            .extensions()
            .get::<Tenant>()
            .is_some_and(|Tenant(tenant)| *tenant == session.user),
    }
}

/// Adds the [`Authentication`] extension, and the [`Account`] of an authenticated request.
#[derive(Debug, Clone)]
pub struct AuthLayer<L> {
    lookup: L,
}

impl<L> AuthLayer<L> {
    /// A layer that finds sessions through `lookup`.
    pub fn new(lookup: L) -> Self {
        Self { lookup }
    }
}

impl<S, L: Clone> Layer<S> for AuthLayer<L> {
    type Service = AuthService<S, L>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            lookup: self.lookup.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S, L> {
    inner: S,
    lookup: L,
}

impl<S, L, ReqBody, ResBody> Service<Request<ReqBody>> for AuthService<S, L>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    L: CredentialLookup,
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
            let mut authentication = Authentication::NoCredential;
            for credential in credentials(&request).collect::<Vec<_>>() {
                match lookup.lookup(&credential).await {
                    Ok(Some((session, account))) if proves(&request, &credential, &session) => {
                        request.extensions_mut().insert(Account(account));
                        let principal = Principal::new(session, credential);
                        authentication = Authentication::Authenticated(Box::new(principal));
                        break;
                    }
                    Ok(_) => authentication = Authentication::Unknown(credential),
                    Err(err) => {
                        tracing::warn!(%err, "session lookup failed");
                        return Ok(plain_text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "Storage unavailable: the session lookup failed".into(),
                        ));
                    }
                }
            }
            request.extensions_mut().insert(authentication);
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
    const B: &str = "tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qy";
    const SECRET: &str = "6HHZ06GHB964CZMDAA0WCNV2C8";
    /// A cookie secret whose session belongs to user B.
    const SECRET_OF_B: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBB";
    /// A bearer token of user B's grant session.
    const BEARER_OF_B: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

    /// Knows the cookie secret it holds (user A, account "alice"), [`SECRET_OF_B`] and [`BEARER_OF_B`]
    /// (user B, account "bob"), or fails every lookup.
    #[derive(Clone)]
    struct Fixed(Result<Option<&'static str>, &'static str>);

    impl CredentialLookup for Fixed {
        type Error = &'static str;
        type Account = &'static str;

        async fn lookup(
            &self,
            credential: &Credential,
        ) -> Result<Option<(Session, &'static str)>, Self::Error> {
            let found = self.0?;
            let (user, account) = match credential {
                Credential::Cookie { secret } if found == Some(secret.as_str()) => (A, "alice"),
                Credential::Cookie { secret } if secret == SECRET_OF_B => (B, "bob"),
                Credential::Bearer { token } if token == BEARER_OF_B => (B, "bob"),
                _ => return Ok(None),
            };
            let session = Session {
                user: PublicKey::try_from(user).unwrap(),
                capabilities: "/:rw".parse().unwrap(),
                created_at: 0,
                grant: None,
            };
            Ok(Some((session, account)))
        }
    }

    async fn state(lookup: Fixed, tenant: bool, cookies: &[&str]) -> Response<String> {
        with_authorization(lookup, tenant, cookies, &[]).await
    }

    async fn with_authorization(
        lookup: Fixed,
        tenant: bool,
        cookies: &[&str],
        authorization: &[&str],
    ) -> Response<String> {
        let mut request = Request::builder().uri("/session");
        for cookie in cookies {
            request = request.header(header::COOKIE, *cookie);
        }
        for value in authorization {
            request = request.header(header::AUTHORIZATION, *value);
        }
        let mut request = request.body(()).unwrap();
        if tenant {
            request
                .extensions_mut()
                .insert(Tenant(PublicKey::try_from(A).unwrap()));
        }
        ServiceBuilder::new()
            .layer(AuthLayer::new(lookup))
            .service_fn(|req: Request<()>| async move {
                let state = req.extensions().get::<Authentication>().cloned();
                let account = own_account::<_, Fixed>(&req).map(|(_, account)| account);
                let account = account.map_or(String::new(), |a| format!(" with {a}"));
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
        assert!(body.starts_with("Some(Authenticated"), "{body}");
        assert!(body.contains(&format!("via: Cookie {{ secret: \"{SECRET}\" }}")));
        assert!(body.ends_with(" with alice"), "{body}");
        // The last cookie of that name wins, across headers.
        let first = format!("{A}=AAAAAAAAAAAAAAAAAAAAAAAAAA");
        let body = state(Fixed(Ok(Some(SECRET))), true, &[&first, &cookie])
            .await
            .into_body();
        assert!(body.starts_with("Some(Authenticated"), "{body}");
    }

    #[tokio::test]
    async fn tells_no_credential_from_unknown_credential() {
        let cookie = format!("{A}={SECRET}");
        let body = state(Fixed(Ok(None)), true, &[&cookie]).await.into_body();
        assert_eq!(
            body,
            format!("Some(Unknown(Cookie {{ secret: \"{SECRET}\" }}))")
        );
        let short = format!("{A}=SHORT");
        assert_eq!(
            state(Fixed(Ok(Some(SECRET))), true, &[&short])
                .await
                .into_body(),
            "Some(NoCredential)"
        );
        assert_eq!(
            state(Fixed(Ok(Some(SECRET))), false, &[&cookie])
                .await
                .into_body(),
            "Some(NoCredential)"
        );
        let other_user = format!("tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qy={SECRET}");
        assert_eq!(
            state(Fixed(Ok(Some(SECRET))), true, &[&other_user])
                .await
                .into_body(),
            "Some(NoCredential)"
        );
    }

    #[tokio::test]
    async fn a_bearer_wins_over_the_cookie_and_falls_back_to_it() {
        let cookie = format!("{A}={SECRET}");
        let lookup = || Fixed(Ok(Some(SECRET)));
        let bearer = format!("Bearer {BEARER_OF_B}");
        let body = with_authorization(lookup(), true, &[&cookie], &[&bearer])
            .await
            .into_body();
        assert!(body.contains("via: Bearer"), "{body}");
        // B's principal, though the tenant is A: not the tenant's own account.
        assert!(body.contains(B) && !body.contains(" with "), "{body}");
        // Without a tenant the bearer still works: it names its own user.
        let body = with_authorization(lookup(), false, &[], &[&bearer])
            .await
            .into_body();
        assert!(body.starts_with("Some(Authenticated"), "{body}");
        // An unknown bearer falls back to the cookie.
        let unknown = format!("Bearer {}", "x".repeat(43));
        let body = with_authorization(lookup(), true, &[&cookie], &[&unknown])
            .await
            .into_body();
        assert!(body.contains("via: Cookie"), "{body}");
        assert!(body.ends_with(" with alice"), "{body}");
        let body = with_authorization(lookup(), true, &[], &[&unknown])
            .await
            .into_body();
        assert!(body.starts_with("Some(Unknown(Bearer"), "{body}");
        // Not a bearer: another length, another spelling of the scheme; only the first header counts.
        let short = format!("Bearer {}", &BEARER_OF_B[..42]);
        let lower = format!("bearer {BEARER_OF_B}");
        let basic = "Basic dXNlcjpwYXNz";
        for values in [
            vec![short.as_str()],
            vec![lower.as_str()],
            vec![basic, &bearer],
        ] {
            let body = with_authorization(lookup(), true, &[], &values)
                .await
                .into_body();
            assert_eq!(body, "Some(NoCredential)", "{values:?}");
        }
    }

    #[tokio::test]
    async fn a_cookie_proves_only_a_session_of_the_tenant() {
        // B's session under the cookie named after A (the tenant) is no identity.
        let cookie = format!("{A}={SECRET_OF_B}");
        let body = state(Fixed(Ok(Some(SECRET))), true, &[&cookie])
            .await
            .into_body();
        assert_eq!(
            body,
            format!("Some(Unknown(Cookie {{ secret: \"{SECRET_OF_B}\" }}))")
        );
    }

    #[test]
    fn the_credential_is_kept_known_or_not() {
        let cookie = Credential::Cookie {
            secret: SECRET.into(),
        };
        assert_eq!(Authentication::NoCredential.credential(), None);
        assert_eq!(
            Authentication::Unknown(cookie.clone()).credential(),
            Some(&cookie)
        );
        let session = Session {
            user: PublicKey::try_from(A).unwrap(),
            capabilities: Capabilities::default(),
            created_at: 0,
            grant: None,
        };
        let principal = Principal::new(session, cookie.clone());
        assert_eq!(
            Authentication::Authenticated(Box::new(principal)).credential(),
            Some(&cookie)
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

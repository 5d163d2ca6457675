//! Upload limits that can be judged before a body is read: a `PUT` whose `Content-Length` exceeds the
//! server's maximum body size gets 413, and one by the tenant's own session that would not fit the
//! user's storage quota gets 507 `Disk space quota exceeded`, both without consuming the body. The
//! streamed byte count is enforced again by the Store, which refuses the commit.
//!
//! The quota is only consulted for the owner's authenticated writes (the session and account the
//! [`SessionLayer`](crate::SessionLayer) in front attached), so strangers learn nothing about a user's
//! usage and the authorization errors keep their precedence.
//!
//! ```
//! # use homestead_middleware::quota::{QuotaLayer, QuotaLedger};
//! #[derive(Clone)]
//! struct Unlimited;
//!
//! impl QuotaLedger for Unlimited {
//!     type Error = std::convert::Infallible;
//!     type Account = ();
//!     async fn admits(
//!         &self,
//!         _session: &homestead_middleware::Session,
//!         _account: &(),
//!         _path: &str,
//!         _length: u64,
//!     ) -> Result<bool, Self::Error> {
//!         Ok(true)
//!     }
//! }
//!
//! let layer = QuotaLayer::new(Unlimited, Some(100 << 20));
//! ```

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Method, Request, Response, StatusCode, header};
use tower::{Layer, Service};

use crate::plain_text::plain_text;
use crate::session::{Session, tenant_session};

/// Tells whether a write fits a user's storage quota; the app implements it with the Store.
pub trait QuotaLedger: Clone + Send + Sync + 'static {
    /// Why the ledger could not answer.
    type Error: Display + Send;
    /// The account the session lookup attached (the owner's usage and quota).
    type Account: Send + Sync + 'static;

    /// Whether the owner of `session` and `account` may write `length` bytes at the raw request path
    /// `path`. Admit whatever the handler will refuse for another reason (invalid path, missing
    /// capability, disabled user), so that its error keeps precedence over 507.
    fn admits(
        &self,
        session: &Session,
        account: &Self::Account,
        path: &str,
        length: u64,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;
}

/// Refuses oversized and over-quota uploads from their `Content-Length`.
#[derive(Debug, Clone)]
pub struct QuotaLayer<Q> {
    ledger: Q,
    max_body_bytes: Option<u64>,
}

impl<Q> QuotaLayer<Q> {
    /// Checks quotas with `ledger` and bodies against `max_body_bytes` (None: no maximum).
    pub fn new(ledger: Q, max_body_bytes: Option<u64>) -> Self {
        Self {
            ledger,
            max_body_bytes,
        }
    }
}

impl<S, Q: Clone> Layer<S> for QuotaLayer<Q> {
    type Service = QuotaService<S, Q>;

    fn layer(&self, inner: S) -> Self::Service {
        QuotaService {
            inner,
            ledger: self.ledger.clone(),
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// The service of [`QuotaLayer`].
#[derive(Debug, Clone)]
pub struct QuotaService<S, Q> {
    inner: S,
    ledger: Q,
    max_body_bytes: Option<u64>,
}

impl<S, Q, ReqBody, ResBody> Service<Request<ReqBody>> for QuotaService<S, Q>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    Q: QuotaLedger,
    ReqBody: Send + 'static,
    ResBody: From<String>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let ledger = self.ledger.clone();
        let max_body_bytes = self.max_body_bytes;
        Box::pin(async move {
            let declared = (request.method() == Method::PUT)
                .then(|| request.headers().get(header::CONTENT_LENGTH))
                .flatten()
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let Some(length) = declared else {
                return inner.call(request).await;
            };
            if let Some(max) = max_body_bytes.filter(|max| length > *max) {
                return Ok(plain_text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("Request body is larger than the limit of {max} bytes"),
                ));
            }
            let owner = tenant_session::<_, Q::Account>(&request);
            if let Some((session, account)) = owner {
                match ledger
                    .admits(session, account, request.uri().path(), length)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        return Ok(plain_text(
                            StatusCode::INSUFFICIENT_STORAGE,
                            "Disk space quota exceeded".into(),
                        ));
                    }
                    Err(err) => {
                        return Ok(plain_text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("Quota store unavailable: {err}"),
                        ));
                    }
                }
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use pkarr::PublicKey;
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::session::SessionState;
    use crate::tenant::Tenant;

    const A: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";
    const B: &str = "tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qy";

    /// Admits up to 100 bytes anywhere; fails for the path `/pub/down`.
    #[derive(Clone)]
    struct Ledger;

    impl QuotaLedger for Ledger {
        type Error = &'static str;
        type Account = ();

        async fn admits(
            &self,
            _session: &Session,
            _account: &(),
            path: &str,
            length: u64,
        ) -> Result<bool, Self::Error> {
            if path == "/pub/down" {
                return Err("database down");
            }
            Ok(length <= 100)
        }
    }

    fn key(z32: &str) -> PublicKey {
        PublicKey::try_from(z32).unwrap()
    }

    async fn put(path: &str, length: Option<u64>, session_of: Option<&str>) -> Response<String> {
        let mut request = Request::builder().method(Method::PUT).uri(path);
        if let Some(length) = length {
            request = request.header(header::CONTENT_LENGTH, length);
        }
        let mut request = request.body(()).unwrap();
        request.extensions_mut().insert(Tenant(key(A)));
        let state = match session_of {
            Some(owner) => SessionState::Found {
                secret: "S".repeat(26),
                session: Box::new(Session {
                    public_key: key(owner),
                    capabilities: "/:rw".into(),
                    created_at: 0,
                }),
            },
            None => SessionState::NoCookie,
        };
        request.extensions_mut().insert(state);
        request.extensions_mut().insert(());
        ServiceBuilder::new()
            .layer(QuotaLayer::new(Ledger, Some(1000)))
            .service_fn(|_req: Request<()>| async move {
                Ok::<_, Infallible>(Response::new("passed".to_string()))
            })
            .oneshot(request)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn owner_writes_over_quota_are_refused_before_the_body() {
        assert_eq!(
            put("/pub/a", Some(100), Some(A)).await.into_body(),
            "passed"
        );
        let over = put("/pub/a", Some(101), Some(A)).await;
        assert_eq!(over.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(over.into_body(), "Disk space quota exceeded");
        // Without a declared length only the streamed count can tell.
        assert_eq!(put("/pub/a", None, Some(A)).await.into_body(), "passed");
    }

    #[tokio::test]
    async fn strangers_are_left_to_authorization() {
        assert_eq!(put("/pub/a", Some(500), None).await.into_body(), "passed");
        assert_eq!(
            put("/pub/a", Some(500), Some(B)).await.into_body(),
            "passed"
        );
    }

    #[tokio::test]
    async fn bodies_over_the_maximum_get_413_from_anyone() {
        let response = put("/pub/a", Some(1001), None).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            response.into_body(),
            "Request body is larger than the limit of 1000 bytes"
        );
    }

    #[tokio::test]
    async fn a_failed_ledger_answers_503() {
        let response = put("/pub/down", Some(1), Some(A)).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.into_body(),
            "Quota store unavailable: database down"
        );
    }
}

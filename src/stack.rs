//! What serves a client request: the client API's Tower stack, built here from the app state in one place
//! (outermost first: trace span, metrics, drain, CORS, tenant, address-keyed rate limits, the database
//! guard, authentication, user-keyed rate limits, bandwidth, body-size cap; then the routes), the website
//! stack (the same without tenant, authentication and body cap, with the site's path mapping in their
//! place), and the [`HostDispatch`] in front of both that hands website requests (by `Host`,
//! PROTOCOL-0.17.md §18) to the websites and every other request to the client router.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Bytes, HttpBody};
use axum::response::Response;
use axum::routing::future::RouteFuture;
use homestead_backends::Store;
use homestead_middleware::{
    AuthLayer, BandwidthLayer, BodySizeLayer, DrainLayer, Gate, GateService, HookLayer,
    TenantLayer, plain_text,
};
use http::Request;
use http::header;
use tower::{Layer, Service};
use tower_http::cors::CorsLayer;

use crate::lookups::StoreCredentials;
use crate::routes::website::{Site, site_of};
use crate::routes::{self, AppState};

/// The most of an unread upload read before a refusal is sent, so that the client sees the refusal
/// rather than a reset connection; beyond it, the connection is closed.
const DRAIN_MAX_BYTES: u64 = 16 << 20;
/// How long an unread upload may take to arrive before a refusal goes out anyway.
const DRAIN_MAX_WAIT: Duration = Duration::from_secs(10);

/// What the ICANN and PubkyTLS listeners serve: websites by `Host` when `[drive] websites` is on, else
/// the client router.
pub fn client_service(app: &AppState) -> HostDispatch {
    let websites = app
        .websites
        .then(|| (app.server_key.clone(), website_router(app)));
    HostDispatch::new(client_router(app), websites)
}

/// What every client request passes first, outermost first: the trace span, the request metrics, the
/// drain of unread uploads and CORS; the start of both routers' composite layer. (A macro: the
/// composite's type cannot be written out.)
macro_rules! outer_layers {
    ($app:expr) => {
        tower::ServiceBuilder::new()
            .layer(crate::request_span::layer())
            .layer(HookLayer::new(crate::metrics::RecordRequests(
                $app.metrics.clone(),
            )))
            .layer(DrainLayer::new(
                DRAIN_MAX_BYTES,
                DRAIN_MAX_WAIT,
                axum::body::Body::new,
            ))
            .layer(cors())
    };
}

/// The client API, served identically on the ICANN and PubkyTLS listeners: the routes behind their layers.
pub fn client_router(app: &AppState) -> Router {
    let credentials = StoreCredentials {
        store: app.store.clone(),
        defaults: app.default_quotas.clone(),
    };
    // One composite layer, outermost first: each `Router::layer` call would add a boxed service that
    // is cloned, and a future that is boxed, on every request.
    let layers = outer_layers!(app)
        .layer(HookLayer::new(routes::cache_policy::CachePolicy))
        .layer(TenantLayer)
        .layer(app.rate_limits.clone())
        .layer(DatabaseGuard(app.store.clone()))
        .layer(AuthLayer::new(credentials))
        .layer(app.rate_limits.users())
        .layer(bandwidth(app))
        .layer(BodySizeLayer::new(app.max_body_bytes));
    routes::client_routes(app.clone()).layer(layers)
}

/// The websites (PROTOCOL-0.17.md §18), behind the client API's layers but for authentication: a site is
/// read anonymously, and its path is mapped onto the owner's files before the rate limits match it.
fn website_router(app: &AppState) -> Router {
    let layers = outer_layers!(app)
        .layer(axum::middleware::from_fn(routes::website::resolve))
        .layer(app.rate_limits.clone())
        .layer(DatabaseGuard(app.store.clone()))
        .layer(app.rate_limits.users())
        .layer(bandwidth(app));
    routes::website::router(app.clone()).layer(layers)
}

/// The bandwidth limits: users' own rates, the anonymous read rate per client address.
fn bandwidth(app: &AppState) -> BandwidthLayer<StoreCredentials, axum::body::Body> {
    let credentials = StoreCredentials {
        store: app.store.clone(),
        defaults: app.default_quotas.clone(),
    };
    BandwidthLayer::new(
        credentials,
        app.default_quotas
            .unauthenticated_ip_rate_read
            .map(|b| crate::lookups::rate(b, None)),
        axum::body::Body::new,
    )
}

/// The response headers that browser scripts may read (`Access-Control-Expose-Headers`), on every
/// response of the client API, refusals included.
const EXPOSED_HEADERS: [header::HeaderName; 7] = [
    header::RETRY_AFTER,
    crate::webdav::LOCK_TOKEN,
    crate::webdav::TIMEOUT,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
];

/// Maximally permissive CORS with credentials, mirroring the request (PROTOCOL.md §4.4), so browser apps
/// on any origin can use the ICANN endpoint.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(tower_http::cors::AllowOrigin::mirror_request())
        .allow_methods(tower_http::cors::AllowMethods::mirror_request())
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
        .allow_credentials(true)
        // What browser apps need to read: the reference's three (PROTOCOL-0.17.md §2), the validators that
        // conditional writes chain on, and the sizes (the SDK's `stats()`, range reads).
        .expose_headers(EXPOSED_HEADERS)
}

/// While the database does not answer, every request that needs it gets a 503 at once rather than
/// waiting out connection timeouts; the health watcher lifts this as soon as the database is back.
#[derive(Debug, Clone)]
pub(crate) struct DatabaseGuard(pub(crate) Store);

impl Gate for DatabaseGuard {
    fn refuse<B>(&self, _: &Request<B>) -> Option<http::Response<String>> {
        if self.0.health().database_up() {
            return None;
        }
        Some(plain_text(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "Storage unavailable: the database does not answer".to_string(),
        ))
    }
}

impl<S> Layer<S> for DatabaseGuard {
    type Service = GateService<S, Self>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService::new(inner, self.clone())
    }
}

/// Picks the router of a request: the website router for a website request (PROTOCOL-0.17.md §18.1,
/// with the [`Site`] attached), the client router for everything else.
#[derive(Debug, Clone)]
pub struct HostDispatch {
    client: Router,
    /// The server's own key, whose host keeps the API, and the website router; None: websites off.
    websites: Option<(pkarr::PublicKey, Router)>,
}

impl HostDispatch {
    /// Serves website requests with the router of `websites` (beside the server's key), if given, and
    /// everything else with `client`.
    pub fn new(client: Router, websites: Option<(pkarr::PublicKey, Router)>) -> Self {
        Self { client, websites }
    }
}

impl<B> Service<Request<B>> for HostDispatch
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    /// Routers are always ready.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // Never trust an extension a previous layer or client could have planted.
        request.extensions_mut().remove::<Site>();
        if let Some((server_key, websites)) = &mut self.websites
            && let Some(site) = site_of(&request, server_key)
        {
            request.extensions_mut().insert(site);
            return websites.call(request);
        }
        self.client.call(request)
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::{any, get};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    const KEY: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";

    fn server_key() -> pkarr::PublicKey {
        pubky_common::crypto::Keypair::from_secret(&[2; 32])
            .public_key()
            .into()
    }

    /// A dispatcher whose client router answers `client` and whose website router answers the label of
    /// the site it was given.
    fn dispatch(websites: bool) -> HostDispatch {
        let client = Router::new().fallback(any(|| async { "client" }));
        let site = Router::new().fallback(get(|request: axum::extract::Request| async move {
            request.extensions().get::<Site>().unwrap().label.clone()
        }));
        HostDispatch::new(client, websites.then(|| (server_key(), site)))
    }

    async fn served_by(dispatch: &HostDispatch, request: Request<Body>) -> String {
        let response = dispatch.clone().oneshot(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    fn with_host(method: &str, path: &str, host: &str) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, host)
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn website_requests_reach_the_websites_and_all_else_the_client_router() {
        let dispatch = dispatch(true);
        let blog = format!("blog.{KEY}");
        for (method, path, host, expected) in [
            ("GET", "/", KEY, "_"),
            ("GET", "/index.html", KEY, "_"),
            ("GET", "/a/b", &blog, "blog"),
            ("GET", "/%70ub/x", KEY, "_"),
            ("GET", "/publish", KEY, "_"),
            ("GET", "/pub/x", KEY, "client"),
            ("GET", "/pub", KEY, "client"),
            ("GET", "/storage/x", KEY, "client"),
            ("GET", "/events/", &blog, "client"),
            ("GET", "/events-stream", KEY, "client"),
            ("GET", "/signup_tokens/x", KEY, "client"),
            ("GET", "/info", KEY, "client"),
            ("PUT", "/x", KEY, "client"),
            ("OPTIONS", "/", KEY, "client"),
            ("GET", "/", "localhost:6286", "client"),
            ("GET", "/", &server_key().to_z32(), "client"),
        ] {
            let request = with_host(method, path, host);
            let answer = served_by(&dispatch, request).await;
            assert_eq!(answer, expected, "{method} {path} Host: {host}");
        }
        // Without a Host header, the HTTP/2 authority names the site; a Host header wins over it.
        let h2 = Request::get(format!("https://blog.{KEY}/x"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(served_by(&dispatch, h2).await, "blog");
        let both = Request::get(format!("https://blog.{KEY}/x"))
            .header(http::header::HOST, "localhost")
            .body(Body::empty())
            .unwrap();
        assert_eq!(served_by(&dispatch, both).await, "client");
    }

    #[tokio::test]
    async fn with_websites_off_every_request_goes_to_the_client_router() {
        let dispatch = dispatch(false);
        assert_eq!(
            served_by(&dispatch, with_host("GET", "/", KEY)).await,
            "client"
        );
    }
}

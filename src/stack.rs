//! What serves a client request: the client API's Tower stack, built here from the app state in one place
//! (outermost first: trace span, metrics, drain, CORS, tenant, address-keyed rate limits, the database
//! guard, authentication, user-keyed rate limits, bandwidth, body-size cap; then the routes), and the
//! [`HostDispatch`] in front of it that picks a site router by `Host` (websites, issue 21) and hands
//! every other request to the client router.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Bytes, HttpBody};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use homestead_backends::Store;
use homestead_middleware::{AuthLayer, BandwidthLayer, BodySizeLayer, DrainLayer, TenantLayer};
use http::Request;
use http::header::{self, HOST};
use tower::Service;
use tower_http::cors::CorsLayer;

use crate::lookups::StoreCredentials;
use crate::routes::{self, AppState};

/// The most of an unread upload read before a refusal is sent, so that the client sees the refusal
/// rather than a reset connection; beyond it, the connection is closed.
const DRAIN_MAX_BYTES: u64 = 16 << 20;
/// How long an unread upload may take to arrive before a refusal goes out anyway.
const DRAIN_MAX_WAIT: Duration = Duration::from_secs(10);

/// What the ICANN and PubkyTLS listeners serve: the site routers by `Host`, else the client router.
pub fn client_service(app: &AppState) -> HostDispatch {
    HostDispatch::new(client_router(app), site_routers(app))
}

/// The websites served by `Host`, as (host name, router) entries: none yet (issue 21 adds them here).
fn site_routers(_app: &AppState) -> Vec<(String, Router)> {
    Vec::new()
}

/// The client API, served identically on the ICANN and PubkyTLS listeners: the routes behind their layers.
pub fn client_router(app: &AppState) -> Router {
    let credentials = StoreCredentials {
        store: app.store.clone(),
        defaults: app.default_quotas.clone(),
    };
    routes::client_routes(app.clone())
        .layer(BodySizeLayer::new(app.max_body_bytes))
        .layer(BandwidthLayer::new(
            credentials.clone(),
            app.default_quotas
                .unauthenticated_ip_rate_read
                .map(|b| crate::lookups::rate(b, None)),
            axum::body::Body::new,
        ))
        .layer(app.rate_limits.users())
        .layer(AuthLayer::new(credentials))
        .layer(axum::middleware::from_fn_with_state(
            app.store.clone(),
            refuse_while_database_down,
        ))
        .layer(app.rate_limits.clone())
        .layer(TenantLayer)
        .layer(axum::middleware::from_fn(routes::cache_policy::layer))
        .layer(cors())
        .layer(DrainLayer::new(
            DRAIN_MAX_BYTES,
            DRAIN_MAX_WAIT,
            axum::body::Body::new,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.metrics.clone(),
            crate::metrics::record_request,
        ))
        .layer(crate::request_span::layer())
}

/// Maximally permissive CORS with credentials, mirroring the request (PROTOCOL.md §4.4), so browser apps
/// on any origin can use the ICANN endpoint.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(tower_http::cors::AllowOrigin::mirror_request())
        .allow_methods(tower_http::cors::AllowMethods::mirror_request())
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
        .allow_credentials(true)
        // What browser apps need to read: the reference's three (PROTOCOL-0.17.md §2) and the validators
        // that conditional writes chain on.
        .expose_headers([
            header::RETRY_AFTER,
            crate::webdav::LOCK_TOKEN,
            crate::webdav::TIMEOUT,
            header::ETAG,
            header::LAST_MODIFIED,
        ])
}

/// While the database does not answer, every request that needs it gets a 503 at once rather than
/// waiting out connection timeouts; the health watcher lifts this as soon as the database is back.
pub(crate) async fn refuse_while_database_down(
    axum::extract::State(store): axum::extract::State<Store>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if store.health().database_up() {
        next.run(request).await
    } else {
        crate::http_error::HttpError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "Storage unavailable: the database does not answer",
        )
        .into_response()
    }
}

/// Picks the router of a request by its host name (the `Host` header, else the HTTP/2 authority; port and
/// letter case ignored): a site's router when one is registered for it, the client router otherwise.
#[derive(Debug, Clone)]
pub struct HostDispatch {
    /// Site routers by lower-case host name.
    sites: Arc<HashMap<String, Router>>,
    client: Router,
}

impl HostDispatch {
    /// Serves `sites` (host name, router) by `Host` and everything else with `client`.
    pub fn new(client: Router, sites: impl IntoIterator<Item = (String, Router)>) -> Self {
        let sites = sites
            .into_iter()
            .map(|(host, router)| (host.to_ascii_lowercase(), router))
            .collect();
        Self {
            sites: Arc::new(sites),
            client,
        }
    }

    /// The site router `request` names, if any.
    fn site<B>(&self, request: &Request<B>) -> Option<&Router> {
        if self.sites.is_empty() {
            return None;
        }
        let host = match request.headers().get(HOST) {
            Some(value) => value.to_str().ok()?.parse::<http::uri::Authority>().ok()?,
            None => request.uri().authority()?.clone(),
        };
        self.sites.get(&host.host().to_ascii_lowercase())
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

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.site(&request) {
            Some(site) => site.clone().call(request),
            None => self.client.call(request),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    /// A dispatcher with one test site, `site.example`, over a client router; both answer who they are.
    fn dispatch() -> HostDispatch {
        let client = Router::new().fallback(get(|| async { "client" }));
        let site = Router::new().fallback(get(|| async { "site" }));
        HostDispatch::new(client, [("Site.Example".to_string(), site)])
    }

    async fn served_by(dispatch: &HostDispatch, request: Request<Body>) -> String {
        let response = dispatch.clone().oneshot(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    fn with_host(host: &str) -> Request<Body> {
        Request::get("/index.html")
            .header(HOST, host)
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn a_site_host_reaches_its_router_and_any_other_the_client_router() {
        let dispatch = dispatch();
        for host in ["site.example", "SITE.example:8080"] {
            assert_eq!(
                served_by(&dispatch, with_host(host)).await,
                "site",
                "{host}"
            );
        }
        let h2 = Request::get("https://site.example/index.html")
            .body(Body::empty())
            .unwrap();
        assert_eq!(served_by(&dispatch, h2).await, "site");
        for host in [
            "other.example",
            "localhost:6286",
            "site.example.evil",
            "bad host",
        ] {
            assert_eq!(
                served_by(&dispatch, with_host(host)).await,
                "client",
                "{host}"
            );
        }
        let no_host = Request::get("/").body(Body::empty()).unwrap();
        assert_eq!(served_by(&dispatch, no_host).await, "client");
        // The Host header wins over the authority, as the tenant layer reads them.
        let both = Request::get("https://site.example/")
            .header(HOST, "other.example")
            .body(Body::empty())
            .unwrap();
        assert_eq!(served_by(&dispatch, both).await, "client");
    }

    #[tokio::test]
    async fn without_sites_every_request_goes_to_the_client_router() {
        let client = Router::new().fallback(get(|| async { "client" }));
        let dispatch = HostDispatch::new(client, Vec::new());
        assert_eq!(
            served_by(&dispatch, with_host("site.example")).await,
            "client"
        );
    }
}

//! Request-count limits (OPERATIONS.md §8.4): every `[[drive.rate_limits]]` entry whose path glob and method
//! match is checked in order, each a GCRA bucket per key (client IP or tenant) of `burst` requests refilled
//! one every `period / n`. The first exceeded entry answers 429 `Rate limit exceeded` with `Retry-After`
//! (the reference sends none). A user-keyed limit without a tenant answers 400.
//!
//! The client IP is the TCP peer. `X-Forwarded-For` and `X-Real-IP` are believed only when the peer is a
//! configured trusted proxy (the reference believes them from anyone, which lets anyone dodge limits); the
//! forwarded chain is read from the right, skipping trusted proxies, so a client cannot prepend a fake.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use homestead_config::{IpRange, LimitKey, RateLimit};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service};

use crate::peer::Peer;
use crate::plain_text::plain_text;
use crate::tenant::Tenant;

/// How often idle buckets are dropped.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// The client address of a request: the peer, or what a trusted proxy says the client was.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpRange]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|ip| ip.trim().parse().ok())
        .collect();
    if let Some(client) = forwarded.iter().rev().find(|ip| !is_trusted(**ip)) {
        return *client;
    }
    if let Some(first) = forwarded.first() {
        return *first;
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer)
}

/// Bucket state: the theoretical arrival time of the next request, per (limit, key).
#[derive(Debug, Default)]
struct Buckets {
    next: HashMap<(usize, String), Instant>,
    forgotten_at: Option<Instant>,
}

/// The shared configuration and state of [`RateLimitLayer`].
#[derive(Debug)]
struct Limits {
    limits: Vec<RateLimit>,
    trusted: Vec<IpRange>,
    buckets: Mutex<Buckets>,
}

impl Limits {
    /// `Ok(())` to let the request through, or the refusal.
    fn check(
        &self,
        method: &http::Method,
        path: &str,
        ip: Option<IpAddr>,
        tenant: Option<&str>,
    ) -> Result<(), Refusal> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets
            .forgotten_at
            .is_none_or(|at| now.duration_since(at) > FORGET_EVERY)
        {
            buckets.next.retain(|_, next| *next > now);
            buckets.forgotten_at = Some(now);
        }
        for (index, limit) in self.limits.iter().enumerate() {
            if limit.method.as_str() != method.as_str() || !limit.path.matches(path) {
                continue;
            }
            let key = match limit.key {
                LimitKey::Ip => ip.map(|ip| ip.to_string()),
                LimitKey::User => tenant.map(str::to_string),
            };
            let Some(key) = key else {
                return Err(Refusal::NoKey);
            };
            if limit.whitelist.iter().any(|allowed| {
                allowed == &key || allowed.strip_prefix("pubky").is_some_and(|k| k == key)
            }) {
                continue;
            }
            let count = limit.quota.requests.get();
            let interval = Duration::from_secs(limit.quota.per.seconds()) / count;
            let burst = limit.burst.map_or(count, |b| b.get());
            let tolerance = interval * burst.saturating_sub(1);
            let next = buckets.next.entry((index, key)).or_insert(now);
            let arrival = (*next).max(now);
            let wait = arrival.saturating_duration_since(now);
            if wait > tolerance {
                return Err(Refusal::Exceeded(wait - tolerance));
            }
            *next = arrival + interval;
        }
        Ok(())
    }
}

enum Refusal {
    NoKey,
    Exceeded(Duration),
}

/// Applies the configured request-count limits.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limits: Arc<Limits>,
}

impl RateLimitLayer {
    /// Limits as configured; forwarded addresses are believed from `trusted_proxies` only.
    pub fn new(limits: Vec<RateLimit>, trusted_proxies: Vec<IpRange>) -> Self {
        Self {
            limits: Arc::new(Limits {
                limits,
                trusted: trusted_proxies,
                buckets: Mutex::default(),
            }),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limits: self.limits.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimitService<S> {
    inner: S,
    limits: Arc<Limits>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimitService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: From<String> + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let ip = request
            .extensions()
            .get::<Peer>()
            .map(|peer| client_ip(peer.remote.ip(), request.headers(), &self.limits.trusted));
        let tenant = request
            .extensions()
            .get::<Tenant>()
            .map(|Tenant(key)| key.to_string());
        let verdict = self.limits.check(
            request.method(),
            request.uri().path(),
            ip,
            tenant.as_deref(),
        );
        match verdict {
            Ok(()) => Box::pin(self.inner.call(request)),
            Err(Refusal::NoKey) => {
                let response = plain_text(
                    StatusCode::BAD_REQUEST,
                    "Failed to extract key for rate limiting".into(),
                );
                Box::pin(async move { Ok(response) })
            }
            Err(Refusal::Exceeded(wait)) => {
                let mut response =
                    plain_text(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded".into());
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;

    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::peer::Transport;

    const A: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";

    fn limit(toml: &str) -> RateLimit {
        toml::from_str(toml).unwrap()
    }

    async fn call(
        layer: &RateLimitLayer,
        path: &str,
        peer: &str,
        headers: &[(&str, &str)],
        tenant: bool,
    ) -> Response<String> {
        let mut request = Request::builder().uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request.body(()).unwrap();
        request.extensions_mut().insert(Peer {
            transport: Transport::Icann,
            remote: SocketAddr::new(peer.parse().unwrap(), 40000),
        });
        if tenant {
            request
                .extensions_mut()
                .insert(Tenant(pkarr::PublicKey::try_from(A).unwrap()));
        }
        ServiceBuilder::new()
            .layer(layer.clone())
            .service_fn(|_req: Request<()>| async {
                Ok::<_, Infallible>(Response::new("passed".to_string()))
            })
            .oneshot(request)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_burst_passes_then_429_with_retry_after() {
        let layer = RateLimitLayer::new(
            vec![limit(
                "path = \"/events/\"\nmethod = \"GET\"\nquota = \"2r/m\"\nkey = \"ip\"",
            )],
            Vec::new(),
        );
        for _ in 0..2 {
            assert_eq!(
                call(&layer, "/events/", "1.2.3.4", &[], false)
                    .await
                    .status(),
                200
            );
        }
        let refused = call(&layer, "/events/", "1.2.3.4", &[], false).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=30).contains(&retry), "{retry}");
        assert_eq!(refused.into_body(), "Rate limit exceeded");
        // Another client, another path or method: not limited.
        assert_eq!(
            call(&layer, "/events/", "5.6.7.8", &[], false)
                .await
                .status(),
            200
        );
        assert_eq!(
            call(&layer, "/session", "1.2.3.4", &[], false)
                .await
                .status(),
            200
        );
    }

    #[tokio::test]
    async fn forwarded_addresses_count_only_from_trusted_proxies() {
        let layer = RateLimitLayer::new(
            vec![limit(
                "path = \"/**\"\nmethod = \"GET\"\nquota = \"1r/h\"\nkey = \"ip\"",
            )],
            vec![IpRange::try_from("127.0.0.1".to_string()).unwrap()],
        );
        // Through the proxy, two different clients are two buckets.
        let via = |client: &'static str| [("x-forwarded-for", client)];
        assert_eq!(
            call(&layer, "/a", "127.0.0.1", &via("9.9.9.1"), false)
                .await
                .status(),
            200
        );
        assert_eq!(
            call(&layer, "/a", "127.0.0.1", &via("9.9.9.2"), false)
                .await
                .status(),
            200
        );
        assert_eq!(
            call(&layer, "/a", "127.0.0.1", &via("9.9.9.1"), false)
                .await
                .status(),
            429
        );
        // A client prepending a fake address is still itself.
        let spoof = [("x-forwarded-for", "1.1.1.1, 9.9.9.2")];
        assert_eq!(
            call(&layer, "/a", "127.0.0.1", &spoof, false)
                .await
                .status(),
            429
        );
        // An untrusted peer's header is ignored: its own address is the key.
        let direct = [("x-forwarded-for", "7.7.7.7")];
        assert_eq!(
            call(&layer, "/a", "4.4.4.4", &direct, false).await.status(),
            200
        );
        let other_fake = [("x-forwarded-for", "7.7.7.8")];
        assert_eq!(
            call(&layer, "/a", "4.4.4.4", &other_fake, false)
                .await
                .status(),
            429
        );
    }

    #[tokio::test]
    async fn user_limits_need_a_tenant_and_honour_the_whitelist() {
        let user_limit = format!(
            "path = \"/session\"\nmethod = \"GET\"\nquota = \"1r/h\"\nkey = \"user\"\nwhitelist = [\"pubky{A}\"]"
        );
        let layer = RateLimitLayer::new(vec![limit(&user_limit)], Vec::new());
        let missing = call(&layer, "/session", "1.2.3.4", &[], false).await;
        assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            missing.into_body(),
            "Failed to extract key for rate limiting"
        );
        for _ in 0..3 {
            assert_eq!(
                call(&layer, "/session", "1.2.3.4", &[], true)
                    .await
                    .status(),
                200
            );
        }
        let strict = RateLimitLayer::new(
            vec![limit(
                "path = \"/session\"\nmethod = \"GET\"\nquota = \"1r/h\"\nkey = \"user\"",
            )],
            Vec::new(),
        );
        assert_eq!(
            call(&strict, "/session", "1.2.3.4", &[], true)
                .await
                .status(),
            200
        );
        assert_eq!(
            call(&strict, "/session", "5.6.7.8", &[], true)
                .await
                .status(),
            429
        );
    }
}

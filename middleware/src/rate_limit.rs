//! Request-count limits (OPERATIONS.md §8.4): every `[[drive.rate_limits]]` entry whose path glob and method
//! match is checked in order, each a GCRA bucket per key of `burst` requests refilled one every
//! `period / n`. The first exceeded entry answers 429 `Rate limit exceeded` with `Retry-After` (the
//! reference sends none).
//!
//! Globs are matched against the storage path a request resolves to, percent-decoded, whichever way it
//! addresses its owner (`/pub/x` with a tenant, or `/storage/<owner>/pub/x`); other routes match their
//! own path. `key = "ip"` limits count per client address and run before the credential lookup, so a flood
//! costs no database work. `key = "user"` limits run after it and count per **authenticated** user (a
//! principal that is the request's tenant), anonymous requests per client address: a stranger cannot spend
//! a user's budget by naming that user (the reference keys on the named user, and refuses with 400 when
//! none is named).
//!
//! The client address is the [`Peer`]'s `client_ip` (the TCP peer, or what a trusted proxy forwarded: see
//! [`crate::peer`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use homestead_config::{LimitKey, RateLimit};
use http::{HeaderValue, Request, Response, StatusCode, header};
use tower::Layer;

use percent_encoding::percent_decode_str;

use crate::auth::own_principal;
use crate::gate::{Gate, GateService};
use crate::peer::Peer;
use crate::plain_text::plain_text;
use crate::tenant::storage_path;

/// How often idle buckets are dropped.
const FORGET_EVERY: Duration = Duration::from_secs(60);

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
    buckets: Mutex<Buckets>,
}

impl Limits {
    /// `Ok(())` to let the request through, or how long the client should wait: the limits keyed by
    /// `kind` whose glob and method match, each counted under `key` (`identity` is what the whitelist
    /// is compared with).
    fn check(
        &self,
        method: &http::Method,
        path: &str,
        kind: LimitKey,
        key: &str,
        identity: &str,
    ) -> Result<(), Duration> {
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
            if limit.key != kind
                || limit.method.as_str() != method.as_str()
                || !limit.path.matches(path)
            {
                continue;
            }
            if limit.whitelist.iter().any(|allowed| {
                allowed == identity || allowed.strip_prefix("pubky").is_some_and(|k| k == identity)
            }) {
                continue;
            }
            let count = limit.quota.requests.get();
            let interval = Duration::from_secs(limit.quota.per.seconds()) / count;
            let burst = limit.burst.map_or(count, |b| b.get());
            let tolerance = interval * burst.saturating_sub(1);
            let next = buckets.next.entry((index, key.to_string())).or_insert(now);
            let arrival = (*next).max(now);
            let wait = arrival.saturating_duration_since(now);
            if wait > tolerance {
                return Err(wait - tolerance);
            }
            *next = arrival + interval;
        }
        Ok(())
    }
}

/// The path a request's limits are matched against: the storage path of a path-addressed request, the
/// request path otherwise, percent-decoded (undecodable bytes stay as they are).
fn limited_path(path: &str) -> String {
    percent_decode_str(storage_path(path))
        .decode_utf8_lossy()
        .into_owned()
}

/// Applies the configured request-count limits of one kind: [`RateLimitLayer::new`] those keyed by
/// client address, [`RateLimitLayer::users`] those keyed by user (behind the auth layer).
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limits: Arc<Limits>,
    kind: LimitKey,
}

impl RateLimitLayer {
    /// The address-keyed limits as configured; behind the [`PeerLayer`](crate::PeerLayer).
    pub fn new(limits: Vec<RateLimit>) -> Self {
        Self {
            limits: Arc::new(Limits {
                limits,
                buckets: Mutex::default(),
            }),
            kind: LimitKey::Ip,
        }
    }

    /// The user-keyed limits of the same configuration, sharing its state; goes behind the auth
    /// layer.
    pub fn users(&self) -> Self {
        Self {
            limits: self.limits.clone(),
            kind: LimitKey::User,
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService::new(inner, self.clone())
    }
}

/// The service of [`RateLimitLayer`].
pub type RateLimitService<S> = GateService<S, RateLimitLayer>;

impl Gate for RateLimitLayer {
    fn refuse<B>(&self, request: &Request<B>) -> Option<Response<String>> {
        if !self
            .limits
            .limits
            .iter()
            .any(|limit| limit.key == self.kind)
        {
            return None;
        }
        let ip = request
            .extensions()
            .get::<Peer>()
            .map_or_else(|| "unknown".to_string(), |peer| peer.client_ip.to_string());
        let user = match self.kind {
            LimitKey::Ip => None,
            // The authenticated user: a principal that is the request's tenant.
            LimitKey::User => own_principal(request).map(|principal| principal.user.to_string()),
        };
        let (key, identity) = match &user {
            Some(user) => (user.clone(), user.as_str()),
            None => (format!("ip:{ip}"), ip.as_str()),
        };
        let path = limited_path(request.uri().path());
        let wait = self
            .limits
            .check(request.method(), &path, self.kind, &key, identity)
            .err()?;
        let mut response = plain_text(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded".into());
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        Some(response)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;

    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use homestead_config::IpRange;

    use crate::auth::{Authentication, Credential, Principal, Session};
    use crate::peer::{PeerLayer, Transport, TrustedProxies};
    use crate::tenant::Tenant;

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
        if tenant {
            request
                .extensions_mut()
                .insert(Tenant(pkarr::PublicKey::try_from(A).unwrap()));
        }
        through(layer, peer, request).await
    }

    /// Passes `request` from `peer` through the peer layer (trusting the proxy at 127.0.0.1) and `layer`
    /// to a service that answers "passed".
    async fn through(layer: &RateLimitLayer, peer: &str, request: Request<()>) -> Response<String> {
        let remote = SocketAddr::new(peer.parse().unwrap(), 40000);
        let proxy = IpRange::try_from("127.0.0.1".to_string()).unwrap();
        ServiceBuilder::new()
            .layer(PeerLayer::new(
                Transport::Icann,
                remote,
                TrustedProxies::new(vec![proxy]),
            ))
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
        let layer = RateLimitLayer::new(vec![limit(
            "path = \"/events/\"\nmethod = \"GET\"\nquota = \"2r/m\"\nkey = \"ip\"",
        )]);
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
        let layer = RateLimitLayer::new(vec![limit(
            "path = \"/**\"\nmethod = \"GET\"\nquota = \"1r/h\"\nkey = \"ip\"",
        )]);
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

    /// A request of `A`'s own session when `signed_in`, else anonymous naming `A` as tenant.
    async fn call_as(layer: &RateLimitLayer, path: &str, peer: &str, signed_in: bool) -> u16 {
        let mut request = Request::builder().uri(path).body(()).unwrap();
        let key = pkarr::PublicKey::try_from(A).unwrap();
        request.extensions_mut().insert(Tenant(key.clone()));
        if signed_in {
            let session = Session {
                user: key,
                capabilities: "/:rw".parse().unwrap(),
                created_at: 0,
                grant: None,
            };
            let via = Credential::Cookie {
                secret: "s".repeat(26),
            };
            request
                .extensions_mut()
                .insert(Authentication::Authenticated(Box::new(Principal::new(
                    session, via,
                ))));
        }
        through(layer, peer, request).await.status().as_u16()
    }

    #[tokio::test]
    async fn user_limits_count_the_signed_in_user_and_strangers_by_address() {
        let strict = RateLimitLayer::new(vec![limit(
            "path = \"/pub/**\"\nmethod = \"GET\"\nquota = \"1r/h\"\nkey = \"user\"",
        )]);
        let users = strict.users();
        // The address-keyed layer leaves user limits alone.
        for _ in 0..3 {
            assert_eq!(call_as(&strict, "/pub/a", "1.2.3.4", true).await, 200);
        }
        // Strangers naming the user spend their own address's budget, not the user's.
        assert_eq!(call_as(&users, "/pub/a", "1.2.3.4", false).await, 200);
        assert_eq!(call_as(&users, "/pub/a", "1.2.3.4", false).await, 429);
        assert_eq!(call_as(&users, "/pub/a", "5.6.7.8", false).await, 200);
        // The user's own budget is untouched by them, and shared across the user's addresses.
        assert_eq!(call_as(&users, "/pub/a", "1.2.3.4", true).await, 200);
        assert_eq!(call_as(&users, "/pub/a", "9.9.9.9", true).await, 429);
        let whitelisted = RateLimitLayer::new(
            vec![limit(&format!(
                "path = \"/pub/**\"\nmethod = \"GET\"\nquota = \"1r/h\"\nkey = \"user\"\nwhitelist = [\"pubky{A}\"]"
            ))],
        )
        .users();
        for _ in 0..3 {
            assert_eq!(call_as(&whitelisted, "/pub/a", "1.2.3.4", true).await, 200);
        }
    }

    #[tokio::test]
    async fn globs_match_the_storage_path_whichever_way_it_is_addressed() {
        let layer = RateLimitLayer::new(vec![limit(
            "path = \"/pub/**\"\nmethod = \"GET\"\nquota = \"2r/h\"\nkey = \"ip\"",
        )]);
        let path_addressed = format!("/storage/{A}/pub/a");
        assert_eq!(
            call(&layer, "/pub/a", "1.2.3.4", &[], true).await.status(),
            200
        );
        assert_eq!(
            call(&layer, &path_addressed, "1.2.3.4", &[], false)
                .await
                .status(),
            200
        );
        assert_eq!(
            call(&layer, "/%70ub/a", "1.2.3.4", &[], true)
                .await
                .status(),
            429,
            "percent-encoded, the same path"
        );
        assert_eq!(
            call(&layer, "/session", "1.2.3.4", &[], true)
                .await
                .status(),
            200
        );
        assert_eq!(limited_path(&format!("/storage/{A}")), "/");
        assert_eq!(limited_path("/storage/"), "/");
    }
}

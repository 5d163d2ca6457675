//! Request-count limits (OPERATIONS.md §8.4): every `[[drive.rate_limits]]` entry whose path glob and method
//! match is checked in order, each a GCRA bucket per key of `burst` requests refilled one every
//! `period / n`. The first exceeded entry answers 429 `Rate limit exceeded` with `Retry-After` (the
//! reference sends none).
//!
//! Globs are matched against the storage path a request resolves to, percent-decoded, whichever way it
//! addresses its owner (`/pub/x` with a tenant, or `/storage/<owner>/pub/x`); other routes match their
//! own path. `key = "ip"` limits count per client address and run before the credential lookup, so a flood
//! costs no session lookup (with shared buckets, one bucket statement per request, and its refusals
//! nothing more). `key = "user"` limits run after it and count per **authenticated** user (a
//! principal that is the request's tenant), anonymous requests per client address: a stranger cannot spend
//! a user's budget by naming that user (the reference keys on the named user, and refuses with 400 when
//! none is named).
//!
//! The client address is the [`Peer`]'s `client_ip` (the TCP peer, or what a trusted proxy forwarded: see
//! [`crate::peer`]).
//!
//! Buckets live in process memory ([`RateLimitLayer::new`]), or, for instances that share a database, in a
//! [`SharedBuckets`] store ([`RateLimitLayer::shared`]) so that a client spreading its requests over the
//! instances gets the configured rate in total. A request that matches no limit never reaches the store.
//! When the shared store fails or takes longer than [`SHARED_CHECK_TIMEOUT`], the request is let through
//! with a warning (fail open): a limit is a brake on abuse, and refusing every limited request because the
//! limiter is down would turn a database hiccup into an outage of those routes.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use homestead_config::{LimitKey, RateLimit};
use http::{HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service};

use percent_encoding::percent_decode_str;

use crate::auth::own_principal;
use crate::peer::Peer;
use crate::plain_text::plain_text;
use crate::tenant::storage_path;

/// How often idle in-memory buckets are dropped.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// The longest a shared bucket check may take before the request is let through.
pub const SHARED_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What a shared store's check of one bucket returns: `Ok(None)` to pass (the request was counted),
/// `Ok(Some(wait))` when refused, `Err` when the store could not answer.
pub type SpendFuture = Pin<
    Box<
        dyn Future<Output = Result<Option<Duration>, Box<dyn std::error::Error + Send + Sync>>>
            + Send,
    >,
>;

/// Buckets every instance of a deployment sees, such as a table in the shared database. The store keeps
/// each bucket's theoretical arrival time and decides with its own clock, in one atomic step.
pub trait SharedBuckets: Send + Sync + Debug + 'static {
    /// Spends one request of the bucket named `bucket`, refilled one request per `interval`, admitting
    /// requests up to `tolerance` ahead of their time.
    fn spend(&self, bucket: String, interval: Duration, tolerance: Duration) -> SpendFuture;
}

/// Bucket state in memory: the theoretical arrival time of the next request, per (limit, key).
#[derive(Debug, Default)]
struct Buckets {
    next: HashMap<(usize, String), Instant>,
    forgotten_at: Option<Instant>,
}

/// Where the buckets are kept.
#[derive(Debug)]
enum BucketStore {
    /// This process only.
    Memory(Mutex<Buckets>),
    /// Shared by every instance.
    Shared(Arc<dyn SharedBuckets>),
}

/// The shared configuration and state of [`RateLimitLayer`].
#[derive(Debug)]
struct Limits {
    limits: Vec<RateLimit>,
    store: BucketStore,
}

/// One matching limit's bucket, to be spent by a request.
#[derive(Debug)]
struct Spend {
    /// The limit's place in the configuration (the in-memory bucket key).
    index: usize,
    /// The bucket's name in a shared store: the limit as configured, then the key.
    bucket: String,
    interval: Duration,
    tolerance: Duration,
}

impl Limits {
    /// The buckets a request spends: the limits keyed by `kind` whose glob and method match and whose
    /// whitelist does not name `identity`, each counted under `key`.
    fn matching(
        &self,
        method: &http::Method,
        path: &str,
        kind: LimitKey,
        key: &str,
        identity: &str,
    ) -> Vec<Spend> {
        self.limits
            .iter()
            .enumerate()
            .filter(|(_, limit)| {
                limit.key == kind
                    && limit.method.as_str() == method.as_str()
                    && limit.path.matches(path)
                    && !limit.whitelist.iter().any(|allowed| {
                        allowed == identity
                            || allowed.strip_prefix("pubky").is_some_and(|k| k == identity)
                    })
            })
            .map(|(index, limit)| {
                let count = limit.quota.requests.get();
                let interval = Duration::from_secs(limit.quota.per.seconds()) / count;
                let burst = limit.burst.map_or(count, |b| b.get());
                Spend {
                    index,
                    bucket: format!(
                        "{} {} {}/{}s burst {burst} {key}",
                        limit.method.as_str(),
                        limit.path.as_str(),
                        count,
                        limit.quota.per.seconds()
                    ),
                    interval,
                    tolerance: interval * burst.saturating_sub(1),
                }
            })
            .collect()
    }

    /// Spends `spends` in memory: `Ok(())` to let the request through, or how long the client should
    /// wait (the first exceeded bucket; those before it were counted).
    fn spend_in_memory(
        &self,
        buckets: &Mutex<Buckets>,
        spends: &[Spend],
        key: &str,
    ) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets
            .forgotten_at
            .is_none_or(|at| now.duration_since(at) > FORGET_EVERY)
        {
            buckets.next.retain(|_, next| *next > now);
            buckets.forgotten_at = Some(now);
        }
        for spend in spends {
            let next = buckets
                .next
                .entry((spend.index, key.to_string()))
                .or_insert(now);
            let arrival = (*next).max(now);
            let wait = arrival.saturating_duration_since(now);
            if wait > spend.tolerance {
                return Err(wait - spend.tolerance);
            }
            *next = arrival + spend.interval;
        }
        Ok(())
    }
}

/// Spends `spends` in the shared store, in order: how long the client should wait, if refused. A store
/// that fails or does not answer in time lets the request through.
async fn spend_shared(store: Arc<dyn SharedBuckets>, spends: Vec<Spend>) -> Option<Duration> {
    for spend in spends {
        let checked = tokio::time::timeout(
            SHARED_CHECK_TIMEOUT,
            store.spend(spend.bucket, spend.interval, spend.tolerance),
        )
        .await;
        match checked {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(wait))) => return Some(wait),
            Ok(Err(err)) => {
                tracing::warn!(%err, "rate limit store failed: the request is let through");
                return None;
            }
            Err(_) => {
                tracing::warn!(
                    "rate limit store did not answer within {SHARED_CHECK_TIMEOUT:?}: the request is let through"
                );
                return None;
            }
        }
    }
    None
}

/// The 429 for a client that should wait `wait`.
fn refusal(wait: Duration) -> Response<String> {
    let mut response = plain_text(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded".into());
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
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
    /// The address-keyed limits as configured, counted in this process; behind the
    /// [`PeerLayer`](crate::PeerLayer).
    pub fn new(limits: Vec<RateLimit>) -> Self {
        Self::with_store(limits, BucketStore::Memory(Mutex::default()))
    }

    /// [`Self::new`] with the buckets in `store`, shared by every instance that uses it.
    pub fn shared(limits: Vec<RateLimit>, store: Arc<dyn SharedBuckets>) -> Self {
        Self::with_store(limits, BucketStore::Shared(store))
    }

    fn with_store(limits: Vec<RateLimit>, store: BucketStore) -> Self {
        Self {
            limits: Arc::new(Limits { limits, store }),
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

    /// The buckets `request` spends and the key they count under; none when no limit of this layer's
    /// kind applies.
    fn spends<B>(&self, request: &Request<B>) -> (Vec<Spend>, String) {
        if !self
            .limits
            .limits
            .iter()
            .any(|limit| limit.key == self.kind)
        {
            return (Vec::new(), String::new());
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
        let spends = self
            .limits
            .matching(request.method(), &path, self.kind, &key, identity);
        (spends, key)
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimitService<S> {
    inner: S,
    layer: RateLimitLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimitService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (spends, key) = self.layer.spends(&request);
        if spends.is_empty() {
            return Box::pin(self.inner.call(request));
        }
        match &self.layer.limits.store {
            BucketStore::Memory(buckets) => {
                match self.layer.limits.spend_in_memory(buckets, &spends, &key) {
                    Ok(()) => Box::pin(self.inner.call(request)),
                    Err(wait) => Box::pin(std::future::ready(Ok(refusal(wait).map(ResBody::from)))),
                }
            }
            BucketStore::Shared(store) => {
                // The inner service that was made ready goes with the request; a clone stays.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let store = store.clone();
                Box::pin(async move {
                    match spend_shared(store, spends).await {
                        Some(wait) => Ok(refusal(wait).map(ResBody::from)),
                        None => inner.call(request).await,
                    }
                })
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

    /// A [`SharedBuckets`] in memory that counts the checks it is asked for, or fails every one.
    #[derive(Debug, Default)]
    struct Counted {
        checks: Mutex<Vec<String>>,
        next: Mutex<HashMap<String, Duration>>,
        failing: bool,
    }

    impl SharedBuckets for Counted {
        fn spend(&self, bucket: String, interval: Duration, tolerance: Duration) -> SpendFuture {
            self.checks.lock().unwrap().push(bucket.clone());
            if self.failing {
                return Box::pin(async { Err("connection refused".into()) });
            }
            // A clock that stands still: every request arrives at time zero.
            let mut next = self.next.lock().unwrap();
            let tat = next.entry(bucket).or_default();
            let answer = if *tat > tolerance {
                Some(*tat - tolerance)
            } else {
                *tat += interval;
                None
            };
            Box::pin(async move { Ok(answer) })
        }
    }

    #[tokio::test]
    async fn a_shared_store_is_asked_only_for_requests_a_limit_matches() {
        let store = Arc::new(Counted::default());
        let layer = RateLimitLayer::shared(
            vec![limit(
                "path = \"/pub/**\"\nmethod = \"GET\"\nquota = \"2r/m\"\nkey = \"ip\"",
            )],
            store.clone(),
        );
        // Other paths, other methods, and the user-keyed layer (no user limits): no check at all.
        assert_eq!(
            call(&layer, "/session", "1.2.3.4", &[], true)
                .await
                .status(),
            200
        );
        let put = Request::put("/pub/a").body(()).unwrap();
        assert_eq!(through(&layer, "1.2.3.4", put).await.status(), 200);
        assert_eq!(
            call_as(&layer.users(), "/pub/a", "1.2.3.4", true).await,
            200
        );
        assert!(store.checks.lock().unwrap().is_empty());
        // Matching requests spend the shared bucket of their address: two pass, the third waits 30 s.
        for _ in 0..2 {
            assert_eq!(
                call(&layer, "/pub/a", "1.2.3.4", &[], true).await.status(),
                200
            );
        }
        let refused = call(&layer, "/pub/a", "1.2.3.4", &[], true).await;
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()["retry-after"], "30");
        assert_eq!(refused.into_body(), "Rate limit exceeded");
        let checks = store.checks.lock().unwrap().clone();
        assert_eq!(checks.len(), 3);
        assert_eq!(checks[0], "GET /pub/** 2/60s burst 2 ip:1.2.3.4");
    }

    #[tokio::test]
    async fn a_failing_shared_store_lets_limited_requests_through() {
        let store = Arc::new(Counted {
            failing: true,
            ..Counted::default()
        });
        let layer = RateLimitLayer::shared(
            vec![limit(
                "path = \"/pub/**\"\nmethod = \"GET\"\nquota = \"1r/h\"\nkey = \"ip\"",
            )],
            store.clone(),
        );
        for _ in 0..3 {
            assert_eq!(
                call(&layer, "/pub/a", "1.2.3.4", &[], true).await.status(),
                200
            );
        }
        assert_eq!(store.checks.lock().unwrap().len(), 3);
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

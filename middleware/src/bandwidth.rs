//! Bandwidth limits (OPERATIONS.md §8.3): request and response bodies are slowed to a byte rate, never
//! refused. A request with a principal that is the tenant (found by the [`AuthLayer`](crate::AuthLayer),
//! which must run first) gets that user's write rate (for `PUT`, `POST`, `PATCH`, `DELETE`) or read rate,
//! from a [`BandwidthPolicy`] reading the account the credential lookup attached; any other request gets the
//! anonymous read rate, keyed by client IP. Users with the same key share one bucket; buckets count
//! 1 KiB cells and may run into debt, so a large chunk waits for the time its bytes are worth.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;
use tower::{Layer, Service};

use crate::auth::{CredentialLookup, own_account};
use crate::peer::Peer;

/// Bytes in one cell of a bucket.
const CELL: u64 = 1024;

/// A byte rate with an optional burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Bytes allowed per period.
    pub bytes: u64,
    /// The period.
    pub period: Duration,
    /// Bucket size in bytes; None = one period's worth.
    pub burst_bytes: Option<u64>,
}

/// A known user's rates; None = not limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserRates {
    /// For GET, HEAD and the like.
    pub read: Option<Rate>,
    /// For PUT, POST, PATCH and DELETE.
    pub write: Option<Rate>,
}

/// Tells the rates of a user; the app implements it with its account record and the configured
/// defaults, on its [`CredentialLookup`], so that the account read here is the one the lookup attached.
pub trait BandwidthPolicy: CredentialLookup {
    /// The rates of the user of `account`.
    fn user_rates(&self, account: &Self::Account) -> UserRates;
}

/// A token bucket in cells, allowed to go into debt.
#[derive(Debug)]
struct Bucket {
    /// Cells available (negative: owed).
    cells: f64,
    capacity: f64,
    /// Time to earn one cell.
    per_cell: Duration,
    updated: Instant,
}

impl Bucket {
    fn new(rate: Rate) -> Self {
        let cells_per_period = (rate.bytes / CELL).max(1);
        let capacity = rate
            .burst_bytes
            .map_or(cells_per_period, |b| (b / CELL).max(1));
        Self {
            cells: capacity as f64,
            capacity: capacity as f64,
            per_cell: rate.period / u32::try_from(cells_per_period).unwrap_or(u32::MAX),
            updated: Instant::now(),
        }
    }

    /// Takes the cells of `bytes`; returns how long the caller must wait before passing them on.
    fn take(&mut self, bytes: usize) -> Duration {
        let now = Instant::now();
        let earned = now.duration_since(self.updated).as_secs_f64() / self.per_cell.as_secs_f64();
        self.cells = (self.cells + earned).min(self.capacity);
        self.updated = now;
        self.cells -= (bytes as u64).div_ceil(CELL) as f64;
        if self.cells >= 0.0 {
            Duration::ZERO
        } else {
            self.per_cell.mul_f64(-self.cells)
        }
    }
}

type SharedBucket = Arc<Mutex<Bucket>>;

/// A body whose data frames wait for their cells.
pub struct Throttled<B> {
    inner: B,
    bucket: Option<SharedBucket>,
    sleep: Option<Pin<Box<Sleep>>>,
    held: Option<Frame<Bytes>>,
}

impl<B> Throttled<B> {
    fn new(inner: B, bucket: Option<SharedBucket>) -> Self {
        Self {
            inner,
            bucket,
            sleep: None,
            held: None,
        }
    }
}

impl<B> Body for Throttled<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Some(sleep) = this.sleep.as_mut() {
            ready!(sleep.as_mut().poll(cx));
            this.sleep = None;
            return Poll::Ready(this.held.take().map(Ok));
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        let Some(Ok(frame)) = frame else {
            return Poll::Ready(frame);
        };
        let (Some(bucket), Some(data)) = (&this.bucket, frame.data_ref()) else {
            return Poll::Ready(Some(Ok(frame)));
        };
        let wait = bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(data.len());
        if wait.is_zero() {
            return Poll::Ready(Some(Ok(frame)));
        }
        let mut sleep = Box::pin(tokio::time::sleep(wait));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Ok(frame))),
            Poll::Pending => {
                this.sleep = Some(sleep);
                this.held = Some(frame);
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Throttles bodies by user or client IP.
pub struct BandwidthLayer<P, B> {
    policy: P,
    anonymous_read: Option<Rate>,
    buckets: Arc<Mutex<HashMap<(String, Rate), SharedBucket>>>,
    wrap: fn(Throttled<B>) -> B,
}

impl<P: Clone, B> Clone for BandwidthLayer<P, B> {
    fn clone(&self) -> Self {
        Self {
            policy: self.policy.clone(),
            anonymous_read: self.anonymous_read,
            buckets: self.buckets.clone(),
            wrap: self.wrap,
        }
    }
}

impl<P, B> BandwidthLayer<P, B> {
    /// Users' rates come from `policy`; requests without the tenant's principal get `anonymous_read` per
    /// client IP (the [`Peer`]'s `client_ip`). `wrap` turns a throttled body back into the body type of
    /// the service (e.g. `axum::body::Body::new`).
    pub fn new(policy: P, anonymous_read: Option<Rate>, wrap: fn(Throttled<B>) -> B) -> Self {
        Self {
            policy,
            anonymous_read,
            buckets: Arc::default(),
            wrap,
        }
    }
}

impl<S, P: Clone, B> Layer<S> for BandwidthLayer<P, B> {
    type Service = BandwidthService<S, P, B>;

    fn layer(&self, inner: S) -> Self::Service {
        BandwidthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`BandwidthLayer`].
pub struct BandwidthService<S, P, B> {
    inner: S,
    layer: BandwidthLayer<P, B>,
}

impl<S: Clone, P: Clone, B> Clone for BandwidthService<S, P, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<P: BandwidthPolicy, B> BandwidthLayer<P, B> {
    fn bucket(&self, key: String, rate: Rate) -> SharedBucket {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        // Forget buckets that are full again: they carry no state worth keeping.
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| Arc::strong_count(b) > 1);
        }
        buckets
            .entry((key, rate))
            .or_insert_with(|| Arc::new(Mutex::new(Bucket::new(rate))))
            .clone()
    }

    /// The bucket of the tenant's own principal (its user's rate for the method), else the anonymous
    /// read rate's bucket of the client's address.
    fn choose<R>(&self, request: &Request<R>) -> Option<SharedBucket> {
        if let Some((principal, account)) = own_account::<_, P>(request) {
            let rates = self.policy.user_rates(account);
            let writes = matches!(
                *request.method(),
                Method::PUT | Method::POST | Method::PATCH | Method::DELETE
            );
            let rate = if writes { rates.write } else { rates.read };
            return rate.map(|rate| self.bucket(principal.user.to_string(), rate));
        }
        let rate = self.anonymous_read?;
        let peer = request.extensions().get::<Peer>()?;
        Some(self.bucket(peer.client_ip.to_string(), rate))
    }
}

impl<S, P, B> Service<Request<B>> for BandwidthService<S, P, B>
where
    S: Service<Request<B>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    P: BandwidthPolicy,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let Some(bucket) = layer.choose(&request) else {
                return inner.call(request).await;
            };
            let (parts, body) = request.into_parts();
            let body = (layer.wrap)(Throttled::new(body, Some(bucket.clone())));
            let response = inner.call(Request::from_parts(parts, body)).await?;
            let (parts, body) = response.into_parts();
            Ok(Response::from_parts(
                parts,
                (layer.wrap)(Throttled::new(body, Some(bucket))),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_pay_for_bursts_with_waits() {
        let rate = Rate {
            bytes: 10 * CELL,
            period: Duration::from_secs(1),
            burst_bytes: None,
        };
        let mut bucket = Bucket::new(rate);
        // A full bucket lets a period's worth through at once.
        assert_eq!(bucket.take(10 * CELL as usize), Duration::ZERO);
        // Then each cell costs a tenth of a second.
        let wait = bucket.take(5 * CELL as usize);
        assert!(
            wait > Duration::from_millis(450) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // Partial cells count whole.
        let mut small = Bucket::new(Rate {
            burst_bytes: Some(CELL),
            ..rate
        });
        assert_eq!(small.take(1), Duration::ZERO);
        assert!(small.take(1) > Duration::from_millis(90));
    }
}

//! Refusals that reach the client. When a request is answered before its body was read (413 or 507 from
//! `Content-Length`, 401, 403, 429, ...), closing the connection with the rest of the upload unread makes
//! the kernel reset it, and a client still sending its body sees a transport error instead of the
//! status. This layer takes back the unread body when the inner service drops it and reads it to its end
//! before the answer goes out, within bounds: at most [`DrainLayer`]'s byte and time limits, and no
//! pause longer than a second. A body that declares more, or does not end in time, and that of a 408 (the
//! client stopped sending) is left unread and the answer says `Connection: close`.
//! Requests without a body, and those that wait for `100 Continue` (the client sends nothing until asked),
//! pass untouched.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

/// Where a body that was dropped unread is put back.
type Slot<B> = Arc<Mutex<Option<B>>>;

/// A request body that, dropped before its end, hands itself back through its slot.
#[derive(Debug)]
pub struct Returning<B> {
    inner: Option<B>,
    slot: Slot<B>,
    ended: bool,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Returning<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl<B> Drop for Returning<B> {
    fn drop(&mut self) {
        if !self.ended
            && let Some(inner) = self.inner.take()
        {
            *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(inner);
        }
    }
}

/// Reads unread request bodies to their end before answering; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct DrainLayer<W> {
    max_bytes: u64,
    max_wait: Duration,
    wrap: W,
}

impl<W> DrainLayer<W> {
    /// Drains at most `max_bytes` for at most `max_wait`; `wrap` turns the returning body back into the
    /// body type (e.g. `axum::body::Body::new`), so that requests without a body pass unwrapped.
    pub fn new(max_bytes: u64, max_wait: Duration, wrap: W) -> Self {
        Self {
            max_bytes,
            max_wait,
            wrap,
        }
    }
}

impl<S, W: Clone> Layer<S> for DrainLayer<W> {
    type Service = DrainService<S, W>;

    fn layer(&self, inner: S) -> Self::Service {
        DrainService {
            inner,
            max_bytes: self.max_bytes,
            max_wait: self.max_wait,
            wrap: self.wrap.clone(),
        }
    }
}

/// The service of [`DrainLayer`].
#[derive(Debug, Clone)]
pub struct DrainService<S, W> {
    inner: S,
    max_bytes: u64,
    max_wait: Duration,
    wrap: W,
}

/// Whether a request has a body that the client sends without waiting to be asked.
fn sends_a_body<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    let waits = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    has_body && !waits
}

/// Longest pause between two pieces of a body being drained: a client that stalls is not waited for.
const DRAIN_PAUSE: Duration = Duration::from_secs(1);

/// Reads `body` to its end; false when it is longer than `max_bytes`, fails, pauses longer than
/// [`DRAIN_PAUSE`] or takes longer than `max_wait`.
async fn drain<B: Body<Data = Bytes> + Unpin>(
    mut body: B,
    max_bytes: u64,
    max_wait: Duration,
) -> bool {
    let read = async {
        let mut read = 0u64;
        loop {
            let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
            let frame = match tokio::time::timeout(DRAIN_PAUSE, next).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(None) => return true,
                Ok(Some(Err(_))) | Err(_) => return false,
            };
            if let Some(data) = frame.data_ref() {
                read += data.len() as u64;
                if read > max_bytes {
                    return false;
                }
            }
        }
    };
    tokio::time::timeout(max_wait, read).await.unwrap_or(false)
}

impl<S, W, B, ResBody> Service<Request<B>> for DrainService<S, W>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    W: Fn(Returning<B>) -> B,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    ResBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !sends_a_body(&request) {
            return Box::pin(self.inner.call(request));
        }
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let slot: Slot<B> = Arc::default();
        let request = request.map(|body| {
            (self.wrap)(Returning {
                inner: Some(body),
                slot: slot.clone(),
                ended: false,
            })
        });
        let answer = self.inner.call(request);
        let (max_bytes, max_wait) = (self.max_bytes, self.max_wait);
        Box::pin(async move {
            let mut response = answer.await?;
            let unread = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(body) = unread {
                // A 408 answers a client that stopped sending: nothing more will come.
                let fits = declared.is_none_or(|length| length <= max_bytes)
                    && response.status() != http::StatusCode::REQUEST_TIMEOUT;
                if !(fits && drain(body, max_bytes, max_wait).await) {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt, Full, StreamBody};
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

    type Boxed = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

    /// A body that counts what was read from it.
    fn counted(len: usize, read: Arc<Mutex<usize>>) -> Boxed {
        let chunks = (0..len.div_ceil(1024)).map(move |i| {
            let size = 1024.min(len - i * 1024);
            *read.lock().unwrap() += size;
            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![0u8; size])))
        });
        StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync()
    }

    async fn refuse(len: usize, max: u64) -> (Response<Full<Bytes>>, usize) {
        let read = Arc::new(Mutex::new(0));
        let request = Request::builder()
            .header(header::CONTENT_LENGTH, len)
            .body(counted(len, read.clone()))
            .unwrap();
        let response = ServiceBuilder::new()
            .layer(DrainLayer::new(
                max,
                Duration::from_secs(5),
                |b: Returning<Boxed>| b.boxed_unsync(),
            ))
            .service_fn(|request: Request<Boxed>| async move {
                drop(request);
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("refused"))))
            })
            .oneshot(request)
            .await
            .unwrap();
        let read = *read.lock().unwrap();
        (response, read)
    }

    #[tokio::test]
    async fn an_unread_body_is_read_before_the_answer() {
        let (response, read) = refuse(100_000, 1 << 20).await;
        assert_eq!(read, 100_000);
        assert!(response.headers().get(header::CONNECTION).is_none());
    }

    #[tokio::test]
    async fn a_body_over_the_bound_is_left_and_the_connection_closed() {
        let (response, read) = refuse(100_000, 10_000).await;
        assert_eq!(read, 0, "declared too long: not read at all");
        assert_eq!(response.headers()[header::CONNECTION], "close");
    }
}

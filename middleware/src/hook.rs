//! Layers that look at a request on its way in and change its response on the way out, without boxing
//! the inner future or cloning the inner service per request (what `axum::middleware::from_fn` costs):
//! the behaviour is a [`Hook`], the service around it one [`HookService`] for all of them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use tower::{Layer, Service};

/// What a hook layer does: note something about the request, then use it on the response.
pub trait Hook: Clone {
    /// What the hook keeps from the request until its response is ready.
    type Seen: Send + 'static;

    /// Looks at `request` before the inner service gets it.
    fn request<B>(&self, request: &Request<B>) -> Self::Seen;

    /// Changes the inner service's `response` in the light of what was seen.
    fn response<B>(&self, seen: Self::Seen, response: &mut Response<B>);
}

/// Applies a [`Hook`] around the inner service.
#[derive(Debug, Clone)]
pub struct HookLayer<H> {
    hook: H,
}

impl<H> HookLayer<H> {
    /// A layer running `hook`.
    pub fn new(hook: H) -> Self {
        Self { hook }
    }
}

impl<S, H: Clone> Layer<S> for HookLayer<H> {
    type Service = HookService<S, H>;

    fn layer(&self, inner: S) -> Self::Service {
        HookService {
            inner,
            hook: self.hook.clone(),
        }
    }
}

/// The service of a [`HookLayer`].
#[derive(Debug, Clone)]
pub struct HookService<S, H> {
    inner: S,
    hook: H,
}

impl<S, H, ReqBody, ResBody> Service<Request<ReqBody>> for HookService<S, H>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    H: Hook,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = HookFuture<S::Future, H>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let seen = self.hook.request(&request);
        HookFuture {
            inner: self.inner.call(request),
            hook: self.hook.clone(),
            seen: Some(seen),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of a [`HookService`].
    pub struct HookFuture<F, H: Hook> {
        #[pin]
        inner: F,
        hook: H,
        seen: Option<H::Seen>,
    }
}

impl<F, H, B, E> Future for HookFuture<F, H>
where
    F: Future<Output = Result<Response<B>, E>>,
    H: Hook,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if let (Ok(response), Some(seen)) = (&mut result, this.seen.take()) {
            this.hook.response(seen, response);
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::ServiceExt;

    use super::*;

    /// Copies the request path into a response header.
    #[derive(Clone)]
    struct EchoPath;

    impl Hook for EchoPath {
        type Seen = String;

        fn request<B>(&self, request: &Request<B>) -> String {
            request.uri().path().to_string()
        }

        fn response<B>(&self, seen: String, response: &mut Response<B>) {
            response
                .headers_mut()
                .insert("x-path", seen.parse().unwrap());
        }
    }

    #[tokio::test]
    async fn the_hook_sees_the_request_and_changes_the_response() {
        let inner = tower::service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new("body"))
        });
        let service = HookLayer::new(EchoPath).layer(inner);
        let request = Request::get("/pub/a").body(()).unwrap();
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.headers()["x-path"], "/pub/a");
        assert_eq!(*response.body(), "body");
    }
}

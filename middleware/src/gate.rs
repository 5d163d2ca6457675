//! Layers that answer some requests themselves (a refusal such as 413) and pass the rest on untouched,
//! judging each request synchronously: the judgement is a [`Gate`], the service around it is one
//! [`GateService`] for all of them. (The rate limiter, whose judgement may ask a shared store, has a
//! service of its own.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::Service;

/// Judges a request before the inner service sees it.
pub trait Gate {
    /// The answer to `request` when it is refused; None lets it through.
    fn refuse<B>(&self, request: &Request<B>) -> Option<Response<String>>;
}

/// Sends what its [`Gate`] refuses back at once and everything else to the inner service.
#[derive(Debug, Clone)]
pub struct GateService<S, G> {
    inner: S,
    gate: G,
}

impl<S, G> GateService<S, G> {
    /// `inner` behind `gate`.
    pub fn new(inner: S, gate: G) -> Self {
        Self { inner, gate }
    }
}

impl<S, G, ReqBody, ResBody> Service<Request<ReqBody>> for GateService<S, G>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: From<String> + Send + 'static,
    G: Gate,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        match self.gate.refuse(&request) {
            None => Box::pin(self.inner.call(request)),
            Some(refusal) => Box::pin(std::future::ready(Ok(refusal.map(ResBody::from)))),
        }
    }
}

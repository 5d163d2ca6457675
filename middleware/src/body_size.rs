//! The upload size cap that can be judged before a body is read: a `PUT` whose `Content-Length` exceeds
//! the server's maximum body size gets 413, from anyone, without consuming the body. The streamed byte
//! count is enforced again by the Store, which refuses the commit. (The user's storage quota needs the
//! user and the path: the `PUT` handler judges it.)
//!
//! ```
//! # use homestead_middleware::body_size::BodySizeLayer;
//! let layer = BodySizeLayer::new(Some(100 << 20));
//! ```

use http::{Method, Request, Response, StatusCode, header};
use tower::Layer;

use crate::gate::{Gate, GateService};
use crate::plain_text::plain_text;

/// Refuses oversized uploads from their `Content-Length`.
#[derive(Debug, Clone, Copy)]
pub struct BodySizeLayer {
    max_body_bytes: Option<u64>,
}

impl BodySizeLayer {
    /// Checks bodies against `max_body_bytes` (None: no maximum).
    pub fn new(max_body_bytes: Option<u64>) -> Self {
        Self { max_body_bytes }
    }
}

impl<S> Layer<S> for BodySizeLayer {
    type Service = BodySizeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService::new(inner, *self)
    }
}

/// The service of [`BodySizeLayer`].
pub type BodySizeService<S> = GateService<S, BodySizeLayer>;

/// The `Content-Length` a `PUT` declares, if any.
pub fn declared_length<B>(request: &Request<B>) -> Option<u64> {
    (request.method() == Method::PUT)
        .then(|| request.headers().get(header::CONTENT_LENGTH))
        .flatten()
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
}

impl Gate for BodySizeLayer {
    fn refuse<B>(&self, request: &Request<B>) -> Option<Response<String>> {
        let (_, max) = declared_length(request)
            .zip(self.max_body_bytes)
            .filter(|(length, max)| length > max)?;
        Some(plain_text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body is larger than the limit of {max} bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

    async fn put(method: Method, length: Option<u64>) -> Response<String> {
        let mut request = Request::builder().method(method).uri("/pub/a");
        if let Some(length) = length {
            request = request.header(header::CONTENT_LENGTH, length);
        }
        ServiceBuilder::new()
            .layer(BodySizeLayer::new(Some(1000)))
            .service_fn(|_req: Request<()>| async move {
                Ok::<_, Infallible>(Response::new("passed".to_string()))
            })
            .oneshot(request.body(()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn bodies_over_the_maximum_get_413_from_anyone() {
        let response = put(Method::PUT, Some(1001)).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            response.into_body(),
            "Request body is larger than the limit of 1000 bytes"
        );
        assert_eq!(put(Method::PUT, Some(1000)).await.into_body(), "passed");
        // Without a declared length only the streamed count can tell; other methods are not judged.
        assert_eq!(put(Method::PUT, None).await.into_body(), "passed");
        assert_eq!(put(Method::POST, Some(1001)).await.into_body(), "passed");
    }

    #[test]
    fn only_a_put_declares_a_length() {
        let request = |method: Method, value: &str| {
            Request::builder()
                .method(method)
                .header(header::CONTENT_LENGTH, value)
                .body(())
                .unwrap()
        };
        assert_eq!(declared_length(&request(Method::PUT, "12")), Some(12));
        assert_eq!(declared_length(&request(Method::PUT, "x")), None);
        assert_eq!(declared_length(&request(Method::POST, "12")), None);
    }
}

//! The one-line plain-text answers the layers give when they refuse a request or cannot judge it.

use http::{HeaderValue, Response, StatusCode, header};

/// A response with `status` and `message` as `text/plain; charset=utf-8`.
pub fn plain_text<B: From<String>>(status: StatusCode, message: String) -> Response<B> {
    let mut response = Response::new(B::from(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

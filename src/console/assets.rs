//! The console's page, style sheet and script, embedded in the binary: nothing to build or fetch, so
//! the console works offline. Every answer forbids framing and inline scripts.

use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderValue, StatusCode, header};

use crate::http_error::HttpError;

const INDEX: &str = include_str!("assets/index.html");
const STYLE: &str = include_str!("assets/console.css");
const SCRIPT: &str = include_str!("assets/console.js");

/// Only this origin's files; no inline script, no framing.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn file(content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /console`: to `/console/`, where the page's relative links resolve.
pub async fn to_index() -> Redirect {
    Redirect::permanent("/console/")
}

/// `GET /console/`: the page.
pub async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

/// `GET /console/console.css` and `/console/console.js`.
pub async fn asset(Path(name): Path<String>) -> Result<Response, HttpError> {
    match name.as_str() {
        "console.css" => Ok(file("text/css; charset=utf-8", STYLE)),
        "console.js" => Ok(file("text/javascript; charset=utf-8", SCRIPT)),
        _ => Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "No such console file",
        )),
    }
}

//! The console's request checks: state-changing requests must come from the console's own origin, and
//! every API request but sign-in needs a session cookie, state-changing ones its CSRF token too.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode, header};

use super::Console;
use crate::http_error::HttpError;
use crate::routes::admin::constant_time_eq;

/// The console's session cookie, sent only to `/console` paths.
pub const COOKIE: &str = "homestead_console";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The operator route that changes state on `GET` (the reference's token minting): it needs the CSRF
/// token like any other write.
const MINTING_GET: &str = "/generate_signup_token";

/// Whether a request may change state: any method but `GET`, `HEAD` and `OPTIONS`, and the minting `GET`.
fn is_unsafe(method: &Method, path: &str) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || path.ends_with(MINTING_GET)
}

/// Refuses a request that a browser marks as coming from another site or origin (`Sec-Fetch-Site`,
/// `Origin`), whatever cookie it carries, when it may change state or asks the API: a page elsewhere
/// (another port of the same host included) can neither sign in, act, nor load API answers.
pub async fn same_origin(request: Request, next: Next) -> Result<Response, HttpError> {
    let path = request.uri().path();
    let guarded = is_unsafe(request.method(), path) || path.starts_with("/console/api/");
    if guarded && !from_same_origin(request.headers()) {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "Cross-site request refused: use the console page itself",
        ));
    }
    Ok(next.run(request).await)
}

/// No browser marker names another origin (clients without them, such as curl, pass).
fn from_same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site"))
        && site != "same-origin"
        && site != "none"
    {
        return false;
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            origin.strip_prefix("http://") == Some(host)
                || origin.strip_prefix("https://") == Some(host)
        }
        (Some(_), None) => false,
    }
}

/// The session cookie's token, if sent.
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Refuses requests without a live session (401), and state-changing ones without its CSRF token
/// (403).
pub async fn require_session(
    State(console): State<Console>,
    request: Request,
    next: Next,
) -> Result<Response, HttpError> {
    let csrf_token = session_token(request.headers())
        .and_then(|token| console.sessions.csrf_token(token))
        .ok_or_else(|| {
            HttpError::new(
                StatusCode::UNAUTHORIZED,
                "Not signed in (or the session expired): sign in again",
            )
        })?;
    if is_unsafe(request.method(), request.uri().path()) {
        let given = request.headers().get(CSRF_HEADER).map(|v| v.as_bytes());
        if !given.is_some_and(|given| constant_time_eq(given, csrf_token.as_bytes())) {
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                "Missing or wrong CSRF token: reload the console",
            ));
        }
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    header::HeaderName::from_static(name),
                    header::HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn only_the_console_origin_or_no_browser_marker_passes() {
        let host = ("host", "127.0.0.1:6288");
        for passing in [
            vec![host],
            vec![host, ("origin", "http://127.0.0.1:6288")],
            vec![host, ("sec-fetch-site", "same-origin")],
            vec![host, ("sec-fetch-site", "none")],
        ] {
            assert!(from_same_origin(&headers(&passing)), "{passing:?}");
        }
        for refused in [
            vec![host, ("origin", "null")],
            vec![host, ("origin", "http://127.0.0.1:8080")],
            vec![host, ("origin", "http://evil.example")],
            vec![("origin", "http://127.0.0.1:6288")],
            vec![host, ("sec-fetch-site", "same-site")],
            vec![host, ("sec-fetch-site", "cross-site")],
        ] {
            assert!(!from_same_origin(&headers(&refused)), "{refused:?}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let found = headers(&[("cookie", "a=1; homestead_console=tok; b=2")]);
        assert_eq!(session_token(&found), Some("tok"));
        let prefixed = headers(&[("cookie", "homestead_console_x=1; xhomestead_console=2")]);
        assert_eq!(session_token(&prefixed), None);
    }
}

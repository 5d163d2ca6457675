//! The span each client request is traced in (tower-http's `TraceLayer`, and OTLP export when on). It
//! names the method from a fixed set and the path without its query, cut to [`MAX_LOGGED_PATH`] bytes,
//! with the token of `/signup_tokens/{token}` hidden: a query may carry a `signup_token`, and a log must
//! neither hold secrets nor grow with what a client sends. The span is at info level when OTLP export is
//! on, so that the export sees it, and at debug level otherwise ([`set_exported`]); a span writes no line
//! itself, and the request's start and end lines are at debug level, which the default filter leaves out
//! (`tower_http=debug` turns them on).

use std::sync::atomic::{AtomicBool, Ordering};

use http::Request;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{MakeSpan, TraceLayer};
use tracing::Span;

use crate::metrics::method_label;

/// Longest path written into a span, in bytes.
pub const MAX_LOGGED_PATH: usize = 256;

/// The path as it may be logged.
fn loggable_path(path: &str) -> String {
    if path.starts_with("/signup_tokens/") {
        return "/signup_tokens/{token}".to_string();
    }
    if path.len() <= MAX_LOGGED_PATH {
        return path.to_string();
    }
    let mut end = MAX_LOGGED_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}

/// Whether request spans go to OTLP export (set once by the logging setup).
static EXPORTED: AtomicBool = AtomicBool::new(false);

/// Makes request spans info-level, where OTLP export sees them; without export they are debug-level,
/// so that the default filter leaves them out and a request pays nothing for a span no one reads
/// (`homestead::request_span=debug` puts the method and path back into the log lines of a request).
pub fn set_exported(exported: bool) {
    EXPORTED.store(exported, Ordering::Relaxed);
}

/// Makes the request span.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        let method = method_label(request.method());
        let path = request.uri().path();
        if EXPORTED.load(Ordering::Relaxed) {
            tracing::info_span!("request", method, path = %loggable_path(path))
        } else {
            tracing::debug_span!("request", method, path = %loggable_path(path))
        }
    }
}

/// The trace layer of the client API.
pub fn layer() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, RequestSpan> {
    TraceLayer::new_for_http().make_span_with(RequestSpan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cut_and_tokens_hidden() {
        assert_eq!(loggable_path("/pub/a.txt"), "/pub/a.txt");
        assert_eq!(
            loggable_path("/signup_tokens/ABCD-EFGH-IJKL"),
            "/signup_tokens/{token}"
        );
        let long = format!("/pub/{}", "é".repeat(400));
        let logged = loggable_path(&long);
        assert!(
            logged.len() <= MAX_LOGGED_PATH + "…".len(),
            "{}",
            logged.len()
        );
        assert!(logged.ends_with('…'));
    }
}

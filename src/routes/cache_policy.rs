//! The caching headers that follow from the request path alone (PROTOCOL-0.17.md §14), set outside the
//! rate limiter, the body limit, the database check and the handlers, so that their refusals carry them
//! too: every answer about a private storage path is `no-store`, varies by the credentials (and, on the
//! owner-relative form, by `pubky-host`) and loses its validators on an error; every answer of
//! `/events-stream` is `no-store` and varies by what chooses its identity.

use homestead_backends::Scope;
use homestead_middleware::Hook;
use http::{HeaderValue, Request, Response, header};

use crate::routes::storage::{addressed_path, decode_path};

/// What a request path says about caching its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// A private storage path, owner-relative (`legacy`) or path-addressed.
    Private { legacy: bool },
    /// `/events-stream`.
    EventStream,
    /// Anything else: the handlers decide.
    Handler,
}

impl Policy {
    fn of(path: &str) -> Self {
        if path == "/events-stream" {
            return Self::EventStream;
        }
        let (storage_path, legacy) = match path.strip_prefix("/storage/") {
            Some(rest) => (addressed_path(rest), false),
            None => (path, true),
        };
        // Without a `%`, decoding changes nothing, so a path naming no `priv` cannot be private: most
        // requests skip the normalization (the handler does its own).
        if !storage_path.contains("priv") && !storage_path.contains('%') {
            return Self::Handler;
        }
        match decode_path(storage_path).is_ok_and(|p| p.scope() == Scope::Private) {
            true => Self::Private { legacy },
            false => Self::Handler,
        }
    }
}

/// The layer's [`Hook`]: applies the [`Policy`] of the request path to whatever answer comes back.
#[derive(Debug, Clone, Copy)]
pub struct CachePolicy;

impl Hook for CachePolicy {
    type Seen = Policy;

    fn request<B>(&self, request: &Request<B>) -> Policy {
        Policy::of(request.uri().path())
    }

    fn response<B>(&self, policy: Policy, response: &mut Response<B>) {
        let error = response.status().as_u16() >= 400;
        let headers = response.headers_mut();
        let vary = match policy {
            Policy::Handler => return,
            Policy::Private { legacy: false } => "Authorization, Cookie",
            Policy::Private { legacy: true } | Policy::EventStream => {
                "pubky-host, Authorization, Cookie"
            }
        };
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::VARY, HeaderValue::from_static(vary));
        if error && policy != Policy::EventStream {
            headers.remove(header::ETAG);
            headers.remove(header::LAST_MODIFIED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_decides() {
        assert_eq!(Policy::of("/events-stream"), Policy::EventStream);
        assert_eq!(Policy::of("/events-stream/"), Policy::Handler);
        assert_eq!(Policy::of("/priv/x"), Policy::Private { legacy: true });
        assert_eq!(
            Policy::of("/pub/../priv/x"),
            Policy::Private { legacy: true }
        );
        assert_eq!(
            Policy::of("/pub/%2e%2e/priv/"),
            Policy::Private { legacy: true }
        );
        let key = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";
        let addressed = format!("/storage/{key}/priv/a");
        assert_eq!(Policy::of(&addressed), Policy::Private { legacy: false });
        assert_eq!(
            Policy::of(&format!("/storage/{key}/pub/a")),
            Policy::Handler
        );
        for other in ["/pub/x", "/priv", "/session", "/storage/", "/storage/x"] {
            assert_eq!(Policy::of(other), Policy::Handler, "{other}");
        }
    }
}

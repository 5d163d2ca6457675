//! Which user a request is about (PROTOCOL.md §3): a valid `pubky-host` header, else a valid `Host`
//! header, else the first valid `pubky-host` query parameter. Keys are parsed leniently (pkarr's parser:
//! `<z32>`, `_pubky.<z32>`, `https://<z32>/x`, ...); the SDK's display form `pubky<z32>` is ignored at
//! every step. The result is stored as a [`Tenant`] request extension; none is stored when no key is
//! found. A path-addressed URL, `/storage/<z32>/...`, names its owner itself: that key (exactly 52 z32
//! characters) is the tenant whatever the headers say.
//!
//! ```
//! use homestead_middleware::{Tenant, TenantLayer};
//! use tower::ServiceBuilder;
//!
//! let service = ServiceBuilder::new()
//!     .layer(TenantLayer)
//!     .service_fn(|req: http::Request<()>| async move {
//!         Ok::<_, std::convert::Infallible>(req.extensions().get::<Tenant>().cloned())
//!     });
//! ```

use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, Request, header::HOST};
use pkarr::PublicKey;
use tower::{Layer, Service};

use crate::query::raw_values;

/// The header browsers and ICANN-side SDK requests name the user with.
static PUBKY_HOST: HeaderName = HeaderName::from_static("pubky-host");

/// The user a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub PublicKey);

/// Whether `value` is the SDK's display form: `pubky` followed by 52 characters.
fn is_pubky_prefixed(value: &str) -> bool {
    value.len() == 57 && value.starts_with("pubky")
}

/// Keys parsed lately: parsing decompresses a curve point, which costs more than the rest of a small GET's
/// routing. Cleared when it grows past [`PARSED_KEYS_MAX`].
static PARSED_KEYS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, PublicKey>>,
> = std::sync::LazyLock::new(Default::default);
const PARSED_KEYS_MAX: usize = 4096;

/// Parses a key as the reference does where it accepts host-like strings; `pubky<z32>` is refused.
pub fn parse_key(value: &str) -> Option<PublicKey> {
    if is_pubky_prefixed(value) {
        return None;
    }
    if let Some(key) = PARSED_KEYS.lock().unwrap().get(value) {
        return Some(key.clone());
    }
    let key = PublicKey::try_from(value).ok()?;
    let mut parsed = PARSED_KEYS.lock().unwrap();
    if parsed.len() >= PARSED_KEYS_MAX {
        parsed.clear();
    }
    parsed.insert(value.to_string(), key.clone());
    Some(key)
}

fn header_key(headers: &HeaderMap, name: &HeaderName) -> Option<PublicKey> {
    headers.get(name)?.to_str().ok().and_then(parse_key)
}

/// Resolves the tenant from a request's headers, URI authority and raw query string (`?pubky-host=` is
/// matched undecoded, as it always was). An HTTP/2 request carries its host in `:authority` (the URI's
/// authority) instead of a `Host` header.
fn resolve(headers: &HeaderMap, uri: &http::Uri) -> Option<PublicKey> {
    let query = uri.query();
    header_key(headers, &PUBKY_HOST)
        .or_else(|| header_key(headers, &HOST))
        .or_else(|| {
            if headers.contains_key(HOST) {
                return None;
            }
            uri.authority()
                .and_then(|authority| parse_key(authority.host()))
        })
        .or_else(|| raw_values(query, "pubky-host").find_map(parse_key))
}

/// The storage path of a request path: itself, or for `/storage/<owner>/<path>` the `/<path>` part.
pub fn storage_path(uri_path: &str) -> &str {
    match uri_path.strip_prefix("/storage/") {
        Some(rest) => rest.find('/').map_or("/", |slash| &rest[slash..]),
        None => uri_path,
    }
}

/// The owner of a path-addressed URL `/storage/<owner>/...` (given the part after `/storage/`): the URL
/// is authoritative, so headers and query are not consulted, and an invalid owner means no tenant.
fn path_owner(rest: &str) -> Option<PublicKey> {
    let owner = rest.split('/').next()?;
    (owner.len() == 52).then(|| parse_key(owner)).flatten()
}

/// Adds the [`Tenant`] extension.
#[derive(Debug, Clone, Copy, Default)]
pub struct TenantLayer;

impl<S> Layer<S> for TenantLayer {
    type Service = TenantService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantService { inner }
    }
}

/// The service of [`TenantLayer`].
#[derive(Debug, Clone)]
pub struct TenantService<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for TenantService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let tenant = match request.uri().path().strip_prefix("/storage/") {
            Some(rest) => path_owner(rest),
            None => resolve(request.headers(), request.uri()),
        };
        // Never trust an extension a previous layer or client could have planted.
        request.extensions_mut().remove::<Tenant>();
        if let Some(key) = tenant {
            request.extensions_mut().insert(Tenant(key));
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

    const A: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";
    const B: &str = "tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qy";

    async fn tenant(uri: &str, headers: &[(&str, &str)]) -> Option<String> {
        let mut request = Request::builder().uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        ServiceBuilder::new()
            .layer(TenantLayer)
            .service_fn(|req: Request<()>| async move {
                Ok::<_, Infallible>(req.extensions().get::<Tenant>().map(|t| t.0.to_string()))
            })
            .oneshot(request.body(()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn precedence_is_header_then_host_then_query() {
        let query = format!("/pub/x?pubky-host={B}");
        assert_eq!(tenant(&query, &[("host", A)]).await.as_deref(), Some(A));
        assert_eq!(
            tenant("/", &[("host", A), ("pubky-host", B)])
                .await
                .as_deref(),
            Some(B)
        );
        assert_eq!(
            tenant(&query, &[("host", "localhost:6286")])
                .await
                .as_deref(),
            Some(B)
        );
        let pubky_host = format!("_pubky.{A}");
        assert_eq!(
            tenant("/", &[("host", &pubky_host)]).await.as_deref(),
            Some(A)
        );
        // An invalid pubky-host header keeps the Host key.
        assert_eq!(
            tenant("/", &[("host", A), ("pubky-host", "nope")])
                .await
                .as_deref(),
            Some(A)
        );
    }

    #[tokio::test]
    async fn http2_requests_name_the_tenant_in_the_authority() {
        let h2 = format!("https://{A}/pub/x");
        assert_eq!(tenant(&h2, &[]).await.as_deref(), Some(A));
        assert_eq!(tenant(&h2, &[("pubky-host", B)]).await.as_deref(), Some(B));
        let local = format!("http://localhost:6286/pub/x?pubky-host={B}");
        assert_eq!(tenant(&local, &[]).await.as_deref(), Some(B));
    }

    #[tokio::test]
    async fn path_addressed_urls_name_their_owner() {
        let url = format!("/storage/{A}/pub/x");
        assert_eq!(tenant(&url, &[("pubky-host", B)]).await.as_deref(), Some(A));
        let url = format!("/storage/{A}/pub/x?pubky-host={B}");
        assert_eq!(tenant(&url, &[("host", B)]).await.as_deref(), Some(A));
        let display = format!("/storage/pubky{A}/pub/x");
        assert_eq!(tenant(&display, &[("pubky-host", B)]).await, None);
        let host_form = format!("/storage/_pubky.{A}/pub/x");
        assert_eq!(tenant(&host_form, &[]).await, None);
        assert_eq!(
            tenant("/storage/nope/pub/x", &[("pubky-host", B)]).await,
            None
        );
    }

    #[tokio::test]
    async fn display_form_and_non_keys_are_ignored() {
        let display = format!("pubky{A}");
        assert_eq!(tenant("/", &[("pubky-host", &display)]).await, None);
        assert_eq!(tenant(&format!("/?pubky-host={display}"), &[]).await, None);
        let skip_then_take = format!("/?pubky-host={display}&pubky-host={B}");
        assert_eq!(tenant(&skip_then_take, &[]).await.as_deref(), Some(B));
        let with_port = format!("{A}:6287");
        assert_eq!(tenant("/", &[("host", &with_port)]).await, None);
        assert_eq!(tenant("/", &[("host", &A.to_uppercase())]).await, None);
        assert_eq!(tenant("/", &[("host", "example.com")]).await, None);
        assert_eq!(tenant("/?pubky-host", &[]).await, None);
    }

    #[tokio::test]
    async fn the_query_value_is_matched_undecoded() {
        assert_eq!(
            tenant(&format!("/?pubky-host=_pubky.{A}"), &[])
                .await
                .as_deref(),
            Some(A)
        );
        assert_eq!(
            tenant(&format!("/?pubky-host=_pubky%2E{A}"), &[]).await,
            None
        );
        assert_eq!(tenant(&format!("/?pubky%2Dhost={A}"), &[]).await, None);
    }
}

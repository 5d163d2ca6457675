//! Static websites by `Host` (PROTOCOL-0.17.md §18): a `GET` or `HEAD` whose `Host` is `<key>` or
//! `<label>.<key>` of a user (not the server's own key), on a path whose first segment the API does not
//! claim, is served from the owner's `/pub/website/<label>/` (label `_` for the bare key): `index.html`
//! for directories, a redirect to the directory when only its `index.html` exists, the site's own
//! `404.html`, never a listing. Cookies and bearers play no part.
//!
//! [`crate::stack::HostDispatch`] recognizes the request ([`site_of`]) and hands it to [`router`], where
//! [`resolve`] maps the path onto the site's files before the rate limits see it, and [`serve`] answers.
//!
//! Website responses carry no `Content-Security-Policy: sandbox` (which stored files get on the API):
//! a site is served on its owner's own host, never the server's, and its pages must run their scripts
//! and load their own styles and images. `nosniff` stays. Byte ranges are not served: a site file is
//! always answered whole (§18.4 names no `206`).

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use homestead_backends::store::ReadOptions;
use homestead_backends::{EntryPath, NormalizedPath};
use homestead_middleware::Tenant;
use homestead_middleware::tenant::parse_key;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, StatusCode, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::http_error::HttpError;
use crate::routes::AppState;
use crate::routes::storage::{head_response, not_modified, read_options, read_response};

/// First path segments that stay the API's whatever the `Host` (§18.1).
const RESERVED: [&str; 10] = [
    "auth",
    "events",
    "events-stream",
    "info",
    "priv",
    "pub",
    "session",
    "signup",
    "signup_tokens",
    "storage",
];

/// What a `Location` keeps unencoded: `A–Z a–z 0–9 - _ . ~ /` (§18.4).
const LOCATION: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// The site a request's `Host` names: whose it is and which of their sites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The owner, from the `Host`.
    pub owner: pkarr::PublicKey,
    /// The site's label: `_` for the bare key.
    pub label: String,
}

/// The site a request is for, if it is a website request (§18.1): `GET` or `HEAD`, a raw first path
/// segment the API does not claim, and a `Host` (else the URI authority) naming a site that is not the
/// server's (`server_key`).
pub fn site_of<B>(request: &http::Request<B>, server_key: &pkarr::PublicKey) -> Option<Site> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return None;
    }
    let path = request.uri().path();
    let first = path.strip_prefix('/').unwrap_or(path).split('/').next();
    if first.is_some_and(|segment| RESERVED.contains(&segment)) {
        return None;
    }
    let host = match request.headers().get(header::HOST) {
        Some(value) => value.to_str().ok()?,
        None => request.uri().authority()?.as_str(),
    };
    parse_host(host, server_key)
}

/// A host's site (§18.2): lower-cased, port and one trailing dot dropped, then `<key>` or
/// `<label>.<key>` with a single DNS label and the canonical z32 of a key other than `server_key`.
fn parse_host(host: &str, server_key: &pkarr::PublicKey) -> Option<Site> {
    let host = host.to_ascii_lowercase();
    let host = host.split(':').next().unwrap_or_default();
    let host = host.strip_suffix('.').unwrap_or(host);
    let (label, key) = match host.rsplit_once('.') {
        None => ("_", host),
        Some((label, key)) => (dns_label(label)?, key),
    };
    // Exactly the canonical text: no other form of a key names a site.
    let owner = (key.len() == 52)
        .then(|| parse_key(key))
        .flatten()
        .filter(|owner| owner.to_z32() == key && owner != server_key)?;
    Some(Site {
        owner,
        label: label.to_string(),
    })
}

/// `label` if it is one DNS label: 1–63 of `a–z 0–9 -`, neither starting nor ending with `-`.
fn dns_label(label: &str) -> Option<&str> {
    let valid = (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-');
    valid.then_some(label)
}

/// Where a website request leads within its owner's files (§18.3).
#[derive(Debug, Clone)]
pub(crate) struct Target {
    owner: pkarr::PublicKey,
    /// `/pub/website/<label>`.
    root: String,
    /// The request path, decoded and normalized.
    pub(crate) path: NormalizedPath,
    /// The file to serve: `<root><path>`, plus `index.html` for a directory.
    pub(crate) file: EntryPath,
}

impl Target {
    /// Maps the raw request path of `site`; the error is the 400 to answer.
    pub(crate) fn of(site: &Site, raw_path: &str) -> Result<Self, HttpError> {
        let decoded = percent_decode_str(raw_path)
            .decode_utf8()
            .map_err(|_| HttpError::bad_request("Website path is not valid UTF-8"))?;
        let invalid = |err: homestead_backends::PathError| {
            HttpError::bad_request(format!("Invalid website path: {err}"))
        };
        let path = NormalizedPath::parse(&decoded).map_err(invalid)?;
        let root = format!("/pub/website/{}", site.label);
        let index = if path.is_dir() { "index.html" } else { "" };
        let file = EntryPath::parse(&format!("{root}{}{index}", path.as_str())).map_err(invalid)?;
        Ok(Self {
            owner: site.owner.clone(),
            root,
            path,
            file,
        })
    }
}

/// The website router: [`serve`] for every path, behind [`resolve`] and whatever layers
/// [`crate::stack`] adds between them.
pub(crate) fn router(app: AppState) -> Router {
    Router::new().fallback(serve).with_state(app)
}

/// Maps a website request (the [`Site`] extension [`crate::stack::HostDispatch`] attached) onto its
/// target, or answers the 400 of a path that maps to none. The owner becomes the request's [`Tenant`]
/// and the target file its path, so that rate limits match the file (§18.3).
pub(crate) async fn resolve(mut request: Request, next: Next) -> Response {
    let Some(site) = request.extensions_mut().remove::<Site>() else {
        return HttpError::not_found().into_response();
    };
    let target = match Target::of(&site, request.uri().path()) {
        Ok(target) => target,
        Err(err) => return err.into_response(),
    };
    let encoded = utf8_percent_encode(target.file.as_str(), LOCATION);
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{encoded}?{query}"),
        None => encoded.to_string(),
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = PathAndQuery::try_from(path_and_query).ok();
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    request
        .extensions_mut()
        .insert(Tenant(target.owner.clone()));
    request.extensions_mut().insert(target);
    next.run(request).await
}

/// Answers a website request (§18.4); every answer gets the website headers.
async fn serve(State(app): State<AppState>, request: Request) -> Response {
    let Some(target) = request.extensions().get::<Target>().cloned() else {
        return HttpError::not_found().into_response();
    };
    let head = request.method() == Method::HEAD;
    let options = ReadOptions {
        range: None,
        ..read_options(request.headers())
    };
    let mut response = answer(&app, &target, request.uri().query(), &options, head)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.remove(header::CONTENT_SECURITY_POLICY);
    headers.remove(header::ACCEPT_RANGES);
    response
}

/// The steps of §18.4: the owner, the file, the directory redirect, the site's 404 page, a plain 404.
/// The owner and the file are looked up at once: a page costs one round trip.
async fn answer(
    app: &AppState,
    target: &Target,
    query: Option<&str>,
    options: &ReadOptions,
    head: bool,
) -> Result<Response, HttpError> {
    let owner = target.owner.to_z32();
    let (user, page) = tokio::join!(
        app.store.accounts().user(&owner),
        file(app, &owner, &target.file, options, head)
    );
    match user? {
        None => return Err(HttpError::not_found()),
        Some(user) if user.disabled => {
            return Err(HttpError::new(StatusCode::FORBIDDEN, "User is disabled"));
        }
        Some(_) => {}
    }
    if let Some(page) = page? {
        return Ok(page);
    }
    if !target.path.is_dir() {
        let index = EntryPath::parse(&format!("{}/index.html", target.file.as_str()));
        if let Ok(index) = index
            && app.store.head(&owner, &index).await?.is_some()
        {
            return Ok(redirect(target.path.as_str(), query));
        }
    }
    let not_found = EntryPath::parse(&format!("{}/404.html", target.root));
    if let Ok(not_found) = not_found
        && let Some(mut page) = file(app, &owner, &not_found, &ReadOptions::default(), head).await?
    {
        *page.status_mut() = StatusCode::NOT_FOUND;
        page.headers_mut().remove(header::ETAG);
        page.headers_mut().remove(header::LAST_MODIFIED);
        return Ok(page);
    }
    Err(HttpError::not_found())
}

/// A file of the owner's as a response, honouring the conditions of `options` (for `HEAD`, the headers
/// alone); None when there is no such file.
async fn file(
    app: &AppState,
    owner: &str,
    path: &EntryPath,
    options: &ReadOptions,
    head: bool,
) -> Result<Option<Response>, HttpError> {
    if !head {
        let read = app.store.get(owner, path, options).await?;
        return Ok(read_response(app, read));
    }
    Ok(app.store.head(owner, path).await?.map(|entry| {
        if entry.not_modified(options) {
            not_modified(&entry)
        } else {
            head_response(&entry)
        }
    }))
}

/// 301 to the directory of the normalized file-shaped `path`, keeping the query; empty body. The path
/// is normalized, so it starts with a single `/` and the redirect stays on the host.
pub(crate) fn redirect(path: &str, query: Option<&str>) -> Response {
    let mut location = format!("{}/", utf8_percent_encode(path, LOCATION));
    if let Some(query) = query {
        location.push('?');
        location.push_str(query);
    }
    let mut response = (StatusCode::MOVED_PERMANENTLY, Body::empty()).into_response();
    if let Ok(value) = HeaderValue::try_from(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";

    fn server() -> pkarr::PublicKey {
        pkarr::Keypair::from_secret_key(&[2; 32]).public_key()
    }

    fn label(host: &str) -> Option<String> {
        parse_host(host, &server()).map(|site| {
            assert_eq!(site.owner.to_z32(), KEY);
            site.label
        })
    }

    #[test]
    fn hosts_name_sites_per_the_spec() {
        let upper = format!("My-Blog.{}.:6287", KEY.to_uppercase());
        for (host, expected) in [
            (KEY.to_string(), Some("_")),
            (format!("blog.{KEY}"), Some("blog")),
            (upper, Some("my-blog")),
            (format!("{KEY}."), Some("_")),
            (format!("{KEY}:443"), Some("_")),
            (
                format!("{}.{KEY}", "a".repeat(63)),
                Some(&"a".repeat(63)[..]),
            ),
            (format!("{}.{KEY}", "a".repeat(64)), None),
            (format!("_pubky.{KEY}"), None),
            (format!("_.{KEY}"), None),
            (format!("a.b.{KEY}"), None),
            (format!("-a.{KEY}"), None),
            (format!("a-.{KEY}"), None),
            (format!(".{KEY}"), None),
            (format!("pubky{KEY}"), None),
            (format!("x@{KEY}"), None),
            (format!("{KEY}.."), None),
            (KEY[1..].to_string(), None),
            ("localhost".to_string(), None),
            ("example.com".to_string(), None),
        ] {
            assert_eq!(label(&host).as_deref(), expected, "{host}");
        }
        // The server's own key keeps the API.
        assert_eq!(parse_host(&server().to_z32(), &server()), None);
    }

    #[test]
    fn only_canonical_key_text_names_a_site() {
        // The last z32 character carries 4 spare bits: another letter decoding to the same key is not
        // its canonical text.
        let mut bent = KEY.to_string();
        let last = bent.pop().unwrap();
        let alphabet = "ybndrfg8ejkmcpqxot1uwisza345h769";
        let found = alphabet.chars().filter(|c| *c != last).any(|c| {
            let text = format!("{bent}{c}");
            parse_key(&text).is_some_and(|key| key.to_z32() == KEY) && label(&text).is_none()
        });
        assert!(
            found,
            "a non-canonical spelling of the key exists and is refused"
        );
    }

    #[test]
    fn paths_map_into_the_site_root() {
        let site = Site {
            owner: pkarr::PublicKey::try_from(KEY).unwrap(),
            label: "blog".into(),
        };
        let file = |raw: &str| Target::of(&site, raw).map(|t| t.file.as_str().to_string());
        let ok = |raw: &str| file(raw).unwrap();
        assert_eq!(ok("/"), "/pub/website/blog/index.html");
        assert_eq!(ok("/a/"), "/pub/website/blog/a/index.html");
        assert_eq!(ok("/a/.."), "/pub/website/blog/index.html");
        assert_eq!(ok("/a%20b/c.css"), "/pub/website/blog/a b/c.css");
        assert_eq!(ok("//evil.com"), "/pub/website/blog/evil.com");
        assert_eq!(ok("/x/../pub/y"), "/pub/website/blog/pub/y");
        let err = |raw: &str| file(raw).unwrap_err().message;
        assert_eq!(err("/%FF"), "Website path is not valid UTF-8");
        assert_eq!(
            err("/../x"),
            "Invalid website path: Path escapes the root with .."
        );
        assert_eq!(
            err("/a%00"),
            "Invalid website path: Path contains a control character"
        );
        let long = format!("/{}", ["a"; 2100].join("/"));
        assert!(err(&long).starts_with("Invalid website path: "));
    }

    #[test]
    fn redirects_encode_all_but_the_unreserved() {
        let location = |path, query| {
            redirect(path, query).headers()[header::LOCATION]
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(location("/docs", None), "/docs/");
        assert_eq!(
            location("/a b/ü~_.-", Some("x=1")),
            "/a%20b/%C3%BC~_.-/?x=1"
        );
        assert_eq!(location("/\\evil.com", None), "/%5Cevil.com/");
    }
}

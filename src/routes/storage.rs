//! Files under `/pub/` (PROTOCOL.md §7, §8): every path that no fixed route claims lands here, addressed
//! to the tenant, or to the owner named in a path-addressed `/storage/<owner>/...` URL. Authorization
//! first, then the path, then the Store.

use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::body::Body;
use axum::body::BodyDataStream;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt};
use homestead_backends::metadata::{Entry, WriteMode};
use homestead_backends::store::{ByteRange, Read, ReadOptions, Refusal, WriteLimits};
use homestead_backends::{DirPath, EntryPath, NormalizedPath};
use homestead_middleware::auth::own_account;
use homestead_middleware::body_size::declared_length;
use homestead_middleware::{Authentication, Tenant};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use percent_encoding::percent_decode_str;

use crate::authorization::{check_read, check_write, identity, private_identity};
use crate::http_error::HttpError;
use crate::lookups::StoreCredentials;
use crate::metrics::StorageRequest;
use crate::preconditions::{http_date_secs, write_mode};
use crate::routes::{AppState, listing, locks};

/// The methods an owner-relative storage path supports, in the reference's spelling (PROTOCOL-0.17.md
/// §12.2).
const LEGACY_ALLOW: &str = "GET,HEAD,PUT,DELETE";

/// Owner-relative storage: the tenant comes from the `pubky-host` header, `Host` or the query.
pub async fn tenant_route(
    State(app): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Extension(authentication): Extension<Authentication>,
    request: Request,
) -> Response {
    let raw_path = request.uri().path().to_string();
    let tenant = tenant.map(|Extension(Tenant(key))| key);
    if let Some(owner) = &tenant {
        count(&app, false, owner, &authentication, &request);
    }
    let read = is_read(request.method());
    let mut response = serve(&app, tenant, &authentication, &raw_path, request)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    vary_by_host(&mut response, read);
    response
}

/// Path-addressed storage, `/storage/<owner>/<path>`: the owner in the URL is the tenant whatever the
/// headers say (the tenant layer resolves it from the path).
pub async fn path_addressed(
    State(app): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Extension(authentication): Extension<Authentication>,
    request: Request,
) -> Response {
    let path = request.uri().path();
    let rest = path.strip_prefix("/storage/").unwrap_or_default();
    let raw_path = addressed_path(rest).to_string();
    let Some(Extension(Tenant(owner))) = tenant else {
        let owner = rest.split('/').next().unwrap_or_default();
        return HttpError::bad_request(format!("Invalid URL: invalid public key {owner:?}"))
            .into_response();
    };
    count(&app, true, &owner, &authentication, &request);
    if !matches!(request.method().as_str(), "GET" | "HEAD" | "PUT" | "DELETE") {
        return locks::webdav_method(&app, &owner, &authentication, &raw_path, request).await;
    }
    serve(&app, Some(owner), &authentication, &raw_path, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The storage path of a path-addressed URL path after `/storage/` (`<owner>/<path>`): from the first
/// `/` on, or `/` when there is none.
pub(crate) fn addressed_path(rest: &str) -> &str {
    rest.find('/').map_or("/", |slash| &rest[slash..])
}

/// A legacy `/pub/` read that succeeded varies by `pubky-host`, which may have named the tenant
/// (PROTOCOL-0.17.md §14); a path-addressed one names its owner in the URL and varies by nothing. Private
/// paths get their headers from [`super::cache_policy`], which replaces this line.
fn vary_by_host(response: &mut Response, read: bool) {
    let status = response.status();
    if read && (status.is_success() || status == StatusCode::NOT_MODIFIED) {
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("pubky-host"));
    }
}

/// Counts a storage request whose owner is known in the storage metric.
fn count(
    app: &AppState,
    path_addressed: bool,
    owner: &pkarr::PublicKey,
    authentication: &Authentication,
    request: &Request,
) {
    app.metrics.count_storage_request(StorageRequest {
        path_addressed,
        headers: request.headers(),
        query: request.uri().query(),
        owner,
        authentication,
    });
}

/// Serves a storage request on the raw path `raw_path` within the tenant's files, in the order of
/// PROTOCOL-0.17.md §12.3: a write needs an identity before anything else; then the tenant and the path;
/// then who may read or write it, before any lookup.
async fn serve(
    app: &AppState,
    tenant: Option<pkarr::PublicKey>,
    authentication: &Authentication,
    raw_path: &str,
    request: Request,
) -> Result<Response, HttpError> {
    let method = request.method().clone();
    if !matches!(
        method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE
    ) {
        // Before anything else, without reading the body (§12.2).
        return Ok(method_not_allowed(LEGACY_ALLOW));
    }
    let identity = identity(authentication);
    let read = is_read(&method);
    if !read && identity.is_none() {
        return Err(HttpError::no_session());
    }
    let Some(tenant) = tenant else {
        return Err(HttpError::missing_tenant());
    };
    let owner = tenant.to_string();
    let path = decode_path(raw_path)?;
    if read {
        let query = match method {
            Method::GET => Some(listing::parse_query(request.uri().query())?),
            _ => None,
        };
        check_read(
            path.as_str(),
            &tenant,
            private_identity(identity, request.headers()),
        )?;
        return match query {
            Some(query) if path.is_dir() => {
                let path = DirPath::try_from(path).map_err(invalid_url)?;
                listing::list(&app.store, &owner, path, query).await
            }
            Some(_) => get(app, &owner, entry_path(path)?, request.headers()).await,
            None => head(app, &owner, path).await,
        };
    }
    let Some(principal) = identity else {
        return Err(HttpError::no_session());
    };
    let path = entry_path(path)?;
    check_write(principal, &tenant, &path)?;
    let mode = write_mode(request.headers())?;
    match method {
        Method::PUT => put(app, path, mode, request).await,
        _ => delete(app, &owner, path, &mode, request.headers()).await,
    }
}

/// Whether a method reads (`GET`, `HEAD`): reads need no identity for public files.
fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// 405 with the methods a route allows, empty body.
pub(crate) fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn invalid_url(err: impl std::fmt::Display) -> HttpError {
    HttpError::bad_request(format!("Invalid URL: {err}"))
}

/// Percent-decodes (UTF-8 required) and normalizes a raw request path.
pub fn decode_path(raw: &str) -> Result<NormalizedPath, HttpError> {
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| invalid_url("Path is not valid UTF-8"))?;
    NormalizedPath::parse(&decoded).map_err(invalid_url)
}

/// A file path (a directory path is a 400).
pub(crate) fn entry_path(path: NormalizedPath) -> Result<EntryPath, HttpError> {
    EntryPath::try_from(path).map_err(invalid_url)
}

/// The headers every answer about a file carries.
fn file_headers(headers: &mut HeaderMap, entry: &Entry) {
    let modified = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(entry.modified_secs()).unwrap_or(0));
    let pairs = [
        (header::ETAG, entry.etag()),
        (header::LAST_MODIFIED, httpdate::fmt_http_date(modified)),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, must-revalidate"),
    );
}

/// Headers of a 200 or 206: the file headers plus type, length and range support.
fn content_headers(headers: &mut HeaderMap, entry: &Entry, length: u64) {
    file_headers(headers, entry);
    if let Ok(value) = HeaderValue::try_from(entry.content_type.as_str()) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Stored files are users' data on the server's own origin: an uploaded HTML or SVG page must not
    // run as the server's site, nor may a browser guess a type the uploader did not declare.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
}

/// A single `bytes=` range; anything else (several ranges, other units, bad syntax) is ignored and the
/// whole file served.
pub(crate) fn parse_range(value: &str) -> Option<ByteRange> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let number = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, false) => Some(ByteRange::Suffix(number(last)?)),
        (false, true) => Some(ByteRange::From(number(first)?)),
        (false, false) => Some(ByteRange::Bounded(number(first)?, number(last)?)),
        (true, true) => None,
    }
}

/// The conditions and range a request's headers ask for.
pub(crate) fn read_options(headers: &HeaderMap) -> ReadOptions {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    ReadOptions {
        if_none_match: text(header::IF_NONE_MATCH).map(str::to_string),
        if_modified_since: text(header::IF_MODIFIED_SINCE).and_then(http_date_secs),
        range: text(header::RANGE).and_then(parse_range),
    }
}

async fn get(
    app: &AppState,
    owner: &str,
    path: EntryPath,
    headers: &HeaderMap,
) -> Result<Response, HttpError> {
    let read = app.store.get(owner, &path, &read_options(headers)).await?;
    read_response(app, read).ok_or_else(HttpError::not_found)
}

/// The answer to a read of a file (200, 206, 304 or 416), counting the bytes served; None when there is
/// no such file.
pub(crate) fn read_response(app: &AppState, read: Read) -> Option<Response> {
    let stream = |body: homestead_backends::store::Body| {
        Body::from_stream(body.map_err(|err| {
            tracing::warn!(%err, "reading a blob failed mid-response");
            err
        }))
    };
    Some(match read {
        Read::NotFound => return None,
        Read::NotModified(entry) => not_modified(&entry),
        Read::Full(entry, body) => {
            app.metrics.bytes_read.add(entry.content_length, &[]);
            let mut response = stream(body).into_response();
            content_headers(response.headers_mut(), &entry, entry.content_length);
            response
        }
        Read::Partial {
            entry,
            first,
            last,
            body,
        } => {
            app.metrics.bytes_read.add(last - first + 1, &[]);
            let mut response = (StatusCode::PARTIAL_CONTENT, stream(body)).into_response();
            let headers = response.headers_mut();
            content_headers(headers, &entry, last - first + 1);
            let range = format!("bytes {first}-{last}/{}", entry.content_length);
            if let Ok(value) = HeaderValue::try_from(range) {
                headers.insert(header::CONTENT_RANGE, value);
            }
            response
        }
        Read::Unsatisfiable(entry) => {
            let mut response = HttpError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "Requested range is outside the file",
            )
            .into_response();
            let range = format!("bytes */{}", entry.content_length);
            if let Ok(value) = HeaderValue::try_from(range) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            response
        }
    })
}

/// 304 with the file's validators: the client's copy of `entry` is current.
pub(crate) fn not_modified(entry: &Entry) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    file_headers(response.headers_mut(), entry);
    response
}

/// The 200 answer to a `HEAD` of `entry`: its headers, no body.
pub(crate) fn head_response(entry: &Entry) -> Response {
    let mut response = StatusCode::OK.into_response();
    content_headers(response.headers_mut(), entry, entry.content_length);
    response
}

async fn head(app: &AppState, owner: &str, path: NormalizedPath) -> Result<Response, HttpError> {
    // HEAD never lists: a directory path names no file.
    let Ok(path) = EntryPath::try_from(path) else {
        return Err(HttpError::not_found());
    };
    let entry = app
        .store
        .head(owner, &path)
        .await?
        .ok_or_else(HttpError::not_found)?;
    Ok(head_response(&entry))
}

/// Writes the body to `path` as the owner, whose principal [`check_write`] admitted: their record is the
/// account the auth layer attached, if the current file is one `mode` admits (checked before the body
/// is read and again at the commit). Every refusal is decided before the body is touched; its unread
/// rest is the drain layer's. The 201 carries the new version's ETag.
async fn put(
    app: &AppState,
    path: EntryPath,
    mode: WriteMode,
    request: Request,
) -> Result<Response, HttpError> {
    let Some((_, user)) = own_account::<_, StoreCredentials>(&request) else {
        // Only a wiring without the auth layer gets here.
        return Err(HttpError::not_found());
    };
    // The one read of the current entry, and what the plan refuses (a precondition as a 412).
    let plan = match app.store.prepare(user, &path, mode).await? {
        Ok(plan) => plan,
        Err(Refusal::Disabled) => {
            return Err(HttpError::new(StatusCode::FORBIDDEN, "User is disabled"));
        }
        Err(Refusal::NotAllowed) => return Err(write_not_allowed()),
    };
    // A declared length that cannot fit is refused now; the commit checks the bytes streamed, exactly.
    if let Some(length) = declared_length(&request) {
        fits(plan.room(), length)?;
    }
    // §17.4: a live lock admits only a write that names it; the write keeps it alive and re-checks it.
    let lock = locks::write_lock(&app.store, &user.public_key, &path, request.headers()).await?;
    let limits = WriteLimits {
        max_bytes: app.max_body_bytes,
    };
    let mut body = request.into_body().into_data_stream();
    let patient = patient_body(&mut body, app.body_read_timeout);
    // A refused body's unread rest is read by the drain layer before the refusal goes out.
    let body = locks::confirmed(patient, lock);
    let written = app.store.commit(plan, body, limits).await;
    let written = written.map_err(locks::commit_error)?;
    app.metrics.bytes_written.add(written.content_length, &[]);
    let mut response = StatusCode::CREATED.into_response();
    if let Ok(etag) = HeaderValue::try_from(written.version.etag()) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

/// 507 unless `length` declared bytes fit the `room` the plan left (None: unlimited).
fn fits(room: Option<u64>, length: u64) -> Result<(), HttpError> {
    match room {
        Some(room) if length > room => Err(HttpError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "Disk space quota exceeded",
        )),
        _ => Ok(()),
    }
}

/// The body's pieces, failing with `TimedOut` when the client pauses longer than `timeout` between two.
pub(crate) fn patient_body(
    body: &mut BodyDataStream,
    timeout: Duration,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + Unpin + '_ {
    Box::pin(futures_util::stream::unfold(
        Some(body),
        move |body| async move {
            let body = body?;
            match tokio::time::timeout(timeout, body.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
                Ok(Some(Err(err))) => Some((Err(std::io::Error::other(err)), None)),
                Ok(None) => None,
                Err(_) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no body data for {} s", timeout.as_secs()),
                    )),
                    None,
                )),
            }
        },
    ))
}

fn write_not_allowed() -> HttpError {
    HttpError::new(StatusCode::FORBIDDEN, "Write to this path is not allowed")
}

/// Deletes `path` if the current file is one `mode` admits (checked under the user's row lock), and if
/// the lock check of `headers` lets it (§17.4).
async fn delete(
    app: &AppState,
    owner: &str,
    path: EntryPath,
    mode: &WriteMode,
    headers: &HeaderMap,
) -> Result<Response, HttpError> {
    let user = app
        .store
        .accounts()
        .user(owner)
        .await?
        .ok_or_else(HttpError::not_found)?;
    // §17.4, checked once, before a missing file's 404: a tokenless delete of a locked path is a 423.
    let _held = locks::write_lock(&app.store, owner, &path, headers).await?;
    if !user.limits.may_write(path.as_str()) {
        // A missing file is a 404 before the allow-list says no.
        return Err(match app.store.head(owner, &path).await? {
            None => HttpError::not_found(),
            Some(_) => write_not_allowed(),
        });
    }
    match app.store.delete_if(owner, &path, mode).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        None => Err(HttpError::not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_rfc_9110() {
        assert_eq!(parse_range("bytes=0-1"), Some(ByteRange::Bounded(0, 1)));
        assert_eq!(parse_range("bytes=5-"), Some(ByteRange::From(5)));
        assert_eq!(parse_range("bytes=-3"), Some(ByteRange::Suffix(3)));
        for ignored in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=-",
            "bytes=a-b",
            "bytes=1",
        ] {
            assert_eq!(parse_range(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn declared_lengths_are_held_against_the_room() {
        assert!(fits(None, u64::MAX).is_ok());
        assert!(fits(Some(100), 100).is_ok());
        let over = fits(Some(100), 101).unwrap_err();
        assert_eq!(
            (over.status.as_u16(), over.message.as_str()),
            (507, "Disk space quota exceeded")
        );
    }

    #[test]
    fn paths_are_decoded_before_normalizing() {
        let ok = |raw: &str| decode_path(raw).unwrap().as_str().to_string();
        assert_eq!(ok("/pub/a%2Fb"), "/pub/a/b");
        assert_eq!(ok("/pub/a/./b//c"), "/pub/a/b/c");
        assert_eq!(ok("/pub/%2e%2e/x"), "/x");
        let err = |raw: &str| decode_path(raw).unwrap_err().message;
        assert_eq!(err("/pub/%FF"), "Invalid URL: Path is not valid UTF-8");
        assert_eq!(
            err("/pub/a%00b"),
            "Invalid URL: Path contains a control character"
        );
    }
}

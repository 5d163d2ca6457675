//! The event feed `GET /events/` (PROTOCOL.md §10, PROTOCOL-0.17.md §15.6) and the requests of event
//! streams, validated: the client's `GET /events-stream` (§11, PROTOCOL-0.17.md §15) and the
//! operator's (§19.4). [`super::event_stream`] runs them.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use homestead_backends::metadata::EventFilter;
use homestead_backends::{NormalizedPath, Scope, Store};
use homestead_middleware::query::Query;
use homestead_middleware::tenant::parse_key;
use homestead_middleware::{Authentication, Peer};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::authorization::check_read;
use crate::http_error::HttpError;
use crate::metrics::millis;
use crate::routes::AppState;
use crate::routes::event_stream::{self, Cursors, StreamRequest};
use crate::routes::private_stream::{self, Guard};

/// Events per feed page unless asked otherwise.
const PAGE: u32 = 100;
/// Most events per feed page.
const MAX_PAGE: u32 = 1000;
/// Most users one stream follows.
const MAX_USERS: usize = 50;
/// Most path filters one stream takes: each is a term of the history query.
const MAX_PATHS: usize = 50;

/// A cursor: a decimal id, or a legacy Crockford base32 timestamp resolved to the event committed at
/// exactly that time.
async fn parse_cursor(store: &Store, text: &str) -> Result<Option<u64>, HttpError> {
    if text.is_empty() {
        return Ok(Some(0));
    }
    if let Ok(id) = text.parse::<u64>() {
        return Ok(Some(id));
    }
    let Some(bytes) = base32::decode(base32::Alphabet::Crockford, text) else {
        return Ok(None);
    };
    let Ok(bytes) = <[u8; 8]>::try_from(bytes) else {
        return Ok(None);
    };
    let Ok(micros) = i64::try_from(u64::from_be_bytes(bytes)) else {
        return Ok(None);
    };
    Ok(store.event_id_at(micros).await?)
}

/// `GET /events/`: a page of every user's public events after `cursor`, then `cursor: <last id>`.
pub async fn feed(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, HttpError> {
    let params = Query::parse(query.as_deref());
    for flag in ["reverse", "shallow"] {
        if let Some(value) = params.last(flag) {
            let valid = ["", "true", "yes", "1", "false", "no", "0"];
            if !valid.contains(&value.to_ascii_lowercase().as_str()) {
                return Err(HttpError::bad_request("Invalid boolean parameter"));
            }
        }
    }
    let limit = params
        .last("limit")
        .and_then(|l| l.parse::<u16>().ok())
        .map_or(PAGE, |l| u32::from(l).min(MAX_PAGE));
    let cursor = parse_cursor(&app.store, params.last("cursor").unwrap_or_default())
        .await?
        .ok_or_else(|| HttpError::bad_request("Invalid cursor"))?;
    let events = if limit == 0 {
        Vec::new()
    } else {
        let started = Instant::now();
        // Public events only, whoever asks (PROTOCOL-0.17.md §15.6): the limit counts those.
        let public = EventFilter {
            paths: vec!["/pub/".to_string()],
            ..EventFilter::default()
        };
        let events = app.store.events(cursor, limit, &public).await?;
        app.metrics
            .events_query_ms
            .record(millis(started.elapsed()), &[]);
        events
    };
    let mut body = String::with_capacity(events.len() * 128);
    for event in &events {
        body.push_str(event.op.as_str());
        body.push_str(" pubky://");
        body.push_str(&event.user);
        body.push_str(&event.path);
        body.push('\n');
    }
    if let Some(newest) = events.last() {
        body.push_str("cursor: ");
        body.push_str(&newest.id.to_string());
    }
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

/// The request facts a stream's validation reads.
struct StreamAsk<'a> {
    query: Option<&'a str>,
    headers: &'a HeaderMap,
    authentication: &'a Authentication,
}

/// Validates the query in the order of PROTOCOL-0.17.md §15.1.
async fn stream_request(app: &AppState, ask: StreamAsk<'_>) -> Result<StreamRequest, HttpError> {
    let params = Query::parse(ask.query);
    let limit = stream_limit(&params)?;
    let (live, reverse) = live_and_reverse(&params)?;
    let mut users: Vec<(pkarr::PublicKey, Option<String>)> = Vec::new();
    let mut given = 0;
    for value in params.all("user") {
        if value.is_empty() {
            continue;
        }
        given += 1;
        let (key, cursor) = match value.split_once(':') {
            Some((key, cursor)) => (key, Some(cursor.to_string())),
            None => (value, None),
        };
        let key = parse_key(key)
            .ok_or_else(|| HttpError::bad_request(format!("Invalid public key: {key}")))?;
        match users.iter_mut().find(|(k, _)| *k == key) {
            Some(existing) => existing.1 = cursor,
            None => users.push((key, cursor)),
        }
    }
    if users.is_empty() {
        return Err(HttpError::bad_request("user parameter is required"));
    }
    if given > MAX_USERS {
        return Err(too_many_users());
    }
    let mut paths = given_paths(&params)?;
    if paths.is_empty() {
        paths.push("/pub/".to_string());
    }
    let guard = authorize_paths(app, &ask, &paths, &users, given).await?;
    let mut resolved = Vec::with_capacity(users.len());
    for (key, cursor) in users {
        let key = key.to_string();
        if app.store.accounts().user(&key).await?.is_none() {
            return Err(HttpError::not_found());
        }
        let id = match &cursor {
            None => 0,
            Some(text) => parse_cursor(&app.store, text)
                .await?
                .ok_or_else(|| HttpError::bad_request(format!("Invalid cursor: {text}")))?,
        };
        resolved.push((key, id));
    }
    Ok(StreamRequest {
        cursors: Cursors::PerUser(resolved),
        limit,
        live,
        reverse,
        paths,
        guard,
    })
}

/// `limit`: absent, or 1–65535 (§15.1 step 1).
fn stream_limit(params: &Query<'_>) -> Result<Option<u16>, HttpError> {
    match params.last("limit") {
        None => Ok(None),
        Some(text) => match text.parse::<u16>() {
            Ok(0) => Err(HttpError::bad_request("limit must be at least 1")),
            Ok(limit) => Ok(Some(limit)),
            Err(_) => Err(HttpError::bad_request(format!("Invalid limit: {text}"))),
        },
    }
}

/// `live` and `reverse` (`true` or `1`), which cannot go together.
fn live_and_reverse(params: &Query<'_>) -> Result<(bool, bool), HttpError> {
    let flag = |name| params.last(name).is_some_and(|v| v == "true" || v == "1");
    let (live, reverse) = (flag("live"), flag("reverse"));
    if live && reverse {
        return Err(HttpError::bad_request(
            "Cannot use live mode with reverse ordering",
        ));
    }
    Ok((live, reverse))
}

fn too_many_users() -> HttpError {
    HttpError::bad_request(format!("Too many users. Maximum allowed: {MAX_USERS}"))
}

/// The `path` values, each given a leading `/` and normalized (§15.1).
fn given_paths(params: &Query<'_>) -> Result<Vec<String>, HttpError> {
    let given = params.all("path").filter(|v| !v.is_empty()).count();
    if given > MAX_PATHS {
        return Err(HttpError::bad_request(format!(
            "Too many paths. Maximum allowed: {MAX_PATHS}"
        )));
    }
    let mut paths = Vec::new();
    for path in params.all("path").filter(|v| !v.is_empty()) {
        let absolute = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let normalized = NormalizedPath::parse(&absolute)
            .map_err(|_| HttpError::bad_request(format!("Invalid path: {absolute}")))?;
        paths.push(normalized.as_str().to_string());
    }
    Ok(paths)
}

/// Each path must be readable (§13.1, with the one-user rule of private streams, §15.2); a private
/// stream is then bound to the credential that may read it (§15.1 steps 7–9).
async fn authorize_paths(
    app: &AppState,
    ask: &StreamAsk<'_>,
    paths: &[String],
    users: &[(pkarr::PublicKey, Option<String>)],
    given: usize,
) -> Result<Option<Guard>, HttpError> {
    if !paths.iter().any(|p| Scope::of(p) == Scope::Private) {
        for path in paths {
            check_read(path, &users[0].0, None)?;
        }
        return Ok(None);
    }
    let single = (given == 1).then(|| &users[0].0);
    let identity = private_stream::identity(app, ask.headers, ask.authentication, single).await?;
    for path in paths {
        if Scope::of(path) == Scope::Private && identity.is_some() && single.is_none() {
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                "A private read must be scoped to exactly one user",
            ));
        }
        check_read(path, &users[0].0, identity.as_ref())?;
    }
    let Some(principal) = identity else {
        return Err(HttpError::no_session());
    };
    Ok(Some(Guard::open(&app.store, &principal).await?))
}

/// `/events-stream`: `GET` streams; any other method is a 405 (§22 item 11). Its caching headers come
/// from [`super::cache_policy`].
pub async fn stream_route(
    State(app): State<AppState>,
    peer: Option<Extension<Peer>>,
    Extension(authentication): Extension<Authentication>,
    request: axum::extract::Request,
) -> Response {
    if request.method() != http::Method::GET {
        return super::storage::method_not_allowed("GET");
    }
    let ask = StreamAsk {
        query: request.uri().query(),
        headers: request.headers(),
        authentication: &authentication,
    };
    stream(&app, peer, ask)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The requested users' history, then (with `live`) their new events as they commit, as Server-Sent
/// Events.
async fn stream(
    app: &AppState,
    peer: Option<Extension<Peer>>,
    ask: StreamAsk<'_>,
) -> Result<Response, HttpError> {
    let request = stream_request(app, ask).await?;
    let client = peer.map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |Extension(peer)| {
        peer.client_ip
    });
    event_stream::start(app, request, client)
}

/// The operator's `/events-stream` on the admin listener (PROTOCOL-0.17.md §19.4): every user's events,
/// private ones included, along one global cursor; `GET` only.
pub async fn admin_stream_route(
    State(app): State<AppState>,
    method: http::Method,
    RawQuery(query): RawQuery,
) -> Response {
    let mut response = if method == http::Method::GET {
        admin_stream(&app, query.as_deref())
            .await
            .unwrap_or_else(IntoResponse::into_response)
    } else {
        super::storage::method_not_allowed("GET")
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn admin_stream(app: &AppState, query: Option<&str>) -> Result<Response, HttpError> {
    let params = Query::parse(query);
    let limit = stream_limit(&params)?;
    let (live, reverse) = live_and_reverse(&params)?;
    let mut users: Vec<pkarr::PublicKey> = Vec::new();
    for value in params.all("user").filter(|v| !v.is_empty()) {
        let key = parse_key(value)
            .ok_or_else(|| HttpError::bad_request(format!("Invalid public key: {value}")))?;
        if !users.contains(&key) {
            users.push(key);
        }
    }
    if users.len() > MAX_USERS {
        return Err(too_many_users());
    }
    let paths = given_paths(&params)?;
    for user in &users {
        if app
            .store
            .accounts()
            .user(&user.to_string())
            .await?
            .is_none()
        {
            return Err(HttpError::not_found());
        }
    }
    let cursor = parse_cursor(&app.store, params.last("cursor").unwrap_or_default())
        .await?
        .ok_or_else(|| HttpError::bad_request("Invalid cursor"))?;
    let cursors = match users.is_empty() {
        true => Cursors::Global(cursor),
        false => Cursors::PerUser(users.iter().map(|u| (u.to_string(), cursor)).collect()),
    };
    let request = StreamRequest {
        cursors,
        limit,
        live,
        reverse,
        paths,
        guard: None,
    };
    event_stream::start(app, request, IpAddr::V6(Ipv6Addr::UNSPECIFIED))
}

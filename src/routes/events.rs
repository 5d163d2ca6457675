//! The event feed `GET /events/` (PROTOCOL.md §10) and the live stream `GET /events-stream` (§11).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use std::net::{IpAddr, Ipv6Addr};

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use homestead_backends::metadata::{Event, EventFilter, EventOp};
use homestead_backends::{NormalizedPath, Store};
use homestead_middleware::Peer;
use homestead_middleware::query::Query;
use homestead_middleware::tenant::parse_key;
use http::{HeaderValue, StatusCode, header};
use tokio::sync::{broadcast, mpsc};

use crate::http_error::HttpError;
use crate::metrics::{Metrics, millis};
use crate::routes::AppState;

/// Events per feed page unless asked otherwise, and per history batch of a stream.
const PAGE: u32 = 100;
/// Most events per feed page.
const MAX_PAGE: u32 = 1000;
/// Most users one stream follows.
const MAX_USERS: usize = 50;
/// Most path filters one stream takes: each is a term of the history query.
const MAX_PATHS: usize = 50;
/// Silence after which a stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

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

/// `GET /events/`: a page of every user's events after `cursor`, then `cursor: <last id>`.
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
        let events = app
            .store
            .events(cursor, limit, &EventFilter::default())
            .await?;
        app.metrics
            .events_query_ms
            .record(millis(started.elapsed()), &[]);
        events
    };
    let mut lines: Vec<String> = events
        .iter()
        .map(|e| format!("{} pubky://{}{}", e.op.as_str(), e.user, e.path))
        .collect();
    if let Some(newest) = events.last() {
        lines.push(format!("cursor: {}", newest.id));
    }
    let mut response = lines.join("\n").into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

/// What a stream was asked for, validated.
struct StreamRequest {
    /// Users in the order given, each with its cursor.
    users: Vec<(String, u64)>,
    limit: Option<u16>,
    live: bool,
    reverse: bool,
    paths: Vec<String>,
}

/// Validates the query in the order of §11.2.
async fn stream_request(store: &Store, query: Option<&str>) -> Result<StreamRequest, HttpError> {
    let params = Query::parse(query);
    let limit = match params.last("limit") {
        None => None,
        Some(text) => Some(
            text.parse::<u16>()
                .map_err(|_| HttpError::bad_request(format!("Invalid limit: {text}")))?,
        ),
    };
    let flag = |name| params.last(name).is_some_and(|v| v == "true" || v == "1");
    let (live, reverse) = (flag("live"), flag("reverse"));
    if live && reverse {
        return Err(HttpError::bad_request(
            "Cannot use live mode with reverse ordering",
        ));
    }
    let mut users: Vec<(String, Option<String>)> = Vec::new();
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
            .ok_or_else(|| HttpError::bad_request(format!("Invalid public key: {key}")))?
            .to_string();
        match users.iter_mut().find(|(k, _)| *k == key) {
            Some(existing) => existing.1 = cursor,
            None => users.push((key, cursor)),
        }
    }
    if users.is_empty() {
        return Err(HttpError::bad_request("user parameter is required"));
    }
    if given > MAX_USERS {
        return Err(HttpError::bad_request(format!(
            "Too many users. Maximum allowed: {MAX_USERS}"
        )));
    }
    let given_paths = params.all("path").filter(|v| !v.is_empty()).count();
    if given_paths > MAX_PATHS {
        return Err(HttpError::bad_request(format!(
            "Too many paths. Maximum allowed: {MAX_PATHS}"
        )));
    }
    let mut paths = Vec::new();
    for path in params.all("path") {
        if path.is_empty() {
            continue;
        }
        let absolute = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let normalized = NormalizedPath::parse(&absolute)
            .map_err(|_| HttpError::bad_request(format!("Invalid path: {absolute}")))?;
        paths.push(normalized.as_str().to_string());
    }
    let mut resolved = Vec::with_capacity(users.len());
    for (key, cursor) in users {
        if store.accounts().user(&key).await?.is_none() {
            return Err(HttpError::not_found());
        }
        let id = match &cursor {
            None => 0,
            Some(text) => parse_cursor(store, text)
                .await?
                .ok_or_else(|| HttpError::bad_request(format!("Invalid cursor: {text}")))?,
        };
        resolved.push((key, id));
    }
    Ok(StreamRequest {
        users: resolved,
        limit,
        live,
        reverse,
        paths,
    })
}

/// One SSE frame (§11.3).
fn frame(event: &Event) -> Bytes {
    let mut text = format!(
        "event: {}\ndata: pubky://{}{}\ndata: cursor: {}\n",
        event.op.as_str(),
        event.user,
        event.path,
        event.id
    );
    if let (EventOp::Put, Some(hash)) = (event.op, event.content_hash) {
        let hash = base64::engine::general_purpose::STANDARD.encode(hash);
        text.push_str(&format!("data: content_hash: {hash}\n"));
    }
    text.push('\n');
    Bytes::from(text)
}

/// `GET /events-stream`: the requested users' history, then (with `live`) their new events as they
/// commit, as Server-Sent Events.
pub async fn stream(
    State(app): State<AppState>,
    peer: Option<Extension<Peer>>,
    RawQuery(query): RawQuery,
) -> Result<Response, HttpError> {
    let request = stream_request(&app.store, query.as_deref()).await?;
    let client = peer.map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |Extension(peer)| {
        peer.client_ip
    });
    let slot = app.stream_slots.take(client)?;
    // Subscribe before reading history: every event committed from here on reaches the receiver, and
    // those the history also returns are skipped by their id.
    let live = request.live.then(|| app.bus.subscribe());
    let (sender, receiver) = mpsc::channel::<Bytes>(16);
    let stream = Stream {
        store: app.store.clone(),
        metrics: app.metrics.clone(),
        keep_alive: KEEP_ALIVE,
    };
    tokio::spawn(async move {
        run_stream(stream, request, live, sender).await;
        drop(slot);
    });
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let chunk = receiver.recv().await?;
        Some((Ok::<_, Infallible>(chunk), receiver))
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

/// What a running stream needs besides its request.
struct Stream {
    store: Store,
    metrics: Arc<Metrics>,
    /// Silence after which a live stream gets a comment frame.
    keep_alive: Duration,
}

/// Counts a stream as open until dropped, then records how long it was.
struct OpenStream {
    metrics: Arc<Metrics>,
    opened: Instant,
}

impl OpenStream {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.event_streams.add(1, &[]);
        Self {
            metrics,
            opened: Instant::now(),
        }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.metrics.event_streams.add(-1, &[]);
        self.metrics
            .stream_duration_ms
            .record(millis(self.opened.elapsed()), &[]);
    }
}

/// Writes the stream into `out` until done, the limit is reached, the client leaves or falls behind.
async fn run_stream(
    stream: Stream,
    request: StreamRequest,
    live: Option<broadcast::Receiver<Arc<Event>>>,
    out: mpsc::Sender<Bytes>,
) {
    let Stream {
        store,
        metrics,
        keep_alive,
    } = stream;
    let _open = OpenStream::new(metrics.clone());
    let mut cursors: HashMap<String, u64> = request.users.iter().cloned().collect();
    let limit = request.limit.map(|l| usize::from(l).max(1));
    let mut sent = 0usize;
    let done = |sent: usize| limit.is_some_and(|limit| sent >= limit);
    // History, in batches across all users.
    loop {
        let filter = EventFilter {
            users: Some(
                request
                    .users
                    .iter()
                    .map(|(u, _)| (u.clone(), cursors[u]))
                    .collect(),
            ),
            path_prefixes: request.paths.clone(),
            reverse: request.reverse,
        };
        let started = Instant::now();
        let batch = match store.events(0, PAGE, &filter).await {
            Ok(batch) => {
                metrics
                    .stream_query_ms
                    .record(millis(started.elapsed()), &[]);
                batch
            }
            Err(err) => {
                tracing::warn!(%err, "reading stream history failed");
                let _ = out
                    .send(Bytes::from(
                        ": storage unavailable, reconnect with your cursors\n\n",
                    ))
                    .await;
                return;
            }
        };
        if batch.is_empty() {
            break;
        }
        for event in batch {
            cursors.insert(event.user.clone(), event.id);
            if out.send(frame(&event)).await.is_err() {
                return;
            }
            sent += 1;
            if done(sent) {
                return;
            }
        }
    }
    let Some(mut live) = live else {
        return;
    };
    loop {
        // A client that leaves frees its stream at once, not at the next keep-alive.
        let next = tokio::select! {
            () = out.closed() => return,
            next = tokio::time::timeout(keep_alive, live.recv()) => next,
        };
        let event = match next {
            Err(_) => {
                if out.send(Bytes::from_static(b":\n\n")).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(Ok(event)) => {
                if live.len() >= homestead_backends::event_bus::BUS_CAPACITY / 2 {
                    metrics.stream_half_full.add(1, &[]);
                }
                event
            }
            Ok(Err(broadcast::error::RecvError::Lagged(missed))) => {
                metrics.stream_lagged.add(1, &[]);
                tracing::debug!(missed, "closing a live stream that fell behind");
                let _ = out
                    .send(Bytes::from(format!(
                        ": fell behind by {missed} events; reconnect with your cursors\n\n"
                    )))
                    .await;
                return;
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => return,
        };
        let wanted = cursors.get(&event.user).is_some_and(|c| event.id > *c)
            && (request.paths.is_empty()
                || request.paths.iter().any(|p| event.path.starts_with(p)));
        if !wanted {
            continue;
        }
        cursors.insert(event.user.clone(), event.id);
        if out.send(frame(&event)).await.is_err() {
            return;
        }
        sent += 1;
        if done(sent) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use homestead_backends::metadata::EventOp;

    use super::*;

    #[test]
    fn frames_follow_the_spec() {
        let put = Event {
            id: 7,
            op: EventOp::Put,
            user: "u".into(),
            path: "/pub/a".into(),
            content_hash: Some(*blake3::hash(b"hello").as_bytes()),
            created_at: 0,
        };
        assert_eq!(
            frame(&put),
            "event: PUT\ndata: pubky://u/pub/a\ndata: cursor: 7\n\
             data: content_hash: 6o8WPbOGgpJeRJHF5Y1Ls1Bu+MFOt4qG6QjFYkpnIA8=\n\n"
        );
        let del = Event {
            op: EventOp::Del,
            content_hash: None,
            ..put
        };
        assert_eq!(
            frame(&del),
            "event: DEL\ndata: pubky://u/pub/a\ndata: cursor: 7\n\n"
        );
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_closed_with_a_reason() {
        let app = crate::routes::tests::TestApp::builder().build().await;
        let state = &app.state;
        let user = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo".to_string();
        app.sign_up(&user).await;
        let request = StreamRequest {
            users: vec![(user.clone(), 0)],
            limit: None,
            live: true,
            reverse: false,
            paths: Vec::new(),
        };
        // A client that reads nothing: the stream can hand over one frame, then waits.
        let (out, mut client) = mpsc::channel(1);
        let stream = Stream {
            store: state.store.clone(),
            metrics: state.metrics.clone(),
            keep_alive: Duration::from_millis(20),
        };
        let task = tokio::spawn(run_stream(
            stream,
            request,
            Some(state.bus.subscribe()),
            out,
        ));
        // A keep-alive proves the (empty) history is done and the stream is live before the writes.
        assert_eq!(&client.recv().await.unwrap()[..], b":\n\n");
        let writes = homestead_backends::event_bus::BUS_CAPACITY + 50;
        let mut watch = state.bus.subscribe();
        for i in 0..writes {
            app.write(&user, &format!("/pub/{i}"), "x").await;
        }
        // Only once the bus has published the last write must the stream have fallen behind.
        let last_path = format!("/pub/{}", writes - 1);
        loop {
            match watch.recv().await {
                Ok(event) if event.path.as_str() == last_path => break,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the bus closed"),
            }
        }
        let mut frames = Vec::new();
        while let Some(frame) = client.recv().await {
            frames.push(frame);
        }
        task.await.unwrap();
        let last = String::from_utf8_lossy(frames.last().unwrap()).into_owned();
        assert!(last.starts_with(": fell behind by "), "{last}");
        assert!(
            frames.len() < 10,
            "dropped, not buffered: {} frames",
            frames.len()
        );
    }

    #[tokio::test]
    async fn an_idle_live_stream_gets_keep_alive_comments() {
        let app = crate::routes::tests::TestApp::builder().build().await;
        let state = &app.state;
        let user = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo".to_string();
        app.sign_up(&user).await;
        let request = StreamRequest {
            users: vec![(user, 0)],
            limit: None,
            live: true,
            reverse: false,
            paths: Vec::new(),
        };
        let (out, mut client) = mpsc::channel(4);
        let live = Some(state.bus.subscribe());
        let stream = Stream {
            store: state.store.clone(),
            metrics: state.metrics.clone(),
            keep_alive: Duration::from_millis(50),
        };
        let task = tokio::spawn(run_stream(stream, request, live, out));
        for _ in 0..2 {
            let frame = tokio::time::timeout(Duration::from_secs(5), client.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(frame, ":\n\n");
        }
        drop(client);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the stream ends when the client leaves")
            .unwrap();
    }
}

//! Running an event stream (PROTOCOL.md §11.3–§11.4, PROTOCOL-0.17.md §15.4): the history in batches,
//! then (with `live`) new events as they commit, as Server-Sent Events; keep-alive comments, slow
//! clients dropped with a reason, and private streams ended when their credential is revoked.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use homestead_backends::metadata::{Event, EventFilter, EventOp};
use homestead_backends::{Scope, Store};
use http::{HeaderValue, StatusCode, header};
use tokio::sync::{broadcast, mpsc, watch};

use crate::http_error::HttpError;
use crate::metrics::{Metrics, millis};
use crate::routes::AppState;
use crate::routes::private_stream::Guard;

/// Events per history batch.
const BATCH: u32 = 100;
/// Silence after which a stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Where a stream stands in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursors {
    /// These users, each after its own cursor (the client stream).
    PerUser(Vec<(String, u64)>),
    /// Every user, after one cursor over the whole log (the operator's stream).
    Global(u64),
}

impl Cursors {
    /// The next history query: the page cursor and the filter.
    fn next_batch(&self, paths: &[String], reverse: bool) -> (u64, EventFilter) {
        let (cursor, users) = match self {
            Self::PerUser(users) => (0, Some(users.clone())),
            Self::Global(cursor) => (*cursor, None),
        };
        let filter = EventFilter {
            users,
            paths: paths.to_vec(),
            reverse,
        };
        (cursor, filter)
    }

    /// Whether a live event is one the stream has not sent yet.
    fn admits(&self, event: &Event) -> bool {
        match self {
            Self::PerUser(users) => users
                .iter()
                .any(|(user, cursor)| *user == event.user && event.id > *cursor),
            Self::Global(cursor) => event.id > *cursor,
        }
    }

    /// Moves past a sent event.
    fn advance(&mut self, event: &Event) {
        match self {
            Self::PerUser(users) => {
                if let Some(entry) = users.iter_mut().find(|(user, _)| *user == event.user) {
                    entry.1 = event.id;
                }
            }
            Self::Global(cursor) => *cursor = event.id,
        }
    }
}

/// What a stream was asked for, validated.
#[derive(Debug)]
pub struct StreamRequest {
    /// Whose events, from where.
    pub cursors: Cursors,
    /// Most events to send, if limited.
    pub limit: Option<u16>,
    /// Whether new events follow the history.
    pub live: bool,
    /// Newest first (history only).
    pub reverse: bool,
    /// Normalized paths: one ending in `/` a directory, another a file; empty: every path.
    pub paths: Vec<String>,
    /// For a private stream: what ends it when its credential is revoked.
    pub guard: Option<Guard>,
}

/// Whether an event path is one of the stream's paths (a directory ending in `/`, or a file; none given:
/// every path).
fn wanted_path(paths: &[String], path: &str) -> bool {
    paths.is_empty()
        || paths.iter().any(|p| match p.ends_with('/') {
            true => path.starts_with(p.as_str()),
            false => path == p,
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

/// Starts `request` for `client` (a stream slot is taken, or 503) and answers with its body.
pub fn start(
    app: &AppState,
    request: StreamRequest,
    client: IpAddr,
) -> Result<Response, HttpError> {
    let slot = app.stream_slots.take(client)?;
    // Subscribe before reading history: every event committed from here on reaches the receiver, and
    // those the history also returns are skipped by their id.
    let live = request.live.then(|| app.bus.subscribe());
    let (sender, receiver) = mpsc::channel::<Bytes>(16);
    let revoked = Arc::new(AtomicBool::new(false));
    let stream = Stream {
        store: app.store.clone(),
        metrics: app.metrics.clone(),
        keep_alive: KEEP_ALIVE,
        revoked: revoked.clone(),
        closing: app.stream_slots.closing(),
    };
    tokio::spawn(async move {
        run_stream(stream, request, live, sender).await;
        drop(slot);
    });
    // Frames already queued when a revocation ends the stream are dropped, not sent.
    let body = futures_util::stream::unfold(receiver, move |mut receiver| {
        let revoked = revoked.clone();
        async move {
            let chunk = receiver.recv().await?;
            if revoked.load(Ordering::SeqCst) {
                return None;
            }
            Some((Ok::<_, Infallible>(chunk), receiver))
        }
    });
    let mut response = Body::from_stream(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

/// What a running stream needs besides its request.
struct Stream {
    store: Store,
    metrics: Arc<Metrics>,
    /// Silence after which a live stream gets a comment frame.
    keep_alive: Duration,
    /// Set when a revocation ends the stream: the body then sends nothing more.
    revoked: Arc<AtomicBool>,
    /// True once the server shuts down: a live stream then ends cleanly.
    closing: watch::Receiver<bool>,
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

/// Hands events to the client in order, moving the cursors and counting against the limit.
struct Delivery {
    out: mpsc::Sender<Bytes>,
    cursors: Cursors,
    sent: usize,
    limit: Option<usize>,
    /// The credential's guard, for a private stream.
    guard: Option<Guard>,
    /// Set once the guard ends the stream.
    revoked: Arc<AtomicBool>,
}

impl Delivery {
    /// Sends `event`; false once the stream is over (the client left, or the limit is reached).
    async fn send(&mut self, event: &Event) -> bool {
        self.cursors.advance(event);
        if self.out.send(frame(event)).await.is_err() {
            return false;
        }
        self.sent += 1;
        self.limit.is_none_or(|limit| self.sent < limit)
    }

    /// [`Self::send`] for a stream that may be private: nothing goes out once a signal ends it, a
    /// `recheck` re-reads the credential first, and a revocation while the client is slow to read ends
    /// the stream at once.
    async fn send_guarded(&mut self, event: &Event, recheck: bool) -> bool {
        let Some(mut guard) = self.guard.take() else {
            return self.send(event).await;
        };
        let outcome = if guard.ends_now().await || (recheck && !guard.stands().await) {
            None
        } else {
            tokio::select! {
                sent = self.send(event) => Some(sent),
                () = guard.ended() => None,
            }
        };
        self.guard = Some(guard);
        outcome.unwrap_or_else(|| {
            self.end_revoked();
            false
        })
    }

    /// Ends the stream for a revocation: the body drops what is still queued.
    fn end_revoked(&self) {
        self.revoked.store(true, Ordering::SeqCst);
    }
}

/// Writes the stream into `out` until done, the limit is reached, the client leaves or falls behind, or
/// (a private stream) its credential is revoked.
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
        revoked,
        mut closing,
    } = stream;
    let _open = OpenStream::new(metrics.clone());
    let mut delivery = Delivery {
        out,
        cursors: request.cursors,
        sent: 0,
        limit: request.limit.map(usize::from),
        guard: request.guard,
        revoked,
    };
    // History, in batches across all users.
    loop {
        let (cursor, filter) = delivery.cursors.next_batch(&request.paths, request.reverse);
        let started = Instant::now();
        let batch = match store.events(cursor, BATCH, &filter).await {
            Ok(batch) => {
                metrics
                    .stream_query_ms
                    .record(millis(started.elapsed()), &[]);
                batch
            }
            Err(err) => {
                tracing::warn!(%err, "reading stream history failed");
                let _ = delivery
                    .out
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
        // One re-read of the credential per batch: every event in it was committed before the read.
        let mut recheck = batch.iter().any(|e| Scope::of(&e.path) == Scope::Private);
        for event in batch {
            if !delivery.send_guarded(&event, recheck).await {
                return;
            }
            recheck = false;
        }
    }
    let Some(mut live) = live else {
        return;
    };
    loop {
        // A client that leaves frees its stream at once, not at the next keep-alive.
        let revocation = async {
            match delivery.guard.as_mut() {
                Some(guard) => guard.ended().await,
                None => std::future::pending().await,
            }
        };
        // Once the server shuts down (a dropped signal never ends the stream).
        let shutting_down = async {
            let signalled = closing.wait_for(|closing| *closing).await.is_ok();
            if !signalled {
                std::future::pending::<()>().await;
            }
        };
        let next = tokio::select! {
            () = delivery.out.closed() => return,
            // The body ends with a whole frame: the client resumes from its cursors elsewhere.
            () = shutting_down => {
                let _ = delivery
                    .out
                    .send(Bytes::from_static(
                        b": server shutting down, reconnect with your cursors\n\n",
                    ))
                    .await;
                return;
            }
            () = revocation => {
                delivery.end_revoked();
                return;
            }
            next = tokio::time::timeout(keep_alive, live.recv()) => next,
        };
        let event = match next {
            Err(_) => {
                if delivery
                    .out
                    .send(Bytes::from_static(b":\n\n"))
                    .await
                    .is_err()
                {
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
                let _ = delivery
                    .out
                    .send(Bytes::from(format!(
                        ": fell behind by {missed} events; reconnect with your cursors\n\n"
                    )))
                    .await;
                return;
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => return,
        };
        let wanted = delivery.cursors.admits(&event) && wanted_path(&request.paths, &event.path);
        if !wanted {
            continue;
        }
        // A private event re-reads the credential: one committed after a revocation never goes out.
        let private = Scope::of(&event.path) == Scope::Private;
        if !delivery.send_guarded(&event, private).await {
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

    /// A live stream of `user`'s public files from the start, sending keep-alives every `keep_alive`
    /// into a channel of `capacity` frames: the client's end and the stream's task.
    fn live_stream(
        state: &AppState,
        user: &str,
        keep_alive: Duration,
        capacity: usize,
    ) -> (mpsc::Receiver<Bytes>, tokio::task::JoinHandle<()>) {
        let request = StreamRequest {
            cursors: Cursors::PerUser(vec![(user.to_string(), 0)]),
            limit: None,
            live: true,
            reverse: false,
            paths: vec!["/pub/".into()],
            guard: None,
        };
        let (out, client) = mpsc::channel(capacity);
        let stream = Stream {
            store: state.store.clone(),
            metrics: state.metrics.clone(),
            keep_alive,
            revoked: Arc::default(),
            closing: state.stream_slots.closing(),
        };
        let live = Some(state.bus.subscribe());
        (client, tokio::spawn(run_stream(stream, request, live, out)))
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_closed_with_a_reason() {
        let app = crate::routes::tests::TestApp::builder().build().await;
        let state = &app.state;
        let user = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo".to_string();
        app.sign_up(&user).await;
        // A client that reads nothing: the stream can hand over one frame, then waits.
        let (mut client, task) = live_stream(state, &user, Duration::from_millis(20), 1);
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
        let (mut client, task) = live_stream(state, &user, Duration::from_millis(50), 4);
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

    #[tokio::test]
    async fn shutdown_ends_a_live_stream_with_a_whole_frame() {
        let app = crate::routes::tests::TestApp::builder().build().await;
        let state = &app.state;
        let user = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo".to_string();
        app.sign_up(&user).await;
        app.write(&user, "/pub/before", "x").await;
        let (mut client, task) = live_stream(state, &user, Duration::from_secs(60), 4);
        let first = client.recv().await.unwrap();
        assert!(first.starts_with(b"event: PUT\n"), "{first:?}");
        state.stream_slots.close_all();
        let last = tokio::time::timeout(Duration::from_secs(5), client.recv())
            .await
            .expect("the stream ends at once, not at the next keep-alive")
            .unwrap();
        assert_eq!(
            last,
            ": server shutting down, reconnect with your cursors\n\n"
        );
        assert!(
            client.recv().await.is_none(),
            "nothing after the last frame"
        );
        task.await.unwrap();
    }
}

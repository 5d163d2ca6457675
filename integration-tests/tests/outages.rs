//! Dependency outages under a write load: PostgreSQL stopped and started again, and the S3 server cut off
//! and restored. While a dependency is down, requests fail fast with a 503 and a reason (never a 500 or a
//! hang), `/metrics` shows which dependency is down, and service comes back by itself; a live event stream
//! opened before the outage delivers every event, in order, without gaps. Rate limits, whose buckets are
//! in the database, let requests through to that 503 at once while it is down and count again after.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use homestead_integration_tests::{
    Account, Blobs, CuttableProxy, PrivatePostgres, TestNet, TestServer, eventually, socket_of,
};

const METRICS: &str = "[metrics]\nenabled = true\nlisten_socket = \"127.0.0.1:0\"";

/// One write of the load: its index, status, answer time and body.
#[derive(Debug, Clone)]
struct Write {
    index: usize,
    status: u16,
    took: Duration,
    body: String,
}

/// PUTs `/pub/outage/<i>` with distinct contents every 20 ms until told to stop.
fn spawn_writer(
    server: &TestServer,
    account: &Account,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<Write>>>, tokio::task::JoinHandle<()>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (url, account, out) = (server.icann_url(), account.clone(), log.clone());
    let task = tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut index = 0;
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let (status, body) = match client
                .put(format!("{url}/pub/outage/{index}"))
                .header("pubky-host", &account.z32)
                .header("cookie", &account.cookie)
                .body(contents(index))
                .send()
                .await
            {
                Ok(response) => (response.status().as_u16(), response.text().await.unwrap()),
                Err(err) => (0, err.to_string()),
            };
            out.lock().unwrap().push(Write {
                index,
                status,
                took: started.elapsed(),
                body,
            });
            index += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (log, task)
}

fn contents(index: usize) -> String {
    format!("file number {index} written under an outage test\n")
}

/// Frames of a live stream as they arrive: (event, resource, cursor).
type Frames = Arc<Mutex<Vec<(String, String, u64)>>>;

fn parse_frame(frame: &str) -> Option<(String, String, u64)> {
    let mut lines = frame.lines();
    let event = lines.next()?.strip_prefix("event: ")?.to_string();
    let resource = lines.next()?.strip_prefix("data: ")?.to_string();
    let cursor = lines.next()?.strip_prefix("data: cursor: ")?.parse().ok()?;
    Some((event, resource, cursor))
}

/// Opens `/events-stream?user=<user>&live=true` and collects its frames in the background.
async fn open_live_stream(server: &TestServer, user: &str) -> Frames {
    let response = reqwest::get(format!(
        "{}/events-stream?user={user}&live=true",
        server.icann_url()
    ))
    .await
    .expect("open the stream");
    assert_eq!(response.status(), 200);
    let frames: Frames = Arc::default();
    let out = frames.clone();
    tokio::spawn(async move {
        let mut body = response.bytes_stream();
        let mut pending = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find("\n\n") {
                let frame: String = pending.drain(..end + 2).collect();
                if let Some(parsed) = parse_frame(&frame) {
                    out.lock().unwrap().push(parsed);
                }
            }
        }
    });
    frames
}

/// The user's whole history, read afresh.
async fn history(server: &TestServer, user: &str) -> Vec<(String, String, u64)> {
    let body = reqwest::get(format!("{}/events-stream?user={user}", server.icann_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.split("\n\n").filter_map(parse_frame).collect()
}

fn dependency_line(dependency: &str, up: bool) -> String {
    format!(
        "storage_dependency_up{{dependency=\"{dependency}\",otel_scope_name=\"pubky_homeserver\"}} {}",
        u8::from(up)
    )
}

/// Waits until `/metrics` reports `dependency` up or down.
async fn metrics_show(server: &TestServer, dependency: &str, up: bool) {
    let line = dependency_line(dependency, up);
    eventually(&line, Duration::from_secs(10), || async {
        let metrics = server.metrics().await;
        metrics.contains(&line).then_some(()).ok_or(metrics)
    })
    .await;
}

/// Waits until the writer has logged a write that matches `wanted`, returning its index.
async fn until_write(
    log: &Mutex<Vec<Write>>,
    what: &str,
    after: usize,
    wanted: impl Fn(&Write) -> bool,
) -> usize {
    eventually(what, Duration::from_secs(40), || async {
        log.lock()
            .unwrap()
            .iter()
            .find(|w| w.index > after && wanted(w))
            .map(|w| w.index)
            .ok_or(())
    })
    .await
}

/// Runs the load through one outage of `dependency` (`take_down`, then `bring_back`) and checks
/// everything the issue asks of it.
async fn outage<Down, Back, BackFut>(
    server: &TestServer,
    dependency: &str,
    take_down: Down,
    bring_back: Back,
) where
    Down: FnOnce(),
    Back: FnOnce() -> BackFut,
    BackFut: Future<Output = ()>,
{
    let account = Account::signup(server).await;
    let frames = open_live_stream(server, &account.z32).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (log, writer) = spawn_writer(server, &account, stop.clone());

    let healthy = until_write(&log, "ten writes before the outage", 9, |w| w.status == 201).await;
    take_down();
    let down_at = Instant::now();
    let first_refused = until_write(&log, "a refused write", healthy, |w| w.status == 503).await;
    metrics_show(server, dependency, false).await;
    // A read needs the dependency too: refused at once, with the reason.
    let read = reqwest::Client::new()
        .get(format!("{}/pub/outage/0", server.icann_url()))
        .header("pubky-host", &account.z32)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 503, "a read during the outage");
    let reason = read.text().await.unwrap();
    assert!(reason.starts_with("Storage unavailable"), "{reason}");
    // A fixed text: no directory, path or blob key.
    assert!(
        !reason.contains('/') && !reason.contains(&*server.data_dir().to_string_lossy()),
        "{reason}"
    );
    // Stay down a while so that many writes meet the outage.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down_at.elapsed())).await;
    bring_back().await;
    let recovered = until_write(&log, "a write after the outage", first_refused, |w| {
        w.status == 201
    })
    .await;
    metrics_show(server, dependency, true).await;
    until_write(&log, "ten writes after the outage", recovered + 9, |w| {
        w.status == 201
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let writes = log.lock().unwrap().clone();

    // Only 201 or a 503 with a one-line reason, each answered within seconds (a request caught in flight
    // by the outage waits out at most the pool's connection timeouts; later ones are refused at once).
    let refused: Vec<&Write> = writes.iter().filter(|w| w.status == 503).collect();
    for write in &writes {
        let reason =
            write.status == 503 && write.body.contains("unavailable") && !write.body.contains('\n');
        assert!(write.status == 201 || reason, "{write:?}");
        assert!(
            write.took < Duration::from_secs(5),
            "a write hung: {write:?}"
        );
    }
    let mut refusal_times: Vec<Duration> = refused.iter().map(|w| w.took).collect();
    refusal_times.sort();
    let median = refusal_times[refusal_times.len() / 2];
    assert!(
        median < Duration::from_millis(1500),
        "refusals are slow: median {median:?} of {}",
        refused.len()
    );
    eprintln!(
        "{dependency} outage: {} writes, {} refused (median {median:?}, max {:?})",
        writes.len(),
        refused.len(),
        refusal_times.last().unwrap()
    );

    // Every acknowledged write reads back as written.
    let client = reqwest::Client::new();
    for write in writes.iter().filter(|w| w.status == 201) {
        let response = client
            .get(format!("{}/pub/outage/{}", server.icann_url(), write.index))
            .header("pubky-host", &account.z32)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{write:?}");
        assert_eq!(response.text().await.unwrap(), contents(write.index));
    }

    // The stream opened before the outage has every event of the log, in order.
    let truth = history(server, &account.z32).await;
    let acknowledged = writes.iter().filter(|w| w.status == 201).count();
    assert!(truth.len() >= acknowledged, "{} events", truth.len());
    for write in writes.iter().filter(|w| w.status == 201) {
        let resource = format!("pubky://{}/pub/outage/{}", account.z32, write.index);
        assert!(
            truth.iter().any(|(_, r, _)| *r == resource),
            "{resource} has no event"
        );
    }
    eventually(
        "the live stream catches up",
        Duration::from_secs(15),
        || async {
            let seen = frames.lock().unwrap().clone();
            (seen.len() >= truth.len()).then_some(()).ok_or(seen.len())
        },
    )
    .await;
    let seen = frames.lock().unwrap().clone();
    assert_eq!(seen[..truth.len()], truth[..], "the live stream has gaps");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_and_started_again() {
    let cluster = PrivatePostgres::start();
    let net = TestNet::new();
    let server = net
        .server()
        .database_url(&cluster.url())
        .config(METRICS)
        .start()
        .await;
    outage(
        &server,
        "database",
        || cluster.stop(),
        || async { cluster.start_again() },
    )
    .await;
    // Requests that needed the database were refused by the health gate, not by a pool timeout.
    assert!(
        server.log().contains("the database does not answer"),
        "{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_cut_off_and_restored() {
    let endpoint = std::env::var("TEST_S3_ENDPOINT").expect("TEST_S3_ENDPOINT: run scripts/test");
    let proxy = CuttableProxy::start(socket_of(&endpoint)).await;
    let net = TestNet::new();
    let server = net
        .server()
        .blobs(Blobs::S3)
        .s3_endpoint(&format!("http://{}", proxy.addr()))
        .config(METRICS)
        .start()
        .await;
    outage(&server, "blobs", || proxy.cut(), || proxy.restore()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_requests_while_the_database_is_down() {
    let cluster = PrivatePostgres::start();
    let net = TestNet::new();
    let server = net
        .server()
        .database_url(&cluster.url())
        .config(
            "[[drive.rate_limits]]\npath = \"/pub/limited/**\"\nmethod = \"GET\"\nquota = \"2r/h\"\nkey = \"ip\"",
        )
        .start()
        .await;
    let account = Account::signup(&server).await;
    assert_eq!(
        account.put(&server, "/pub/limited/a", b"x".to_vec()).await,
        201
    );
    let status = |path: &'static str| {
        let account = account.clone();
        let server = &server;
        async move { account.get(server, path).await.status().as_u16() }
    };
    assert_eq!(status("/pub/limited/a").await, 200);
    assert_eq!(status("/pub/limited/a").await, 200);
    assert_eq!(status("/pub/limited/a").await, 429);

    cluster.stop();
    eventually(
        "the server notices the outage",
        Duration::from_secs(30),
        || async {
            match status("/pub/other").await {
                503 => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
    // A limited request is neither refused for the limit nor held by its check: the database guard
    // answers it at once, like any other request that needs the database.
    let asked = Instant::now();
    let response = account.get(&server, "/pub/limited/a").await;
    let took = asked.elapsed();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.text().await.unwrap(),
        "Storage unavailable: the database does not answer"
    );
    // Sooner than the bucket check's own timeout (1 s): the check did not wait for the database.
    assert!(took < Duration::from_secs(1), "answered after {took:?}");

    cluster.start_again();
    eventually("service is back", Duration::from_secs(30), || async {
        match status("/pub/other").await {
            404 => Ok(()),
            other => Err(other),
        }
    })
    .await;
    // The bucket outlived the outage: still refused.
    assert_eq!(status("/pub/limited/a").await, 429);
    assert!(server.stop().await.success());
}

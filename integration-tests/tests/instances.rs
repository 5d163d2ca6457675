//! Several instances on one PostgreSQL database and S3 bucket. Request-rate limits hold across them: a
//! client spreading its requests over three instances gets the configured rate in total, and requests no
//! limit matches leave the shared bucket table untouched. A rolling restart behind nginx, configured with
//! the load-balancing settings of `deploy/nginx-homestead.conf`, fails nothing: under writes, anonymous
//! reads and live event streams, each instance in turn gets SIGTERM, drains and starts again on its port;
//! every request succeeds (nginx retries what an instance refused), and a live stream through nginx and
//! one on a single instance both receive every acknowledged write exactly once, in order, across their
//! reconnections. Requests are the 0.9.3 SDK's wire format (session cookie, `pubky-host`), sent with
//! reqwest so that they can go through nginx.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use homestead_integration_tests::{
    Account, Blobs, Metadata, TestNet, TestServer, deploy_balancer, eventually, free_port,
    start_nginx,
};

/// The limits of the first test: six reads an hour per address under `/pub/limited/`, three writes an
/// hour per signed-in user under `/pub/writes/`.
const LIMITS: &str = "[[drive.rate_limits]]\npath = \"/pub/limited/**\"\nmethod = \"GET\"\n\
                      quota = \"6r/h\"\nkey = \"ip\"\n\
                      [[drive.rate_limits]]\npath = \"/pub/writes/**\"\nmethod = \"PUT\"\n\
                      quota = \"3r/h\"\nkey = \"user\"";

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_hold_across_instances() {
    let net = TestNet::new();
    let first = net
        .server()
        .metadata(Metadata::Postgres)
        .blobs(Blobs::S3)
        .config(LIMITS)
        .start()
        .await;
    let second = net.server().sharing(&first).config(LIMITS).start().await;
    let third = net.server().sharing(&first).config(LIMITS).start().await;
    let instances = [&first, &second, &third];
    let buckets = || first.database_value("SELECT count(*) FROM rate_limit_buckets");
    let account = Account::signup(&first).await;
    for (i, server) in instances.iter().enumerate() {
        let path = format!("/pub/limited/{i}");
        assert_eq!(account.put(server, &path, b"x".to_vec()).await, 201);
        assert_eq!(account.get(server, "/pub/open").await.status(), 404);
    }
    // Writes and reads that no limit matches made no bucket.
    assert_eq!(buckets(), "0");

    // Eighteen reads, alternating over the three instances: six pass in total, not six on each.
    let client = reqwest::Client::new();
    let mut passed = 0;
    for i in 0..18 {
        let server = instances[i % 3];
        let response = client
            .get(format!("{}/pub/limited/{}", server.icann_url(), i % 3))
            .header("pubky-host", &account.z32)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => passed += 1,
            429 => {
                let retry: u64 = response.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                // One request every 600 s.
                assert!((1..=600).contains(&retry), "Retry-After {retry}");
                assert_eq!(response.text().await.unwrap(), "Rate limit exceeded");
            }
            other => panic!("read {i}: {other}"),
        }
    }
    assert_eq!(passed, 6, "the configured rate in total");
    // One bucket: this address under this limit, whichever instance counted it.
    assert_eq!(buckets(), "1");

    // The user's writes, alternating too: three pass in total.
    let mut written = Vec::new();
    for i in 0..9 {
        let status = account
            .put(instances[i % 3], &format!("/pub/writes/{i}"), b"w".to_vec())
            .await;
        written.push(status);
    }
    assert_eq!(written, [201, 201, 201, 429, 429, 429, 429, 429, 429]);
    assert_eq!(buckets(), "2");
    for server in [third, second, first] {
        let log = server.log();
        assert!(server.stop().await.success(), "{log}");
    }
}

/// What went wrong during the rolling restart, by whom.
type Failures = Arc<Mutex<Vec<String>>>;

/// The numbers of the acknowledged writes, in the order of their acknowledgement.
type Acked = Arc<Mutex<Vec<u32>>>;

/// The file a write number names.
fn roll_path(i: u32) -> String {
    format!("/pub/roll/{i:06}")
}

/// Writes `/pub/roll/<n>` through `front` one after the other until `stop`, recording each 201.
async fn write_until(
    front: String,
    account: Account,
    stop: Arc<AtomicBool>,
    acked: Acked,
    failures: Failures,
) {
    let client = reqwest::Client::new();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let answer = client
            .put(format!("{front}{}", roll_path(i)))
            .header("pubky-host", &account.z32)
            .header("cookie", &account.cookie)
            .body(format!("v{i}"))
            .send()
            .await;
        match answer {
            Ok(response) if response.status() == 201 => acked.lock().unwrap().push(i),
            Ok(response) => failures
                .lock()
                .unwrap()
                .push(format!("write {i}: {}", response.status())),
            Err(err) => failures.lock().unwrap().push(format!("write {i}: {err}")),
        }
    }
}

/// Reads the newest acknowledged file anonymously through `front` until `stop`; returns how many reads.
async fn read_until(
    front: String,
    owner: String,
    stop: Arc<AtomicBool>,
    acked: Acked,
    failures: Failures,
) -> usize {
    let client = reqwest::Client::new();
    let mut reads = 0;
    while !stop.load(Ordering::SeqCst) {
        let Some(i) = acked.lock().unwrap().last().copied() else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        reads += 1;
        let answer = client
            .get(format!("{front}{}", roll_path(i)))
            .header("pubky-host", &owner)
            .send()
            .await;
        let outcome = match answer {
            Ok(response) => {
                let status = response.status();
                let body = response.text().await;
                match body {
                    Ok(body) if status == 200 && body == format!("v{i}") => continue,
                    Ok(body) => format!("{status} {body:?}"),
                    Err(err) => format!("{status}, body: {err}"),
                }
            }
            Err(err) => err.to_string(),
        };
        failures
            .lock()
            .unwrap()
            .push(format!("read {i}: {outcome}"));
    }
    reads
}

/// What a live stream follower saw.
#[derive(Debug, Default)]
struct Followed {
    /// The write numbers of the events, in the order received.
    writes: Vec<u32>,
    /// Streams that ended cleanly and were resumed from the last cursor.
    resumed: usize,
    /// Requests that got no answer while the followed instance restarted: refused while it was down,
    /// or sent on the kept-alive connection of a stream its shutdown had just ended, which it closes
    /// ("connection closed before message completed"). An EventSource retries both the same way.
    refused: usize,
    /// Streams cut mid-way, answered with an error status, or requests that got no answer while
    /// nothing was restarting.
    broken: Vec<String>,
}

/// Follows `owner`'s events live at `base` (nginx, or one instance), resuming from the last cursor
/// whenever a stream ends, until `expected` events have arrived (once the writer has stopped).
/// A request without an answer is retried as a restart's, and counted as refused, only while
/// `restarting` is set (never, for nginx: it must always answer).
async fn follow(
    base: String,
    owner: String,
    expected: Arc<Mutex<Option<usize>>>,
    restarting: Arc<AtomicBool>,
) -> Followed {
    let client = reqwest::Client::new();
    let mut followed = Followed::default();
    let mut cursor = 0u64;
    let done = |followed: &Followed| {
        expected
            .lock()
            .unwrap()
            .is_some_and(|n| followed.writes.len() >= n)
    };
    let prefix = format!("pubky://{owner}/pub/roll/");
    loop {
        if done(&followed) {
            return followed;
        }
        let url = format!("{base}/events-stream?user={owner}:{cursor}&live=true");
        let was_restarting = restarting.load(Ordering::SeqCst);
        let response = match client.get(&url).send().await {
            Ok(response) if response.status() == 200 => response,
            Ok(response) => {
                followed
                    .broken
                    .push(format!("status {}", response.status()));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(_) if was_restarting || restarting.load(Ordering::SeqCst) => {
                followed.refused += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(err) => {
                followed
                    .broken
                    .push(format!("request: {}", error_chain(&err)));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut body = response.bytes_stream();
        let mut text = String::new();
        loop {
            // Poll now and then so that a follower that has everything stops.
            let chunk = match tokio::time::timeout(Duration::from_millis(500), body.next()).await {
                Err(_) if done(&followed) => return followed,
                Err(_) => continue,
                Ok(chunk) => chunk,
            };
            match chunk {
                None => {
                    followed.resumed += 1;
                    break;
                }
                Some(Err(err)) => {
                    followed.broken.push(format!("stream: {err}"));
                    break;
                }
                Some(Ok(bytes)) => text.push_str(std::str::from_utf8(&bytes).unwrap()),
            }
            while let Some(end) = text.find("\n\n") {
                let frame: String = text.drain(..end + 2).collect();
                if !frame.starts_with("event: ") {
                    continue;
                }
                let mut resource = "";
                for line in frame.lines() {
                    if let Some(id) = line.strip_prefix("data: cursor: ") {
                        let id: u64 = id.parse().unwrap();
                        assert!(id > cursor, "cursor {id} after {cursor}");
                        cursor = id;
                    } else if let Some(r) = line.strip_prefix("data: pubky://") {
                        resource = r;
                    }
                }
                let number = format!("pubky://{resource}")
                    .strip_prefix(&prefix)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("an unexpected event: {frame}"));
                followed.writes.push(number);
            }
        }
    }
}

/// `err` with each of its sources, so a request error says what the transport saw.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The storage requests `server` has served since it started (only nginx sends it any).
async fn storage_requests(server: &TestServer) -> u64 {
    let metrics = server.metrics().await;
    let counted = metrics
        .lines()
        .filter(|line| line.starts_with("storage_request_count"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    counted as u64
}

/// Waits until at least `n` writes are acknowledged.
async fn acked_at_least(acked: &Acked, n: usize) {
    eventually("writes acknowledged", Duration::from_secs(120), || async {
        let have = acked.lock().unwrap().len();
        if have >= n { Ok(()) } else { Err(have) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_behind_nginx_fails_nothing() {
    let net = TestNet::new();
    let ports = [free_port(), free_port(), free_port()];
    let first = net
        .server()
        .metadata(Metadata::Postgres)
        .blobs(Blobs::S3)
        .icann_port(ports[0])
        .with_metrics()
        .start()
        .await;
    let instance = |port| net.server().sharing(&first).icann_port(port).with_metrics();
    let second = instance(ports[1]).start().await;
    let third = instance(ports[2]).start().await;
    let mut servers: Vec<Option<TestServer>> = vec![Some(first), Some(second), Some(third)];
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|port| SocketAddr::from(([127, 0, 0, 1], *port)))
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = deploy_balancer(dir.path(), port, &addrs);
    let _nginx = start_nginx(dir.path(), &config);
    let front = format!("http://127.0.0.1:{port}");
    eventually("nginx listening", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await
    })
    .await;
    let account = Account::signup_at(&front).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Acked::default();
    let failures = Failures::default();
    let expected = Arc::new(Mutex::new(None));
    let first_restarting = Arc::new(AtomicBool::new(false));
    let through_nginx = tokio::spawn(follow(
        front.clone(),
        account.z32.clone(),
        expected.clone(),
        Arc::new(AtomicBool::new(false)),
    ));
    let on_first = tokio::spawn(follow(
        format!("http://{}", addrs[0]),
        account.z32.clone(),
        expected.clone(),
        first_restarting.clone(),
    ));
    let writer = tokio::spawn(write_until(
        front.clone(),
        account.clone(),
        stop.clone(),
        acked.clone(),
        failures.clone(),
    ));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(read_until(
                front.clone(),
                account.z32.clone(),
                stop.clone(),
                acked.clone(),
                failures.clone(),
            ))
        })
        .collect();

    let started = std::time::Instant::now();
    let mut exits = Vec::new();
    for (step, slot) in servers.iter_mut().enumerate() {
        acked_at_least(&acked, 20 * (step + 1)).await;
        let server = slot.take().unwrap();
        first_restarting.store(step == 0, Ordering::SeqCst);
        let (exit, server) = server.stop_and_start().await;
        first_restarting.store(false, Ordering::SeqCst);
        exits.push(exit);
        // Only once nginx sends it requests again is the next instance stopped: nginx keeps an
        // instance that refused a connection out for the upstream's fail_timeout, and with every
        // instance out it would answer 502 itself.
        eventually(
            "nginx sends requests to the restarted instance",
            Duration::from_secs(30),
            || async {
                match storage_requests(&server).await {
                    0 => Err("none yet"),
                    n => Ok(n),
                }
            },
        )
        .await;
        *slot = Some(server);
    }
    acked_at_least(&acked, 20 * 4).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.unwrap();
    }
    let acked: Vec<u32> = acked.lock().unwrap().clone();
    *expected.lock().unwrap() = Some(acked.len());
    let deadline = Duration::from_secs(60);
    let through_nginx = tokio::time::timeout(deadline, through_nginx)
        .await
        .expect("the stream through nginx gets every write")
        .unwrap();
    let on_first = tokio::time::timeout(deadline, on_first)
        .await
        .expect("the stream on the first instance gets every write")
        .unwrap();
    let nginx_log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
    let retried = nginx_log
        .lines()
        .filter(|line| line.contains("[error]") && line.contains("upstream"))
        .count();
    println!(
        "rolling restart: {} writes and {reads} reads in {:?}; exits after SIGTERM {exits:?}; nginx \
         met {retried} upstream errors (each retried on another instance); stream through nginx resumed {} times, stream on \
         the first instance resumed {} times and was refused {} times while it restarted",
        acked.len(),
        started.elapsed(),
        through_nginx.resumed,
        on_first.resumed,
        on_first.refused,
    );

    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "failed requests: {failures:?}\n{nginx_log}"
    );
    for (name, followed) in [
        ("through nginx", &through_nginx),
        ("on one instance", &on_first),
    ] {
        assert!(
            followed.broken.is_empty(),
            "stream {name}: {:?}",
            followed.broken
        );
        assert_eq!(
            followed.writes, acked,
            "stream {name}: every write once, in order"
        );
    }
    // Each stream's instance was restarted at least once under it.
    assert!(through_nginx.resumed >= 1 && on_first.resumed >= 1);
    for exit in &exits {
        assert!(
            *exit < Duration::from_secs(5),
            "an instance took {exit:?} to drain: a stream held it"
        );
    }
    for server in servers.into_iter().flatten() {
        let log = server.log();
        assert!(server.stop().await.success(), "{log}");
    }
}

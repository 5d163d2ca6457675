//! Load generator: the storage API's main workloads against Homestead on several backend pairs (and the
//! ceilings of this machine), at several concurrency levels, in one run, alternating targets within each
//! workload so that drift of the machine hits every target alike.
//!
//! ```sh
//! cargo build --release --bin homestead   # in the root workspace
//! TEST_HOMESTEAD_BIN=$CARGO_TARGET_DIR/release/homestead cargo bench --bench load
//! ```
//!
//! Targets (`LOAD_TARGETS`, comma-separated, default all but `reference`): `sqlite-fs`, `postgres-fs`,
//! `postgres-s3` (Homestead; PostgreSQL and S3 from `TEST_PG_ADMIN_URL` and `TEST_S3_ENDPOINT`, as
//! `scripts/test` sets them), `reference` (the `pubky-homeserver` 0.9.3 binary at `REFERENCE_BIN`, on
//! PostgreSQL and filesystem blobs, rate limits off), `hyper` (a bare hyper server answering a fixed 1 KiB body: the ceiling for
//! small GETs) and `disk` (1 MiB files written and fsynced in a directory beside the data directories: the
//! ceiling for large PUTs). `LOAD_CONCURRENCY` (default `1,32,256`), `LOAD_SECONDS` per cell (default 3),
//! `LOAD_WORKLOADS` (default all), `LOAD_JSON` (a file for JSON lines, default `load.jsonl`).
//!
//! A Homestead target named with the suffix `+limit` (e.g. `postgres-fs+limit`) runs with a request-rate
//! limit on the files the small-GET cell reads, high enough never to refuse: the cost of checking a limit
//! (on PostgreSQL a statement per GET on one shared bucket, every worker reading from the same address;
//! on SQLite a lock in memory). For the ratio within one run:
//! `LOAD_TARGETS=postgres-fs,postgres-fs+limit LOAD_WORKLOADS=get_1k`.
//!
//! Users sign up with an AuthToken signed by the SDK (`POST /signup`), then each worker drives raw HTTP
//! with its session cookie. Reported per cell: ops/s, MB/s, p50/p99/max latency, errors and the server's
//! RSS as the cell began and at its peak during the cell.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use homestead_integration_tests::{Account, Blobs, Metadata, TestDatabase, TestNet, TestServer};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// Files each GET workload reads from, round robin.
const READ_SET: usize = 64;
/// Entries of the listed directory.
const LISTED: usize = 1000;

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// `VmRSS` of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    homestead_integration_tests::memory_kib(pid, "VmRSS:") / 1024.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Put1K,
    Get1K,
    Put1M,
    Get1M,
    List1000,
    EventPages,
    Fanout,
    Put1G,
}

impl Workload {
    const ALL: [Workload; 8] = [
        Workload::Put1K,
        Workload::Get1K,
        Workload::Put1M,
        Workload::Get1M,
        Workload::List1000,
        Workload::EventPages,
        Workload::Fanout,
        Workload::Put1G,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::Put1K => "put_1k",
            Workload::Get1K => "get_1k",
            Workload::Put1M => "put_1m",
            Workload::Get1M => "get_1m",
            Workload::List1000 => "list_1000",
            Workload::EventPages => "events_pages",
            Workload::Fanout => "live_fanout",
            Workload::Put1G => "put_1g",
        }
    }

    fn size(self) -> usize {
        match self {
            Workload::Put1K | Workload::Get1K => KIB,
            Workload::Put1M | Workload::Get1M => MIB,
            Workload::Put1G => 1024 * MIB,
            _ => 0,
        }
    }
}

/// A homeserver process: Homestead through the test harness, or the reference binary.
enum Process {
    Homestead(TestServer),
    Reference(Reference),
}

/// The reference homeserver (`pubky-homeserver` 0.9.3) as a process on its own data directory, with
/// PostgreSQL metadata and filesystem blobs like Homestead's postgres-fs, and no rate limits.
struct Reference {
    url: String,
    child: tokio::process::Child,
    _database: TestDatabase,
    _data_dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Reference {
    async fn start(binary: &str, net: &TestNet) -> Self {
        let database = TestDatabase::create();
        let data_dir = tempfile::Builder::new()
            .prefix("reference-homeserver-")
            .tempdir()
            .unwrap();
        let icann = free_port();
        let bootstrap: Vec<String> = net.bootstrap().iter().map(|b| format!("{b:?}")).collect();
        let config = format!(
            "[general]\ndatabase_url = {:?}\nsignup_mode = \"open\"\n\n\
             [drive]\npubky_listen_socket = \"127.0.0.1:{}\"\nicann_listen_socket = \"127.0.0.1:{icann}\"\n\n\
             [admin]\nenabled = false\n\n[metrics]\nenabled = false\n\n\
             [storage]\ntype = \"file_system\"\n\n\
             [pkdns]\npublic_ip = \"127.0.0.1\"\ndht_bootstrap_nodes = [{}]\n",
            database.url(),
            free_port(),
            bootstrap.join(", ")
        );
        std::fs::write(data_dir.path().join("config.toml"), config).unwrap();
        let child = tokio::process::Command::new(binary)
            .arg("--data-dir")
            .arg(data_dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(data_dir.path().join("server.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {binary}: {err}"));
        let url = format!("http://127.0.0.1:{icann}");
        let started = Instant::now();
        while reqwest::get(&url).await.is_err() {
            let log = std::fs::read_to_string(data_dir.path().join("server.log"));
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the reference did not start: {log:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Self {
            url,
            child,
            _database: database,
            _data_dir: data_dir,
        }
    }
}

impl Process {
    fn url(&self) -> String {
        match self {
            Process::Homestead(server) => server.icann_url(),
            Process::Reference(reference) => reference.url.clone(),
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Process::Homestead(server) => server.pid(),
            Process::Reference(reference) => reference.child.id().unwrap_or(0),
        }
    }
}

/// A running homeserver with the users of the run.
struct Server {
    name: String,
    process: Process,
    /// One account per worker at the highest concurrency.
    accounts: Vec<Account>,
    /// The account whose files the GET, listing and event workloads read.
    reader: Account,
}

enum Target {
    Server(Box<Server>),
    Hyper {
        url: String,
        pid: u32,
        _child: tokio::process::Child,
    },
    Disk {
        dir: tempfile::TempDir,
    },
}

impl Target {
    fn name(&self) -> String {
        match self {
            Target::Server(s) => s.name.clone(),
            Target::Hyper { .. } => "hyper".into(),
            Target::Disk { .. } => "disk".into(),
        }
    }

    fn serves(&self, workload: Workload) -> bool {
        match self {
            Target::Server(_) => true,
            Target::Hyper { .. } => workload == Workload::Get1K,
            Target::Disk { .. } => workload == Workload::Put1M,
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Target::Server(s) => Some(s.process.pid()),
            Target::Hyper { pid, .. } => Some(*pid),
            Target::Disk { .. } => None,
        }
    }
}

/// One cell's result.
struct Cell {
    target: String,
    workload: &'static str,
    concurrency: usize,
    ops: u64,
    bytes: u64,
    errors: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Server RSS as the cell began.
    start_rss_mib: f64,
    peak_rss_mib: f64,
}

impl Cell {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.seconds
    }

    fn json(&self) -> String {
        format!(
            "{{\"target\":\"{}\",\"workload\":\"{}\",\"concurrency\":{},\"ops\":{},\"ops_per_sec\":{:.1},\
             \"mb_per_sec\":{:.2},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"errors\":{},\
             \"start_rss_mib\":{:.1},\"peak_rss_mib\":{:.1}}}",
            self.target,
            self.workload,
            self.concurrency,
            self.ops,
            self.ops_per_sec(),
            self.bytes as f64 / self.seconds / 1e6,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.errors,
            self.start_rss_mib,
            self.peak_rss_mib
        )
    }
}

/// Signs up the run's users on `process` and writes the files the read workloads need.
async fn prepare(name: &str, process: Process, users: usize) -> Server {
    let base = process.url();
    let mut accounts = Vec::with_capacity(users);
    for _ in 0..users {
        accounts.push(Account::signup_at(&base).await);
    }
    let reader = Account::signup_at(&base).await;
    let client = reqwest::Client::new();
    let put = |path: String, body: Vec<u8>| {
        let request = client
            .put(format!("{base}{path}"))
            .header("pubky-host", &reader.z32)
            .header("cookie", &reader.cookie)
            .body(body);
        async move {
            let status = request.send().await.expect("PUT").status();
            assert_eq!(status, 201, "{path}");
        }
    };
    for i in 0..READ_SET {
        put(format!("/pub/read/1k/{i}"), vec![b'k'; KIB]).await;
        put(format!("/pub/read/1m/{i}"), vec![b'm'; MIB]).await;
    }
    for i in 0..LISTED {
        put(format!("/pub/listed/{i:04}"), b"x".to_vec()).await;
    }
    Server {
        name: name.to_string(),
        process,
        accounts,
        reader,
    }
}

/// The rate limit of `+limit` targets: the small-GET cell's files, a million reads a second per address.
const GET_1K_LIMIT: &str = "[[drive.rate_limits]]\npath = \"/pub/read/1k/*\"\nmethod = \"GET\"\n\
                            quota = \"1000000r/s\"\nkey = \"ip\"";

async fn homestead(net: &TestNet, metadata: Metadata, blobs: Blobs, limited: bool) -> Process {
    // No upload size limit, like the reference, for the 1 GiB uploads.
    let mut builder = net.server().metadata(metadata).blobs(blobs);
    if limited {
        builder = builder.config(GET_1K_LIMIT);
    }
    Process::Homestead(builder.drive_config("max_body_bytes = 0").start().await)
}

/// Starts this binary again as a bare hyper server (see [`hyper_ceiling`]) and returns its URL.
async fn start_hyper() -> Target {
    let exe = std::env::current_exe().expect("own path");
    let mut child = tokio::process::Command::new(exe)
        .env("LOAD_HYPER_SERVER", "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the hyper ceiling");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let addr = lines.next_line().await.unwrap().expect("address line");
    Target::Hyper {
        url: format!("http://{addr}"),
        pid: child.id().unwrap(),
        _child: child,
    }
}

/// The ceiling for small GETs: hyper answering every request with the same 1 KiB, on all cores.
fn hyper_ceiling() {
    use hyper::service::service_fn;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        let body = bytes::Bytes::from(vec![b'k'; KIB]);
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    let body = body.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(body),
                        ))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
}

/// What one worker does once; returns the bytes moved, or an error.
async fn operation(
    target: &Target,
    workload: Workload,
    client: &reqwest::Client,
    worker: usize,
    round: u64,
) -> Result<u64, String> {
    let check = |status: reqwest::StatusCode, want: u16| {
        if status.as_u16() == want {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    };
    match target {
        Target::Disk { dir } => {
            let path = dir.path().join(format!("{worker}-{round}"));
            tokio::task::spawn_blocking(move || {
                let mut file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
                file.write_all(&vec![b'm'; MIB])
                    .map_err(|e| e.to_string())?;
                file.sync_all().map_err(|e| e.to_string())?;
                std::fs::remove_file(&path).map_err(|e| e.to_string())?;
                Ok(MIB as u64)
            })
            .await
            .map_err(|e| e.to_string())?
        }
        Target::Hyper { url, .. } => {
            let response = client.get(url).send().await.map_err(|e| e.to_string())?;
            check(response.status(), 200)?;
            Ok(response.bytes().await.map_err(|e| e.to_string())?.len() as u64)
        }
        Target::Server(server) => {
            let base = server.process.url();
            let reader = &server.reader;
            let get = |path: String| {
                client
                    .get(format!("{base}{path}"))
                    .header("pubky-host", &reader.z32)
            };
            let response = match workload {
                Workload::Put1K | Workload::Put1M | Workload::Put1G => {
                    let account = &server.accounts[worker % server.accounts.len()];
                    // Streamed in 1 MiB pieces, so that the client never holds a whole large file.
                    let piece = bytes::Bytes::from(vec![b'p'; workload.size().min(MIB)]);
                    let pieces = (workload.size() / piece.len()).max(1);
                    let body = futures_util::stream::iter(
                        (0..pieces).map(move |_| Ok::<_, std::io::Error>(piece.clone())),
                    );
                    let response = client
                        .put(format!("{base}/pub/load/{}", round % 1000))
                        .header("pubky-host", &account.z32)
                        .header("cookie", &account.cookie)
                        .header("content-length", workload.size())
                        .body(reqwest::Body::wrap_stream(body))
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    check(response.status(), 201)?;
                    return Ok(workload.size() as u64);
                }
                Workload::Get1K => get(format!("/pub/read/1k/{}", round as usize % READ_SET)),
                Workload::Get1M => get(format!("/pub/read/1m/{}", round as usize % READ_SET)),
                Workload::List1000 => get("/pub/listed/?limit=1000".to_string()),
                Workload::Fanout => unreachable!("fan-out runs in its own cell loop"),
                Workload::EventPages => {
                    client.get(format!("{base}/events/?cursor={}&limit=100", round % 1000))
                }
            }
            .send()
            .await
            .map_err(|e| e.to_string())?;
            check(response.status(), 200)?;
            Ok(response.bytes().await.map_err(|e| e.to_string())?.len() as u64)
        }
    }
}

/// Live fan-out: `subscribers` streams follow a fresh user while it writes 50 small files a second; an
/// operation is one event delivered to one subscriber, its latency from the write's start to receipt.
async fn fanout(server: &Server, subscribers: usize, seconds: f64) -> (Vec<Duration>, u64, u64) {
    const RATE: u64 = 50;
    let base = server.process.url();
    let writer = Account::signup_at(&base).await;
    let writes = (RATE as f64 * seconds) as usize;
    let started: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; writes]));
    let client = reqwest::Client::new();
    let mut streams = Vec::new();
    for _ in 0..subscribers {
        let response = client
            .get(format!(
                "{base}/events-stream?user={}&live=true",
                writer.z32
            ))
            .send()
            .await
            .expect("open a stream");
        assert_eq!(response.status(), 200, "open a stream");
        let started = started.clone();
        streams.push(tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut body = response.bytes_stream();
            let mut pending = String::new();
            let mut latencies = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds + 5.0);
            while latencies.len() < writes {
                let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, body.next()).await
                else {
                    break;
                };
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = pending.find("\n\n") {
                    let frame: String = pending.drain(..end + 2).collect();
                    let index = frame
                        .lines()
                        .find_map(|l| l.strip_prefix("data: pubky://"))
                        .and_then(|r| r.rsplit('/').next())
                        .and_then(|i| i.parse::<usize>().ok());
                    if let Some(at) = index.and_then(|i| started.lock().unwrap()[i]) {
                        latencies.push(at.elapsed());
                    }
                }
            }
            latencies
        }));
    }
    let mut ticks = tokio::time::interval(Duration::from_millis(1000 / RATE));
    let mut failed = 0;
    for index in 0..writes {
        ticks.tick().await;
        started.lock().unwrap()[index] = Some(Instant::now());
        let status = client
            .put(format!("{base}/pub/fan/{index}"))
            .header("pubky-host", &writer.z32)
            .header("cookie", &writer.cookie)
            .body(vec![b'f'; 100])
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok();
        if status != Some(201) {
            failed += 1;
        }
    }
    let mut latencies = Vec::new();
    for stream in streams {
        latencies.extend(stream.await.unwrap());
    }
    let missing = (writes - failed) as u64 * subscribers as u64 - latencies.len() as u64;
    (latencies, 0, missing + failed as u64)
}

async fn run_cell(
    target: Arc<Target>,
    workload: Workload,
    concurrency: usize,
    seconds: f64,
) -> Cell {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let start_rss_mib = target.pid().map_or(0.0, rss_mib);
    let peak = Arc::new(std::sync::Mutex::new(start_rss_mib));
    let sampler = target.pid().map(|pid| {
        let (stop, peak) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let rss = rss_mib(pid);
                {
                    let mut peak = peak.lock().unwrap();
                    *peak = peak.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    });
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut workers = Vec::new();
    if let (Workload::Fanout, Target::Server(server)) = (workload, target.as_ref()) {
        let (latencies, bytes, missed) = fanout(server, concurrency, seconds).await;
        errors.fetch_add(missed, Ordering::Relaxed);
        workers.push(tokio::spawn(async move { (latencies, bytes) }));
    }
    for worker in (0..concurrency).filter(|_| workload != Workload::Fanout) {
        let (target, client, errors) = (target.clone(), client.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut bytes = 0;
            let mut round = worker as u64 * 7919;
            while Instant::now() < deadline {
                let at = Instant::now();
                match operation(&target, workload, &client, worker, round).await {
                    Ok(moved) => {
                        latencies.push(at.elapsed());
                        bytes += moved;
                    }
                    Err(err) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("  first error: {err}");
                        }
                    }
                }
                round += 1;
                if workload == Workload::Put1G {
                    break; // one upload per worker, however long it takes
                }
            }
            (latencies, bytes)
        }));
    }
    let mut latencies = Vec::new();
    let mut bytes = 0;
    for worker in workers {
        let (l, b) = worker.await.unwrap();
        latencies.extend(l);
        bytes += b;
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(sampler) = sampler {
        sampler.await.unwrap();
    }
    latencies.sort();
    let ms = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let peak_rss_mib = *peak.lock().unwrap();
    Cell {
        target: target.name(),
        workload: workload.name(),
        concurrency,
        ops: latencies.len() as u64,
        bytes,
        errors: errors.load(Ordering::Relaxed),
        seconds: elapsed,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: ms(1.0),
        start_rss_mib,
        peak_rss_mib,
    }
}

#[tokio::main]
async fn main() {
    if std::env::var_os("LOAD_HYPER_SERVER").is_some() {
        return tokio::task::block_in_place(hyper_ceiling);
    }
    let names = setting(
        "LOAD_TARGETS",
        "sqlite-fs,postgres-fs,postgres-s3,hyper,disk",
    );
    let levels: Vec<usize> = setting("LOAD_CONCURRENCY", "1,32,256")
        .split(',')
        .map(|c| c.trim().parse().expect("LOAD_CONCURRENCY: numbers"))
        .collect();
    let seconds: f64 = setting("LOAD_SECONDS", "3").parse().expect("LOAD_SECONDS");
    let wanted = setting("LOAD_WORKLOADS", "");
    let workloads: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|w| wanted.is_empty() || wanted.split(',').any(|n| n.trim() == w.name()))
        .collect();
    let json_path = setting("LOAD_JSON", "load.jsonl");
    let users = levels.iter().copied().max().unwrap_or(1);

    let net = TestNet::new();
    let mut targets = Vec::new();
    for name in names.split(',').map(str::trim) {
        let target = match name {
            "sqlite-fs" | "postgres-fs" | "postgres-s3" | "sqlite-fs+limit"
            | "postgres-fs+limit" | "postgres-s3+limit" => {
                let (pair, limited) = match name.strip_suffix("+limit") {
                    Some(pair) => (pair, true),
                    None => (name, false),
                };
                let (metadata, blobs) = match pair {
                    "sqlite-fs" => (Metadata::Sqlite, Blobs::Fs),
                    "postgres-fs" => (Metadata::Postgres, Blobs::Fs),
                    _ => (Metadata::Postgres, Blobs::S3),
                };
                let process = homestead(&net, metadata, blobs, limited).await;
                Target::Server(Box::new(prepare(name, process, users).await))
            }
            "reference" => {
                let binary = std::env::var("REFERENCE_BIN")
                    .expect("REFERENCE_BIN: the pubky-homeserver 0.9.3 binary");
                let process = Process::Reference(Reference::start(&binary, &net).await);
                Target::Server(Box::new(prepare(name, process, users).await))
            }
            "hyper" => start_hyper().await,
            "disk" => Target::Disk {
                dir: tempfile::Builder::new()
                    .prefix("homestead-disk-ceiling-")
                    .tempdir()
                    .unwrap(),
            },
            other => panic!("unknown target {other}"),
        };
        eprintln!("target {name} ready");
        targets.push(Arc::new(target));
    }

    let mut json = std::fs::File::create(&json_path).expect("create the JSON lines file");
    let mut table = String::new();
    writeln!(
        table,
        "| workload | conc. | target | ops/s | MB/s | p50 ms | p99 ms | max ms | errors | RSS MiB at start | peak |"
    )
    .unwrap();
    writeln!(
        table,
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    .unwrap();
    let mut cells = Vec::new();
    for workload in workloads {
        for &concurrency in &levels {
            // Targets alternate within each cell row, so drift hits all of them.
            if workload == Workload::Put1G && concurrency != 1 {
                continue;
            }
            for target in targets.iter().filter(|t| t.serves(workload)) {
                let cell = run_cell(target.clone(), workload, concurrency, seconds).await;
                eprintln!("{}", cell.json());
                writeln!(json, "{}", cell.json()).unwrap();
                writeln!(
                    table,
                    "| {} | {} | {} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {} | {:.0} | {:.0} |",
                    cell.workload,
                    cell.concurrency,
                    cell.target,
                    cell.ops_per_sec(),
                    cell.bytes as f64 / cell.seconds / 1e6,
                    cell.p50_ms,
                    cell.p99_ms,
                    cell.max_ms,
                    cell.errors,
                    cell.start_rss_mib,
                    cell.peak_rss_mib
                )
                .unwrap();
                cells.push(cell);
            }
        }
    }
    println!("{table}");
    println!("{}", ratios(&cells));
}

/// Homestead's throughput over the reference's and over the machine's ceiling, per cell where the other
/// side ran (ops/s; MB/s against the disk).
fn ratios(cells: &[Cell]) -> String {
    let mut out = String::from(
        "| workload | conc. | target | / reference | / ceiling |\n|---|---:|---|---:|---:|\n",
    );
    let find = |cell: &Cell, target: &str| {
        cells.iter().find(|c| {
            c.workload == cell.workload && c.concurrency == cell.concurrency && c.target == target
        })
    };
    for cell in cells
        .iter()
        .filter(|c| !["reference", "hyper", "disk"].contains(&c.target.as_str()))
    {
        let reference = find(cell, "reference").map(|r| cell.ops_per_sec() / r.ops_per_sec());
        let ceiling = find(cell, "hyper")
            .map(|h| cell.ops_per_sec() / h.ops_per_sec())
            .or_else(|| {
                find(cell, "disk")
                    .map(|d| cell.bytes as f64 / cell.seconds / (d.bytes as f64 / d.seconds))
            });
        let show = |r: Option<f64>| r.map_or("–".to_string(), |r| format!("{r:.2}"));
        writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            cell.workload,
            cell.concurrency,
            cell.target,
            show(reference),
            show(ceiling)
        )
        .unwrap();
    }
    out
}

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
//! PostgreSQL and filesystem blobs, rate limits off), `garage-nginx-1`, `garage-nginx-2`,
//! `garage-nginx-3` (not in the default: 1, 2 or 3 Homestead instances sharing one PostgreSQL database
//! and a bucket on a three-node Garage cluster from `TEST_GARAGE_BIN`, see `scripts/cluster`, driven
//! through nginx with the deploy site's balancer settings, `TEST_NGINX_BIN`; the RSS figures are the
//! first instance's), and the ceilings of the machine:
//!
//! - `hyper`: a bare hyper server answering a fixed 1 KiB body, the ceiling for small GETs;
//! - `disk`: 1 MiB files written the way Homestead's filesystem store writes a blob (see [`disk_write`]),
//!   the ceiling for large PUTs;
//! - `pg-commit`: the statements of one small PUT in Homestead's PostgreSQL engine, one transaction per
//!   write, driven by `pgbench` (`PGBENCH`, default Debian's PostgreSQL 15 one) with
//!   `benches/ceilings/put_1k.pgbench.sql` on a database prepared by Homestead's migrations, the
//!   small-PUT ceiling of the PostgreSQL targets (at most as many clients as the server has connections
//!   free; the cell records how many ran);
//! - `sqlite-commit`: the same statements in SQLite (WAL, `synchronous = FULL`, Homestead's pragmas), one
//!   transaction per write through one writer connection as in Homestead, the small-PUT ceiling of
//!   sqlite-fs (see [`sqlite_commits`]).
//!
//! Homestead's group commit shares one transaction among the writes that wait together; the two commit
//! ceilings run one write per transaction unless `LOAD_COMMIT_BATCH` says how many (each client's
//! transaction then holds that many writes of its own user; ops count writes).
//!
//! `LOAD_CONCURRENCY` (default `1,32,256`), `LOAD_SECONDS` per cell (default 3), `LOAD_WORKLOADS`
//! (default all), `LOAD_JSON` (a file the run's JSON lines are appended to, default `load.jsonl`: first
//! the environment, then one line per cell).
//!
//! `LOAD_CLIENT=wrk` drives the small GET, small PUT and 1 MiB PUT cells of the servers and of `hyper`
//! with `wrk` (`WRK`, default `wrk` on the PATH: 2 threads, `-c` the concurrency, keep-alive, the script
//! `benches/wrk.lua`) instead of the built-in client, which is slower than a bare hyper server. PUTs
//! overwrite `/pub/load/<n mod 1000>` like the built-in client (1 MiB PUTs `<n mod (1024 / users)>`, about
//! 1 GiB kept per cell); each wrk thread takes the run's users in
//! turn, one per request. Every response outside 2xx counts as an error. wrk drops the requests in flight
//! when its time is up, so its 1 MiB cells at 256 connections need `LOAD_SECONDS` of 10 or more.
//!
//! A Homestead target named with the suffix `+limit` (e.g. `postgres-fs+limit`) runs with a request-rate
//! limit on the files the small-GET cell reads, high enough never to refuse: the cost of checking a limit
//! (on PostgreSQL a statement per GET on one shared bucket, every worker reading from the same address;
//! on SQLite a lock in memory). For the ratio within one run:
//! `LOAD_TARGETS=postgres-fs,postgres-fs+limit LOAD_WORKLOADS=get_1k`.
//!
//! A Homestead target named with the prefix `before:` (e.g. `before:sqlite-fs`) runs the binary at
//! `LOAD_BEFORE_BIN` instead: an earlier build, so that before and after are compared within one run.
//!
//! Users sign up with an AuthToken signed by the SDK (`POST /signup`), then each worker drives raw HTTP
//! with its session cookie. Reported per cell: ops/s, MB/s, p50/p99/max latency, errors, the server's RSS
//! as the cell began, at its peak and as it ended, the CPU the server used (cores, from
//! `/proc/<pid>/stat`) and the CPU the whole machine used (from `/proc/stat`): where the server's share
//! is below the machine's, the rest went to the client.
//!
//! Before the run the bench prints the machine (CPU model, cores, kernel, commit, load average) and
//! refuses to start when the 1-minute load average is above `LOAD_MAX_LOADAVG` (default 0.25 per core);
//! after it, it refuses to write results when processes outside the bench, its targets, PostgreSQL and
//! the S3 server used more than `LOAD_MAX_OUTSIDE_CPU` of all cores (default 0.10). Either exits non-zero
//! with the reason on one line and writes nothing. `LOAD_ALLOW_BUSY=1` runs anyway: the figures are
//! printed, marked busy, and never written.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use homestead_integration_tests::machine::{self, Environment, Limits, OutsideCpu, Verdict};
use homestead_integration_tests::{
    Account, Blobs, GarageCluster, Metadata, Reference, ReferenceOptions, Relays, TestDatabase,
    TestNet, TestServer, start_balancer,
};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// Files each GET workload reads from, round robin.
const READ_SET: usize = 64;
/// Entries of the listed directory.
const LISTED: usize = 1000;
/// Paths each PUT workload's writer rotates over (so that writes overwrite files).
const WRITTEN: u64 = 1000;

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

    /// Whether `wrk` can drive this workload (`LOAD_CLIENT=wrk`).
    fn by_wrk(self) -> bool {
        matches!(self, Workload::Put1K | Workload::Get1K | Workload::Put1M)
    }
}

/// A homeserver process: Homestead through the test harness, the reference binary, or Homestead
/// instances behind nginx.
enum Process {
    Homestead(TestServer),
    /// With the PKARR relay on loopback that its config names.
    Reference {
        process: Reference,
        _relays: Box<Relays>,
    },
    Cluster(Cluster),
}

/// Homestead instances on one database and bucket behind nginx (dropped after nginx).
struct Cluster {
    url: String,
    _nginx: tokio::process::Child,
    _nginx_dir: tempfile::TempDir,
    instances: Vec<TestServer>,
}

impl Cluster {
    /// `count` instances on PostgreSQL and `garage`'s bucket, nginx in front of them.
    async fn start(net: &TestNet, garage: &GarageCluster, count: usize) -> Self {
        // No upload size limit, like the single-instance targets.
        let first = net
            .server()
            .metadata(Metadata::Postgres)
            .bucket(garage.bucket())
            .drive_config("max_body_bytes = 0")
            .start()
            .await;
        let mut instances = vec![first];
        for _ in 1..count {
            let next = net
                .server()
                .sharing(&instances[0])
                .drive_config("max_body_bytes = 0")
                .start()
                .await;
            instances.push(next);
        }
        let nginx_dir = tempfile::Builder::new()
            .prefix("homestead-balancer-")
            .tempdir()
            .unwrap();
        let addrs: Vec<_> = instances.iter().map(TestServer::icann_addr).collect();
        let (nginx, url) = start_balancer(nginx_dir.path(), &addrs).await;
        Self {
            url,
            _nginx: nginx,
            _nginx_dir: nginx_dir,
            instances,
        }
    }
}

impl Process {
    fn url(&self) -> String {
        match self {
            Process::Homestead(server) => server.icann_url(),
            Process::Reference {
                process: reference, ..
            } => reference.url().to_string(),
            Process::Cluster(cluster) => cluster.url.clone(),
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Process::Homestead(server) => server.pid(),
            Process::Reference {
                process: reference, ..
            } => reference.pid(),
            Process::Cluster(cluster) => cluster.instances[0].pid(),
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
    /// Where the wrk user files of this server are written.
    scratch: tempfile::TempDir,
}

enum Target {
    Server(Box<Server>),
    Hyper {
        url: String,
        pid: u32,
        _child: tokio::process::Child,
        /// The users file of its wrk cells (one line; hyper reads no header).
        users: tempfile::NamedTempFile,
    },
    Disk {
        dir: tempfile::TempDir,
    },
    /// A database prepared by Homestead's migrations, with users `bench<n>` and their sessions.
    PgCommit {
        database: TestDatabase,
        scratch: tempfile::TempDir,
    },
    /// A SQLite file prepared by Homestead's migrations, with users `bench<n>` and their sessions.
    SqliteCommit {
        dir: tempfile::TempDir,
    },
}

impl Target {
    fn name(&self) -> String {
        match self {
            Target::Server(s) => s.name.clone(),
            Target::Hyper { .. } => "hyper".into(),
            Target::Disk { .. } => "disk".into(),
            Target::PgCommit { .. } => "pg-commit".into(),
            Target::SqliteCommit { .. } => "sqlite-commit".into(),
        }
    }

    fn serves(&self, workload: Workload) -> bool {
        match self {
            Target::Server(_) => true,
            Target::Hyper { .. } => workload == Workload::Get1K,
            Target::Disk { .. } => workload == Workload::Put1M,
            Target::PgCommit { .. } | Target::SqliteCommit { .. } => workload == Workload::Put1K,
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Target::Server(s) => Some(s.process.pid()),
            Target::Hyper { pid, .. } => Some(*pid),
            _ => None,
        }
    }
}

/// The ceiling target a Homestead target's cell is compared with.
fn ceiling_of(workload: Workload, target: &str) -> Option<&'static str> {
    match workload {
        Workload::Get1K => Some("hyper"),
        Workload::Put1M => Some("disk"),
        Workload::Put1K if target.starts_with("sqlite") => Some("sqlite-commit"),
        Workload::Put1K => Some("pg-commit"),
        _ => None,
    }
}

const CEILINGS: [&str; 4] = ["hyper", "disk", "pg-commit", "sqlite-commit"];

/// What drove a cell and what it counted.
struct Driven {
    client: String,
    /// Clients that ran (workers, wrk connections, pgbench clients).
    clients: usize,
    ops: u64,
    bytes: u64,
    errors: u64,
    /// p50, p99 and max latency in ms, where the client reports them.
    latency_ms: Option<[f64; 3]>,
    /// The time the client measured over, where it reports one (without its start-up and connecting);
    /// otherwise the cell's wall time counts.
    seconds: Option<f64>,
}

/// One cell's result.
struct Cell {
    target: String,
    workload: &'static str,
    concurrency: usize,
    driven: Driven,
    seconds: f64,
    /// Server RSS as the cell began, at its peak, and as it ended.
    rss_mib: [f64; 3],
    /// Cores the server used on average over the time the client measured.
    server_cpu: Option<f64>,
    /// Cores the whole machine used on average over the cell.
    machine_cpu: f64,
}

impl Cell {
    fn ops_per_sec(&self) -> f64 {
        self.driven.ops as f64 / self.seconds
    }

    fn mb_per_sec(&self) -> f64 {
        self.driven.bytes as f64 / self.seconds / 1e6
    }

    fn json(&self) -> String {
        let latency = |i: usize| {
            self.driven
                .latency_ms
                .map_or("null".to_string(), |l| format!("{:.3}", l[i]))
        };
        format!(
            "{{\"target\":\"{}\",\"workload\":\"{}\",\"concurrency\":{},\"client\":\"{}\",\"clients\":{},\
             \"ops\":{},\"ops_per_sec\":{:.1},\"mb_per_sec\":{:.2},\"p50_ms\":{},\"p99_ms\":{},\"max_ms\":{},\
             \"errors\":{},\"start_rss_mib\":{:.1},\"peak_rss_mib\":{:.1},\"end_rss_mib\":{:.1},\
             \"server_cpu_cores\":{},\"machine_cpu_cores\":{:.2}}}",
            self.target,
            self.workload,
            self.concurrency,
            self.driven.client,
            self.driven.clients,
            self.driven.ops,
            self.ops_per_sec(),
            self.mb_per_sec(),
            latency(0),
            latency(1),
            latency(2),
            self.driven.errors,
            self.rss_mib[0],
            self.rss_mib[1],
            self.rss_mib[2],
            self.server_cpu
                .map_or("null".to_string(), |c| format!("{c:.2}")),
            self.machine_cpu
        )
    }

    fn row(&self) -> String {
        let latency = |i: usize| {
            self.driven
                .latency_ms
                .map_or("–".to_string(), |l| format!("{:.2}", l[i]))
        };
        let clients = if self.driven.clients == self.concurrency {
            String::new()
        } else {
            format!(" ({} clients)", self.driven.clients)
        };
        format!(
            "| {} | {}{clients} | {} | {} | {:.0} | {:.1} | {} | {} | {} | {} | {:.0} / {:.0} / {:.0} | {} | {:.2} |",
            self.workload,
            self.concurrency,
            self.target,
            self.driven.client,
            self.ops_per_sec(),
            self.mb_per_sec(),
            latency(0),
            latency(1),
            latency(2),
            self.driven.errors,
            self.rss_mib[0],
            self.rss_mib[1],
            self.rss_mib[2],
            self.server_cpu
                .map_or("–".to_string(), |c| format!("{c:.2}")),
            self.machine_cpu
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
        scratch: tempfile::tempdir().unwrap(),
    }
}

/// The rate limit of `+limit` targets: the small-GET cell's files, a million reads a second per address.
const GET_1K_LIMIT: &str = "[[drive.rate_limits]]\npath = \"/pub/read/1k/*\"\nmethod = \"GET\"\n\
                            quota = \"1000000r/s\"\nkey = \"ip\"";

async fn homestead(
    net: &TestNet,
    (metadata, blobs): (Metadata, Blobs),
    limited: bool,
    binary: Option<std::path::PathBuf>,
) -> Process {
    // No upload size limit, like the reference, for the 1 GiB uploads.
    let mut builder = net.server().metadata(metadata).blobs(blobs);
    if limited {
        builder = builder.config(GET_1K_LIMIT);
    }
    if let Some(binary) = binary {
        builder = builder.binary(binary);
    }
    // The fan-out cell opens its 256 streams from one address: above the default cap of 100 a client.
    Process::Homestead(
        builder
            .drive_config("max_body_bytes = 0\nmax_event_streams_per_ip = 1000")
            .start()
            .await,
    )
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
    let mut users = tempfile::NamedTempFile::new().unwrap();
    users.write_all(b"hyper\n").unwrap();
    Target::Hyper {
        url: format!("http://{addr}"),
        pid: child.id().unwrap(),
        _child: child,
        users,
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
            // As Homestead's listeners do.
            let _ = stream.set_nodelay(true);
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

/// One 1 MiB blob written as Homestead's filesystem store writes one (object_store's `LocalFileSystem`
/// with fsync, under `UncachedWrites`): a staging file `<key>#1` created new in the user's directory,
/// the body written, the file `fsync`ed and closed, renamed to its key, the directory `fsync`ed; then,
/// the blob being 256 KiB or more, opened again and its pages dropped from the page cache
/// (`posix_fadvise(DONTNEED)`); and the blob it replaced deleted (the entry's previous version), as a
/// committed overwrite does. `dir` is the worker's own directory, like a user's.
fn disk_write(dir: &Path, replaced: Option<&Path>, body: &[u8]) -> std::io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    let key = dir.join(format!("{:032x}", rand_u128()));
    let staging = dir.join(format!("{}#1", key.file_name().unwrap().to_string_lossy()));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&staging)?;
    file.write_all(body)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&staging, &key)?;
    std::fs::File::open(dir)?.sync_all()?;
    let written = std::fs::File::open(&key)?;
    // SAFETY: the descriptor stays open for the call, which only advises the kernel about the file's
    // cached pages.
    unsafe { libc::posix_fadvise(written.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if let Some(old) = replaced {
        std::fs::remove_file(old)?;
    }
    Ok(key)
}

/// A random number for blob keys (from the clock and a counter: unique within the run is enough).
fn rand_u128() -> u128 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    nanos ^ ((COUNTER.fetch_add(1, Ordering::Relaxed) as u128) << 64)
}

/// What one worker does once; returns the bytes moved, or an error. `blob` is the worker's last blob
/// on the `disk` target.
async fn operation(
    target: &Target,
    workload: Workload,
    client: &reqwest::Client,
    (worker, round): (usize, u64),
    blob: &mut Option<PathBuf>,
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
            let dir = dir.path().join(format!("worker{worker}"));
            let replaced = blob.take();
            let written = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir)?;
                disk_write(&dir, replaced.as_deref(), &[b'm'; MIB])
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            *blob = Some(written);
            Ok(MIB as u64)
        }
        Target::Hyper { url, .. } => {
            let response = client.get(url).send().await.map_err(|e| e.to_string())?;
            check(response.status(), 200)?;
            Ok(response.bytes().await.map_err(|e| e.to_string())?.len() as u64)
        }
        Target::PgCommit { .. } | Target::SqliteCommit { .. } => {
            unreachable!("the commit ceilings run in their own cells")
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
                        .put(format!("{base}/pub/load/{}", round % WRITTEN))
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

/// p50, p99 and max of `latencies` (sorted here), in ms.
fn percentiles(latencies: &mut [Duration]) -> [f64; 3] {
    latencies.sort();
    let ms = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    [ms(0.5), ms(0.99), ms(1.0)]
}

/// A cell driven by the built-in client: `concurrency` workers, each with its own connection and user.
async fn builtin(
    target: Arc<Target>,
    workload: Workload,
    concurrency: usize,
    seconds: f64,
) -> Driven {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
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
            let mut blob = None;
            while Instant::now() < deadline {
                let at = Instant::now();
                let done = operation(&target, workload, &client, (worker, round), &mut blob);
                match done.await {
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
    Driven {
        client: "builtin".into(),
        clients: concurrency,
        ops: latencies.len() as u64,
        bytes,
        errors: errors.load(Ordering::Relaxed),
        latency_ms: Some(percentiles(&mut latencies)),
        seconds: None,
    }
}

/// The `WRK {...}` line of `benches/wrk.lua`.
fn parse_wrk(stdout: &str) -> Option<serde_json::Value> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("WRK "))
        .and_then(|json| serde_json::from_str(json).ok())
}

/// A cell driven by `wrk` (see the module's doc comment).
async fn by_wrk(target: &Target, workload: Workload, concurrency: usize, seconds: f64) -> Driven {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/wrk.lua");
    let (url, users_file, method, prefix, paths, size) = match target {
        Target::Hyper { url, users, .. } => (
            url.clone(),
            users.path().to_path_buf(),
            "GET",
            "/".to_string(),
            1,
            0,
        ),
        Target::Server(server) => {
            let file = server
                .scratch
                .path()
                .join(format!("{}.users", workload.name()));
            let (method, prefix, paths, size, lines) = match workload {
                Workload::Get1K => {
                    let line = format!("{}\n", server.reader.z32);
                    ("GET", "/pub/read/1k/", READ_SET as u64, 0, line)
                }
                _ => {
                    let users = &server.accounts[..concurrency.min(server.accounts.len())];
                    let lines: String = users
                        .iter()
                        .map(|a| format!("{} {}\n", a.z32, a.cookie))
                        .collect();
                    // wrk spreads every connection's writes over all users: 1 MiB files overwrite
                    // fewer paths, so that a cell keeps about 1 GiB on disk, not users × 1 GiB.
                    let paths = match workload {
                        Workload::Put1M => (1024 / users.len() as u64).max(1),
                        _ => WRITTEN,
                    };
                    ("PUT", "/pub/load/", paths, workload.size(), lines)
                }
            };
            std::fs::write(&file, lines).unwrap();
            (
                server.process.url(),
                file,
                method,
                prefix.to_string(),
                paths,
                size,
            )
        }
        _ => unreachable!("wrk drives servers only"),
    };
    let wrk = setting("WRK", "wrk");
    let output = tokio::process::Command::new(&wrk)
        .arg(format!("--threads={}", concurrency.min(2)))
        .arg(format!("--connections={concurrency}"))
        .arg(format!("--duration={}s", seconds.ceil().max(1.0)))
        .arg("--timeout=60s")
        .arg(format!("--script={script}"))
        .arg(&url)
        .arg("--")
        .args([method, &prefix, &paths.to_string(), &size.to_string()])
        .arg(&users_file)
        .output()
        .await
        .unwrap_or_else(|err| panic!("run {wrk}: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(result) = parse_wrk(&stdout).filter(|_| output.status.success()) else {
        panic!(
            "{wrk} failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let number = |name: &str| result[name].as_u64().unwrap_or(0);
    let non_2xx = number("non_2xx");
    if non_2xx > 0 {
        eprintln!("  first error: status {}", number("first_non_2xx"));
    }
    let ops = number("requests").saturating_sub(non_2xx);
    if number("requests") == 0 {
        eprintln!(
            "  no request completed within {seconds} s (wrk drops the ones in flight at the end): \
             raise LOAD_SECONDS"
        );
    }
    // Bodies only, as the built-in client counts (wrk's own byte count holds the response heads).
    let bytes = ops * workload.size() as u64;
    let ms = |name: &str| number(name) as f64 / 1000.0;
    Driven {
        client: "wrk".into(),
        clients: concurrency,
        ops,
        bytes,
        errors: non_2xx + number("socket_errors"),
        latency_ms: Some([ms("p50_us"), ms("p99_us"), ms("max_us")]),
        seconds: Some(number("duration_us") as f64 / 1e6).filter(|s| *s > 0.0),
    }
}

/// Applies Homestead's migrations for `engine` (`postgres` or `sqlite`), in order, through `apply`.
fn migrations(engine: &str, mut apply: impl FnMut(&Path, String)) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(engine);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no migrations in {}", dir.display());
    for file in files {
        let sql = std::fs::read_to_string(&file).unwrap();
        apply(&file, sql);
    }
}

fn psql(url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAt"])
        .args(args)
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The users `bench0..bench<users>`, each with the session whose secret hash is its number's 8 bytes.
fn bench_users_sql(users: usize) -> String {
    format!(
        "INSERT INTO users (public_key, created_at) SELECT 'bench' || i, 0 FROM generate_series(0, {last}) AS s(i);\n\
         INSERT INTO sessions (secret_hash, user_id, capabilities, created_at) \
         SELECT int8send(i::bigint), (SELECT id FROM users WHERE public_key = 'bench' || i), '/:rw', 0 \
         FROM generate_series(0, {last}) AS s(i);",
        last = users - 1
    )
}

/// A database for `pg-commit`: fresh, migrated by Homestead's migrations, with the bench users.
fn prepare_pg_commit(users: usize) -> Target {
    let database = TestDatabase::create();
    migrations("postgres", |file, _| {
        psql(&database.url(), &["-1", "-f", &file.to_string_lossy()]);
    });
    psql(&database.url(), &["-c", &bench_users_sql(users)]);
    Target::PgCommit {
        database,
        scratch: tempfile::tempdir().unwrap(),
    }
}

/// A cell of `pg-commit`: `pgbench` with `benches/ceilings/put_1k.pgbench.sql`, `concurrency` clients
/// (at most the connections the server has free).
async fn by_pgbench(
    (database, scratch): (&TestDatabase, &Path),
    concurrency: usize,
    seconds: f64,
    batch: usize,
) -> Driven {
    let url = database.url();
    let free: usize = psql(
        &url,
        &[
            "-c",
            "SELECT current_setting('max_connections')::int - \
                 current_setting('superuser_reserved_connections')::int - count(*) - 2 \
                 FROM pg_stat_activity",
        ],
    )
    .parse()
    .unwrap_or(1);
    let clients = concurrency.min(free.max(1));
    let script = pgbench_script(scratch, batch);
    let pgbench = setting("PGBENCH", "/usr/lib/postgresql/15/bin/pgbench");
    let output = tokio::process::Command::new(&pgbench)
        .args(["-n", "-M", "prepared", "-f"])
        .arg(&script)
        .arg(format!("--client={clients}"))
        .arg(format!("--jobs={}", clients.min(2)))
        .arg(format!("--time={}", seconds.ceil().max(1.0)))
        .arg(&url)
        .output()
        .await
        .unwrap_or_else(|err| panic!("run {pgbench}: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
    };
    let (Some(processed), true) = (
        field("number of transactions actually processed: "),
        output.status.success(),
    ) else {
        panic!(
            "{pgbench} failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    };
    // pgbench's rate is over its run without connecting, as wrk's is.
    let tps = field("tps = ").filter(|t| *t > 0.0);
    let failed = field("number of failed transactions: ").unwrap_or(0.0);
    let writes = processed as u64 * batch as u64;
    Driven {
        client: batched("pgbench", batch),
        clients,
        ops: writes,
        bytes: writes * KIB as u64,
        errors: failed as u64,
        latency_ms: None,
        seconds: tps.map(|tps| processed / tps),
    }
}

/// The committed pgbench script; with `batch` over 1, a script made from it in `scratch` that runs
/// `batch` writes in each transaction (the session reads first, then the lock once, then the locked read
/// and the write for each), all of the client's own user.
fn pgbench_script(scratch: &Path, batch: usize) -> PathBuf {
    let committed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ceilings/put_1k.pgbench.sql");
    if batch <= 1 {
        return committed;
    }
    let text = std::fs::read_to_string(&committed).unwrap();
    let statements: Vec<&str> = text.lines().filter(|l| !l.starts_with("--")).collect();
    let find = |prefix: &str| {
        *statements
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{}: no line starting {prefix}", committed.display()))
    };
    let (slot, session, lock) = (
        find("\\set slot"),
        find("SELECT s."),
        find("SELECT pg_advisory"),
    );
    let (read, write) = (find("SELECT u.id"), find("WITH entry"));
    let mut script = format!("{session}\n").repeat(batch);
    script.push_str(&format!("BEGIN;\n{lock}\n"));
    script.push_str(&format!("{slot}\n{read}\n{write}\n").repeat(batch));
    script.push_str("END;\n");
    let path = scratch.join(format!("put_1k-batch{batch}.pgbench.sql"));
    std::fs::write(&path, script).unwrap();
    path
}

/// A client's name with the writes per transaction, when more than one.
fn batched(client: &str, batch: usize) -> String {
    if batch > 1 {
        format!("{client}, {batch} per tx")
    } else {
        client.to_string()
    }
}

/// SQLite as Homestead opens it: WAL, `synchronous = FULL`, foreign keys on, a 10 s busy timeout.
fn open_sqlite(file: &Path, read_only: bool) -> rusqlite::Connection {
    use rusqlite::OpenFlags;
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    };
    let connection = rusqlite::Connection::open_with_flags(file, flags).unwrap();
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .unwrap();
    connection.busy_timeout(Duration::from_secs(10)).unwrap();
    connection
}

/// A SQLite file for `sqlite-commit`: migrated by Homestead's migrations, with the bench users.
fn prepare_sqlite_commit(users: usize) -> Target {
    let dir = tempfile::Builder::new()
        .prefix("homestead-sqlite-ceiling-")
        .tempdir()
        .unwrap();
    let connection = open_sqlite(&dir.path().join("homestead.db"), false);
    migrations("sqlite", |file, sql| {
        connection
            .execute_batch(&format!("BEGIN;\n{sql}\nCOMMIT;"))
            .unwrap_or_else(|err| panic!("{}: {err}", file.display()));
    });
    let insert_user = "INSERT INTO users (public_key, created_at) VALUES (?1, 0)";
    let insert_session = "INSERT INTO sessions (secret_hash, user_id, capabilities, created_at) \
                          SELECT ?1, id, '/:rw', 0 FROM users WHERE public_key = ?2";
    for n in 0..users as i64 {
        let key = format!("bench{n}");
        connection.execute(insert_user, [&key]).unwrap();
        connection
            .execute(
                insert_session,
                rusqlite::params![n.to_be_bytes().to_vec(), key],
            )
            .unwrap();
    }
    Target::SqliteCommit { dir }
}

/// One small PUT's statements in Homestead's SQLite engine (backends/src/metadata: the session read on
/// a read connection, then on the single writer connection `BEGIN`, READ_FOR_PUT, the entry upsert,
/// SET_USED_BYTES, INSERT_EVENT, `COMMIT`), one transaction for the writes of `slots` (one per
/// `LOAD_COMMIT_BATCH`).
fn sqlite_put(
    reader: &std::sync::Mutex<rusqlite::Connection>,
    writer: &std::sync::Mutex<rusqlite::Connection>,
    user: i64,
    slots: &[u64],
) -> rusqlite::Result<()> {
    const SESSION: &str = "SELECT s.capabilities, s.created_at, u.public_key, u.disabled, u.used_bytes, \
         u.quota_bytes, u.created_at, u.limits FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.secret_hash = ?1";
    const READ_FOR_PUT: &str = "SELECT u.id, u.used_bytes, u.quota_bytes, e.content_length, e.blob_key, \
         e.content_hash, e.modified_at FROM users u LEFT JOIN entries e ON e.user_id = u.id AND e.path = ?2 \
         WHERE u.public_key = ?1";
    const UPSERT: &str = "INSERT INTO entries (user_id, path, content_hash, content_length, content_type, \
         blob_key, created_at, modified_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) \
         ON CONFLICT (user_id, path) DO UPDATE SET content_hash = excluded.content_hash, \
         content_length = excluded.content_length, content_type = excluded.content_type, \
         blob_key = excluded.blob_key, modified_at = excluded.modified_at";
    const SET_USED: &str = "UPDATE users SET used_bytes = ?1 WHERE id = ?2";
    const EVENT: &str = "INSERT INTO events (op, user_id, path, content_hash, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id";
    let key = format!("bench{user}");
    for _ in slots {
        reader
            .lock()
            .unwrap()
            .prepare_cached(SESSION)?
            .query_row([user.to_be_bytes().to_vec()], |_| Ok(()))?;
    }
    let mut writer = writer.lock().unwrap();
    let tx = writer.transaction()?;
    for slot in slots {
        let path = format!("/pub/load/{slot}");
        let hash = blake3::hash(&slot.to_be_bytes());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        let (id, used, old): (i64, i64, Option<i64>) = tx
            .prepare_cached(READ_FOR_PUT)?
            .query_row(rusqlite::params![key, path], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(3)?))
            })?;
        let used = used + 1024 + 256 - old.map_or(0, |l| l + 256);
        let blob_key = format!("{key}/{:032x}", rand_u128());
        tx.prepare_cached(UPSERT)?.execute(rusqlite::params![
            id,
            path,
            hash.as_bytes().to_vec(),
            1024,
            "application/octet-stream",
            blob_key,
            now
        ])?;
        tx.prepare_cached(SET_USED)?
            .execute(rusqlite::params![used, id])?;
        tx.prepare_cached(EVENT)?.query_row(
            rusqlite::params!["PUT", id, path, hash.as_bytes().to_vec(), now],
            |row| row.get::<_, i64>(0),
        )?;
    }
    tx.commit()
}

/// Readers of the SQLite ceiling, as Homestead's read pool holds at most.
const SQLITE_READERS: usize = 8;

/// A cell of `sqlite-commit`: `concurrency` threads, each its own user, every write one transaction on
/// the one writer connection (as Homestead's writes queue for its one writer), session reads on up to
/// eight read connections.
async fn sqlite_commits(dir: &Path, concurrency: usize, seconds: f64, batch: usize) -> Driven {
    let file = dir.join("homestead.db");
    tokio::task::spawn_blocking(move || {
        let writer = std::sync::Mutex::new(open_sqlite(&file, false));
        let readers: Vec<std::sync::Mutex<rusqlite::Connection>> = (0..concurrency
            .min(SQLITE_READERS))
            .map(|_| std::sync::Mutex::new(open_sqlite(&file, true)))
            .collect();
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let errors = AtomicU64::new(0);
        let mut latencies = Vec::new();
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..concurrency)
                .map(|worker| {
                    let (writer, readers, errors) = (&writer, &readers, &errors);
                    scope.spawn(move || {
                        let mut latencies = Vec::new();
                        let mut round = worker as u64 * 7919;
                        while Instant::now() < deadline {
                            let at = Instant::now();
                            let reader = &readers[worker % readers.len()];
                            let slots: Vec<u64> =
                                (0..batch as u64).map(|k| (round + k) % WRITTEN).collect();
                            match sqlite_put(reader, writer, worker as i64, &slots) {
                                // Every write of the transaction waited for its commit.
                                Ok(()) => latencies.extend([at.elapsed()].repeat(batch)),
                                Err(err) => {
                                    if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                        eprintln!("  first error: {err}");
                                    }
                                }
                            }
                            round += batch as u64;
                        }
                        latencies
                    })
                })
                .collect();
            for worker in workers {
                latencies.extend(worker.join().unwrap());
            }
        });
        Driven {
            client: batched("rusqlite", batch),
            clients: concurrency,
            ops: latencies.len() as u64,
            bytes: latencies.len() as u64 * KIB as u64,
            errors: errors.load(Ordering::Relaxed),
            latency_ms: Some(percentiles(&mut latencies)),
            seconds: None,
        }
    })
    .await
    .unwrap()
}

/// Runs one cell with the chosen client, sampling the server's RSS every 20 ms and its CPU time.
async fn run_cell(
    target: Arc<Target>,
    workload: Workload,
    concurrency: usize,
    seconds: f64,
    (wrk, batch): (bool, usize),
) -> Cell {
    let stop = Arc::new(AtomicBool::new(false));
    let pid = target.pid();
    let start_rss = pid.map_or(0.0, rss_mib);
    let peak = Arc::new(std::sync::Mutex::new(start_rss));
    let sampler = pid.map(|pid| {
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
    let server_cpu = pid.map(machine::process_cpu_seconds);
    let machine_cpu = machine::machine_busy_seconds();
    let started = Instant::now();
    let driven = match target.as_ref() {
        Target::PgCommit { database, scratch } => {
            by_pgbench((database, scratch.path()), concurrency, seconds, batch).await
        }
        Target::SqliteCommit { dir } => {
            sqlite_commits(dir.path(), concurrency, seconds, batch).await
        }
        Target::Server(_) | Target::Hyper { .. } if wrk && workload.by_wrk() => {
            by_wrk(&target, workload, concurrency, seconds).await
        }
        _ => builtin(target.clone(), workload, concurrency, seconds).await,
    };
    let elapsed = started.elapsed().as_secs_f64();
    // Over the time the client measured: the server idles while a client process starts.
    let measured = driven.seconds.unwrap_or(elapsed);
    let server_cpu = pid
        .zip(server_cpu)
        .map(|(pid, before)| (machine::process_cpu_seconds(pid) - before) / measured);
    let machine_cpu = (machine::machine_busy_seconds() - machine_cpu) / elapsed;
    stop.store(true, Ordering::Relaxed);
    if let Some(sampler) = sampler {
        sampler.await.unwrap();
    }
    let peak = *peak.lock().unwrap();
    Cell {
        target: target.name(),
        workload: workload.name(),
        concurrency,
        seconds: driven.seconds.unwrap_or(elapsed),
        driven,
        rss_mib: [start_rss, peak, pid.map_or(0.0, rss_mib)],
        server_cpu,
        machine_cpu,
    }
}

#[tokio::main]
async fn main() {
    if std::env::var_os("LOAD_HYPER_SERVER").is_some() {
        return tokio::task::block_in_place(hyper_ceiling);
    }
    let environment = Environment::read();
    println!("{}", environment.describe());
    let limits = Limits::from_env(environment.cores);
    let mut busy = match limits.before(environment.load_before[0]) {
        Verdict::Busy(why) if !limits.allow_busy => {
            eprintln!(
                "refusing to run: {why}; LOAD_ALLOW_BUSY=1 runs anyway without writing results"
            );
            std::process::exit(2);
        }
        Verdict::Busy(why) => Some(why),
        Verdict::Quiet => None,
    };

    let names = setting(
        "LOAD_TARGETS",
        "sqlite-fs,postgres-fs,postgres-s3,hyper,disk,pg-commit,sqlite-commit",
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
    let wrk = match setting("LOAD_CLIENT", "builtin").as_str() {
        "wrk" => true,
        "builtin" => false,
        other => panic!("LOAD_CLIENT: builtin or wrk, not {other}"),
    };
    let batch: usize = setting("LOAD_COMMIT_BATCH", "1")
        .parse()
        .expect("LOAD_COMMIT_BATCH: a number");
    let users = levels.iter().copied().max().unwrap_or(1);

    let net = TestNet::new();
    // One Garage cluster for every garage-nginx-N target, started with the first of them.
    let mut garage: Option<GarageCluster> = None;
    let mut targets = Vec::new();
    for name in names.split(',').map(str::trim) {
        // `before:<target>`: the same target on the build at `LOAD_BEFORE_BIN`.
        let (before, plain) = match name.strip_prefix("before:") {
            Some(plain) => (
                Some(std::path::PathBuf::from(
                    std::env::var("LOAD_BEFORE_BIN")
                        .expect("LOAD_BEFORE_BIN: the earlier homestead binary of before: targets"),
                )),
                plain,
            ),
            None => (None, name),
        };
        let target = match plain {
            "sqlite-fs" | "postgres-fs" | "postgres-s3" | "sqlite-fs+limit"
            | "postgres-fs+limit" | "postgres-s3+limit" => {
                let (pair, limited) = match plain.strip_suffix("+limit") {
                    Some(pair) => (pair, true),
                    None => (plain, false),
                };
                let (metadata, blobs) = match pair {
                    "sqlite-fs" => (Metadata::Sqlite, Blobs::Fs),
                    "postgres-fs" => (Metadata::Postgres, Blobs::Fs),
                    _ => (Metadata::Postgres, Blobs::S3),
                };
                let process = homestead(&net, (metadata, blobs), limited, before).await;
                Target::Server(Box::new(prepare(name, process, users).await))
            }
            "reference" => {
                let binary = std::env::var("REFERENCE_BIN")
                    .expect("REFERENCE_BIN: the pubky-homeserver 0.9.3 binary");
                let relays = Relays::start(&net).await;
                let options = ReferenceOptions {
                    pkarr_relay: Some(relays.pkarr_url()),
                    ..ReferenceOptions::default()
                };
                let reference = Reference::start(&binary, net.bootstrap(), options).await;
                let process = Process::Reference {
                    process: reference,
                    _relays: Box::new(relays),
                };
                Target::Server(Box::new(prepare(name, process, users).await))
            }
            "garage-nginx-1" | "garage-nginx-2" | "garage-nginx-3" => {
                let count = name[name.len() - 1..].parse().unwrap();
                if garage.is_none() {
                    garage = Some(GarageCluster::start().await);
                }
                let cluster = Cluster::start(&net, garage.as_ref().unwrap(), count).await;
                Target::Server(Box::new(
                    prepare(name, Process::Cluster(cluster), users).await,
                ))
            }
            "hyper" => start_hyper().await,
            "disk" => Target::Disk {
                dir: tempfile::Builder::new()
                    .prefix("homestead-disk-ceiling-")
                    .tempdir()
                    .unwrap(),
            },
            "pg-commit" => prepare_pg_commit(users),
            "sqlite-commit" => prepare_sqlite_commit(users),
            other => panic!("unknown target {other}"),
        };
        eprintln!("target {name} ready");
        targets.push(Arc::new(target));
    }

    let outside = OutsideCpu::start(&limits.helpers);
    let mut table = String::new();
    writeln!(
        table,
        "| workload | conc. | target | client | ops/s | MB/s | p50 ms | p99 ms | max ms | errors | RSS MiB start / peak / end | server CPU | machine CPU |"
    )
    .unwrap();
    writeln!(
        table,
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
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
                let cell =
                    run_cell(target.clone(), workload, concurrency, seconds, (wrk, batch)).await;
                eprintln!("{}", cell.json());
                writeln!(table, "{}", cell.row()).unwrap();
                cells.push(cell);
            }
        }
    }
    let share = outside.share();
    let load_after = machine::load_average();
    println!("{table}");
    println!("{}", ratios(&cells));
    println!(
        "load average after: {:.2} {:.2} {:.2}; processes outside the bench used {:.1} % of all cores",
        load_after[0],
        load_after[1],
        load_after[2],
        share * 100.0
    );
    if let Verdict::Busy(why) = limits.after(share) {
        busy = Some(busy.map_or(why.clone(), |before| format!("{before}; {why}")));
    }
    if let Some(why) = busy {
        println!("BUSY: these figures are not comparable and were not written");
        if limits.allow_busy {
            eprintln!("not writing results: {why}");
            return;
        }
        eprintln!("refusing to write results: {why}");
        std::process::exit(3);
    }
    let mut json = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&json_path)
        .expect("open the JSON lines file");
    let mut lines = environment.json(load_after, share) + "\n";
    for cell in &cells {
        lines.push_str(&cell.json());
        lines.push('\n');
    }
    json.write_all(lines.as_bytes())
        .expect("write the JSON lines");
    println!("results appended to {json_path}");
}

/// Homestead's throughput over the reference's, over the same target on the earlier build (`before:`)
/// and over the machine's ceiling, per cell where the other side ran (ops/s; MB/s against the disk).
fn ratios(cells: &[Cell]) -> String {
    let mut out = String::from(
        "| workload | conc. | target | / reference | / before | / ceiling | ceiling |\n|---|---:|---|---:|---:|---:|---|\n",
    );
    let find = |cell: &Cell, target: &str| {
        cells.iter().find(|c| {
            c.workload == cell.workload && c.concurrency == cell.concurrency && c.target == target
        })
    };
    let workload = |name: &str| Workload::ALL.into_iter().find(|w| w.name() == name);
    for cell in cells.iter().filter(|c| {
        c.target != "reference"
            && !c.target.starts_with("before:")
            && !CEILINGS.contains(&c.target.as_str())
    }) {
        let reference = find(cell, "reference").map(|r| cell.ops_per_sec() / r.ops_per_sec());
        let before = find(cell, &format!("before:{}", cell.target))
            .map(|b| cell.ops_per_sec() / b.ops_per_sec());
        let ceiling = workload(cell.workload)
            .and_then(|w| ceiling_of(w, &cell.target))
            .and_then(|name| find(cell, name).map(|c| (name, c)));
        let ratio = ceiling.map(|(_, c)| cell.ops_per_sec() / c.ops_per_sec());
        let show = |r: Option<f64>| r.map_or("–".to_string(), |r| format!("{r:.2}"));
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            cell.workload,
            cell.concurrency,
            cell.target,
            show(reference),
            show(before),
            show(ratio),
            ceiling.map_or("–", |(name, _)| name)
        )
        .unwrap();
    }
    out
}

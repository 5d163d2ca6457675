//! Server memory in the states the issue names, for Homestead (sqlite-fs, postgres-fs) and the
//! reference homeserver: `VmRSS` and `VmHWM` (the peak so far) of the server process
//!
//! 1. at idle, a few seconds after start-up, one user signed up and one file written;
//! 2. with 10,000 idle keep-alive connections open, each having had one small GET answered;
//! 3. with 1,000 live event streams open (`/events-stream?user=<z32>&live=true`), each on its own
//!    connection.
//!
//! Each state on a fresh server (so that memory one state leaves behind does not count in the next),
//! whose idle RSS is printed beside it.
//!
//! ```sh
//! cargo build --release --bin homestead   # in the root workspace
//! TEST_HOMESTEAD_BIN=$CARGO_TARGET_DIR/release/homestead REFERENCE_BIN=~/.cache/homestead/reference/bin/pubky-homeserver \
//!   cargo bench --bench memory
//! ```
//!
//! `MEMORY_TARGETS` (default `sqlite-fs,postgres-fs,reference`; `reference` needs `REFERENCE_BIN`),
//! `MEMORY_CONNECTIONS` (default 10000), `MEMORY_STREAMS` (default 1000). The servers inherit the
//! bench's open-file limit, or run under `MEMORY_SERVER_OPEN_FILES` (through `prlimit`, which needs the
//! right to raise a hard limit); the bench prints the limit each server ran under. Homestead raises its
//! soft limit to the hard one and caps the connections of each client listener to what that leaves
//! room for (`src/fd_limit.rs`: two descriptors a connection, 384 kept aside; under 20,000 that is
//! 4,904), at most `drive.max_connections` (default 10,000); connections over the cap are closed on
//! arrival. Homestead allows 100 streams per client address by default; here
//! `drive.max_event_streams_per_ip` is raised to the stream count, since every stream comes from
//! 127.0.0.1. The bench raises its own open-file limit to its hard limit. Connections or streams the
//! server refuses or closes are counted and reported, not retried. The RSS after the 256-connection
//! 1 MiB PUT cells is in the load bench's table (`RSS MiB start / peak / end`).

use std::time::Duration;

use futures_util::StreamExt;
use homestead_integration_tests::machine::Environment;
use homestead_integration_tests::{
    Account, Metadata, Reference, ReferenceOptions, Relays, TestNet, TestServer, memory_kib,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections opened at once while building up a phase.
const OPENING_AT_ONCE: usize = 64;

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Raises this process's soft open-file limit to its hard limit; returns the limit now in force.
fn raise_open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read or write the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

enum Server {
    Homestead(Box<TestServer>),
    /// With the PKARR relay on loopback that its config names.
    Reference {
        process: Reference,
        _relays: Box<Relays>,
    },
}

impl Server {
    fn url(&self) -> String {
        match self {
            Server::Homestead(s) => s.icann_url(),
            Server::Reference { process: r, .. } => r.url().to_string(),
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Server::Homestead(s) => s.pid(),
            Server::Reference { process: r, .. } => r.pid(),
        }
    }
}

/// The `Max open files` line of a process's limits (soft and hard).
fn open_file_limit(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .map_or("unknown".into(), |rest| {
            rest.split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" / ")
        })
}

/// `VmRSS` and `VmHWM` in MiB.
fn memory(pid: u32) -> (f64, f64) {
    (
        memory_kib(pid, "VmRSS:") / 1024.0,
        memory_kib(pid, "VmHWM:") / 1024.0,
    )
}

/// Sends `request` on a fresh connection and reads the response head; the connection when the status
/// is 200. For a GET the body (`Content-Length`) is read too, leaving the connection idle.
async fn open(addr: &str, request: String, read_body: bool) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1024];
    let end = loop {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut byte))
            .await
            .map_err(|_| "no answer in 30 s".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed by the server".into());
        }
        head.extend_from_slice(&byte[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    let status = text.split_whitespace().nth(1).unwrap_or("").to_string();
    if status != "200" {
        return Err(format!("status {status}"));
    }
    if read_body {
        let length: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut have = head.len() - end;
        while have < length {
            let n = stream.read(&mut byte).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed in the body".into());
            }
            have += n;
        }
    }
    Ok(stream)
}

/// Opens `count` connections with `request`; returns the open ones and a summary of the failures.
async fn open_many(
    addr: &str,
    count: usize,
    request: String,
    read_body: bool,
) -> (Vec<TcpStream>, String) {
    let results: Vec<Result<TcpStream, String>> = futures_util::stream::iter(0..count)
        .map(|_| open(addr, request.clone(), read_body))
        .buffer_unordered(OPENING_AT_ONCE)
        .collect()
        .await;
    let mut open = Vec::new();
    let mut failures: std::collections::BTreeMap<String, usize> = Default::default();
    for result in results {
        match result {
            Ok(stream) => open.push(stream),
            Err(why) => *failures.entry(why).or_default() += 1,
        }
    }
    let failures = failures
        .iter()
        .map(|(why, n)| format!("{n} × {why}"))
        .collect::<Vec<_>>()
        .join(", ");
    (open, failures)
}

/// How many of `streams` the server has not closed (what they have sent meanwhile is read and dropped).
fn still_open(streams: &[TcpStream]) -> usize {
    streams
        .iter()
        .filter(|stream| {
            let mut buffer = [0u8; 4096];
            loop {
                match stream.try_read(&mut buffer) {
                    Ok(0) => return false,
                    Ok(_) => continue,
                    Err(err) => return err.kind() == std::io::ErrorKind::WouldBlock,
                }
            }
        })
        .count()
}

/// Lets the server settle before a sample.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// Starts a fresh server of target `name`; `None` when it cannot run here (the reason printed).
async fn start(
    net: &TestNet,
    name: &str,
    streams: usize,
    open_files: Option<u64>,
) -> Option<Server> {
    let metadata = match name {
        "sqlite-fs" => Metadata::Sqlite,
        "postgres-fs" => Metadata::Postgres,
        "reference" => {
            let Ok(binary) = std::env::var("REFERENCE_BIN") else {
                println!("reference: skipped, REFERENCE_BIN is not set");
                return None;
            };
            let relays = Relays::start(net).await;
            let options = ReferenceOptions {
                open_files,
                pkarr_relay: Some(relays.pkarr_url()),
                ..ReferenceOptions::default()
            };
            let reference = Reference::start(&binary, net.bootstrap(), options).await;
            return Some(Server::Reference {
                process: reference,
                _relays: Box::new(relays),
            });
        }
        other => panic!("unknown target {other}"),
    };
    let mut builder = net
        .server()
        .metadata(metadata)
        .drive_config(&format!("max_event_streams_per_ip = {}", streams.max(1)));
    if let Some(limit) = open_files {
        builder = builder.open_files(limit);
    }
    Some(Server::Homestead(Box::new(builder.start().await)))
}

/// A state a fresh server is measured in.
#[derive(Clone, Copy, PartialEq)]
enum State {
    Idle,
    Connections,
    Streams,
}

#[tokio::main]
async fn main() {
    println!("{}", Environment::read().describe());
    let own_limit = raise_open_files();
    let connections: usize = setting("MEMORY_CONNECTIONS", "10000")
        .parse()
        .expect("MEMORY_CONNECTIONS");
    let streams: usize = setting("MEMORY_STREAMS", "1000")
        .parse()
        .expect("MEMORY_STREAMS");
    let open_files = std::env::var("MEMORY_SERVER_OPEN_FILES")
        .ok()
        .map(|v| v.parse::<u64>().expect("MEMORY_SERVER_OPEN_FILES"));
    println!(
        "open-file limit of the bench: {own_limit}; {connections} idle connections, {streams} live streams, \
         a fresh server for each state"
    );
    let net = TestNet::new();
    let mut table = String::from(
        "| target | state | VmRSS MiB | VmHWM MiB | idle RSS of that server | what happened |\n\
         |---|---|---:|---:|---:|---|\n",
    );
    for name in setting("MEMORY_TARGETS", "sqlite-fs,postgres-fs,reference").split(',') {
        let name = name.trim();
        for state in [State::Idle, State::Connections, State::Streams] {
            let Some(server) = start(&net, name, streams, open_files).await else {
                break;
            };
            let pid = server.pid();
            let url = server.url();
            let addr = url.trim_start_matches("http://").to_string();
            let user = Account::signup_at(&url).await;
            let status = reqwest::Client::new()
                .put(format!("{url}/pub/memory/1k"))
                .header("pubky-host", &user.z32)
                .header("cookie", &user.cookie)
                .body(vec![b'k'; 1024])
                .send()
                .await
                .expect("PUT")
                .status();
            assert_eq!(status, 201, "{name}: PUT");
            settle().await;
            let (idle_rss, _) = memory(pid);
            let (label, held, note) = match state {
                State::Idle => (
                    "idle".to_string(),
                    Vec::new(),
                    format!(
                        "one user, one file; open-file limit {}",
                        open_file_limit(pid)
                    ),
                ),
                State::Connections => {
                    let get = format!(
                        "GET /pub/memory/1k HTTP/1.1\r\nHost: {addr}\r\npubky-host: {}\r\n\r\n",
                        user.z32
                    );
                    let (idle, failures) = open_many(&addr, connections, get, true).await;
                    settle().await;
                    let note = format!(
                        "{} of {connections} answered and kept, {} still open at the sample{}",
                        idle.len(),
                        still_open(&idle),
                        failed(&failures)
                    );
                    (
                        format!("{connections} idle keep-alive connections"),
                        idle,
                        note,
                    )
                }
                State::Streams => {
                    let stream = format!(
                        "GET /events-stream?user={}&live=true HTTP/1.1\r\nHost: {addr}\r\n\r\n",
                        user.z32
                    );
                    let (live, failures) = open_many(&addr, streams, stream, false).await;
                    settle().await;
                    let note = format!(
                        "{} of {streams} streams opened, {} still open at the sample{}",
                        live.len(),
                        still_open(&live),
                        failed(&failures)
                    );
                    (format!("{streams} live event streams"), live, note)
                }
            };
            let (rss, hwm) = memory(pid);
            println!("{name}: {label}: VmRSS {rss:.1} MiB, VmHWM {hwm:.1} MiB; {note}");
            table.push_str(&format!(
                "| {name} | {label} | {rss:.1} | {hwm:.1} | {idle_rss:.1} | {note} |\n"
            ));
            drop(held);
            drop(server);
        }
    }
    println!("{table}");
}

/// The failures of [`open_many`] for a note.
fn failed(failures: &str) -> String {
    if failures.is_empty() {
        String::new()
    } else {
        format!("; failed: {failures}")
    }
}

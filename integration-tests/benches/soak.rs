//! A bounded mixed soak: Homestead under a steady mix of work for `SOAK_SECONDS` (default 600) per
//! target, its RSS sampled every `SOAK_SAMPLE_SECONDS` (default 5) after a warm-up (a sixth of that, at
//! most 10 s, not counted), to show whether memory grows. It ends by itself.
//!
//! ```sh
//! cargo build --release --bin homestead   # in the root workspace
//! TEST_HOMESTEAD_BIN=$CARGO_TARGET_DIR/release/homestead cargo bench --bench soak
//! ```
//!
//! `SOAK_TARGETS` (default `sqlite-fs,postgres-fs`, one after the other), `SOAK_WORKERS` (default 16)
//! workers, each its own user, and `SOAK_STREAMS` (default 50) live event streams following the first
//! worker, held open for the whole soak (reopened if the server ends one). Each worker cycles through
//! twenty operations: 8 PUTs of 1 KiB and 1 of 1 MiB (overwriting 500 paths of its own), 6 GETs of
//! 1 KiB and 1 of 1 MiB (files written before the soak), 2 listings of 100 entries, 1 page of 100
//! events, and 1 live stream opened, read until its head arrives, and closed. The report: RSS over the
//! first and the last window (a minute, or a third of the soak if shorter), mean and max, and the growth
//! between their means; operations and errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use homestead_integration_tests::machine::Environment;
use homestead_integration_tests::{Account, Metadata, TestNet, memory_kib};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// Paths each worker overwrites.
const OWN_PATHS: u64 = 500;
/// Files of each size the GETs read.
const READ_SET: u64 = 16;

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn number(name: &str, default: &str) -> u64 {
    setting(name, default)
        .parse()
        .unwrap_or_else(|_| panic!("{name}: a number"))
}

/// What the workers share.
struct Work {
    base: String,
    client: reqwest::Client,
    writers: Vec<Account>,
    reader: Account,
    stop: AtomicBool,
    ops: AtomicU64,
    errors: AtomicU64,
}

impl Work {
    fn failed(&self, what: &str) {
        if self.errors.fetch_add(1, Ordering::Relaxed) == 0 {
            eprintln!("  first error: {what}");
        }
    }

    /// Operation `round` of worker `worker`; returns whether it got the status it expects.
    async fn operation(&self, worker: usize, round: u64) -> Result<(), String> {
        let me = &self.writers[worker];
        let put = |size: usize| {
            self.client
                .put(format!("{}/pub/soak/{}", self.base, round % OWN_PATHS))
                .header("pubky-host", &me.z32)
                .header("cookie", &me.cookie)
                .body(vec![b's'; size])
        };
        let get = |path: String, host: &str| {
            self.client
                .get(format!("{}{path}", self.base))
                .header("pubky-host", host.to_string())
        };
        let reader = self.reader.z32.as_str();
        let (request, want) = match round % 20 {
            0..=7 => (put(KIB), 201),
            8 => (put(MIB), 201),
            9..=14 => (
                get(format!("/pub/read/1k/{}", round % READ_SET), reader),
                200,
            ),
            15 => (
                get(format!("/pub/read/1m/{}", round % READ_SET), reader),
                200,
            ),
            16 | 17 => (get("/pub/soak/?limit=100".into(), &me.z32), 200),
            18 => (
                get(
                    format!("/events/?cursor={}&limit=100", round % 1000),
                    reader,
                ),
                200,
            ),
            _ => (
                get(format!("/events-stream?user={}&live=true", me.z32), reader),
                200,
            ),
        };
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        if status != want {
            return Err(format!("status {status} (round {round})"));
        }
        if round % 20 != 19 {
            response.bytes().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Keeps one live stream open on `user` until the soak stops; returns how often it was reopened.
async fn hold_stream(work: Arc<Work>, user: String) -> u64 {
    use futures_util::StreamExt;
    let mut reopened = 0;
    let url = format!("{}/events-stream?user={user}&live=true", work.base);
    while !work.stop.load(Ordering::Relaxed) {
        let response = match reqwest::Client::new().get(&url).send().await {
            Ok(r) if r.status() == 200 => r,
            other => {
                work.failed(&format!("open a held stream: {other:?}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut body = response.bytes_stream();
        while !work.stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_millis(500), body.next()).await {
                Ok(Some(Ok(_))) | Err(_) => {}
                Ok(_) => break,
            }
        }
        if !work.stop.load(Ordering::Relaxed) {
            reopened += 1;
        }
    }
    reopened
}

/// The work before the first sample (not counted in the soak's time): until the server's caches, pools
/// and allocator have seen every kind of operation once.
fn warmup(seconds: f64) -> f64 {
    (seconds / 6.0).min(10.0)
}

/// Mean and max of a window of samples.
fn window(samples: &[(f64, f64)], from: f64, until: f64) -> (f64, f64) {
    let inside: Vec<f64> = samples
        .iter()
        .filter(|(at, _)| *at >= from && *at <= until)
        .map(|(_, rss)| *rss)
        .collect();
    let mean = inside.iter().sum::<f64>() / inside.len().max(1) as f64;
    (mean, inside.iter().copied().fold(0.0, f64::max))
}

/// Soaks a fresh server of target `name`; returns its table row.
async fn soak(net: &TestNet, name: &str, seconds: f64, workers: usize, streams: usize) -> String {
    let metadata = match name {
        "sqlite-fs" => Metadata::Sqlite,
        "postgres-fs" => Metadata::Postgres,
        other => panic!("unknown target {other}"),
    };
    let server = net
        .server()
        .metadata(metadata)
        .drive_config(&format!(
            "max_event_streams_per_ip = {}",
            streams + workers + 10
        ))
        .start()
        .await;
    let base = server.icann_url();
    let mut writers = Vec::new();
    for _ in 0..workers.max(1) {
        writers.push(Account::signup_at(&base).await);
    }
    let reader = Account::signup_at(&base).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    // A file in every writer's directory, so that its listings never find it empty.
    for writer in &writers {
        let status = client
            .put(format!("{base}/pub/soak/0"))
            .header("pubky-host", &writer.z32)
            .header("cookie", &writer.cookie)
            .body(vec![b's'; KIB])
            .send()
            .await
            .expect("PUT")
            .status();
        assert_eq!(status, 201);
    }
    for i in 0..READ_SET {
        for (size, dir) in [(KIB, "1k"), (MIB, "1m")] {
            let status = client
                .put(format!("{base}/pub/read/{dir}/{i}"))
                .header("pubky-host", &reader.z32)
                .header("cookie", &reader.cookie)
                .body(vec![b'r'; size])
                .send()
                .await
                .expect("PUT")
                .status();
            assert_eq!(status, 201);
        }
    }
    let work = Arc::new(Work {
        base,
        client,
        writers,
        reader,
        stop: AtomicBool::new(false),
        ops: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let followed = work.writers[0].z32.clone();
    let held: Vec<_> = (0..streams)
        .map(|_| tokio::spawn(hold_stream(work.clone(), followed.clone())))
        .collect();
    let running: Vec<_> = (0..workers)
        .map(|worker| {
            let work = work.clone();
            tokio::spawn(async move {
                let mut round = worker as u64 * 7;
                while !work.stop.load(Ordering::Relaxed) {
                    match work.operation(worker, round).await {
                        Ok(()) => work.ops.fetch_add(1, Ordering::Relaxed),
                        Err(why) => {
                            work.failed(&why);
                            0
                        }
                    };
                    round += 1;
                }
            })
        })
        .collect();
    let pid = server.pid();
    let every = Duration::from_secs(number("SOAK_SAMPLE_SECONDS", "5").max(1));
    tokio::time::sleep(Duration::from_secs_f64(warmup(seconds))).await;
    let warm_ops = work.ops.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval(every);
    while started.elapsed().as_secs_f64() < seconds {
        ticks.tick().await;
        let rss = memory_kib(pid, "VmRSS:") / 1024.0;
        samples.push((started.elapsed().as_secs_f64(), rss));
        println!(
            "  {name} {:>5.0} s: RSS {rss:.1} MiB, {} ops, {} errors",
            started.elapsed().as_secs_f64(),
            work.ops.load(Ordering::Relaxed),
            work.errors.load(Ordering::Relaxed)
        );
    }
    work.stop.store(true, Ordering::Relaxed);
    for worker in running {
        worker.await.unwrap();
    }
    let mut reopened = 0;
    for stream in held {
        reopened += stream.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let span = (elapsed / 3.0).min(60.0);
    let (first_mean, first_max) = window(&samples, 0.0, span);
    let (last_mean, last_max) = window(&samples, elapsed - span, elapsed);
    let hwm = memory_kib(pid, "VmHWM:") / 1024.0;
    let row = format!(
        "| {name} | {elapsed:.0} s | {:.0} | {} | {first_mean:.1} / {first_max:.1} | {last_mean:.1} / {last_max:.1} | \
         {:+.1} MiB ({:+.1} %) | {hwm:.1} | {reopened} |",
        (work.ops.load(Ordering::Relaxed) - warm_ops) as f64 / elapsed,
        work.errors.load(Ordering::Relaxed),
        last_mean - first_mean,
        (last_mean - first_mean) / first_mean.max(f64::MIN_POSITIVE) * 100.0
    );
    server.stop().await;
    row
}

#[tokio::main]
async fn main() {
    println!("{}", Environment::read().describe());
    let seconds = number("SOAK_SECONDS", "600") as f64;
    let workers = number("SOAK_WORKERS", "16") as usize;
    let streams = number("SOAK_STREAMS", "50") as usize;
    println!(
        "soak: {seconds:.0} s per target after a warm-up of {:.0} s, {workers} workers, {streams} held live \
         streams; windows of {:.0} s",
        warmup(seconds),
        (seconds / 3.0).min(60.0)
    );
    let net = TestNet::new();
    let mut table = String::from(
        "| target | duration | ops/s | errors | RSS MiB first window mean / max | last window mean / max | \
         growth of the mean | VmHWM MiB | held streams reopened |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for name in setting("SOAK_TARGETS", "sqlite-fs,postgres-fs").split(',') {
        table.push_str(&soak(&net, name.trim(), seconds, workers, streams).await);
        table.push('\n');
    }
    println!("{table}");
}

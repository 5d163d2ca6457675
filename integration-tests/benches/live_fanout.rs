//! Live fan-out: many SSE subscribers follow one user while writes commit at a fixed rate. Reports the
//! delivery latency (write start to receipt, over every subscriber and event) and the server's RSS.
//!
//! ```sh
//! cargo build --release --bin homestead   # in the root workspace
//! TEST_HOMESTEAD_BIN=$CARGO_TARGET_DIR/release/homestead cargo bench --bench live_fanout
//! ```
//! `FANOUT_SUBSCRIBERS` (default 1000), `FANOUT_RATE` writes/s (default 100), `FANOUT_SECONDS` (default 10).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use homestead_integration_tests::{Account, TestNet};
use tokio::sync::Mutex;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `VmRSS` and `VmHWM` of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let mib = |field| homestead_integration_tests::memory_kib(pid, field) / 1024.0;
    (mib("VmRSS:"), mib("VmHWM:"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let subscribers = setting("FANOUT_SUBSCRIBERS", 1000);
    let rate = setting("FANOUT_RATE", 100);
    let seconds = setting("FANOUT_SECONDS", 10);
    let writes = rate * seconds;

    let net = TestNet::new();
    let server = net.server().start().await;
    let pid = server.pid();
    let base = server.icann_url();
    let client = reqwest::Client::new();
    let account = Account::signup(&server).await;
    let cookie = account.cookie.clone();
    let user = account.z32.clone();
    let (idle_rss, _) = memory(pid);

    // Write start times by index, shared with the subscribers.
    let started: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; writes]));
    let mut tasks = Vec::new();
    let url = format!("{base}/events-stream?user={user}&live=true&limit={writes}");
    for _ in 0..subscribers {
        let response = reqwest::Client::new().get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(writes);
            let mut body = response.bytes_stream();
            let mut pending = String::new();
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else { break };
                let now = Instant::now();
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = pending.find("\n\n") {
                    let frame: String = pending.drain(..end + 2).collect();
                    let Some(line) = frame.lines().find(|l| l.starts_with("data: pubky://")) else {
                        continue;
                    };
                    let index: usize = line.rsplit('/').next().unwrap().parse().unwrap();
                    if let Some(start) = started.lock().await[index] {
                        latencies.push(now - start);
                    }
                }
            }
            latencies
        }));
    }
    let (subscribed_rss, _) = memory(pid);

    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut next = Instant::now();
    let mut write_errors = 0;
    for index in 0..writes {
        tokio::time::sleep_until(next.into()).await;
        next += period;
        started.lock().await[index] = Some(Instant::now());
        let status = client
            .put(format!("{base}/pub/fanout/{index}"))
            .header("pubky-host", &user)
            .header("cookie", &cookie)
            .body("x")
            .send()
            .await
            .map(|r| r.status().as_u16());
        if !matches!(status, Ok(201)) {
            write_errors += 1;
        }
    }
    let mut latencies = Vec::with_capacity(writes * subscribers);
    for task in tasks {
        latencies.extend(
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let (final_rss, peak_rss) = memory(pid);
    latencies.sort();
    let expected = writes * subscribers;
    println!(
        "live fan-out: {subscribers} subscribers, {rate} writes/s for {seconds} s ({writes} writes)"
    );
    println!(
        "  deliveries   {} of {expected} ({write_errors} write errors)",
        latencies.len()
    );
    println!(
        "  latency      p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "  server RSS   idle {idle_rss:.1} MiB, {subscribers} subscribed {subscribed_rss:.1} MiB, after {final_rss:.1} MiB, peak {peak_rss:.1} MiB"
    );
    server.stop().await;
}

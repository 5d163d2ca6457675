//! Memory per live event stream: the server's RSS before and after opening many live streams, with the
//! shortest query and with the longest one the server admits (50 paths of 200 bytes).
//!
//! ```sh
//! cargo build --release --bin homestead   # in the root workspace
//! TEST_HOMESTEAD_BIN=$CARGO_TARGET_DIR/release/homestead cargo bench --bench stream_memory
//! ```
//! `STREAMS` (default 2000) streams per kind.

use std::time::Duration;

use homestead_integration_tests::{Account, TestNet};

fn rss_kib(pid: u32) -> f64 {
    homestead_integration_tests::memory_kib(pid, "VmRSS:")
}

#[tokio::main]
async fn main() {
    let streams: usize = std::env::var("STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let net = TestNet::new();
    println!(
        "live streams: {streams} per kind, each on its own HTTP/1.1 connection, a fresh server each"
    );
    for long in [false, true] {
        let server = net
            .server()
            .drive_config("max_event_streams_per_ip = 100000\nmax_event_streams = 100000")
            .start()
            .await;
        let pid = server.pid();
        let user = Account::signup(&server).await;
        let mut url = format!(
            "{}/events-stream?user={}&live=true",
            server.icann_url(),
            user.z32
        );
        if long {
            for i in 0..50 {
                url.push_str(&format!("&path=/pub/{i:03}/{}", "x".repeat(200)));
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = rss_kib(pid);
        let mut open = Vec::with_capacity(streams);
        for _ in 0..streams {
            let response = reqwest::Client::new()
                .get(url.as_str())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            open.push(response);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = rss_kib(pid);
        let name = if long { "longest query" } else { "short query" };
        println!(
            "  {name:14} ({:>5} bytes): RSS {:.1} -> {:.1} MiB, {:.1} KiB per stream",
            url.len(),
            before / 1024.0,
            after / 1024.0,
            (after - before) / streams as f64
        );
        drop(open);
        server.stop().await;
    }
}

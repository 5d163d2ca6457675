//! Crash safety: writers hammer the server, which is killed with SIGKILL at a random moment and restarted,
//! twenty times per backend pair. After each restart every acknowledged write reads back with its hash (or,
//! for a write cut off mid-flight, either version, never a torn one), the event log agrees with the files,
//! each user's used bytes equal the sum of their files, and orphaned blobs are swept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use homestead_integration_tests::{
    Account, Blobs, Metadata, TestNet, TestServer, eventually, pseudo_random_bytes,
};

const WRITERS: usize = 6;
const ROUNDS: usize = 20;
const PATHS_PER_WRITER: usize = 4;

/// What a path may hold after a crash: the last acknowledged state, and the state of a write that was in
/// flight (None = absent).
#[derive(Debug, Clone, Default)]
struct Expected {
    acked: Option<String>,
    in_flight: Option<Option<String>>,
}

type Ledger = Arc<Mutex<HashMap<String, Expected>>>;

/// One writer: overwrites and deletes its own paths until the server dies, recording each outcome.
async fn writer(url: String, user: Account, writer: usize, round: usize, ledger: Ledger) {
    let client = reqwest::Client::new();
    for step in 0.. {
        let index = (step * 7 + writer) % PATHS_PER_WRITER;
        let path = format!("/pub/w{writer}/f{index}");
        let delete = step % 5 == 4;
        let seed = (round * 1_000_000 + writer * 10_000 + step) as u64;
        let body = pseudo_random_bytes(seed, (seed % 300_000) as usize);
        let key = format!("{}{}", user.z32, path);
        let fingerprint = if delete {
            None
        } else {
            Some(fingerprint(&body))
        };
        ledger
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .in_flight = Some(fingerprint.clone());
        let request = if delete {
            client.delete(format!("{url}{path}"))
        } else {
            client.put(format!("{url}{path}")).body(body)
        };
        let response = request
            .header("pubky-host", &user.z32)
            .header("cookie", &user.cookie)
            .send()
            .await;
        let Ok(response) = response else {
            return; // the server died with this write in flight
        };
        let status = response.status().as_u16();
        let mut ledger = ledger.lock().unwrap();
        let expected = ledger.entry(key).or_default();
        match status {
            201 | 204 => {
                expected.acked = fingerprint;
                expected.in_flight = None;
            }
            // Deleting what is not there changes nothing.
            404 if delete => expected.in_flight = None,
            other => panic!("unexpected status {other} for {path}"),
        }
    }
}

/// The BLAKE3 hash of a body: tells every version of a path apart and spots a torn one.
fn fingerprint(body: &[u8]) -> String {
    blake3::hash(body).to_hex().to_string()
}

async fn check(server: &TestServer, users: &[Account], ledger: &Ledger) {
    let client = reqwest::Client::new();
    let base = server.icann_url();
    let mut settled = ledger.lock().unwrap().clone();
    for user in users {
        let mut used = 0u64;
        let mut files: HashMap<String, String> = HashMap::new();
        for writer in 0..WRITERS {
            for index in 0..PATHS_PER_WRITER {
                let path = format!("/pub/w{writer}/f{index}");
                let response = client
                    .get(format!("{base}{path}"))
                    .header("pubky-host", &user.z32)
                    .send()
                    .await
                    .unwrap();
                let found = match response.status().as_u16() {
                    200 => {
                        let etag = response.headers()["etag"]
                            .to_str()
                            .unwrap()
                            .trim_matches('"')
                            .to_string();
                        let body = response.bytes().await.unwrap();
                        used += body.len() as u64 + 256;
                        files.insert(path.clone(), etag);
                        Some(fingerprint(&body))
                    }
                    404 => None,
                    other => panic!("GET {path}: {other}"),
                };
                let expected = settled.entry(format!("{}{}", user.z32, path)).or_default();
                let allowed =
                    found == expected.acked || expected.in_flight.as_ref() == Some(&found);
                assert!(
                    allowed,
                    "{} {path}: found {found:?}, expected {expected:?}",
                    user.z32
                );
                // What survived is the state the next round starts from.
                *expected = Expected {
                    acked: found,
                    in_flight: None,
                };
            }
        }
        // The event log: the last event of each path says what the path holds now.
        let stream = client
            .get(format!("{base}/events-stream?user={}", user.z32))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut last: HashMap<String, Option<String>> = HashMap::new();
        for frame in stream.split("\n\n").filter(|f| f.starts_with("event: ")) {
            let mut lines = frame.lines();
            let op = lines.next().unwrap().trim_start_matches("event: ");
            let resource = lines.next().unwrap().trim_start_matches("data: ");
            let path = resource
                .split_once("/pub/")
                .map(|(_, p)| format!("/pub/{p}"))
                .unwrap();
            let hash = frame
                .lines()
                .find_map(|l| l.strip_prefix("data: content_hash: "))
                .map(str::to_string);
            last.insert(path, if op == "PUT" { hash } else { None });
        }
        for (path, etag) in &files {
            assert_eq!(
                last.get(path),
                Some(&Some(etag.clone())),
                "{path}: the log's last event disagrees"
            );
        }
        for (path, state) in &last {
            if state.is_none() {
                assert!(
                    !files.contains_key(path),
                    "{path}: deleted in the log, present in storage"
                );
            }
        }
        // Used bytes.
        let (_, record) = server
            .admin(reqwest::Method::GET, &format!("/users/{}", user.z32))
            .await;
        let record: serde_json::Value = serde_json::from_str(&record).unwrap();
        assert_eq!(
            record["used_bytes"].as_u64(),
            Some(used),
            "{}: used bytes",
            user.z32
        );
    }
    *ledger.lock().unwrap() = settled;
}

async fn crash_rounds(metadata: Metadata, blobs: Blobs) {
    let net = TestNet::new();
    let mut server = net
        .server()
        .metadata(metadata)
        .blobs(blobs)
        .storage_config("sweep_interval_secs = 1\norphan_grace_secs = 5")
        .start()
        .await;
    let users = vec![
        Account::signup(&server).await,
        Account::signup(&server).await,
    ];
    let ledger = Ledger::default();
    for round in 0..ROUNDS {
        let url = server.icann_url();
        let mut tasks = Vec::new();
        for writer_index in 0..WRITERS {
            let user = users[writer_index % users.len()].clone();
            let ledger = ledger.clone();
            let url = url.clone();
            tasks.push(tokio::spawn(writer(url, user, writer_index, round, ledger)));
        }
        let pause = 100 + (round as u64 * 37) % 400;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        server.kill().await;
        // Every writer sees its connection fail before anything listens again: none of this round's
        // requests can reach the next process.
        for task in tasks {
            task.await.unwrap();
        }
        server = server.restart().await;
        check(&server, &users, &ledger).await;
    }
    // Every blob left is referenced by a file once the sweeper has run past the grace period.
    let files = users.len() * WRITERS * PATHS_PER_WRITER; // upper bound; count the real ones below
    let client = reqwest::Client::new();
    let mut present = 0;
    for user in &users {
        let list = client
            .get(format!("{}/pub/?limit=1000", server.icann_url()))
            .header("pubky-host", &user.z32)
            .send()
            .await
            .unwrap();
        if list.status() == 200 {
            present += list.text().await.unwrap().lines().count();
        }
    }
    assert!(present <= files);
    eventually("orphaned blobs swept", Duration::from_secs(40), || {
        let server = &server;
        async move {
            let blobs = server.blob_count().await;
            if blobs == present {
                Ok(())
            } else {
                Err(format!("{blobs} blobs for {present} files"))
            }
        }
    })
    .await;
    assert!(server.stop().await.success());
}

homestead_integration_tests::on_main_backend_pairs!(crash_rounds: crash_safety_sqlite_fs, crash_safety_postgres_s3);

//! Hostile clients: slow headers (slowloris), silent connections, oversized heads, stalled uploads and too
//! many connections each cost the server a bounded amount, and other clients keep being served.

use std::time::{Duration, Instant};

use homestead_integration_tests::{Account, TestNet, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(server: &TestServer) -> TcpStream {
    let addr = server.icann_url().trim_start_matches("http://").to_string();
    TcpStream::connect(addr).await.unwrap()
}

/// Reads until the server closes the connection; returns what it sent and how long that took.
async fn until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server closed the connection within 10 s");
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

/// A normal request from someone else answers at once.
async fn others_are_served(server: &TestServer) {
    let started = Instant::now();
    let root = reqwest::get(format!("{}/", server.icann_url()))
        .await
        .unwrap();
    assert_eq!(root.text().await.unwrap(), "Pubky Homeserver");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_silent_large_and_stalled_clients() {
    let net = TestNet::new();
    let server = net
        .server()
        .drive_config(
            "header_read_timeout_secs = 1\nidle_timeout_secs = 2\nbody_read_timeout_secs = 1\nmax_header_bytes = 16384",
        )
        .start()
        .await;

    // Slowloris: headers that never end.
    let mut slow = connect(&server).await;
    slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .await
        .unwrap();
    others_are_served(&server).await;
    let (_, took) = until_closed(&mut slow).await;
    assert!(
        took < Duration::from_secs(4),
        "slow headers cut after {took:?}"
    );

    // A connection that falls silent after a request.
    let mut silent = connect(&server).await;
    silent
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, took) = until_closed(&mut silent).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        took < Duration::from_secs(5),
        "idle connection closed after {took:?}"
    );

    // A head larger than max_header_bytes.
    let mut large = connect(&server).await;
    let header = "a".repeat(20_000);
    large
        .write_all(format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {header}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (answer, _) = until_closed(&mut large).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    others_are_served(&server).await;

    // An upload that stalls: 408, nothing stored.
    let user = Account::signup(&server).await;
    let mut stalled = connect(&server).await;
    let head = format!(
        "PUT /pub/stalled HTTP/1.1\r\nhost: x\r\npubky-host: {}\r\ncookie: {}\r\ncontent-length: 100\r\n\r\n0123456789",
        user.z32, user.cookie
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    others_are_served(&server).await;
    let (answer, took) = until_closed(&mut stalled).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        took < Duration::from_secs(5),
        "stalled upload cut after {took:?}"
    );
    let missing = reqwest::Client::new()
        .head(format!("{}/pub/stalled", server.icann_url()))
        .header("pubky-host", &user.z32)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(server.stop().await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_limit_are_closed() {
    let net = TestNet::new();
    let server = net
        .server()
        .drive_config("max_connections = 4")
        .start()
        .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(&server).await);
    }
    // The fifth is closed on arrival instead of queuing.
    let mut fifth = connect(&server).await;
    let (answer, took) = until_closed(&mut fifth).await;
    assert!(
        answer.is_empty() && took < Duration::from_secs(2),
        "{answer} after {took:?}"
    );
    // The held connections still work; once one goes, others get in again.
    let mut first = held.remove(0);
    first
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = until_closed(&mut first).await;
    assert!(answer.ends_with("Pubky Homeserver"), "{answer}");
    drop(first);
    homestead_integration_tests::eventually("a free slot", Duration::from_secs(5), || {
        let url = format!("{}/", server.icann_url());
        async move { reqwest::get(url).await.map(|r| r.status()) }
    })
    .await;
    drop(held);
    assert!(server.stop().await.success());
}

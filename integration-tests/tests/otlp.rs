//! OpenTelemetry export: with `[otlp] endpoint` set, the server sends its request spans and its metrics to
//! an OTLP/HTTP collector (here a small receiver inside the test that records what it is sent).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use homestead_integration_tests::{Account, TestNet, eventually};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the receiver saw: (path, content type, body length) per request.
type Received = Arc<Mutex<Vec<(String, String, usize)>>>;

/// Accepts OTLP/HTTP posts on a loopback port, answers 200 to each and records them.
async fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let record = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_string();
                    let (mut length, mut content_type) = (0usize, String::new());
                    loop {
                        let mut header = String::new();
                        stream.read_line(&mut header).await.unwrap();
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        let (name, value) = header.split_once(':').unwrap();
                        match name.to_ascii_lowercase().as_str() {
                            "content-length" => length = value.trim().parse().unwrap(),
                            "content-type" => content_type = value.trim().to_string(),
                            _ => {}
                        }
                    }
                    let mut body = vec![0u8; length];
                    stream.read_exact(&mut body).await.unwrap();
                    record.lock().unwrap().push((path, content_type, length));
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    stream.get_mut().write_all(answer).await.unwrap();
                }
            });
        }
    });
    (url, received)
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_and_metrics_reach_the_collector() {
    let (collector, received) = receiver().await;
    let net = TestNet::new();
    let server = net
        .server()
        .config(&format!(
            "[otlp]\nendpoint = \"{collector}\"\nmetrics_interval_secs = 1\nservice_name = \"homestead-test\""
        ))
        .start()
        .await;
    Account::signup(&server).await;
    for _ in 0..3 {
        reqwest::get(format!("{}/", server.icann_url()))
            .await
            .unwrap();
    }
    for signal in ["/v1/metrics", "/v1/traces"] {
        eventually(
            &format!("an OTLP export to {signal}"),
            Duration::from_secs(30),
            || {
                let received = received.clone();
                async move {
                    let seen = received.lock().unwrap().clone();
                    seen.iter()
                        .find(|(path, content_type, length)| {
                            path == signal
                                && content_type == "application/x-protobuf"
                                && *length > 0
                        })
                        .cloned()
                        .ok_or(seen)
                }
            },
        )
        .await;
    }
    let log = server.log();
    assert!(server.stop().await.success(), "{log}");
}

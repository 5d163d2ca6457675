//! Conditional writes, black-box: sixteen writers racing with the same `If-Match` on sqlite+fs, on
//! postgres+s3, and spread over two instances sharing PostgreSQL and S3 (exactly one 201, the rest
//! 412, the file holds the winner's body everywhere); and a refused conditional `PUT` that waits for
//! `100 Continue` is answered without the body ever being sent.

use std::time::Duration;

use homestead_integration_tests::{Account, Blobs, Metadata, TestNet, TestServer, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WRITERS: usize = 16;

/// A PUT of `body` to the account's `path` on `server`, with `headers`: the status and the ETag.
async fn put(
    client: &reqwest::Client,
    server: &TestServer,
    account: &Account,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, String) {
    let mut request = client
        .put(format!("{}{path}", server.icann_url()))
        .header("pubky-host", &account.z32)
        .header("cookie", &account.cookie)
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("PUT");
    (response.status().as_u16(), etag(&response))
}

/// The body and ETag of the account's `path` on `server`.
async fn get(server: &TestServer, account: &Account, path: &str) -> (u16, String, String) {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", server.icann_url()))
        .header("pubky-host", &account.z32)
        .send()
        .await
        .expect("GET");
    let (status, etag) = (response.status().as_u16(), etag(&response));
    (status, response.text().await.unwrap(), etag)
}

/// The response's `ETag`, empty when absent.
fn etag(response: &reqwest::Response) -> String {
    let etag = response.headers().get("etag");
    etag.map_or("", |v| v.to_str().unwrap()).to_string()
}

/// Sixteen writers with the same `If-Match`, taking turns over `servers`: exactly one wins, every
/// server then serves its body and ETag, and its ETag chains the next write without a GET.
async fn race(servers: &[&TestServer]) {
    let account = Account::signup(servers[0]).await;
    let client = reqwest::Client::new();
    let path = "/pub/race/doc.txt";
    let (status, start) = put(&client, servers[0], &account, path, &[], "start".into()).await;
    assert_eq!(status, 201);
    let bodies: Vec<String> = (0..WRITERS).map(|i| format!("writer {i}")).collect();
    let condition = [("if-match", start.as_str())];
    let writes = bodies.iter().enumerate().map(|(i, body)| {
        let server = servers[i % servers.len()];
        put(&client, server, &account, path, &condition, body.clone())
    });
    let answers = futures_util::future::join_all(writes).await;
    let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    let winners: Vec<usize> = (0..WRITERS).filter(|i| statuses[*i] == 201).collect();
    assert_eq!(winners.len(), 1, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 412).count(),
        WRITERS - 1,
        "{statuses:?}"
    );
    let winner = winners[0];
    let won_etag = answers[winner].1.clone();
    for server in servers {
        eventually("the winner's body", Duration::from_secs(10), || async {
            let read = get(server, &account, path).await;
            match read == (200, bodies[winner].clone(), won_etag.clone()) {
                true => Ok(()),
                false => Err(read),
            }
        })
        .await;
    }
    // The winner's ETag chains a write through the last server; the start's is stale everywhere.
    let last = servers[servers.len() - 1];
    let chained = [("if-match", won_etag.as_str())];
    let (status, _) = put(&client, last, &account, path, &chained, "next".into()).await;
    assert_eq!(status, 201);
    for server in servers {
        let (status, _) = put(&client, server, &account, path, &condition, "stale".into()).await;
        assert_eq!(status, 412);
    }
}

/// A conditional PUT that waits for `100 Continue`, refused: the 412 comes without the server asking
/// for the body.
async fn refused_before_the_upload(server: &TestServer) {
    let account = Account::signup(server).await;
    let client = reqwest::Client::new();
    let path = "/pub/once.txt";
    let created = [("if-none-match", "*")];
    let (status, _) = put(&client, server, &account, path, &created, "first".into()).await;
    assert_eq!(status, 201);
    let addr = server.icann_url().trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\nIf-None-Match: *\r\n\
         Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\n",
        account.z32, account.cookie
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("an answer without the body")
            .unwrap();
        assert!(read > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buffer[..read]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 412 "), "{answer}");
    let (status, body, _) = get(server, &account, path).await;
    assert_eq!((status, body.as_str()), (200, "first"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_writers_one_winner_on_sqlite() {
    let net = TestNet::new();
    let server = net.server().start().await;
    race(&[&server]).await;
    refused_before_the_upload(&server).await;
    let log = server.log();
    assert!(server.stop().await.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_writers_one_winner_on_postgres() {
    let net = TestNet::new();
    let server = net
        .server()
        .metadata(Metadata::Postgres)
        .blobs(Blobs::S3)
        .start()
        .await;
    race(&[&server]).await;
    let log = server.log();
    assert!(server.stop().await.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_writers_one_winner_across_two_instances() {
    let net = TestNet::new();
    let first = net
        .server()
        .metadata(Metadata::Postgres)
        .blobs(Blobs::S3)
        .start()
        .await;
    let second = net.server().sharing(&first).start().await;
    race(&[&first, &second]).await;
    for server in [second, first] {
        let log = server.log();
        assert!(server.stop().await.success(), "{log}");
    }
}

//! Events: the feed and the SSE stream on sqlite+fs and postgres+s3, the SDK's event-stream API, a
//! writer racing the history-to-live hand-over, and two instances sharing PostgreSQL and S3.

use std::time::Duration;

use futures_util::StreamExt;
use homestead_integration_tests::{Account, Blobs, Metadata, TestNet, TestServer};
use pubky::{EventType, Keypair, Method, PubkySession};

async fn get(server: &TestServer, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("{}{path}", server.icann_url()))
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// A user signed up over raw HTTP, with a cookie for writes.
struct Writer {
    z32: String,
    cookie: String,
    url: String,
    client: reqwest::Client,
}

impl Writer {
    async fn signup(server: &TestServer) -> Self {
        let account = Account::signup(server).await;
        Self {
            z32: account.z32,
            cookie: account.cookie,
            url: server.icann_url(),
            client: reqwest::Client::new(),
        }
    }

    async fn request(&self, method: Method, path: &str, body: &[u8]) -> u16 {
        self.client
            .request(method, format!("{}{path}", self.url))
            .header("pubky-host", &self.z32)
            .header("cookie", &self.cookie)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn put(&self, path: &str, body: &[u8]) {
        assert_eq!(self.request(Method::PUT, path, body).await, 201, "{path}");
    }

    async fn delete(&self, path: &str) {
        assert_eq!(self.request(Method::DELETE, path, &[]).await, 204, "{path}");
    }
}

/// The events of an SSE body: (name, resource, cursor, content hash).
fn parse_sse(body: &str) -> Vec<(String, String, u64, Option<String>)> {
    body.split("\n\n")
        .filter(|frame| frame.starts_with("event: "))
        .map(|frame| {
            let mut name = String::new();
            let mut resource = String::new();
            let mut cursor = 0;
            let mut hash = None;
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: cursor: ") {
                    cursor = v.parse().unwrap();
                } else if let Some(v) = line.strip_prefix("data: content_hash: ") {
                    hash = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    resource = v.to_string();
                }
            }
            (name, resource, cursor, hash)
        })
        .collect()
}

async fn feed(server: &TestServer) {
    let a = Writer::signup(server).await;
    let b = Writer::signup(server).await;
    a.put("/pub/one", b"1").await;
    b.put("/pub/two", b"2").await;
    a.delete("/pub/one").await;
    let (status, body) = get(server, "/events/").await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        &lines[..3],
        [
            format!("PUT pubky://{}/pub/one", a.z32),
            format!("PUT pubky://{}/pub/two", b.z32),
            format!("DEL pubky://{}/pub/one", a.z32),
        ]
    );
    assert!(lines[3].starts_with("cursor: "), "{body}");
    assert!(!body.ends_with('\n'));
    let (_, page) = get(server, "/events/?limit=2").await;
    let cursor = page
        .lines()
        .last()
        .unwrap()
        .trim_start_matches("cursor: ")
        .to_string();
    assert_eq!(page.lines().count(), 3);
    let (_, next) = get(server, &format!("/events/?cursor={cursor}")).await;
    assert_eq!(
        next.lines().next().unwrap(),
        format!("DEL pubky://{}/pub/one", a.z32)
    );
    let last = lines[3].trim_start_matches("cursor: ");
    assert_eq!(
        get(server, &format!("/events/?cursor={last}")).await,
        (200, String::new())
    );
    assert_eq!(get(server, "/events/?cursor=").await.1, body);
    assert_eq!(get(server, "/events/?limit=0").await, (200, String::new()));
    for bad in ["abc", "-1", "1.5"] {
        assert_eq!(
            get(server, &format!("/events/?cursor={bad}")).await,
            (400, "Invalid cursor".to_string()),
            "{bad}"
        );
    }
    assert_eq!(
        get(server, "/events/?reverse=maybe").await,
        (400, "Invalid boolean parameter".to_string())
    );
    assert_eq!(get(server, "/events/?reverse").await.0, 200);
}

async fn stream_history(server: &TestServer) {
    let a = Writer::signup(server).await;
    let b = Writer::signup(server).await;
    let stranger = Keypair::random().public_key().z32();
    let cases = [
        (
            "/events-stream".to_string(),
            400,
            "user parameter is required".to_string(),
        ),
        (
            format!("/events-stream?user={}&limit=abc", a.z32),
            400,
            "Invalid limit: abc".to_string(),
        ),
        (
            format!("/events-stream?user={}&live=true&reverse=true", a.z32),
            400,
            "Cannot use live mode with reverse ordering".to_string(),
        ),
        (
            "/events-stream?user=invalid_key_not_zbase32".to_string(),
            400,
            "Invalid public key: invalid_key_not_zbase32".to_string(),
        ),
        (
            format!("/events-stream?user=pubky{}", a.z32),
            400,
            format!("Invalid public key: pubky{}", a.z32),
        ),
        (
            format!("/events-stream?user={stranger}"),
            404,
            "Not Found".to_string(),
        ),
        (
            format!("/events-stream?user={}&user={stranger}", a.z32),
            404,
            "Not Found".to_string(),
        ),
        (
            format!("/events-stream?user={}:abc123xyz", a.z32),
            400,
            "Invalid cursor: abc123xyz".to_string(),
        ),
        (
            format!("/events-stream?user={}:-100", a.z32),
            400,
            "Invalid cursor: -100".to_string(),
        ),
        (
            format!("/events-stream?user={}&path=/pub/%00", a.z32),
            400,
            "Invalid path: /pub/\0".to_string(),
        ),
    ];
    for (path, status, message) in cases {
        assert_eq!(get(server, &path).await, (status, message), "{path}");
    }
    let many: String = (0..51).map(|_| format!("user={}&", a.z32)).collect();
    assert_eq!(
        get(server, &format!("/events-stream?{many}")).await,
        (400, "Too many users. Maximum allowed: 50".to_string())
    );

    for i in 0..255 {
        a.put(&format!("/pub/files/{i:03}"), &[i as u8]).await;
        if i % 50 == 0 {
            b.put(&format!("/pub/other/{i}"), b"b").await;
        }
    }
    a.put("/pub/test.txt", b"hello").await;
    a.delete("/pub/files/000").await;

    let response = reqwest::get(format!(
        "{}/events-stream?user={}&limit=255",
        server.icann_url(),
        a.z32
    ))
    .await
    .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(
        response.headers()["vary"],
        "pubky-host, Authorization, Cookie"
    );
    let events = parse_sse(&response.text().await.unwrap());
    assert_eq!(events.len(), 255);
    assert!(events.windows(2).all(|w| w[0].2 < w[1].2));
    assert_eq!(events[0].0, "PUT");
    assert_eq!(events[0].1, format!("pubky://{}/pub/files/000", a.z32));
    assert_eq!(events[0].3.as_deref().map(str::len), Some(44));

    let all = parse_sse(
        &get(server, &format!("/events-stream?user={}", a.z32))
            .await
            .1,
    );
    assert_eq!(all.len(), 257);
    let last = all.last().unwrap();
    assert_eq!((last.0.as_str(), last.3.as_ref()), ("DEL", None));
    let hello = &all[255];
    assert_eq!(
        hello.3.as_deref(),
        Some("6o8WPbOGgpJeRJHF5Y1Ls1Bu+MFOt4qG6QjFYkpnIA8=")
    );

    let limited = parse_sse(
        &get(server, &format!("/events-stream?user={}&limit=50", a.z32))
            .await
            .1,
    );
    assert_eq!(limited.len(), 50);
    assert_eq!(
        get(server, &format!("/events-stream?user={}&limit=0", a.z32)).await,
        (400, "limit must be at least 1".to_string()),
        "0.17.1 refuses limit=0 (0.9.3 sent one event)"
    );
    let after = parse_sse(
        &get(
            server,
            &format!("/events-stream?user={}:{}", a.z32, all[250].2),
        )
        .await
        .1,
    );
    assert_eq!(after.len(), 6);
    assert!(
        parse_sse(
            &get(server, &format!("/events-stream?user={}:999999999", a.z32))
                .await
                .1
        )
        .is_empty()
    );
    let newest = parse_sse(
        &get(
            server,
            &format!("/events-stream?user={}&reverse=true&limit=5", a.z32),
        )
        .await
        .1,
    );
    assert_eq!(
        newest.iter().map(|e| e.2).collect::<Vec<_>>(),
        all.iter().rev().take(5).map(|e| e.2).collect::<Vec<_>>()
    );

    // Two users interleave in id order; other users never appear; cursors are per user.
    let both = parse_sse(
        &get(
            server,
            &format!("/events-stream?user={}&user={}", a.z32, b.z32),
        )
        .await
        .1,
    );
    assert_eq!(both.len(), 257 + 6);
    assert!(both.windows(2).all(|w| w[0].2 < w[1].2));
    let b_first = both.iter().find(|e| e.1.contains(&b.z32)).unwrap().2;
    let per_user = parse_sse(
        &get(
            server,
            &format!(
                "/events-stream?user={}:{}&user={}:{b_first}",
                a.z32, all[255].2, b.z32
            ),
        )
        .await
        .1,
    );
    assert_eq!(per_user.len(), 1 + 5);

    // Path filters: a prefix, a path without the leading slash, a repeated filter (union).
    let files = parse_sse(
        &get(
            server,
            &format!("/events-stream?user={}&path=/pub/files/", a.z32),
        )
        .await
        .1,
    );
    assert_eq!(files.len(), 256);
    let bare = parse_sse(
        &get(
            server,
            &format!("/events-stream?user={}&path=pub/test.txt", a.z32),
        )
        .await
        .1,
    );
    assert_eq!(bare.len(), 1);
    let union = parse_sse(
        &get(
            server,
            &format!(
                "/events-stream?user={}&user={}&path=/pub/test.txt&path=/pub/other/",
                a.z32, b.z32
            ),
        )
        .await
        .1,
    );
    assert_eq!(union.len(), 1 + 6);
    let literal = parse_sse(
        &get(
            server,
            &format!("/events-stream?user={}&path=/pub/file_", a.z32),
        )
        .await
        .1,
    );
    assert!(literal.is_empty(), "_ is literal");
    let not_a_prefix = parse_sse(
        &get(
            server,
            &format!("/events-stream?user={}&path=/pub/file", a.z32),
        )
        .await
        .1,
    );
    assert!(
        not_a_prefix.is_empty(),
        "without a trailing / a path names one file"
    );
}

/// A writer commits while a live stream is opened: every event arrives once, in order.
async fn live_hand_over(server: &TestServer) {
    let a = Writer::signup(server).await;
    let total = 150usize;
    let writer = {
        let a = Writer {
            z32: a.z32.clone(),
            cookie: a.cookie.clone(),
            url: a.url.clone(),
            client: a.client.clone(),
        };
        tokio::spawn(async move {
            for i in 0..total {
                a.put(&format!("/pub/race/{i}"), b"x").await;
            }
        })
    };
    // Let some history accumulate, then subscribe in the middle of the writes.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let url = format!(
        "{}/events-stream?user={}&live=true&limit={total}",
        server.icann_url(),
        a.z32
    );
    let body = tokio::time::timeout(Duration::from_secs(60), async {
        reqwest::get(url).await.unwrap().text().await.unwrap()
    })
    .await
    .expect("the stream closes after `limit` events");
    writer.await.unwrap();
    let events = parse_sse(&body);
    let paths: Vec<String> = events
        .iter()
        .map(|e| e.1.rsplit('/').next().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..total).map(|i| i.to_string()).collect();
    assert_eq!(paths, expected, "no gap, no duplicate, in order");
}

/// The SDK's event-stream builder, history and live.
async fn sdk_stream(net: &TestNet, server: &TestServer) {
    let pubky = net.pubky();
    let signer = pubky.signer(Keypair::random());
    let session: PubkySession = signer.signup(&server.public_key(), None).await.unwrap();
    for i in 0..3 {
        session
            .storage()
            .put(format!("/pub/sdk/{i}"), "x")
            .await
            .unwrap();
    }
    session.storage().put("/pub/elsewhere", "y").await.unwrap();
    let user = signer.public_key();
    let mut history = pubky
        .event_stream_for(&server.public_key())
        .add_users([(&user, None)])
        .unwrap()
        .path("/pub/sdk/")
        .subscribe()
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Some(event) = history.next().await {
        let event = event.unwrap();
        assert!(matches!(event.event_type, EventType::Put { .. }));
        seen.push(event.resource.path.as_str().to_string());
    }
    assert_eq!(seen, ["/pub/sdk/0", "/pub/sdk/1", "/pub/sdk/2"]);

    let mut live = pubky
        .event_stream_for(&server.public_key())
        .add_users([(&user, None)])
        .unwrap()
        .live()
        .limit(6)
        .subscribe()
        .await
        .unwrap();
    for _ in 0..4 {
        live.next().await.unwrap().unwrap();
    }
    session.storage().delete("/pub/elsewhere").await.unwrap();
    session.storage().put("/pub/sdk/3", "z").await.unwrap();
    let deleted = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(deleted.event_type, EventType::Delete));
    let put = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(put.resource.path.as_str(), "/pub/sdk/3");
    assert!(live.next().await.is_none(), "closed after the limit");
}

async fn events_suite(metadata: Metadata, blobs: Blobs) {
    let net = TestNet::new();
    let server = net.server().metadata(metadata).blobs(blobs).start().await;
    net.wait_until_resolvable(&server).await;
    feed(&server).await;
    stream_history(&server).await;
    live_hand_over(&server).await;
    sdk_stream(&net, &server).await;
    let log = server.log();
    assert!(server.stop().await.success(), "{log}");
}

homestead_integration_tests::on_main_backend_pairs!(events_suite: events_on_sqlite_fs, events_on_postgres_s3);

/// A server on a fresh PostgreSQL database and bucket, for others to share.
async fn on_postgres_s3(net: &TestNet) -> TestServer {
    net.server()
        .metadata(Metadata::Postgres)
        .blobs(Blobs::S3)
        .start()
        .await
}

/// Two instances on one PostgreSQL database and bucket: a live stream on one delivers writes made
/// through the other within a second.
#[tokio::test(flavor = "multi_thread")]
async fn instances_share_live_events() {
    let net = TestNet::new();
    let first = on_postgres_s3(&net).await;
    let second = net.server().sharing(&first).start().await;
    let a = Writer::signup(&first).await;
    let url = format!(
        "{}/events-stream?user={}&live=true&limit=5",
        second.icann_url(),
        a.z32
    );
    let mut stream = reqwest::get(url).await.unwrap().bytes_stream();
    let mut text = String::new();
    for i in 0..5 {
        let started = tokio::time::Instant::now();
        a.put(&format!("/pub/shared/{i}"), b"x").await;
        while parse_sse(&text).len() <= i {
            let chunk = tokio::time::timeout(Duration::from_secs(1), stream.next())
                .await
                .expect("delivered by the other instance within 1 s")
                .unwrap()
                .unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    let events = parse_sse(&text);
    assert_eq!(
        events.last().unwrap().1,
        format!("pubky://{}/pub/shared/4", a.z32)
    );
    for server in [second, first] {
        let log = server.log();
        assert!(server.stop().await.success(), "{log}");
    }
}

/// Two instances on one PostgreSQL database and bucket, the reader keeping file metadata in memory for a
/// minute: a file it has read and cached shows writes and a delete made through the other instance
/// within a second, because its event bus evicts every path it sees an event for.
#[tokio::test(flavor = "multi_thread")]
async fn reads_on_one_instance_follow_writes_on_another() {
    let net = TestNet::new();
    let first = on_postgres_s3(&net).await;
    let second = net
        .server()
        .sharing(&first)
        .storage_config("entry_cache_ms = 60000")
        .start()
        .await;
    let a = Writer::signup(&first).await;
    let client = reqwest::Client::new();
    let read = || async {
        let response = client
            .get(format!("{}/pub/cached.txt", second.icann_url()))
            .header("pubky-host", &a.z32)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let settles_on = |want: (u16, &'static str)| async move {
        let started = tokio::time::Instant::now();
        loop {
            let (status, text) = read().await;
            if (status, text.as_str()) == want {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "the other instance still answers {status} {text:?}, wanted {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    a.put("/pub/cached.txt", b"one").await;
    settles_on((200, "one")).await;
    // Each version was just read through the second instance, so its metadata is cached there.
    for next in ["two", "three"] {
        a.put("/pub/cached.txt", next.as_bytes()).await;
        settles_on((200, next)).await;
    }
    a.delete("/pub/cached.txt").await;
    settles_on((404, "Not Found")).await;
    for server in [second, first] {
        let log = server.log();
        assert!(server.stop().await.success(), "{log}");
    }
}

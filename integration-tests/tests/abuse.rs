//! Attacks that once took the whole server down or made it grow without bound, each mounted at a size
//! that showed the harm (scaled to run in seconds), with the server answering others meanwhile and the
//! refusal clear. SECURITY.md lists them with their bounds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use homestead_integration_tests::{Account, Metadata, TestNet, TestServer};
use pubky::Keypair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn icann_addr(server: &TestServer) -> String {
    server.icann_url().trim_start_matches("http://").to_string()
}

/// Someone else's write and read go through promptly.
async fn others_are_served(server: &TestServer, user: &Account) {
    let started = Instant::now();
    let client = reqwest::Client::new();
    let url = format!("{}/pub/others/ok", server.icann_url());
    let put = client
        .put(&url)
        .header("pubky-host", &user.z32)
        .header("cookie", &user.cookie)
        .body("fine")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "{}", put.text().await.unwrap());
    let get = client
        .get(&url)
        .header("pubky-host", &user.z32)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served in {:?}",
        started.elapsed()
    );
}

async fn event_stream_queries(metadata: Metadata) {
    let net = TestNet::new();
    let server = net.server().metadata(metadata).start().await;
    let user = Account::signup(&server).await;
    let client = reqwest::Client::new();
    let paths = |n: usize| {
        (0..n)
            .map(|i| format!("&path=/pub/{i}/{}", "x".repeat(200)))
            .collect::<String>()
    };
    let base = format!("{}/events-stream?user={}", server.icann_url(), user.z32);
    // A few thousand short paths: what once cost the database seconds per request.
    let many: String = (0..3000).map(|i| format!("&path=/p{i}")).collect();
    let refused = client.get(format!("{base}{many}")).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.text().await.unwrap(),
        "Too many paths. Maximum allowed: 50"
    );
    // Sixteen streams at the limit at once, each to the end of its history, beside others' work.
    let streams: Vec<_> = (0..16)
        .map(|_| {
            let request = client.get(format!("{base}{}", paths(50))).send();
            tokio::spawn(async move {
                let response = request.await.unwrap();
                (response.status(), response.text().await.unwrap())
            })
        })
        .collect();
    others_are_served(&server, &user).await;
    for stream in streams {
        let (status, body) = stream.await.unwrap();
        assert_eq!(status, 200);
        assert!(!body.contains("unavailable"), "{body}");
    }
    // The health probe has its own connection: the busy pool was never taken for a database down.
    assert!(
        !server.log().contains("does not answer"),
        "{}",
        server.log()
    );
    others_are_served(&server, &user).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn event_stream_queries_are_bounded_on_sqlite() {
    event_stream_queries(Metadata::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn event_stream_queries_are_bounded_on_postgres() {
    event_stream_queries(Metadata::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn made_up_methods_do_not_grow_the_metrics() {
    let net = TestNet::new();
    let server = net.server().with_metrics().start().await;
    let before = server.metrics().await.len();
    for i in 0..300 {
        let method = format!("M{i}{}", "X".repeat(4000));
        let mut stream = TcpStream::connect(icann_addr(&server)).await.unwrap();
        stream
            .write_all(
                format!("{method} /pub/a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
    }
    let after = server.metrics().await;
    assert!(
        !after.contains("XXXXXXXX"),
        "a client's method became a label"
    );
    assert!(
        after.len() < before + 20_000,
        "/metrics grew from {before} to {} bytes",
        after.len()
    );
    assert!(after.contains("method=\"other\""), "{after}");
}

#[tokio::test(flavor = "multi_thread")]
async fn default_logs_hold_no_line_per_request_and_files_are_private() {
    let net = TestNet::new();
    let server = net.server().start().await;
    let client = reqwest::Client::new();
    for _ in 0..200 {
        let response = client
            .get(format!(
                "{}/events/?signup_token=SECRET-TOKEN",
                server.icann_url()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = |name: &str| {
        std::fs::metadata(server.data_dir().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("homestead.db"), 0o600);
    assert_eq!(mode("blobs"), 0o700);
    let (status, log) = server.stop_with_log().await;
    assert!(status.success(), "{log}");
    assert!(
        log.lines().count() < 30,
        "{} lines:\n{log}",
        log.lines().count()
    );
    assert!(!log.contains("SECRET-TOKEN"));
}

/// Opens a live stream as `client` (an address a trusted proxy reports); returns the response.
async fn open_stream(server: &TestServer, user: &Account, client: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!(
            "{}/events-stream?user={}&live=true",
            server.icann_url(),
            user.z32
        ))
        .header("x-forwarded-for", client)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn event_streams_are_bounded_per_client_and_in_total() {
    let net = TestNet::new();
    let server = net
        .server()
        .drive_config(
            "trusted_proxies = [\"127.0.0.1\"]\nmax_event_streams = 5\nmax_event_streams_per_ip = 3",
        )
        .start()
        .await;
    let user = Account::signup(&server).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let stream = open_stream(&server, &user, "192.0.2.1").await;
        assert_eq!(stream.status(), 200);
        open.push(stream);
    }
    let fourth = open_stream(&server, &user, "192.0.2.1").await;
    assert_eq!(fourth.status(), 429);
    assert_eq!(
        fourth.text().await.unwrap(),
        "Too many event streams from your address: at most 3 at once"
    );
    for _ in 0..2 {
        let stream = open_stream(&server, &user, "192.0.2.2").await;
        assert_eq!(stream.status(), 200);
        open.push(stream);
    }
    let full = open_stream(&server, &user, "192.0.2.3").await;
    assert_eq!(full.status(), 503);
    assert_eq!(
        full.text().await.unwrap(),
        "Too many event streams on this server: try again later"
    );
    others_are_served(&server, &user).await;
    // A client that leaves frees its place at once (not at the next keep-alive, 15 s on).
    drop(open.pop());
    let started = Instant::now();
    loop {
        let again = open_stream(&server, &user, "192.0.2.3").await;
        if again.status() == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_match_the_storage_path_and_count_the_signed_in_user() {
    let net = TestNet::new();
    let server = net
        .server()
        .drive_config(
            "[[drive.rate_limits]]\npath = \"/pub/**\"\nmethod = \"GET\"\nquota = \"2r/m\"\nkey = \"ip\"\n\n\
             [[drive.rate_limits]]\npath = \"/pub/**\"\nmethod = \"PUT\"\nquota = \"3r/m\"\nkey = \"user\"",
        )
        .start()
        .await;
    let user = Account::signup(&server).await;
    let client = reqwest::Client::new();
    let base = server.icann_url();
    let statuses = |requests: Vec<reqwest::RequestBuilder>| async move {
        let mut out = Vec::new();
        for request in requests {
            out.push(request.send().await.unwrap().status().as_u16());
        }
        out
    };
    // The path-addressed form is the same storage path as the tenant form.
    let reads = vec![
        client.get(format!("{base}/storage/{}/pub/a", user.z32)),
        client
            .get(format!("{base}/pub/a"))
            .header("pubky-host", &user.z32),
        client.get(format!("{base}/storage/{}/pub/a", user.z32)),
    ];
    assert_eq!(statuses(reads).await, [404, 404, 429]);
    // Strangers naming the user spend their own budget, not the user's.
    let strangers = (0..4)
        .map(|_| {
            client
                .put(format!("{base}/storage/{}/pub/x", user.z32))
                .body("x")
        })
        .collect();
    assert_eq!(statuses(strangers).await, [401, 401, 401, 429]);
    let own = (0..3)
        .map(|i| {
            client
                .put(format!("{base}/pub/mine{i}"))
                .header("pubky-host", &user.z32)
                .header("cookie", &user.cookie)
                .body("x")
        })
        .collect();
    assert_eq!(statuses(own).await, [201, 201, 201]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_refuses_browsers_and_needs_a_real_password() {
    let net = TestNet::new();
    let server = net.server().start().await;
    let admin = server.admin_url().unwrap();
    let client = reqwest::Client::new();
    let rebound = client
        .get(format!("{admin}/info"))
        .header("host", "rebind.attacker.example")
        .header(
            "x-admin-password",
            homestead_integration_tests::ADMIN_PASSWORD,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    let preflight = client
        .request(reqwest::Method::OPTIONS, format!("{admin}/info"))
        .header("origin", "http://attacker.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "x-admin-password")
        .send()
        .await
        .unwrap();
    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "no CORS on the admin API"
    );
    let (status, _) = server.admin(reqwest::Method::GET, "/info").await;
    assert_eq!(status, 200);

    for config in ["", "[admin]\nadmin_password = \"admin\"\n"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let out = std::process::Command::new(homestead_integration_tests::binary())
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains("admin.admin_password") && stderr.contains("at least 12"),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_low_open_file_limit_leaves_room_for_the_work() {
    let net = TestNet::new();
    let server = net.server().open_files(1024).start().await;
    let user = Account::signup(&server).await;
    let mut idle = Vec::new();
    for _ in 0..1100 {
        match TcpStream::connect(icann_addr(&server)).await {
            Ok(stream) => idle.push(stream),
            Err(err) => panic!("connect: {err}"),
        }
    }
    // The connections beyond the cap were closed on arrival; the server still has descriptors for a
    // new client, its database and its blob files.
    let started = Instant::now();
    loop {
        let client = reqwest::Client::new();
        let put = client
            .put(format!("{}/pub/under-pressure", server.icann_url()))
            .header("pubky-host", &user.z32)
            .header("cookie", &user.cookie)
            .body("still here")
            .send()
            .await;
        if let Ok(put) = put {
            assert_eq!(put.status(), 201);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no service while 1,100 connections are open"
        );
        drop(idle.drain(..100));
    }
    assert!(
        server.log().contains("drive.max_connections lowered"),
        "{}",
        server.log()
    );
    assert!(
        idle.len() >= 1000,
        "the server served with {} idle connections",
        idle.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_uploads_reach_the_sdk_as_507_while_the_machine_is_busy() {
    let net = TestNet::new();
    let server = net
        .server()
        .metadata(Metadata::Postgres)
        .default_quota_mb(1)
        .start()
        .await;
    net.wait_until_resolvable(&server).await;
    let pubky = net.pubky();
    let session = pubky
        .signer(Keypair::random())
        .signup(&server.public_key(), None)
        .await
        .expect("signup");
    // Background load: other users write and read as fast as they can.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let other = Account::signup(&server).await;
        let (stop, done, url) = (stop.clone(), done.clone(), server.icann_url());
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let put = client
                    .put(format!("{url}/pub/load/{}", i % 50))
                    .header("pubky-host", &other.z32)
                    .header("cookie", &other.cookie)
                    .body(vec![1u8; 4096])
                    .send()
                    .await;
                assert_eq!(put.unwrap().status(), 201);
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    let body = vec![7u8; 1_100_000];
    // At least 100 refusals, and as many more as it takes for the load to have
    // made 100 writes meanwhile: a fast refusal must not end the test before
    // the machine is busy.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0;
    while attempt < 100 || done.load(Ordering::Relaxed) < 100 {
        assert!(
            Instant::now() < deadline,
            "the load made only {} writes in 60 s",
            done.load(Ordering::Relaxed)
        );
        match session.storage().put("/pub/too-big", body.clone()).await {
            Err(pubky::Error::Request(pubky::errors::RequestError::Server { status, message })) => {
                assert_eq!(
                    (status.as_u16(), message.as_str()),
                    (507, "Disk space quota exceeded"),
                    "attempt {attempt}"
                );
            }
            other => panic!("attempt {attempt}: expected 507, got {other:?}"),
        }
        attempt += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_http2_connection_carries_a_bounded_number_of_streams() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let net = TestNet::new();
    let server = net.server().start().await;
    let user = Account::signup(&server).await;
    let tcp = TcpStream::connect(icann_addr(&server)).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let answered = Arc::new(AtomicUsize::new(0));
    let mut streams = Vec::new();
    for _ in 0..100 {
        let mut sender = sender.clone();
        let answered = answered.clone();
        let uri = format!(
            "http://{}/events-stream?user={}&live=true",
            icann_addr(&server),
            user.z32
        );
        streams.push(tokio::spawn(async move {
            let request = hyper::Request::get(uri)
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            answered.fetch_add(1, Ordering::Relaxed);
            // Held open, as a live stream's client would.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(response);
        }));
    }
    let started = Instant::now();
    while answered.load(Ordering::Relaxed) < 32 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        answered.load(Ordering::Relaxed),
        32,
        "the server's SETTINGS_MAX_CONCURRENT_STREAMS holds the rest back"
    );
    others_are_served(&server, &user).await;
    for stream in streams {
        stream.abort();
    }
}

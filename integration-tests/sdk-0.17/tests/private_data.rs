//! Private data through the 0.17.1 SDK: `/priv/` files written and read by their owner's sessions (grant
//! and cookie), refused to everyone else without a hint of their existence; private event streams
//! (`path` + `session`) that the SDK follows, ended by signing out; and, with two instances sharing
//! PostgreSQL, a revocation through one instance ending a stream on the other within a second, with
//! nothing written after it reaching the stream, and a lost revocation listener failing closed.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use homestead_sdk_0_17_tests::{
    Blobs, Metadata, TestNet, TestServer, bearer_call, client_id, put_created,
};
use pubky::{Method, PubkySession, PublicKey};

const ANONYMOUS: &str = "Authentication required to read private storage";

/// The path-addressed URL path of `path` of `user`.
fn storage_path(user: &PublicKey, path: &str) -> String {
    format!("/storage/{}{path}", user.z32())
}

/// `method path` on `server` without credentials; status, `Cache-Control` and body.
async fn anonymous(server: &TestServer, method: Method, path: &str) -> (u16, String, String) {
    let response = reqwest::Client::new()
        .request(method, format!("{}{path}", server.icann_url()))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, cache, response.text().await.expect("body"))
}

/// The paths of the next `n` events of an SDK stream, each within 10 s.
async fn next_paths<S>(stream: &mut S, n: usize) -> Vec<String>
where
    S: futures_util::Stream<Item = pubky::Result<pubky::Event>> + Unpin,
{
    let mut paths = Vec::new();
    for _ in 0..n {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream goes on")
            .expect("a readable event");
        paths.push(event.resource.path.to_string());
    }
    paths
}

/// Whether an SDK stream ends (without another event) within `limit`.
async fn ends_within<S>(stream: &mut S, limit: Duration) -> bool
where
    S: futures_util::Stream<Item = pubky::Result<pubky::Event>> + Unpin,
{
    matches!(tokio::time::timeout(limit, stream.next()).await, Ok(None))
}

/// One user's private files and private stream through `session`, signed out at the end; `stranger` is a
/// bearer of another user.
async fn private_life(net: &TestNet, server: &TestServer, session: PubkySession, stranger: &str) {
    let user = session.info().public_key().clone();
    let storage = session.storage();
    put_created(&storage, "/priv/private.app/note.txt", "secret").await;
    put_created(&storage, "/pub/private.app/open.txt", "open").await;
    let read = storage.get("/priv/private.app/note.txt").await.unwrap();
    assert_eq!(read.text().await.unwrap(), "secret");

    // Nobody else learns anything: the same 401 for a file that exists and one that does not.
    for file in ["note.txt", "missing.txt"] {
        let path = storage_path(&user, &format!("/priv/private.app/{file}"));
        for method in [Method::GET, Method::HEAD] {
            let (status, cache, body) = anonymous(server, method.clone(), &path).await;
            assert_eq!(
                (status, cache.as_str()),
                (401, "no-store"),
                "{method} {path}"
            );
            if method == Method::GET {
                assert_eq!(body, ANONYMOUS);
            }
        }
    }
    let path = storage_path(&user, "/priv/private.app/note.txt");
    let (status, body) = bearer_call(server, Method::GET, &path, stranger, &[], "").await;
    assert_eq!(
        (status, body.as_str()),
        (403, "Session user does not match target tenant")
    );
    let public = net.pubky().public_storage();
    let refused = public
        .get(format!("pubky{}/priv/private.app/note.txt", user.z32()))
        .await;
    assert!(refused.is_err(), "the SDK's anonymous read is refused");

    // The public feed and a stream without paths show only /pub/.
    let (_, _, feed) = anonymous(server, Method::GET, "/events/").await;
    assert!(feed.contains("/pub/private.app/open.txt"), "{feed}");
    assert!(!feed.contains("/priv/"), "{feed}");
    let mut public_stream = net
        .pubky()
        .event_stream_for(&server.public_key())
        .add_users([(&user, None)])
        .unwrap()
        .subscribe()
        .await
        .expect("a public stream");
    assert_eq!(
        next_paths(&mut public_stream, 1).await,
        ["/pub/private.app/open.txt"]
    );
    assert!(ends_within(&mut public_stream, Duration::from_secs(10)).await);

    // The SDK's private stream: history, then live, then the end at sign-out.
    let anonymous_private = net
        .pubky()
        .event_stream_for(&server.public_key())
        .add_users([(&user, None)])
        .unwrap()
        .path("/priv/private.app/")
        .subscribe()
        .await;
    assert!(
        anonymous_private.is_err(),
        "a private stream needs a session"
    );
    let mut private = net
        .pubky()
        .event_stream_for(&server.public_key())
        .add_users([(&user, None)])
        .unwrap()
        .path("/priv/private.app/")
        .session(&session)
        .live()
        .subscribe()
        .await
        .expect("a private stream");
    assert_eq!(
        next_paths(&mut private, 1).await,
        ["/priv/private.app/note.txt"]
    );
    put_created(&storage, "/priv/private.app/later.txt", "later").await;
    assert_eq!(
        next_paths(&mut private, 1).await,
        ["/priv/private.app/later.txt"]
    );
    session
        .signout()
        .await
        .map_err(|(err, _)| err)
        .expect("signout");
    assert!(
        ends_within(&mut private, Duration::from_secs(1)).await,
        "signing out ends the private stream within a second"
    );
}

async fn private_suite(metadata: Metadata, blobs: Blobs) {
    let net = TestNet::new();
    let server = net
        .serve(net.server().metadata(metadata).blobs(blobs))
        .await;
    let signer = net.signed_up(&server).await;
    let other = net.signed_up(&server).await;
    let others = other.signin(client_id("other.app")).await.expect("signin");
    let grant = signer
        .signin(client_id("private.app"))
        .await
        .expect("grant signin");
    private_life(&net, &server, grant, &bearer_of(&others).await).await;
    let signers = signer.signin(client_id("other.app")).await.expect("signin");
    #[expect(
        deprecated,
        reason = "the deprecated cookie session reads and follows private data too"
    )]
    let cookie = other.signin_cookie().await.expect("cookie signin");
    private_life(&net, &server, cookie, &bearer_of(&signers).await).await;
}

homestead_sdk_0_17_tests::on_main_backend_pairs!(private_suite: private_data_on_sqlite_fs, private_data_on_postgres_s3);

/// The current bearer of a grant session.
async fn bearer_of(session: &PubkySession) -> String {
    session.as_grant().expect("grant").current_bearer().await
}

/// A raw private stream on `server` with `bearer`: the SSE body, read chunk by chunk.
async fn raw_private_stream(
    server: &TestServer,
    user: &PublicKey,
    bearer: &str,
) -> reqwest::Response {
    let url = format!(
        "{}/events-stream?user={}&path=/priv/private.app/&live=true",
        server.icann_url(),
        user.z32()
    );
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(bearer)
        .send()
        .await
        .expect("stream request");
    assert_eq!(response.status(), 200);
    response
}

/// Reads a raw stream until it ends or `limit` passes; the text received and whether it ended.
async fn read_until_end(response: &mut reqwest::Response, limit: Duration) -> (String, bool) {
    let deadline = Instant::now() + limit;
    let mut text = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, response.chunk()).await {
            Err(_) => return (text, false),
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) | Ok(Err(_)) => return (text, true),
        }
    }
}

/// Two instances sharing PostgreSQL: a private stream on the second ends within a second of a
/// revocation committed through the first, and a write committed right after never reaches it; a lost
/// revocation listener ends private streams and refuses new ones (503) until it listens again.
async fn revocation_across_instances() {
    let net = TestNet::new();
    let first = net
        .serve(net.server().metadata(Metadata::Postgres).blobs(Blobs::S3))
        .await;
    let second = net.server().sharing(&first).start().await;
    let signer = net.signed_up(&first).await;
    let signin = |id: &'static str| {
        let signer = &signer;
        async move { signer.signin(client_id(id)).await.expect("signin") }
    };
    let watched = signin("a.app").await;
    let raced = signin("b.app").await;
    let writer = signin("c.app").await;
    let user = signer.public_key();
    put_created(&writer.storage(), "/priv/private.app/before", "1").await;

    // The signal alone: nothing is written after the revocation, so only the signal can end the stream.
    let mut stream = raw_private_stream(&second, &user, &bearer_of(&watched).await).await;
    let history = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
        .await
        .expect("history within 10 s")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&history).contains("/priv/private.app/before"));
    let revoked_at = Instant::now();
    watched
        .signout()
        .await
        .map_err(|(err, _)| err)
        .expect("signout through the first instance");
    let (_, ended) = read_until_end(&mut stream, Duration::from_secs(1)).await;
    assert!(
        ended,
        "the stream on the second instance ended within 1 s of the sign-out"
    );
    assert!(revoked_at.elapsed() < Duration::from_secs(2));

    // A write committed right after a revocation never reaches the revoked stream.
    let mut stream = raw_private_stream(&second, &user, &bearer_of(&raced).await).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.chunk()).await;
    raced
        .signout()
        .await
        .map_err(|(err, _)| err)
        .expect("signout through the first instance");
    put_created(&writer.storage(), "/priv/private.app/after", "2").await;
    let (text, ended) = read_until_end(&mut stream, Duration::from_secs(5)).await;
    assert!(ended, "the raced stream ended");
    assert!(!text.contains("/priv/private.app/after"), "{text}");

    // The revocation listener of the second instance is cut: its private streams end at once, new
    // ones are refused until it listens again, then served.
    let writer_bearer = bearer_of(&writer).await;
    let mut stream = raw_private_stream(&second, &user, &writer_bearer).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.chunk()).await;
    second.terminate_database_listeners("auth_revocations");
    let (_, ended) = read_until_end(&mut stream, Duration::from_secs(5)).await;
    assert!(ended, "a lost listener ends the private stream");
    let private = format!("/events-stream?user={}&path=/priv/private.app/", user.z32());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut statuses = Vec::new();
    loop {
        let (status, body) =
            bearer_call(&second, Method::GET, &private, &writer_bearer, &[], "").await;
        if statuses.last() != Some(&status) {
            statuses.push(status);
        }
        if status == 503 {
            assert_eq!(body, "Private event streams are temporarily unavailable");
        }
        if status == 200 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(statuses, [503, 200], "refused while down, served once back");
    let log = second.log();
    assert!(second.stop().await.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_ends_streams_on_every_instance() {
    tokio::time::timeout(Duration::from_secs(240), revocation_across_instances())
        .await
        .expect("within 240 s");
}

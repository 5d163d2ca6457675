//! WebDAV locks through the 0.17.1 SDK's lock API (`lock`, `put_locked`, `delete_locked`,
//! `refresh_lock`, `unlock`): refusals of other writers and lockers, refresh, expiry; a lock taken through
//! one instance refusing a write through another (PostgreSQL shared); and a crash of the server while a
//! write under a lock streams: after the restart the lock and the old file are there, nothing torn.

use std::time::Duration;

use homestead_sdk_0_17_tests::{
    Blobs, Metadata, TestNet, TestServer, bearer_call, client_id, put_created, server_error,
};
use pubky::{PubkySession, SessionStorage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOCKED: &str = "Resource is locked";
const NOT_HELD: &str = "The If header does not name the live lock on this path";

/// A network with one server on `metadata` and `blobs`, and a root grant session of a fresh user.
async fn signed_in(metadata: Metadata, blobs: Blobs) -> (TestNet, TestServer, PubkySession) {
    let net = TestNet::new();
    let server = net
        .serve(net.server().metadata(metadata).blobs(blobs))
        .await;
    let signer = net.signed_up(&server).await;
    let session = signer.signin(client_id("locks.app")).await.expect("signin");
    (net, server, session)
}

/// The text of `path` read through `storage`.
async fn read(storage: &SessionStorage, path: &str) -> String {
    let response = storage.get(path).await.expect("GET");
    response.text().await.expect("body")
}

/// `method path` on `server` with the bearer and `headers`; status and body.
async fn raw(
    server: &TestServer,
    method: &str,
    path: &str,
    bearer: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    bearer_call(server, method, path, bearer, headers, body).await
}

/// The user's path-addressed URL path of `path`.
fn storage_path(session: &PubkySession, path: &str) -> String {
    format!("/storage/{}{path}", session.info().public_key().z32())
}

async fn bearer_of(session: &PubkySession) -> String {
    session.as_grant().expect("grant").current_bearer().await
}

async fn lock_suite(metadata: Metadata, blobs: Blobs) {
    let (_net, _server, session) = signed_in(metadata, blobs).await;
    let storage = session.storage();
    let path = "/pub/locks.app/state.json";
    put_created(&storage, path, "v1").await;

    let mut lock = storage
        .lock(path, Duration::from_secs(30))
        .await
        .expect("lock");
    assert_eq!(lock.timeout(), Duration::from_secs(30));
    assert!(
        lock.token().starts_with("opaquelocktoken:"),
        "{}",
        lock.token()
    );
    // Everybody else waits: another lock, a plain write, a plain delete.
    let second = server_error(storage.lock(path, Duration::from_secs(30)).await);
    assert_eq!(second, (423, LOCKED.to_string()));
    let put = server_error(storage.put(path, "intruder").await);
    assert_eq!(put, (423, LOCKED.to_string()));
    let delete = server_error(storage.delete(path).await);
    assert_eq!(delete, (423, LOCKED.to_string()));
    // The holder writes.
    let put = storage.put_locked(&lock, "v2").await.expect("put_locked");
    assert_eq!(put.status(), 201);
    assert_eq!(read(&storage, path).await, "v2");

    // Refreshes grant what the server allows.
    storage
        .refresh_lock(&mut lock, Duration::from_secs(10))
        .await
        .expect("refresh");
    assert_eq!(lock.timeout(), Duration::from_secs(10));
    storage
        .refresh_lock(&mut lock, Duration::from_secs(3600))
        .await
        .expect("refresh");
    assert_eq!(lock.timeout(), Duration::from_secs(60));

    // A delete under the lock keeps the lock.
    let deleted = storage.delete_locked(&lock).await.expect("delete_locked");
    assert_eq!(deleted.status(), 204);
    let again = server_error(storage.lock(path, Duration::from_secs(30)).await);
    assert_eq!(again.0, 423);

    // Released once; the token is worthless afterwards, and the path free.
    storage.unlock(&lock).await.expect("unlock");
    let twice = server_error(storage.unlock(&lock).await);
    assert_eq!(
        twice,
        (409, "No lock with this token on this path".to_string())
    );
    let stale = server_error(storage.put_locked(&lock, "v3").await);
    assert_eq!(stale, (412, NOT_HELD.to_string()));
    put_created(&storage, path, "v3").await;

    // A lock ends on time, whoever holds it.
    let brief = "/pub/locks.app/brief";
    let mut short = storage
        .lock(brief, Duration::from_secs(1))
        .await
        .expect("lock");
    assert_eq!(short.timeout(), Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late = server_error(storage.put_locked(&short, "late").await);
    assert_eq!(late, (412, NOT_HELD.to_string()));
    let refreshed = server_error(
        storage
            .refresh_lock(&mut short, Duration::from_secs(30))
            .await,
    );
    assert_eq!(refreshed.0, 412);
    put_created(&storage, brief, "free").await;
    let next = storage
        .lock(brief, Duration::from_secs(30))
        .await
        .expect("lock");
    assert_ne!(next.token(), short.token());
}

homestead_sdk_0_17_tests::on_main_backend_pairs!(lock_suite: locks_on_sqlite_fs, locks_on_postgres_s3);

/// Two instances of one deployment: a lock taken through the first refuses a write through the second
/// and admits the holder's; released through the second, the first writes freely.
async fn locks_across_instances() {
    let net = TestNet::new();
    let first_builder = net.server().metadata(Metadata::Postgres).blobs(Blobs::S3);
    let first = net.serve(first_builder).await;
    let second = net.server().sharing(&first).start().await;
    let signer = net.signed_up(&first).await;
    let session = signer.signin(client_id("locks.app")).await.expect("signin");
    let storage = session.storage();
    let path = "/pub/locks.app/shared";
    let url = storage_path(&session, path);
    let bearer = bearer_of(&session).await;

    let lock = storage
        .lock(path, Duration::from_secs(30))
        .await
        .expect("lock through the first");
    let (status, body) = raw(&second, "PUT", &url, &bearer, &[], "other").await;
    assert_eq!((status, body.as_str()), (423, LOCKED));
    let (status, body) = raw(&second, "LOCK", &url, &bearer, &[], "").await;
    assert_eq!((status, body.as_str()), (423, LOCKED));
    let presented = lock.if_header();
    let with_lock = [("if", presented.as_str())];
    let (status, body) = raw(&second, "PUT", &url, &bearer, &with_lock, "holder").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(read(&storage, path).await, "holder");

    let named = format!("<{}>", lock.token());
    let naming = [("lock-token", named.as_str())];
    let (status, body) = raw(&second, "UNLOCK", &url, &bearer, &naming, "").await;
    assert_eq!(status, 204, "{body}");
    put_created(&storage, path, "free again").await;
    let log = second.log();
    assert!(second.stop().await.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_binds_every_instance_on_postgres_s3() {
    tokio::time::timeout(Duration::from_secs(240), locks_across_instances())
        .await
        .expect("within 240 s");
}

/// The server is killed while a write under a lock streams its body; after the restart the old file is
/// served whole, the lock still refuses others and admits its holder.
async fn crash_during_a_locked_write(metadata: Metadata, blobs: Blobs) {
    let (_net, mut server, session) = signed_in(metadata, blobs).await;
    let storage = session.storage();
    let path = "/pub/locks.app/big.bin";
    let url = storage_path(&session, path);
    let bearer = bearer_of(&session).await;
    put_created(&storage, path, "the old file").await;
    let lock = storage
        .lock(path, Duration::from_secs(60))
        .await
        .expect("lock");

    // A raw upload of 8 MiB that stops after 1 MiB: the server streams it under the lock.
    let address = server.icann_url().trim_start_matches("http://").to_string();
    let mut upload = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let head = format!(
        "PUT {url} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {bearer}\r\n\
         If: {}\r\nContent-Length: {}\r\n\r\n",
        lock.if_header(),
        8 << 20
    );
    upload.write_all(head.as_bytes()).await.expect("head");
    upload
        .write_all(&vec![b'n'; 1 << 20])
        .await
        .expect("first part");
    // No answer yet: the lock check passed and the server waits for the rest of the body.
    let mut answer = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(700), upload.read(&mut answer)).await;
    assert!(
        early.is_err(),
        "the server answered early: {:?}",
        early.map(|n| String::from_utf8_lossy(&answer[..n.unwrap_or(0)]).into_owned())
    );
    server.kill().await;
    drop(upload);
    let server = server.restart().await;

    let (status, body) = raw(&server, "GET", &url, &bearer, &[], "").await;
    assert_eq!((status, body.as_str()), (200, "the old file"));
    let (status, body) = raw(&server, "PUT", &url, &bearer, &[], "other").await;
    assert_eq!((status, body.as_str()), (423, LOCKED));
    let (status, body) = raw(&server, "LOCK", &url, &bearer, &[], "").await;
    assert_eq!((status, body.as_str()), (423, LOCKED));
    let presented = lock.if_header();
    let with_lock = [("if", presented.as_str())];
    let (status, body) = raw(&server, "PUT", &url, &bearer, &with_lock, "the new file").await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = raw(&server, "GET", &url, &bearer, &[], "").await;
    assert_eq!((status, body.as_str()), (200, "the new file"));
    let named = format!("<{}>", lock.token());
    let naming = [("lock-token", named.as_str())];
    let (status, body) = raw(&server, "UNLOCK", &url, &bearer, &naming, "").await;
    assert_eq!(status, 204, "{body}");
    let log = server.log();
    assert!(server.stop().await.success(), "{log}");
}

homestead_sdk_0_17_tests::on_main_backend_pairs!(crash_during_a_locked_write: locked_write_crash_on_sqlite_fs, locked_write_crash_on_postgres_s3);

//! WebDAV locks over the whole client stack (PROTOCOL-0.17.md §17, checklist §25 items 81–93), with root
//! bearers of grant sessions; and a write under a lock: kept alive while it streams, refused at its
//! commit when the lock is lost meanwhile.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{Method, StatusCode, header};
use pubky_common::crypto::Keypair;

use super::grants::{Grant, bearer, exchange, grant_signup};
use super::{Answer, TestApp, expect, request};
use crate::webdav;

const LOCKED: &str = "Resource is locked";
const NOT_HELD: &str = "The If header does not name the live lock on this path";

fn lock_method() -> Method {
    Method::from_bytes(b"LOCK").unwrap()
}

fn unlock_method() -> Method {
    Method::from_bytes(b"UNLOCK").unwrap()
}

/// A user signed up through a signup grant, and the bearer of a root grant session of theirs.
struct Owner {
    z32: String,
    bearer: String,
}

impl Owner {
    async fn new(app: &TestApp) -> Self {
        let user = Keypair::random();
        assert_eq!(
            grant_signup(app, &user).await.status,
            StatusCode::NO_CONTENT
        );
        let client = Keypair::random();
        let z32 = user.public_key().z32();
        // Grant ids are global: one of the user's own.
        let jti = &z32[..22];
        let grant = Grant::session(&user, &client, &["/:rw"], jti).jws();
        let bearer = bearer(&exchange(app, &grant, &client, jti).await);
        Self { z32, bearer }
    }

    /// The path-addressed URL of `path`.
    fn url(&self, path: &str) -> String {
        format!("/storage/{}{path}", self.z32)
    }
}

/// `method uri` with `headers` and `body`, authenticated with `bearer` when given.
async fn send(
    app: &TestApp,
    method: Method,
    uri: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: Body,
) -> Answer {
    let mut builder = request(method, uri);
    if let Some(bearer) = bearer {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {bearer}"));
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    app.client(builder.body(body).unwrap()).await
}

/// The owner's `method` on `path` with `headers` and `body`.
async fn call(
    app: &TestApp,
    owner: &Owner,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Answer {
    let uri = owner.url(path);
    let bearer = Some(owner.bearer.as_str());
    send(app, method, &uri, bearer, headers, Body::from(body)).await
}

/// The owner's `LOCK` of `path` with `headers`.
async fn lock(app: &TestApp, owner: &Owner, path: &str, headers: &[(&str, &str)]) -> Answer {
    call(app, owner, lock_method(), path, headers, "").await
}

/// [`send`] without headers or body.
async fn send_empty(app: &TestApp, method: Method, uri: &str, bearer: Option<&str>) -> Answer {
    send(app, method, uri, bearer, &[], Body::empty()).await
}

/// `UNLOCK` of `owner`'s `path` with `Lock-Token: token` (no header when `token` is empty).
async fn unlock(app: &TestApp, owner: &Owner, path: &str, token: &str) -> Answer {
    let headers: &[(&str, &str)] = if token.is_empty() {
        &[]
    } else {
        &[("lock-token", token)]
    };
    call(app, owner, unlock_method(), path, headers, "").await
}

/// The token (UUID) of a granted lock, checked for its form.
fn token(answer: &Answer) -> String {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let header = answer.header(webdav::LOCK_TOKEN);
    let token = header
        .strip_prefix("<opaquelocktoken:")
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or_else(|| panic!("Lock-Token {header}"));
    assert_eq!(token.len(), 36, "{token}");
    token.to_string()
}

/// `If: (<opaquelocktoken:token>)`, as the SDK sends it.
fn presenting(token: &str) -> String {
    format!("(<opaquelocktoken:{token}>)")
}

fn timeout_of(answer: &Answer) -> &str {
    answer.header(webdav::TIMEOUT)
}

#[tokio::test]
async fn a_lock_is_granted_refused_presented_refreshed_and_released() {
    let app = TestApp::builder().build().await;
    let owner = Owner::new(&app).await;
    let path = "/pub/state.bin";

    // 81: granted, with the spec's headers and body.
    let granted = lock(&app, &owner, path, &[]).await;
    let token = token(&granted);
    assert_eq!(
        granted.header(header::CONTENT_TYPE),
        "application/xml; charset=utf-8"
    );
    assert_eq!(timeout_of(&granted), "Second-30");
    assert_eq!(
        granted.text(),
        webdav::lock_answer(&token, 30, &owner.url(path))
    );
    assert!(granted.text().contains(&format!(
        "<D:lockroot><D:href>/storage/{}/pub/state.bin</D:href></D:lockroot>",
        owner.z32
    )));

    // 82: the holder too is refused a second lock; tokenless writes are refused.
    expect(&lock(&app, &owner, path, &[]).await, 423, LOCKED);
    let put = call(&app, &owner, Method::PUT, path, &[], "x").await;
    expect(&put, 423, LOCKED);
    let delete = call(&app, &owner, Method::DELETE, path, &[], "").await;
    expect(&delete, 423, LOCKED);

    // 83: the token admits a write; another token does not.
    let held = presenting(&token);
    let put = call(&app, &owner, Method::PUT, path, &[("if", &held)], "v1").await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    let other = presenting(&webdav::new_token());
    let put = call(&app, &owner, Method::PUT, path, &[("if", &other)], "v2").await;
    expect(&put, 412, NOT_HELD);

    // 84: a refresh sets the lifetime and names no new token; a stale token is refused.
    let refresh = [("if", held.as_str()), ("timeout", "Second-10")];
    let refreshed = lock(&app, &owner, path, &refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text());
    assert_eq!(timeout_of(&refreshed), "Second-10");
    assert_eq!(refreshed.header(webdav::LOCK_TOKEN), "");
    assert_eq!(
        refreshed.text(),
        webdav::lock_answer(&token, 10, &owner.url(path))
    );
    expect(
        &lock(&app, &owner, path, &[("if", &other)]).await,
        412,
        NOT_HELD,
    );

    // A delete under the lock leaves the lock in place.
    let delete = call(&app, &owner, Method::DELETE, path, &[("if", &held)], "").await;
    assert_eq!(delete.status, StatusCode::NO_CONTENT, "{}", delete.text());
    expect(&lock(&app, &owner, path, &[]).await, 423, LOCKED);

    // 86: UNLOCK needs the token of this path's lock.
    let unlock = |token| unlock(&app, &owner, path, token);
    let malformed = "Missing or malformed Lock-Token header";
    expect(&unlock("").await, 400, malformed);
    expect(&unlock("urn:uuid:1").await, 400, malformed);
    let unknown = format!("<opaquelocktoken:{}>", webdav::new_token());
    let no_lock = "No lock with this token on this path";
    expect(&unlock(&unknown).await, 409, no_lock);
    // 93: knowing the token is not enough.
    let named = format!("<opaquelocktoken:{token}>");
    let naming = [("lock-token", named.as_str())];
    let uri = owner.url(path);
    let anonymous = send(&app, unlock_method(), &uri, None, &naming, Body::empty()).await;
    expect(&anonymous, 401, "Unauthorized");
    expect(&lock(&app, &owner, path, &[]).await, 423, LOCKED);
    // A token names its own path only.
    let elsewhere = call(&app, &owner, unlock_method(), "/pub/other", &naming, "").await;
    expect(&elsewhere, 409, no_lock);
    let released = unlock(&named).await;
    assert_eq!(
        (released.status, released.body.len()),
        (StatusCode::NO_CONTENT, 0)
    );
    let put = call(&app, &owner, Method::PUT, path, &[("if", &held)], "v3").await;
    expect(&put, 412, NOT_HELD);
    let put = call(&app, &owner, Method::PUT, path, &[], "v3").await;
    assert_eq!(put.status, StatusCode::CREATED);
    expect(&unlock(&named).await, 409, no_lock);
}

#[tokio::test]
async fn timeouts_are_clamped_and_expire() {
    let app = TestApp::builder().build().await;
    let owner = Owner::new(&app).await;
    // 85.
    for (n, (asked, granted)) in [
        (Some("Second-99999"), "Second-60"),
        (Some("Infinite"), "Second-60"),
        (Some("Second-0"), "Second-1"),
        (None, "Second-30"),
        (Some("nonsense"), "Second-30"),
        (Some("Second-10"), "Second-10"),
    ]
    .into_iter()
    .enumerate()
    {
        let path = format!("/pub/t{n}");
        let headers: Vec<(&str, &str)> = asked.map(|a| ("timeout", a)).into_iter().collect();
        let answer = lock(&app, &owner, &path, &headers).await;
        assert_eq!(answer.status, StatusCode::OK, "{asked:?}");
        assert_eq!(timeout_of(&answer), granted, "{asked:?}");
    }

    // 91: a lock never outlives its timeout.
    let path = "/pub/short";
    let first = token(&lock(&app, &owner, path, &[("timeout", "Second-1")]).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let put = call(&app, &owner, Method::PUT, path, &[], "free").await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    let stale = presenting(&first);
    let put = call(&app, &owner, Method::PUT, path, &[("if", &stale)], "late").await;
    expect(&put, 412, NOT_HELD);
    let refresh = lock(&app, &owner, path, &[("if", &stale)]).await;
    expect(&refresh, 412, NOT_HELD);
    let second = token(&lock(&app, &owner, path, &[]).await);
    assert_ne!(first, second);
}

#[tokio::test]
async fn locks_are_refused_like_writes() {
    let app = TestApp::builder().build().await;
    let owner = Owner::new(&app).await;
    let stranger = Owner::new(&app).await;
    let path = "/pub/state.bin";
    let uri = owner.url(path);

    // 87: only exclusive write locks; at most 16 KiB of lockinfo, read only with an identity.
    let shared = r#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:shared/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>"#;
    let answer = call(&app, &owner, lock_method(), path, &[], shared).await;
    expect(&answer, 400, "Only exclusive write locks are supported");
    let large = Body::from(vec![b' '; webdav::MAX_LOCKINFO_BYTES + 1]);
    let answer = send(&app, lock_method(), &uri, Some(&owner.bearer), &[], large).await;
    expect(&answer, 413, "lockinfo body too large");
    let large = Body::from(vec![b' '; webdav::MAX_LOCKINFO_BYTES + 1]);
    let answer = send(&app, lock_method(), &uri, None, &[], large).await;
    expect(&answer, 401, "Unauthorized");
    let exclusive = r#"<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>"#;
    let answer = call(&app, &owner, lock_method(), path, &[], exclusive).await;
    token(&answer);

    // 88: the write authorization of PUT.
    let answer = lock(&app, &owner, "/pub/dir/", &[]).await;
    expect(&answer, 400, "Target path must be a file");
    let answer = lock(&app, &owner, "/other/x", &[]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text());
    let answer = send_empty(&app, lock_method(), &owner.url("/pub/x"), None).await;
    expect(&answer, 401, "Unauthorized");
    let bearer = Some(stranger.bearer.as_str());
    let answer = send_empty(&app, lock_method(), &owner.url("/pub/x"), bearer).await;
    expect(&answer, 403, "Session user does not match target tenant");
    let answer = send_empty(&app, unlock_method(), &owner.url("/pub/x"), bearer).await;
    expect(&answer, 403, "Session user does not match target tenant");

    // 89: other methods are not allowed, before any authentication.
    for method in [
        Method::PATCH,
        Method::POST,
        Method::from_bytes(b"PROPFIND").unwrap(),
    ] {
        let answer = send_empty(&app, method.clone(), &uri, None).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(
            answer.header(header::ALLOW),
            "GET, HEAD, PUT, DELETE, LOCK, UNLOCK"
        );
        assert!(answer.body.is_empty());
    }
}

#[tokio::test]
async fn owner_relative_writes_obey_locks_but_cannot_lock() {
    let app = TestApp::builder().build().await;
    let owner = Owner::new(&app).await;
    let path = "/pub/state.bin";
    let legacy = |method: Method, headers: &[(&str, &str)], body: &'static str| {
        let mut all = vec![("pubky-host".to_string(), owner.z32.clone())];
        all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        let (app, bearer) = (&app, owner.bearer.clone());
        async move {
            let all: Vec<(&str, &str)> =
                all.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            send(app, method, path, Some(&bearer), &all, Body::from(body)).await
        }
    };
    // 90.
    let answer = legacy(lock_method(), &[], "").await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    let held = presenting(&token(&lock(&app, &owner, path, &[]).await));
    expect(&legacy(Method::PUT, &[], "x").await, 423, LOCKED);
    let put = legacy(Method::PUT, &[("if", &held)], "x").await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    expect(&legacy(Method::DELETE, &[], "").await, 423, LOCKED);
    expect(&legacy(lock_method(), &[("if", &held)], "").await, 405, "");

    // 92: a lock reserves a path without creating anything.
    let free = "/pub/reserved";
    token(&lock(&app, &owner, free, &[]).await);
    let get = send_empty(&app, Method::GET, &owner.url(free), None).await;
    assert_eq!(get.status, StatusCode::NOT_FOUND);
    expect(
        &call(&app, &owner, Method::DELETE, free, &[], "").await,
        423,
        LOCKED,
    );
}

/// A PUT of `owner`'s `path` presenting `token`, whose body the returned sender feeds.
fn streaming_put(
    app: &TestApp,
    owner: &Owner,
    path: &str,
    token: &str,
) -> (
    tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    tokio::task::JoinHandle<Answer>,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let body = Body::from_stream(tokio_stream(receiver));
    let request = request(Method::PUT, &owner.url(path))
        .header(header::AUTHORIZATION, format!("Bearer {}", owner.bearer))
        .header("if", presenting(token))
        .body(body)
        .unwrap();
    let service = app.client_service();
    let put = tokio::spawn(async move {
        use tower::ServiceExt;
        super::answer(service.oneshot(request).await.unwrap()).await
    });
    (sender, put)
}

fn tokio_stream(
    mut receiver: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[tokio::test]
async fn a_write_keeps_its_lock_alive_and_loses_it_at_the_commit() {
    let app = TestApp::builder().build().await;
    let owner = Owner::new(&app).await;
    let path = "/pub/doc";
    let put = call(&app, &owner, Method::PUT, path, &[], "old").await;
    assert_eq!(put.status, StatusCode::CREATED);

    // A one-second lock outlives its timeout while a write under it streams, and stays afterwards.
    let token = token(&lock(&app, &owner, path, &[("timeout", "Second-1")]).await);
    let (body, put) = streaming_put(&app, &owner, path, &token);
    body.send(Ok(Bytes::from_static(b"new "))).await.unwrap();
    // The channel holds one piece: this send returns once the server reads the body.
    body.send(Ok(Bytes::from_static(b"version"))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    expect(&lock(&app, &owner, path, &[]).await, 423, LOCKED);
    drop(body);
    let put = put.await.unwrap();
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    expect(&lock(&app, &owner, path, &[]).await, 423, LOCKED);

    // Unlocked while the body streams (past its lock check): refused at the commit, the file unchanged.
    let named = format!("<opaquelocktoken:{token}>");
    let (body, put) = streaming_put(&app, &owner, path, &token);
    body.send(Ok(Bytes::from_static(b"lost "))).await.unwrap();
    body.send(Ok(Bytes::from_static(b"write"))).await.unwrap();
    let unlock = [("lock-token", named.as_str())];
    let released = call(&app, &owner, unlock_method(), path, &unlock, "").await;
    assert_eq!(released.status, StatusCode::NO_CONTENT);
    drop(body);
    expect(&put.await.unwrap(), 412, NOT_HELD);
    let get = send_empty(&app, Method::GET, &owner.url(path), None).await;
    assert_eq!(get.text(), "new version");
}

//! Private data over the whole client stack (PROTOCOL-0.17.md §12.3, §13–§15): who reads `/priv/`, in
//! which order the refusals come, what caches are told, what the event feeds show, and how revocation
//! ends private streams.

use std::time::Duration;

use axum::body::Body;
use http::{Method, StatusCode, header};
use http_body_util::BodyExt;
use pubky_common::crypto::Keypair;
use tower::ServiceExt;

use super::grants::{Grant, bearer, call, cookie_session, exchange, with_bearer};
use super::{Answer, TestApp, expect, request};

const NO_READ: &str = "Session does not have read access to path";
const NO_WRITE: &str = "Session does not have write access to path";
const ANONYMOUS: &str = "Authentication required to read private storage";
const NOT_OWNER: &str = "Session user does not match target tenant";
const READING_ELSEWHERE: &str =
    "Reading from directories other than '/pub/' and '/priv/' is forbidden";
const WRITING_ELSEWHERE: &str =
    "Writing to directories other than '/pub/' and '/priv/' is forbidden";

/// A user with a root cookie session and one private file, `/priv/app/x`, holding `secret`.
struct Owner {
    app: TestApp,
    keypair: Keypair,
    key: String,
    /// `name=secret` of the root cookie session.
    cookie: String,
}

impl Owner {
    async fn new() -> Self {
        let app = TestApp::builder().build().await;
        let keypair = Keypair::random();
        let key = keypair.public_key().z32();
        let cookie = cookie_session(&app, "/signup", &keypair, "/:rw").await;
        let owner = Self {
            app,
            keypair,
            key,
            cookie,
        };
        let put = owner.legacy(Method::PUT, "/priv/app/x", Body::from("secret"));
        assert_eq!(owner.app.client(put).await.status, StatusCode::CREATED);
        owner
    }

    /// A request on the owner's legacy route with the root cookie.
    fn legacy(&self, method: Method, path: &str, body: Body) -> http::Request<Body> {
        request(method, path)
            .header("pubky-host", &self.key)
            .header(header::COOKIE, &self.cookie)
            .body(body)
            .unwrap()
    }

    /// `method` on the owner's path-addressed `path` with `bearer`.
    async fn with(&self, method: Method, path: &str, bearer: &str) -> Answer {
        let uri = format!("/storage/{}{path}", self.key);
        with_bearer(&self.app, method, &uri, bearer).await
    }

    /// A bearer of a grant of the owner for `caps`, with grant id `jti`.
    async fn bearer(&self, caps: &[&str], jti: &str) -> String {
        let client = Keypair::random();
        let grant = Grant::session(&self.keypair, &client, caps, jti).jws();
        bearer(&exchange(&self.app, &grant, &client, jti).await)
    }
}

/// Every value of header `name`.
fn all(answer: &Answer, name: header::HeaderName) -> Vec<String> {
    answer
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// Asserts the private-path headers of §14: `no-store`, the handler's `Vary` line, and validators only on
/// a success or a 304.
fn assert_private_headers(answer: &Answer, legacy: bool) {
    assert_eq!(answer.header(header::CACHE_CONTROL), "no-store");
    let vary = match legacy {
        true => "pubky-host, Authorization, Cookie",
        false => "Authorization, Cookie",
    };
    assert!(
        all(answer, header::VARY).contains(&vary.to_string()),
        "{:?}",
        all(answer, header::VARY)
    );
    if answer.status.as_u16() >= 400 {
        assert_eq!(answer.header(header::ETAG), "", "{}", answer.status);
        assert_eq!(answer.header(header::LAST_MODIFIED), "");
    }
}

#[tokio::test]
async fn private_reads_follow_the_permission_order_on_both_routes() {
    let owner = Owner::new().await;
    let app = &owner.app;
    let reader = owner.bearer(&["/priv/app/:r"], "reader").await;
    let writer = owner.bearer(&["/priv/app/:w"], "writer").await;
    let keys_only = owner.bearer(&["/priv/app/:e"], "keysonly").await;
    let stranger = Keypair::random();
    cookie_session(app, "/signup", &stranger, "/:rw").await;
    let client = Keypair::random();
    let foreign = Grant::session(&stranger, &client, &["/:rw"], "foreign").jws();
    let foreign = bearer(&exchange(app, &foreign, &client, "foreign").await);
    let etag = owner
        .with(Method::GET, "/priv/app/x", &reader)
        .await
        .header(header::ETAG)
        .to_string();
    assert!(etag.starts_with('"'), "{etag}");
    let host = owner.key.as_str();
    for legacy in [true, false] {
        for file in ["x", "missing"] {
            let uri = match legacy {
                true => format!("/priv/app/{file}"),
                false => format!("/storage/{host}/priv/app/{file}"),
            };
            let ask = |method: Method, extra: Vec<(&'static str, String)>| {
                let mut request = request(method, &uri);
                if legacy {
                    request = request.header("pubky-host", host);
                }
                for (name, value) in extra {
                    request = request.header(name, value);
                }
                app.client(request.body(Body::empty()).unwrap())
            };
            let bearer_of = |token: &str| vec![("authorization", format!("Bearer {token}"))];
            let exists = file == "x";
            // Whether the file exists or not, nobody but a covering session learns it.
            for (credential, status, text) in [
                (vec![], 401, ANONYMOUS),
                (bearer_of(&foreign), 403, NOT_OWNER),
                (bearer_of(&writer), 403, NO_READ),
                (bearer_of(&keys_only), 403, NO_READ),
            ] {
                let answer = ask(Method::GET, credential.clone()).await;
                expect(&answer, status, text);
                assert_private_headers(&answer, legacy);
                let head = ask(Method::HEAD, credential.clone()).await;
                assert_eq!(head.status.as_u16(), status, "HEAD {uri}");
                assert_private_headers(&head, legacy);
                let mut conditional = credential;
                conditional.push(("if-none-match", etag.clone()));
                let answer = ask(Method::GET, conditional).await;
                assert_eq!(
                    answer.status.as_u16(),
                    status,
                    "no 304 before authorization"
                );
            }
            let answer = ask(Method::GET, bearer_of(&reader)).await;
            assert_private_headers(&answer, legacy);
            match exists {
                true => {
                    assert_eq!(answer.refusal(), (200, "secret".into()));
                    assert_eq!(answer.header(header::ETAG), etag);
                }
                false => expect(&answer, 404, "Not Found"),
            }
            let head = ask(Method::HEAD, bearer_of(&reader)).await;
            assert_eq!(
                head.status,
                if exists {
                    StatusCode::OK
                } else {
                    StatusCode::NOT_FOUND
                }
            );
            let mut conditional = bearer_of(&reader);
            conditional.push(("if-none-match", etag.clone()));
            let answer = ask(Method::GET, conditional).await;
            if exists {
                assert_eq!(answer.status, StatusCode::NOT_MODIFIED);
                assert_private_headers(&answer, legacy);
                assert_eq!(
                    answer.header(header::ETAG),
                    etag,
                    "a 304 keeps its validator"
                );
            }
        }
    }
    // The owner's own cookie reads on the legacy route.
    let answer = app
        .client(owner.legacy(Method::GET, "/priv/app/x", Body::empty()))
        .await;
    assert_eq!(answer.refusal(), (200, "secret".into()));
    // A listing needs its directory covered.
    let listing = owner.with(Method::GET, "/priv/app/", &reader).await;
    assert_eq!(
        listing.refusal(),
        (200, format!("pubky://{host}/priv/app/x"))
    );
    assert_private_headers(&listing, false);
    let above = format!("/storage/{host}/priv/");
    expect(
        &owner.with(Method::GET, "/priv/", &reader).await,
        403,
        NO_READ,
    );
    expect(&call(app, Method::GET, &above, &[]).await, 401, ANONYMOUS);
    // `..` cannot lead a public read into the private area.
    let dotted = format!("/storage/{host}/pub/../priv/app/x");
    expect(&call(app, Method::GET, &dotted, &[]).await, 401, ANONYMOUS);
}

#[tokio::test]
async fn private_writes_need_a_covering_write_capability() {
    let owner = Owner::new().await;
    let app = &owner.app;
    let host = owner.key.as_str();
    let reader = owner.bearer(&["/priv/app/:r"], "reader").await;
    let writer = owner.bearer(&["/priv/app/:w"], "writer").await;
    let keys_only = owner.bearer(&["/priv/app/:e"], "keysonly").await;
    let put = |token: &str, path: &str| {
        let request = request(Method::PUT, &format!("/storage/{host}{path}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::from("new"))
            .unwrap();
        app.client(request)
    };
    expect(&put(&reader, "/priv/app/y").await, 403, NO_WRITE);
    expect(&put(&keys_only, "/priv/app/y").await, 403, NO_WRITE);
    expect(&put(&writer, "/priv/other").await, 403, NO_WRITE);
    let created = put(&writer, "/priv/app/y").await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_private_headers(&created, false);
    let deleted = owner.with(Method::DELETE, "/priv/app/y", &writer).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    // Outside the two areas, whoever asks.
    let root = owner.bearer(&["/:rw"], "root").await;
    expect(&put(&root, "/other/x").await, 403, WRITING_ELSEWHERE);
    expect(&put(&root, "/pub/../x").await, 403, WRITING_ELSEWHERE);
    expect(
        &owner.with(Method::GET, "/other/x", &root).await,
        403,
        READING_ELSEWHERE,
    );
    let pub_itself = owner.legacy(Method::GET, "/pub", Body::empty());
    expect(&app.client(pub_itself).await, 403, READING_ELSEWHERE);
    // No identity is a 401 before anything else, on either area.
    let anonymous = request(Method::PUT, &format!("/storage/{host}/priv/app/z"))
        .body(Body::from("x"))
        .unwrap();
    expect(
        &app.client(anonymous).await,
        401,
        "No authenticated session found",
    );
}

#[tokio::test]
async fn public_files_vary_by_host_only_on_legacy_routes() {
    let owner = Owner::new().await;
    let app = &owner.app;
    let put = owner.legacy(Method::PUT, "/pub/f", Body::from("public"));
    assert_eq!(app.client(put).await.status, StatusCode::CREATED);
    let legacy = call(app, Method::GET, "/pub/f", &[("pubky-host", &owner.key)]).await;
    assert_eq!(
        legacy.header(header::CACHE_CONTROL),
        "private, must-revalidate"
    );
    assert!(all(&legacy, header::VARY).contains(&"pubky-host".to_string()));
    let addressed = format!("/storage/{}/pub/f", owner.key);
    let addressed = call(app, Method::GET, &addressed, &[]).await;
    assert_eq!(
        addressed.header(header::CACHE_CONTROL),
        "private, must-revalidate"
    );
    assert!(
        !all(&addressed, header::VARY)
            .iter()
            .any(|v| v.contains("pubky-host")),
        "{:?}",
        all(&addressed, header::VARY)
    );
    let missing = call(app, Method::GET, "/pub/none", &[("pubky-host", &owner.key)]).await;
    assert!(!all(&missing, header::VARY).contains(&"pubky-host".to_string()));
}

#[tokio::test]
async fn event_feeds_never_carry_private_events() {
    let owner = Owner::new().await;
    let app = &owner.app;
    let key = owner.key.as_str();
    app.write(key, "/pub/a", "1").await;
    app.write(key, "/priv/app/b", "2").await;
    app.write(key, "/pub/c", "3").await;
    let feed = call(app, Method::GET, "/events/", &[]).await;
    let lines: Vec<String> = feed.text().lines().map(str::to_string).collect();
    assert_eq!(
        lines[..2],
        [
            format!("PUT pubky://{key}/pub/a"),
            format!("PUT pubky://{key}/pub/c")
        ]
    );
    assert!(!feed.text().contains("/priv/"), "{}", feed.text());
    // One event per page: the walk over the whole log never meets a private one.
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    loop {
        let page = call(
            app,
            Method::GET,
            &format!("/events/?cursor={cursor}&limit=1"),
            &[],
        )
        .await;
        let text = page.text();
        let Some(next) = text.lines().find_map(|l| l.strip_prefix("cursor: ")) else {
            break;
        };
        seen.extend(
            text.lines()
                .filter(|l| !l.starts_with("cursor: "))
                .map(str::to_string),
        );
        cursor = next.to_string();
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|l| l.contains("/pub/")), "{seen:?}");
    // A public stream (no path) and a stream of the whole user show only /pub/.
    let public = call(app, Method::GET, &format!("/events-stream?user={key}"), &[]).await;
    assert!(!public.text().contains("/priv/"), "{}", public.text());
    assert_eq!(public.text().matches("event: PUT").count(), 2);
    for root in ["/", "/pub", "/other/"] {
        let uri = format!("/events-stream?user={key}&path={root}");
        let answer = call(app, Method::GET, &uri, &[]).await;
        expect(&answer, 403, READING_ELSEWHERE);
    }
}

/// Opens `/events-stream?<query>` with `headers`; returns the status and the response body to read.
async fn open_stream(
    app: &TestApp,
    query: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Body) {
    let mut request = request(Method::GET, &format!("/events-stream?{query}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .client_service()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    (parts.status, parts.headers, body)
}

/// The next data frame of a stream body as text, skipping keep-alive comments; None when the body
/// ended. Panics after five seconds of silence.
async fn next_frame(body: &mut Body) -> Option<String> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a frame or the end within 5 s")?
            .unwrap();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let text = String::from_utf8(data.to_vec()).unwrap();
        if !text.starts_with(':') {
            return Some(text);
        }
    }
}

#[tokio::test]
async fn private_streams_follow_the_identity_rules() {
    let owner = Owner::new().await;
    let app = &owner.app;
    let key = owner.key.as_str();
    app.write(key, "/pub/p", "1").await;
    app.write(key, "/priv/app/q", "2").await;
    let reader = owner.bearer(&["/priv/app/:r"], "reader").await;
    let by_bearer = format!("Bearer {reader}");
    let private = format!("user={key}&path=/priv/app/");
    // The bearer, and the user's own cookie with no tenant at all (how a browser reaches it).
    for headers in [
        vec![("authorization", by_bearer.as_str())],
        vec![("cookie", owner.cookie.as_str())],
    ] {
        let answer = call(
            app,
            Method::GET,
            &format!("/events-stream?{private}"),
            &headers,
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(answer.header(header::CACHE_CONTROL), "no-store");
        let text = answer.text();
        assert!(
            text.contains(&format!("pubky://{key}/priv/app/q")),
            "{text}"
        );
        assert!(!text.contains("/pub/p"), "{text}");
    }
    // A mixed stream is the union.
    let mixed = format!("/events-stream?user={key}&path=/pub/&path=/priv/app/q");
    let text = call(app, Method::GET, &mixed, &[("authorization", &by_bearer)])
        .await
        .text();
    assert_eq!(text.matches("event: PUT").count(), 2, "{text}");
    // Any `Authorization: Bearer` value hides every cookie, even one too short to be a token; another
    // scheme does not.
    let uri = format!("/events-stream?{private}");
    for (authorization, status) in [("Bearer short", 401), ("Basic dTpw", 200)] {
        let headers = [
            ("authorization", authorization),
            ("cookie", owner.cookie.as_str()),
        ];
        let answer = call(app, Method::GET, &uri, &headers).await;
        assert_eq!(answer.status.as_u16(), status, "{authorization}");
    }
    let unknown = format!("Bearer {}", "x".repeat(43));
    let headers = [
        ("authorization", unknown.as_str()),
        ("cookie", owner.cookie.as_str()),
    ];
    let answer = call(
        app,
        Method::GET,
        &format!("/events-stream?{private}"),
        &headers,
    )
    .await;
    expect(&answer, 401, ANONYMOUS);
    assert_eq!(answer.header(header::CACHE_CONTROL), "no-store");
    assert_eq!(
        answer.header(header::VARY),
        "pubky-host, Authorization, Cookie"
    );
    // Coverage: the directory itself, with `r`.
    let above = format!("/events-stream?user={key}&path=/priv/");
    expect(
        &call(app, Method::GET, &above, &[("authorization", &by_bearer)]).await,
        403,
        NO_READ,
    );
    // Exactly one user: another key, or the same key twice.
    let other = Keypair::random().public_key().z32();
    for users in [
        format!("user={key}&user={other}"),
        format!("user={key}&user={key}"),
    ] {
        let uri = format!("/events-stream?{users}&path=/priv/app/");
        let answer = call(app, Method::GET, &uri, &[("authorization", &by_bearer)]).await;
        expect(
            &answer,
            403,
            "A private read must be scoped to exactly one user",
        );
        expect(&call(app, Method::GET, &uri, &[]).await, 401, ANONYMOUS);
    }
    // Someone else's stream.
    let stranger = format!("/events-stream?user={other}&path=/priv/app/");
    expect(
        &call(
            app,
            Method::GET,
            &stranger,
            &[("authorization", &by_bearer)],
        )
        .await,
        403,
        NOT_OWNER,
    );
    expect(
        &call(
            app,
            Method::GET,
            &format!("/events-stream?user={key}&limit=0"),
            &[],
        )
        .await,
        400,
        "limit must be at least 1",
    );
    for method in [Method::HEAD, Method::POST] {
        let answer = call(app, method, &format!("/events-stream?user={key}"), &[]).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(answer.header(header::ALLOW), "GET");
        assert_eq!(answer.header(header::CACHE_CONTROL), "no-store");
    }
}

#[tokio::test]
async fn revocation_ends_private_streams_and_nothing_else() {
    let owner = Owner::new().await;
    let app = &owner.app;
    let key = owner.key.as_str();
    app.write(key, "/priv/app/first", "1").await;
    let client = Keypair::random();
    let grant = Grant::session(&owner.keypair, &client, &["/priv/app/:r"], "streamer").jws();
    let token = bearer(&exchange(app, &grant, &client, "streamer").await);
    let by_bearer = format!("Bearer {token}");
    let live_private = format!("user={key}&path=/priv/app/&live=true");
    let (status, headers, mut private) =
        open_stream(app, &live_private, &[("authorization", &by_bearer)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    for path in ["/priv/app/x", "/priv/app/first"] {
        assert!(next_frame(&mut private).await.unwrap().contains(path));
    }
    // A public stream with the same bearer is never closed for authentication reasons.
    let live_public = format!("user={key}&live=true");
    let (_, _, mut public) = open_stream(app, &live_public, &[("authorization", &by_bearer)]).await;
    // A refresh rotates the bearer; the stream stays, bound to the grant.
    let refreshed = bearer(&exchange(app, &grant, &client, "streamer").await);
    assert_ne!(refreshed, token);
    app.write(key, "/priv/app/second", "2").await;
    assert!(
        next_frame(&mut private)
            .await
            .unwrap()
            .contains("/priv/app/second")
    );
    // Revoking the grant (here by the root cookie) ends it at once, without an error event.
    let revoke = request(Method::DELETE, "/auth/grant/session/streamer")
        .header("pubky-host", key)
        .header(header::COOKIE, &owner.cookie)
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.client(revoke).await.status, StatusCode::OK);
    assert_eq!(
        next_frame(&mut private).await,
        None,
        "the private stream ended"
    );
    app.write(key, "/pub/after", "3").await;
    assert!(
        next_frame(&mut public)
            .await
            .unwrap()
            .contains("/pub/after")
    );
    // A cookie session's private stream ends when it signs out.
    let (status, _, mut by_cookie) =
        open_stream(app, &live_private, &[("cookie", &owner.cookie)]).await;
    assert_eq!(status, StatusCode::OK);
    for path in ["/priv/app/x", "/priv/app/first", "/priv/app/second"] {
        assert!(next_frame(&mut by_cookie).await.unwrap().contains(path));
    }
    let sign_out = owner.legacy(Method::DELETE, "/session", Body::empty());
    assert_eq!(app.client(sign_out).await.status, StatusCode::OK);
    assert_eq!(
        next_frame(&mut by_cookie).await,
        None,
        "the cookie's stream ended"
    );
    // A stream cannot be opened with what was revoked.
    let (status, _, _) = open_stream(app, &live_private, &[("authorization", &by_bearer)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_operator_deletes_private_entries() {
    let owner = Owner::new().await;
    let app = &owner.app;
    let delete = |path: &str| {
        request(Method::DELETE, &format!("/webdav/{}/{path}", owner.key))
            .header("x-admin-password", "secret")
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        app.admin(delete("priv/app/x")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.admin(delete("priv/app/x")).await.status,
        StatusCode::NOT_FOUND
    );
    let outside = app.admin(delete("pub/../other/x")).await;
    assert_eq!(
        outside.status,
        StatusCode::BAD_REQUEST,
        "{}",
        outside.text()
    );
}

/// The handler's `Vary` lines (the CORS layer adds its own, which is left out).
fn handler_vary(answer: &Answer) -> Vec<String> {
    all(answer, header::VARY)
        .into_iter()
        .filter(|v| !v.starts_with("origin"))
        .collect()
}

/// An answer's `Cache-Control`, handler `Vary` lines and whether it has an `ETag`.
type CacheFacts = (String, Vec<String>, bool);

/// A row of the caching table: what, method, URI, headers, status, and the expected `Cache-Control`,
/// handler `Vary` lines and whether there is an `ETag`.
type Row<'a> = (
    &'a str,
    Method,
    String,
    Vec<(&'a str, &'a str)>,
    u16,
    String,
    Vec<String>,
    bool,
);

/// The [`CacheFacts`] of an answer.
fn cache_facts(answer: &Answer) -> CacheFacts {
    let cache = answer.header(header::CACHE_CONTROL).to_string();
    (
        cache,
        handler_vary(answer),
        !answer.header(header::ETAG).is_empty(),
    )
}

#[tokio::test]
async fn caching_headers_follow_the_table() {
    let owner = Owner::new().await;
    let app = &owner.app;
    let key = owner.key.as_str();
    let put = owner.legacy(Method::PUT, "/pub/f", Body::from("public"));
    assert_eq!(app.client(put).await.status, StatusCode::CREATED);
    let reader = owner.bearer(&["/priv/app/:r"], "reader").await;
    let etag = call(app, Method::GET, "/pub/f", &[("pubky-host", key)]).await;
    let etag = etag.header(header::ETAG).to_string();
    let private_etag = owner
        .with(Method::GET, "/priv/app/x", &reader)
        .await
        .header(header::ETAG)
        .to_string();
    let bearer_header = format!("Bearer {reader}");
    let host = [("pubky-host", key)];
    let revalidate = || "private, must-revalidate".to_string();
    let none: Vec<String> = Vec::new();
    let by_host = vec!["pubky-host".to_string()];
    let private_legacy = vec!["pubky-host, Authorization, Cookie".to_string()];
    let private_addressed = vec!["Authorization, Cookie".to_string()];
    let no_store = || "no-store".to_string();
    // (what, method, uri, headers, status, Cache-Control, handler Vary lines, has an ETag)
    let rows: Vec<Row> = vec![
        (
            "legacy /pub/ file",
            Method::GET,
            "/pub/f".into(),
            host.to_vec(),
            200,
            revalidate(),
            by_host.clone(),
            true,
        ),
        (
            "legacy /pub/ 304",
            Method::GET,
            "/pub/f".into(),
            vec![("pubky-host", key), ("if-none-match", &etag)],
            304,
            revalidate(),
            by_host.clone(),
            true,
        ),
        (
            "legacy /pub/ HEAD",
            Method::HEAD,
            "/pub/f".into(),
            host.to_vec(),
            200,
            revalidate(),
            by_host.clone(),
            true,
        ),
        (
            "legacy /pub/ listing",
            Method::GET,
            "/pub/".into(),
            host.to_vec(),
            200,
            String::new(),
            by_host.clone(),
            false,
        ),
        (
            "legacy /pub/ error",
            Method::GET,
            "/pub/none".into(),
            host.to_vec(),
            404,
            String::new(),
            none.clone(),
            false,
        ),
        (
            "addressed /pub/ file",
            Method::GET,
            format!("/storage/{key}/pub/f"),
            vec![],
            200,
            revalidate(),
            none.clone(),
            true,
        ),
        (
            "addressed /pub/ 304",
            Method::GET,
            format!("/storage/{key}/pub/f"),
            vec![("if-none-match", &etag)],
            304,
            revalidate(),
            none.clone(),
            true,
        ),
        (
            "addressed /pub/ HEAD",
            Method::HEAD,
            format!("/storage/{key}/pub/f"),
            vec![],
            200,
            revalidate(),
            none.clone(),
            true,
        ),
        (
            "addressed /pub/ listing",
            Method::GET,
            format!("/storage/{key}/pub/"),
            vec![],
            200,
            String::new(),
            none.clone(),
            false,
        ),
        (
            "legacy private 200",
            Method::GET,
            "/priv/app/x".into(),
            vec![("pubky-host", key), ("authorization", &bearer_header)],
            200,
            no_store(),
            private_legacy.clone(),
            true,
        ),
        (
            "legacy private 401",
            Method::GET,
            "/priv/app/x".into(),
            host.to_vec(),
            401,
            no_store(),
            private_legacy.clone(),
            false,
        ),
        (
            "addressed private 304",
            Method::GET,
            format!("/storage/{key}/priv/app/x"),
            vec![
                ("authorization", &bearer_header),
                ("if-none-match", &private_etag),
            ],
            304,
            no_store(),
            private_addressed.clone(),
            true,
        ),
        (
            "addressed private 404",
            Method::GET,
            format!("/storage/{key}/priv/app/none"),
            vec![("authorization", &bearer_header)],
            404,
            no_store(),
            private_addressed.clone(),
            false,
        ),
        (
            "addressed private 403 PUT",
            Method::PUT,
            format!("/storage/{key}/priv/app/x"),
            vec![("authorization", &bearer_header)],
            403,
            no_store(),
            private_addressed.clone(),
            false,
        ),
        (
            "addressed private 405",
            Method::POST,
            format!("/storage/{key}/priv/app/x"),
            vec![("authorization", &bearer_header)],
            405,
            no_store(),
            private_addressed.clone(),
            false,
        ),
        (
            "events-stream 200",
            Method::GET,
            format!("/events-stream?user={key}"),
            vec![],
            200,
            no_store(),
            private_legacy.clone(),
            false,
        ),
        (
            "events-stream 400",
            Method::GET,
            "/events-stream".into(),
            vec![],
            400,
            no_store(),
            private_legacy.clone(),
            false,
        ),
        (
            "events-stream 405",
            Method::HEAD,
            format!("/events-stream?user={key}"),
            vec![],
            405,
            no_store(),
            private_legacy.clone(),
            false,
        ),
        (
            "/info",
            Method::GET,
            "/info".into(),
            vec![],
            200,
            no_store(),
            none.clone(),
            false,
        ),
        (
            "grant session",
            Method::GET,
            "/auth/grant/session".into(),
            vec![("authorization", &bearer_header)],
            200,
            String::new(),
            none.clone(),
            false,
        ),
    ];
    for (what, method, uri, headers, status, cache, vary, etag) in rows {
        let answer = call(app, method, &uri, &headers).await;
        assert_eq!(answer.status.as_u16(), status, "{what}: {}", answer.text());
        assert_eq!(cache_facts(&answer), (cache, vary, etag), "{what}");
    }
}

#[tokio::test]
async fn the_operator_streams_every_event_private_ones_included() {
    let owner = Owner::new().await;
    let app = &owner.app;
    let other = Keypair::random().public_key().z32();
    app.sign_up(&other).await;
    app.write(&owner.key, "/pub/a", "1").await;
    app.write(&other, "/pub/b", "2").await;
    let stream = |query: String, method: Method| {
        request(method, &format!("/events-stream?{query}"))
            .header("x-admin-password", "secret")
            .body(Body::empty())
            .unwrap()
    };
    let all = app.admin(stream(String::new(), Method::GET)).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.header(header::CACHE_CONTROL), "no-store");
    assert_eq!(all.header(header::CONTENT_TYPE), "text/event-stream");
    let text = all.text();
    let order = ["/priv/app/x", "/pub/a", "/pub/b"];
    let found: Vec<usize> = order.iter().map(|p| text.find(p).expect(p)).collect();
    assert!(
        found.windows(2).all(|w| w[0] < w[1]),
        "one global order: {text}"
    );
    // One user, a path union, a global cursor, a limit, newest first.
    let mine = app
        .admin(stream(
            format!("user={}&path=/priv/&path=/pub/a", owner.key),
            Method::GET,
        ))
        .await;
    assert_eq!(
        mine.text().matches("event: PUT").count(),
        2,
        "{}",
        mine.text()
    );
    let cursor = text
        .lines()
        .find_map(|l| l.strip_prefix("data: cursor: "))
        .unwrap();
    let after = app
        .admin(stream(format!("cursor={cursor}"), Method::GET))
        .await
        .text();
    assert!(
        !after.contains("/priv/app/x") && after.contains("/pub/b"),
        "{after}"
    );
    let newest = app
        .admin(stream("reverse=true&limit=1".into(), Method::GET))
        .await
        .text();
    assert!(
        newest.contains("/pub/b") && newest.matches("event:").count() == 1,
        "{newest}"
    );
    for (query, status, text) in [
        (
            "limit=0".to_string(),
            400,
            "limit must be at least 1".to_string(),
        ),
        (
            "live=true&reverse=true".into(),
            400,
            "Cannot use live mode with reverse ordering".into(),
        ),
        ("user=nokey".into(), 400, "Invalid public key: nokey".into()),
        (
            format!("user={}", Keypair::random().public_key().z32()),
            404,
            "Not Found".into(),
        ),
        ("cursor=%21".into(), 400, "Invalid cursor".into()),
        ("path=/pub/%00".into(), 400, "Invalid path: /pub/\0".into()),
    ] {
        expect(
            &app.admin(stream(query.clone(), Method::GET)).await,
            status,
            &text,
        );
    }
    let head = app.admin(stream(String::new(), Method::HEAD)).await;
    assert_eq!(head.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(head.header(header::ALLOW), "GET");
    let no_password = request(Method::GET, "/events-stream")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.admin(no_password).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn private_files_take_locks_like_public_ones() {
    let owner = Owner::new().await;
    let app = &owner.app;
    let uri = format!("/storage/{}/priv/app/x", owner.key);
    let lock = |token: &str| {
        request(Method::from_bytes(b"LOCK").unwrap(), &uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    let reader = owner.bearer(&["/priv/app/:r"], "reader").await;
    expect(&app.client(lock(&reader)).await, 403, NO_WRITE);
    let writer = owner.bearer(&["/priv/app/:w"], "writer").await;
    let locked = app.client(lock(&writer)).await;
    assert_eq!(locked.status, StatusCode::OK, "{}", locked.text());
    assert_private_headers(&locked, false);
    let put = request(Method::PUT, &uri)
        .header(header::AUTHORIZATION, format!("Bearer {writer}"))
        .body(Body::from("other"))
        .unwrap();
    expect(&app.client(put).await, 423, "Resource is locked");
}

#[tokio::test]
async fn unsupported_methods_and_missing_tenants_are_refused_first() {
    let owner = Owner::new().await;
    let app = &owner.app;
    let lock = Method::from_bytes(b"LOCK").unwrap();
    // Legacy storage: 405 at once, whoever asks and whatever the body, on either area.
    for method in [lock.clone(), Method::POST, Method::PATCH] {
        for path in ["/pub/x", "/priv/app/x"] {
            let request = request(method.clone(), path)
                .header("pubky-host", &owner.key)
                .body(super::unreadable())
                .unwrap();
            let answer = app.client(request).await;
            assert_eq!(
                answer.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(answer.header(header::ALLOW), "GET,HEAD,PUT,DELETE");
        }
    }
    let head = call(app, Method::HEAD, "/signup_tokens/AAAA-BBBB-CCCC", &[]).await;
    assert_eq!(head.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(head.header(header::ALLOW), "GET");
    let get = call(app, Method::GET, "/signup_tokens/AAAA-BBBB-CCCC", &[]).await;
    expect(&get, 400, "Signup tokens not required");
    // No tenant: 0.17.1's 400 on storage and sign-out, 0.9.3's 404 on `GET /session`.
    for (method, path) in [(Method::GET, "/priv/x"), (Method::DELETE, "/session")] {
        let answer = call(app, method, path, &[]).await;
        expect(&answer, 400, "Missing request tenant");
    }
    let session = call(app, Method::GET, "/session", &[]).await;
    expect(&session, 404, "Pubky Host is missing");
}

#[tokio::test]
async fn another_sites_page_cannot_read_private_data_with_the_users_cookie() {
    let owner = Owner::new().await;
    let app = &owner.app;
    let key = owner.key.as_str();
    let read = |site: &'static str| {
        let mut request = owner.legacy(Method::GET, "/priv/app/x", Body::empty());
        request
            .headers_mut()
            .insert("sec-fetch-site", http::HeaderValue::from_static(site));
        app.client(request)
    };
    expect(&read("cross-site").await, 401, ANONYMOUS);
    for site in ["same-origin", "same-site", "none"] {
        assert_eq!(read(site).await.refusal(), (200, "secret".into()), "{site}");
    }
    // An app's own bearer is not something a browser attaches by itself.
    let reader = owner.bearer(&["/priv/app/:r"], "reader").await;
    let uri = format!("/storage/{key}/priv/app/x");
    let headers = [
        ("authorization", format!("Bearer {reader}")),
        ("sec-fetch-site", "cross-site".to_string()),
    ];
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_eq!(
        call(app, Method::GET, &uri, &pairs).await.status,
        StatusCode::OK
    );
    // Nor may such a page follow the user's private events with the cookie.
    let stream = format!("/events-stream?user={key}&path=/priv/app/");
    let cross = [
        ("cookie", owner.cookie.as_str()),
        ("sec-fetch-site", "cross-site"),
    ];
    expect(
        &call(app, Method::GET, &stream, &cross).await,
        401,
        ANONYMOUS,
    );
    let same = [
        ("cookie", owner.cookie.as_str()),
        ("sec-fetch-site", "same-site"),
    ];
    assert_eq!(
        call(app, Method::GET, &stream, &same).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn refusals_before_the_handler_carry_the_private_headers() {
    let owner = Owner::new().await;
    let app = &owner.app;
    let writer = owner.bearer(&["/priv/app/:w"], "writer").await;
    // Larger than the test server's 1024-byte upload limit: refused by the body limit layer.
    let request = request(Method::PUT, &format!("/storage/{}/priv/app/big", owner.key))
        .header(header::AUTHORIZATION, format!("Bearer {writer}"))
        .header(header::CONTENT_LENGTH, "2000")
        .body(Body::from(vec![b'x'; 2000]))
        .unwrap();
    let answer = app.client(request).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.text()
    );
    assert_private_headers(&answer, false);
}

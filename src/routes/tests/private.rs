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
    let etag = with_bearer(
        app,
        Method::GET,
        &format!("/storage/{}/priv/app/x", owner.key),
        &reader,
    )
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
    let listing = with_bearer(
        app,
        Method::GET,
        &format!("/storage/{host}/priv/app/"),
        &reader,
    )
    .await;
    assert_eq!(
        listing.refusal(),
        (200, format!("pubky://{host}/priv/app/x"))
    );
    assert_private_headers(&listing, false);
    let above = format!("/storage/{host}/priv/");
    expect(
        &with_bearer(app, Method::GET, &above, &reader).await,
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
    let deleted = with_bearer(
        app,
        Method::DELETE,
        &format!("/storage/{host}/priv/app/y"),
        &writer,
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    // Outside the two areas, whoever asks.
    let root = owner.bearer(&["/:rw"], "root").await;
    expect(&put(&root, "/other/x").await, 403, WRITING_ELSEWHERE);
    expect(&put(&root, "/pub/../x").await, 403, WRITING_ELSEWHERE);
    let read_elsewhere = format!("/storage/{host}/other/x");
    expect(
        &with_bearer(app, Method::GET, &read_elsewhere, &root).await,
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
    // An `Authorization: Bearer` header that names no session hides every cookie.
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

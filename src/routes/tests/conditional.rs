//! Conditional writes and deletes (RFC 9110 §13) through the client service, one case at a time: on
//! owner-relative routes (the tenant from `pubky-host`, `Host` or `?pubky-host=`) and path-addressed
//! ones, refusals before the body is read, the ETag of a 201, and sixteen racing writers.

use axum::body::Body;
use http::{Method, StatusCode, header};
use pubky_common::crypto::Keypair;

use super::{Answer, TestApp, request, token, unreadable};

const HELLO_ETAG: &str = "\"6o8WPbOGgpJeRJHF5Y1Ls1Bu+MFOt4qG6QjFYkpnIA8=\"";
/// Long before any write of a test, and long after.
const PAST: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const FUTURE: &str = "Fri, 01 Jan 2100 00:00:00 GMT";

/// A signed-up user of a [`TestApp`] with a session cookie.
struct Writer {
    app: TestApp,
    user: String,
    cookie: String,
}

impl Writer {
    async fn new() -> Self {
        let app = TestApp::builder().build().await;
        let keypair = Keypair::random();
        let signup = request(Method::POST, "/signup")
            .body(Body::from(token(&keypair, "/pub/:rw")))
            .unwrap();
        let signup = app.client(signup).await;
        assert_eq!(signup.status, StatusCode::OK, "{}", signup.text());
        let cookie = signup.header(header::SET_COOKIE);
        let cookie = cookie.split(';').next().unwrap().to_string();
        Self {
            app,
            user: keypair.public_key().z32(),
            cookie,
        }
    }

    /// `method` on the owner-relative `path` with the session and `headers`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Answer {
        let mut builder = request(method, path)
            .header("pubky-host", &self.user)
            .header(header::COOKIE, &self.cookie);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.app.client(builder.body(body).unwrap()).await
    }

    async fn put(&self, path: &str, headers: &[(&str, &str)], body: &'static str) -> Answer {
        self.send(Method::PUT, path, headers, Body::from(body))
            .await
    }

    async fn delete(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(Method::DELETE, path, headers, Body::empty())
            .await
    }

    /// The file's content and ETag; None when it does not exist.
    async fn get(&self, path: &str) -> Option<(String, String)> {
        let get = self.send(Method::GET, path, &[], Body::empty()).await;
        match get.status {
            StatusCode::NOT_FOUND => None,
            StatusCode::OK => Some((get.text(), get.header(header::ETAG).to_string())),
            other => panic!("GET {path}: {other}"),
        }
    }
}

/// A body that fails if anyone reads it.
fn status_text(answer: &Answer) -> (StatusCode, String) {
    (answer.status, answer.text())
}

fn precondition_failed() -> (StatusCode, String) {
    (
        StatusCode::PRECONDITION_FAILED,
        "Precondition failed".into(),
    )
}

#[tokio::test]
async fn if_none_match_star_creates_only() {
    let w = Writer::new().await;
    let created = w.put("/pub/doc", &[("if-none-match", "*")], "hello").await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    // The 201 carries the ETag reads show.
    assert_eq!(created.header(header::ETAG), HELLO_ETAG);
    assert_eq!(w.get("/pub/doc").await.unwrap().1, HELLO_ETAG);
    let again = w.put("/pub/doc", &[("if-none-match", "*")], "other").await;
    assert_eq!(status_text(&again), precondition_failed());
    assert_eq!(again.header(header::ETAG), "");
    assert_eq!(w.get("/pub/doc").await.unwrap().0, "hello");
}

#[tokio::test]
async fn if_match_replaces_only_the_version_named() {
    let w = Writer::new().await;
    // No file: no tag matches, not even `*`.
    for tag in [HELLO_ETAG, "*"] {
        let absent = w.put("/pub/doc", &[("if-match", tag)], "hello").await;
        assert_eq!(status_text(&absent), precondition_failed(), "{tag}");
    }
    assert_eq!(w.get("/pub/doc").await, None);
    assert_eq!(
        w.put("/pub/doc", &[], "hello").await.status,
        StatusCode::CREATED
    );
    // The current tag: replaced, and the 201 names the new version, so writes chain without a GET.
    let first = w
        .put("/pub/doc", &[("if-match", HELLO_ETAG)], "second")
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let second_etag = first.header(header::ETAG).to_string();
    assert_ne!(second_etag, HELLO_ETAG);
    assert_eq!(
        w.get("/pub/doc").await.unwrap(),
        ("second".into(), second_etag.clone())
    );
    // A stale tag: refused, the file unchanged.
    let stale = w.put("/pub/doc", &[("if-match", HELLO_ETAG)], "lost").await;
    assert_eq!(status_text(&stale), precondition_failed());
    // A weak tag never matches a write, even the current one.
    let weak = format!("W/{second_etag}");
    let weak = w.put("/pub/doc", &[("if-match", &weak)], "lost").await;
    assert_eq!(status_text(&weak), precondition_failed());
    assert_eq!(w.get("/pub/doc").await.unwrap().0, "second");
    // A list matches when any strong tag is current; `*` matches any file.
    let list = format!("\"unknown\", {HELLO_ETAG}, {second_etag}");
    let listed = w.put("/pub/doc", &[("if-match", &list)], "third").await;
    assert_eq!(listed.status, StatusCode::CREATED);
    let any = w.put("/pub/doc", &[("if-match", "*")], "fourth").await;
    assert_eq!(any.status, StatusCode::CREATED);
    assert_eq!(w.get("/pub/doc").await.unwrap().0, "fourth");
}

#[tokio::test]
async fn if_none_match_with_tags_compares_weakly() {
    let w = Writer::new().await;
    assert_eq!(
        w.put("/pub/doc", &[], "hello").await.status,
        StatusCode::CREATED
    );
    let weak = format!("W/{HELLO_ETAG}");
    for tag in [HELLO_ETAG, weak.as_str()] {
        let refused = w.put("/pub/doc", &[("if-none-match", tag)], "other").await;
        assert_eq!(status_text(&refused), precondition_failed(), "{tag}");
    }
    let other = w
        .put("/pub/doc", &[("if-none-match", "\"other\"")], "new")
        .await;
    assert_eq!(other.status, StatusCode::CREATED);
    assert_eq!(w.get("/pub/doc").await.unwrap().0, "new");
}

#[tokio::test]
async fn if_unmodified_since_as_rfc_9110_says() {
    let w = Writer::new().await;
    // No current file: no date to compare, the condition is ignored.
    let absent = w
        .put("/pub/doc", &[("if-unmodified-since", PAST)], "hello")
        .await;
    assert_eq!(absent.status, StatusCode::CREATED);
    let modified = w
        .put("/pub/doc", &[("if-unmodified-since", PAST)], "later")
        .await;
    assert_eq!(status_text(&modified), precondition_failed());
    let unmodified = w
        .put("/pub/doc", &[("if-unmodified-since", FUTURE)], "later")
        .await;
    assert_eq!(unmodified.status, StatusCode::CREATED);
    // Ignored when If-Match is present.
    let etag = unmodified.header(header::ETAG).to_string();
    let both = [("if-match", etag.as_str()), ("if-unmodified-since", PAST)];
    assert_eq!(
        w.put("/pub/doc", &both, "last").await.status,
        StatusCode::CREATED
    );
    let deleted = w.delete("/pub/doc", &[("if-unmodified-since", PAST)]).await;
    assert_eq!(status_text(&deleted), precondition_failed());
    assert_eq!(w.get("/pub/doc").await.unwrap().0, "last");
}

#[tokio::test]
async fn refusals_come_before_the_body_is_read() {
    let w = Writer::new().await;
    assert_eq!(
        w.put("/pub/doc", &[], "hello").await.status,
        StatusCode::CREATED
    );
    let put = |headers: &'static [(&'static str, &'static str)]| {
        w.send(Method::PUT, "/pub/doc", headers, unreadable())
    };
    assert_eq!(
        status_text(&put(&[("if-none-match", "*")]).await),
        precondition_failed()
    );
    assert_eq!(
        status_text(&put(&[("if-match", "\"stale\"")]).await),
        precondition_failed()
    );
    let bad = |text: &str| (StatusCode::BAD_REQUEST, text.to_string());
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("if-match", "stale")], "Invalid If-Match header"),
        (&[("if-match", "*, \"a\"")], "Invalid If-Match header"),
        (
            &[("if-none-match", "\"a\" \"b\"")],
            "Invalid If-None-Match header",
        ),
        (
            &[("if-unmodified-since", "yesterday")],
            "Invalid If-Unmodified-Since header",
        ),
        (&[("if-none-match", "")], "Invalid If-None-Match header"),
    ];
    for (headers, reason) in cases {
        let put = w.send(Method::PUT, "/pub/doc", headers, unreadable()).await;
        assert_eq!(status_text(&put), bad(reason), "{headers:?}");
        let delete = w.delete("/pub/doc", headers).await;
        assert_eq!(status_text(&delete), bad(reason), "{headers:?}");
    }
    assert_eq!(w.get("/pub/doc").await.unwrap().0, "hello");
}

#[tokio::test]
async fn conditional_deletes() {
    let w = Writer::new().await;
    // No file: If-Match fails, If-None-Match: * holds and finds nothing.
    let absent = w.delete("/pub/doc", &[("if-match", "*")]).await;
    assert_eq!(status_text(&absent), precondition_failed());
    let absent = w.delete("/pub/doc", &[("if-none-match", "*")]).await;
    assert_eq!(absent.status, StatusCode::NOT_FOUND);
    assert_eq!(
        w.put("/pub/doc", &[], "hello").await.status,
        StatusCode::CREATED
    );
    for headers in [
        [("if-match", "\"stale\"")],
        [(
            "if-match",
            "W/\"6o8WPbOGgpJeRJHF5Y1Ls1Bu+MFOt4qG6QjFYkpnIA8=\"",
        )],
        [("if-none-match", "*")],
        [("if-none-match", HELLO_ETAG)],
    ] {
        let refused = w.delete("/pub/doc", &headers).await;
        assert_eq!(status_text(&refused), precondition_failed(), "{headers:?}");
        assert!(w.get("/pub/doc").await.is_some());
    }
    let deleted = w.delete("/pub/doc", &[("if-match", HELLO_ETAG)]).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(w.get("/pub/doc").await, None);
    let again = w.delete("/pub/doc", &[("if-match", HELLO_ETAG)]).await;
    assert_eq!(status_text(&again), precondition_failed());
}

#[tokio::test]
async fn every_write_route_honours_preconditions() {
    let w = Writer::new().await;
    assert_eq!(
        w.put("/pub/doc", &[], "hello").await.status,
        StatusCode::CREATED
    );
    let user = w.user.clone();
    // The tenant from `Host`, from the query, and from the path of a path-addressed URL.
    let addressed: [(String, Option<String>); 3] = [
        ("/pub/doc".into(), Some(user.clone())),
        (format!("/pub/doc?pubky-host={user}"), None),
        (format!("/storage/{user}/pub/doc"), None),
    ];
    for (uri, host) in addressed {
        let send = |method: Method, headers: &[(&str, &str)], body: &str| {
            let mut builder = request(method, &uri).header(header::COOKIE, &w.cookie);
            if let Some(host) = &host {
                builder = builder.header(header::HOST, host);
            }
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            w.app
                .client(builder.body(Body::from(body.to_string())).unwrap())
        };
        let (_, current) = w.get("/pub/doc").await.unwrap();
        let created = send(Method::PUT, &[("if-none-match", "*")], "x").await;
        assert_eq!(status_text(&created), precondition_failed(), "{uri}");
        let stale = send(Method::PUT, &[("if-match", "\"stale\"")], "x").await;
        assert_eq!(status_text(&stale), precondition_failed(), "{uri}");
        let replaced = send(Method::PUT, &[("if-match", &current)], &uri).await;
        assert_eq!(
            replaced.status,
            StatusCode::CREATED,
            "{uri}: {}",
            replaced.text()
        );
        assert_ne!(replaced.header(header::ETAG), current);
        let delete = send(Method::DELETE, &[("if-match", &current)], "").await;
        assert_eq!(status_text(&delete), precondition_failed(), "{uri}");
        let malformed = send(Method::DELETE, &[("if-match", "x")], "").await;
        assert_eq!(malformed.status, StatusCode::BAD_REQUEST, "{uri}");
    }
    let (_, current) = w.get("/pub/doc").await.unwrap();
    let path_addressed = request(Method::DELETE, &format!("/storage/{user}/pub/doc"))
        .header(header::COOKIE, &w.cookie)
        .header("if-match", &current)
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        w.app.client(path_addressed).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn one_of_sixteen_racing_writers_wins() {
    let w = Writer::new().await;
    let created = w.put("/pub/doc", &[], "hello").await;
    let etag = created.header(header::ETAG).to_string();
    let bodies: Vec<String> = (0..16).map(|i| format!("writer {i}")).collect();
    let condition = [("if-match", etag.as_str())];
    let writes = bodies.iter().map(|body| {
        let body = Body::from(body.clone());
        w.send(Method::PUT, "/pub/doc", &condition, body)
    });
    let answers = futures_util::future::join_all(writes).await;
    let winners: Vec<usize> = (0..16)
        .filter(|i| answers[*i].status == StatusCode::CREATED)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    for answer in &answers {
        assert!(
            matches!(
                answer.status,
                StatusCode::CREATED | StatusCode::PRECONDITION_FAILED
            ),
            "{}",
            answer.status
        );
    }
    let (content, current) = w.get("/pub/doc").await.unwrap();
    assert_eq!(content, bodies[winners[0]]);
    assert_eq!(current, answers[winners[0]].header(header::ETAG));
}

//! `/priv/` over raw HTTP on sqlite+fs and postgres+s3 (PROTOCOL-0.17.md §12.3, §13, §14): the rows of
//! the read permission order that cookie sessions reach (no session, the owner's without `r`, the owner's
//! with `r`; another user's bearer is in the SDK 0.17.1 suite, every row in the router tests), on both
//! addressing forms, for a file that exists and one that does not, with `GET`, `HEAD`, a listing and a
//! conditional `GET`; what each answer tells caches; and the event feed and a cursor walk over it, which
//! never show a private write.

use homestead_integration_tests::{Account, Blobs, Metadata, TestNet, TestServer};
use pubky::Capabilities;
use reqwest::Method;

const ANONYMOUS: &str = "Authentication required to read private storage";
const NO_READ: &str = "Session does not have read access to path";
const NO_WRITE: &str = "Session does not have write access to path";

/// A response's status, chosen headers and body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", server.icann_url()))
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.expect("body"),
    }
}

fn caps(text: &str) -> Capabilities {
    Capabilities::try_from(text).expect("capabilities")
}

/// The cache headers of an answer about a private path (§14).
fn assert_private(answer: &Answer, legacy: bool, what: &str) {
    assert_eq!(answer.header("cache-control"), "no-store", "{what}");
    let vary: Vec<&str> = answer
        .headers
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let expected = match legacy {
        true => "pubky-host, Authorization, Cookie",
        false => "Authorization, Cookie",
    };
    assert!(vary.contains(&expected), "{what}: {vary:?}");
    if answer.status >= 400 {
        assert_eq!(
            answer.header("etag"),
            "",
            "{what}: no validator on an error"
        );
    }
}

async fn private_suite(metadata: Metadata, blobs: Blobs) {
    let net = TestNet::new();
    let server = net.server().metadata(metadata).blobs(blobs).start().await;
    let owner = Account::signup(&server).await;
    let reader = owner.signin_with(&server, caps("/priv/app/:r")).await;
    let writer = owner.signin_with(&server, caps("/priv/app/:w")).await;
    let key = owner.z32.as_str();
    let root = [("pubky-host", key), ("cookie", owner.cookie.as_str())];
    let put = call(&server, Method::PUT, "/priv/app/x", &root, "secret").await;
    assert_eq!(put.status, 201);
    let etag = call(&server, Method::GET, "/priv/app/x", &root, "")
        .await
        .header("etag")
        .to_string();

    for legacy in [true, false] {
        for file in ["x", "missing"] {
            let path = match legacy {
                true => format!("/priv/app/{file}"),
                false => format!("/storage/{key}/priv/app/{file}"),
            };
            // Cookies are named after the owner, so both forms carry them; the legacy form names the
            // owner in `pubky-host`.
            let with = |cookie: Option<&str>, extra: Option<(&'static str, String)>| {
                let mut headers: Vec<(&str, String)> = Vec::new();
                if legacy {
                    headers.push(("pubky-host", key.to_string()));
                }
                if let Some(cookie) = cookie {
                    headers.push(("cookie", cookie.to_string()));
                }
                headers.extend(extra);
                headers
            };
            let ask = |method: Method, headers: Vec<(&'static str, String)>| {
                let path = path.clone();
                let server = &server;
                async move {
                    let pairs: Vec<(&str, &str)> =
                        headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                    call(server, method, &path, &pairs, "").await
                }
            };
            let exists = file == "x";
            let conditional = Some(("if-none-match", etag.clone()));
            for (who, cookie, status, text) in [
                ("nobody", None, 401, ANONYMOUS),
                ("a write-only session", Some(writer.as_str()), 403, NO_READ),
            ] {
                let what = format!("{who} GET {path}");
                let answer = ask(Method::GET, with(cookie, None)).await;
                assert_eq!(
                    (answer.status, answer.text.as_str()),
                    (status, text),
                    "{what}"
                );
                assert_private(&answer, legacy, &what);
                let head = ask(Method::HEAD, with(cookie, None)).await;
                assert_eq!(head.status, status, "{who} HEAD {path}");
                assert_private(&head, legacy, &what);
                let answer = ask(Method::GET, with(cookie, conditional.clone())).await;
                assert_eq!(answer.status, status, "{who}: no 304 before authorization");
            }
            let what = format!("reader GET {path}");
            let answer = ask(Method::GET, with(Some(&reader), None)).await;
            assert_private(&answer, legacy, &what);
            match exists {
                true => {
                    assert_eq!((answer.status, answer.text.as_str()), (200, "secret"));
                    assert_eq!(answer.header("etag"), etag);
                    let again = ask(Method::GET, with(Some(&reader), conditional.clone())).await;
                    assert_eq!(again.status, 304, "{what}");
                    assert_private(&again, legacy, &what);
                }
                false => assert_eq!((answer.status, answer.text.as_str()), (404, "Not Found")),
            }
            let head = ask(Method::HEAD, with(Some(&reader), None)).await;
            assert_eq!(
                head.status,
                if exists { 200 } else { 404 },
                "reader HEAD {path}"
            );
        }
    }

    // Listings: the reader lists what its capability covers, nothing above; nobody else lists at all.
    let listing = format!("/storage/{key}/priv/app/");
    let by_reader = call(&server, Method::GET, &listing, &[("cookie", &reader)], "").await;
    assert_eq!(by_reader.status, 200);
    assert_eq!(by_reader.text, format!("pubky://{key}/priv/app/x"));
    assert_private(&by_reader, false, "listing");
    let above = format!("/storage/{key}/priv/");
    let answer = call(&server, Method::GET, &above, &[("cookie", &reader)], "").await;
    assert_eq!((answer.status, answer.text.as_str()), (403, NO_READ));
    let answer = call(&server, Method::GET, &listing, &[], "").await;
    assert_eq!((answer.status, answer.text.as_str()), (401, ANONYMOUS));

    // Writes: a covering `w` writes and deletes, `r` alone does not.
    let target = format!("/storage/{key}/priv/app/y");
    let refused = call(&server, Method::PUT, &target, &[("cookie", &reader)], "no").await;
    assert_eq!((refused.status, refused.text.as_str()), (403, NO_WRITE));
    let written = call(&server, Method::PUT, &target, &[("cookie", &writer)], "y").await;
    assert_eq!(written.status, 201);
    let deleted = call(&server, Method::DELETE, &target, &[("cookie", &writer)], "").await;
    assert_eq!(deleted.status, 204);

    // A private write between public ones: the feed and a walk over it page by page show only these.
    let public = |name: &str| format!("/pub/app/{name}");
    for path in [public("a"), "/priv/app/between".to_string(), public("b")] {
        assert_eq!(
            call(&server, Method::PUT, &path, &root, "e").await.status,
            201
        );
    }
    let feed = call(&server, Method::GET, "/events/", &[], "").await.text;
    assert!(!feed.contains("/priv/"), "{feed}");
    let mut cursor = "0".to_string();
    let mut walked = Vec::new();
    loop {
        let page = format!("/events/?cursor={cursor}&limit=1");
        let text = call(&server, Method::GET, &page, &[], "").await.text;
        let Some(next) = text.lines().find_map(|l| l.strip_prefix("cursor: ")) else {
            break;
        };
        walked.extend(
            text.lines()
                .filter(|l| !l.starts_with("cursor: "))
                .map(String::from),
        );
        cursor = next.to_string();
    }
    let expected: Vec<String> = ["a", "b"]
        .iter()
        .map(|n| format!("PUT pubky://{key}/pub/app/{n}"))
        .collect();
    assert_eq!(walked, expected);
    let stream = format!("/events-stream?user={key}");
    let text = call(&server, Method::GET, &stream, &[], "").await.text;
    assert!(!text.contains("/priv/"), "{text}");
}

homestead_integration_tests::on_main_backend_pairs!(private_suite: private_on_sqlite_fs, private_on_postgres_s3);

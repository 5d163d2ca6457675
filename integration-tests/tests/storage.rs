//! The storage API: every SDK 0.9.3 storage verb on sqlite+fs and postgres+s3, caching headers and
//! ranges, quotas, CORS, path-addressed storage, and a table of bad or tricky raw requests, each answered
//! with its 4xx and message while the server stays healthy.

use std::time::Duration;

use homestead_integration_tests::{Account, Blobs, Metadata, TestNet, TestServer};
use pubky::{Capabilities, Keypair, Method};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HELLO_ETAG: &str = "\"6o8WPbOGgpJeRJHF5Y1Ls1Bu+MFOt4qG6QjFYkpnIA8=\"";

struct Raw {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Raw {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

async fn raw(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Raw {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", server.icann_url()))
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("raw request");
    Raw {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap(),
    }
}

/// A request sent over a bare TCP connection, so that the path reaches the server exactly as written
/// (HTTP clients normalize `..`, `%2e%2e` and the like before sending).
async fn exact(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Raw {
    let addr = server.icann_url().trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(name, _)| name == "host") {
        head.push_str(&format!("host: {addr}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut payload = answer[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers.append(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            value.trim().parse().unwrap(),
        );
    }
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        let mut decoded = Vec::new();
        let mut rest = &payload[..];
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap().trim(), 16)
                .unwrap();
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(&rest[end + 2..end + 2 + size]);
            rest = &rest[end + 2 + size + 2..];
        }
        payload = decoded;
    }
    Raw {
        status,
        headers,
        text: String::from_utf8_lossy(&payload).into_owned(),
    }
}

/// A user signed up over raw HTTP: their key and `name=secret` cookie pair.
struct User {
    z32: String,
    cookie: String,
}

impl User {
    async fn signup(server: &TestServer, caps: &str) -> Self {
        let account = if caps == "/:rw" {
            Account::signup(server).await
        } else {
            Account::signup_with(server, Capabilities::try_from(caps).unwrap()).await
        };
        Self {
            z32: account.z32,
            cookie: account.cookie,
        }
    }

    /// `pubky-host` and the session cookie.
    fn auth(&self) -> Vec<(String, String)> {
        vec![
            ("pubky-host".into(), self.z32.clone()),
            ("cookie".into(), self.cookie.clone()),
        ]
    }

    fn tenant(&self) -> Vec<(String, String)> {
        vec![("pubky-host".into(), self.z32.clone())]
    }

    async fn put(&self, server: &TestServer, path: &str, body: &[u8]) -> Raw {
        raw(server, "PUT", path, &self.auth(), body.to_vec()).await
    }
}

fn h(name: &str, value: &str) -> (String, String) {
    (name.to_string(), value.to_string())
}

/// Every storage verb of the SDK, and listings with every option, on the spec's example trees.
async fn sdk_verbs(net: &TestNet, server: &TestServer) {
    let pubky = net.pubky();
    let signer = pubky.signer(Keypair::random());
    let session = signer.signup(&server.public_key(), None).await.unwrap();
    let storage = session.storage();
    let me = signer.public_key().z32();

    for path in [
        "/pub/a.wrong/a.txt",
        "/pub/example.com/a.txt",
        "/pub/example.com/b.txt",
        "/pub/example.com/c.txt",
        "/pub/example.com/d.txt",
        "/pub/example.com/cc-nested/z.txt",
        "/pub/example.wrong/a.txt",
        "/pub/z.wrong/a.txt",
    ] {
        storage.put(path, "hello").await.unwrap();
    }
    let paths = |list: Vec<pubky::PubkyResource>| {
        list.into_iter()
            .map(|r| {
                r.path
                    .as_str()
                    .trim_start_matches("/pub/example.com/")
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    let dir = "/pub/example.com/";
    assert_eq!(
        paths(storage.list(dir).unwrap().send().await.unwrap()),
        ["a.txt", "b.txt", "c.txt", "cc-nested/z.txt", "d.txt"]
    );
    assert_eq!(
        paths(storage.list(dir).unwrap().limit(2).send().await.unwrap()),
        ["a.txt", "b.txt"]
    );
    let cursor = format!("{me}/pub/example.com/a.txt");
    assert_eq!(
        paths(
            storage
                .list(dir)
                .unwrap()
                .limit(2)
                .cursor(&cursor)
                .send()
                .await
                .unwrap()
        ),
        ["b.txt", "c.txt"]
    );
    let cursor = format!("pubky://{me}/pub/example.com/a.txt");
    assert_eq!(
        paths(
            storage
                .list(dir)
                .unwrap()
                .limit(2)
                .cursor(&cursor)
                .send()
                .await
                .unwrap()
        ),
        ["b.txt", "c.txt"]
    );
    assert_eq!(
        paths(
            storage
                .list(dir)
                .unwrap()
                .reverse(true)
                .send()
                .await
                .unwrap()
        ),
        ["d.txt", "cc-nested/z.txt", "c.txt", "b.txt", "a.txt"]
    );
    let cursor = format!("{me}/pub/example.com/d.txt");
    assert_eq!(
        paths(
            storage
                .list(dir)
                .unwrap()
                .reverse(true)
                .limit(2)
                .cursor(&cursor)
                .send()
                .await
                .unwrap()
        ),
        ["cc-nested/z.txt", "c.txt"]
    );

    // The shallow example of §9.4, for a second user.
    let other = pubky.signer(Keypair::random());
    let other_session = other.signup(&server.public_key(), None).await.unwrap();
    let them = other.public_key().z32();
    for path in [
        "/pub/a.com/a.txt",
        "/pub/example.com/a.txt",
        "/pub/example.com/b.txt",
        "/pub/example.con/d.txt",
        "/pub/example.con",
        "/pub/file",
        "/pub/file2",
        "/pub/z.com/a.txt",
    ] {
        other_session.storage().put(path, "x").await.unwrap();
    }
    let shallow = |list: Vec<pubky::PubkyResource>| {
        list.into_iter()
            .map(|r| r.path.as_str().trim_start_matches("/pub/").to_string())
            .collect::<Vec<_>>()
    };
    let list = other_session
        .storage()
        .list("/pub/")
        .unwrap()
        .shallow(true)
        .send()
        .await
        .unwrap();
    assert_eq!(
        shallow(list),
        [
            "a.com/",
            "example.com/",
            "example.con",
            "example.con/",
            "file",
            "file2",
            "z.com/"
        ]
    );
    for cursor in [
        format!("{them}/pub/example.com/"),
        format!("{them}/pub/example.com/a.txt"),
    ] {
        let list = other_session
            .storage()
            .list("/pub/")
            .unwrap()
            .shallow(true)
            .limit(2)
            .cursor(&cursor)
            .send()
            .await
            .unwrap();
        assert_eq!(shallow(list), ["example.con", "example.con/"], "{cursor}");
    }
    let cursor = format!("{them}/pub/file2");
    let list = other_session
        .storage()
        .list("/pub/")
        .unwrap()
        .shallow(true)
        .reverse(true)
        .limit(3)
        .cursor(&cursor)
        .send()
        .await
        .unwrap();
    assert_eq!(shallow(list), ["file", "example.con/", "example.con"]);
    // Public listing of someone else's directory.
    let public = pubky.public_storage();
    let list = public
        .list(format!("pubky{them}/pub/example.com/"))
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(list.len(), 2);

    // get, exists, stats, JSON helpers, delete.
    let text = storage
        .get("/pub/example.com/a.txt")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "hello");
    assert!(storage.exists("/pub/example.com/a.txt").await.unwrap());
    assert!(!storage.exists("/pub/example.com/missing").await.unwrap());
    let stats = storage
        .stats("/pub/example.com/a.txt")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stats.content_length, Some(5));
    assert_eq!(stats.content_type.as_deref(), Some("text/plain"));
    assert_eq!(stats.etag.as_deref(), Some(HELLO_ETAG.trim_matches('"')));
    assert!(stats.last_modified.is_some());
    let value = serde_json::json!({"name": "homestead", "n": 1});
    storage.put_json("/pub/data/x.json", &value).await.unwrap();
    let back: serde_json::Value = storage.get_json("/pub/data/x.json").await.unwrap();
    assert_eq!(back, value);
    let stats = storage.stats("/pub/data/x.json").await.unwrap().unwrap();
    assert_eq!(stats.content_type.as_deref(), Some("application/json"));
    let public_json: serde_json::Value = public
        .get_json(format!("pubky{me}/pub/data/x.json"))
        .await
        .unwrap();
    assert_eq!(public_json, value);
    assert!(
        public
            .exists(format!("pubky://{me}/pub/data/x.json"))
            .await
            .unwrap()
    );
    storage.delete("/pub/data/x.json").await.unwrap();
    assert!(!storage.exists("/pub/data/x.json").await.unwrap());
    assert!(storage.delete("/pub/data/x.json").await.is_err());
    // Overwrite replaces content and ETag.
    storage
        .put("/pub/example.com/a.txt", vec![0u8, 1, 2, 3, 4])
        .await
        .unwrap();
    let stats = storage
        .stats("/pub/example.com/a.txt")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stats.etag.as_deref(),
        Some("tAtE39l+eoSplqka+LhRiMZsEmlAunqtLnrms4VAKqI=")
    );
    assert_eq!(stats.content_type.as_deref(), Some("text/plain"));
}

/// Caching headers, conditional requests, ranges, content types, CORS, `/info`, path addressing.
async fn http_semantics(server: &TestServer) {
    let a = User::signup(server, "/:rw").await;
    assert_eq!(a.put(server, "/pub/file.txt", b"hello").await.status, 201);
    let get = raw(server, "GET", "/pub/file.txt", &a.tenant(), vec![]).await;
    assert_eq!((get.status, get.text.as_str()), (200, "hello"));
    assert_eq!(get.header("etag"), HELLO_ETAG);
    assert_eq!(get.header("content-type"), "text/plain");
    assert_eq!(get.header("content-length"), "5");
    assert_eq!(get.header("cache-control"), "private, must-revalidate");
    assert_eq!(get.header("accept-ranges"), "bytes");
    assert!(
        get.headers
            .get_all("vary")
            .iter()
            .any(|v| v == "pubky-host")
    );
    let last_modified = get.header("last-modified").to_string();
    let head = raw(server, "HEAD", "/pub/file.txt", &a.tenant(), vec![]).await;
    assert_eq!(
        (
            head.status,
            head.text.as_str(),
            head.header("content-length")
        ),
        (200, "", "5")
    );
    assert_eq!(head.header("etag"), HELLO_ETAG);

    let with = |name: &str, value: &str| {
        let mut headers = a.tenant();
        headers.push(h(name, value));
        headers
    };
    let cases = [
        (with("if-none-match", HELLO_ETAG), 304),
        (with("if-none-match", &format!("\"x\", {HELLO_ETAG}")), 304),
        (with("if-none-match", "*"), 200),
        (with("if-none-match", &format!("W/{HELLO_ETAG}")), 200),
        (with("if-modified-since", &last_modified), 304),
        (
            with("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT"),
            200,
        ),
        (with("if-modified-since", "garbage"), 200),
    ];
    for (headers, status) in cases {
        let answer = raw(server, "GET", "/pub/file.txt", &headers, vec![]).await;
        assert_eq!(answer.status, status, "{headers:?}");
        if status == 304 {
            assert_eq!(answer.text, "");
            assert_eq!(answer.header("etag"), HELLO_ETAG);
            assert_eq!(answer.header("cache-control"), "private, must-revalidate");
        }
    }
    // If-None-Match wins over a matching If-Modified-Since once the content changed.
    assert_eq!(a.put(server, "/pub/file.txt", b"HELLO").await.status, 201);
    let mut both = with("if-none-match", HELLO_ETAG);
    both.push(h("if-modified-since", &last_modified));
    assert_eq!(
        raw(server, "GET", "/pub/file.txt", &both, vec![])
            .await
            .status,
        200
    );

    let range = raw(
        server,
        "GET",
        "/pub/file.txt",
        &with("range", "bytes=1-2"),
        vec![],
    )
    .await;
    assert_eq!((range.status, range.text.as_str()), (206, "EL"));
    assert_eq!(range.header("content-range"), "bytes 1-2/5");
    let suffix = raw(
        server,
        "GET",
        "/pub/file.txt",
        &with("range", "bytes=-2"),
        vec![],
    )
    .await;
    assert_eq!((suffix.status, suffix.text.as_str()), (206, "LO"));
    let outside = raw(
        server,
        "GET",
        "/pub/file.txt",
        &with("range", "bytes=10-20"),
        vec![],
    )
    .await;
    assert_eq!(
        (outside.status, outside.header("content-range")),
        (416, "bytes */5")
    );

    // Content types come from magic bytes, then the extension; the request's Content-Type is ignored.
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    let types: [(&str, &[u8], &str); 4] = [
        ("/pub/foo", &png, "image/png"),
        ("/pub/foo.jpg", &png, "image/png"),
        ("/pub/hello", b"hello", "application/octet-stream"),
        ("/pub/x.json", b"{\"a\":1}", "application/json"),
    ];
    for (path, body, content_type) in types {
        let mut headers = a.auth();
        headers.push(h("content-type", "application/x-custom"));
        assert_eq!(
            raw(server, "PUT", path, &headers, body.to_vec())
                .await
                .status,
            201
        );
        let head = raw(server, "HEAD", path, &a.tenant(), vec![]).await;
        assert_eq!(head.header("content-type"), content_type, "{path}");
    }

    // A file and a directory of the same name coexist.
    assert_eq!(a.put(server, "/pub/a", b"file").await.status, 201);
    assert_eq!(a.put(server, "/pub/a/b", b"below").await.status, 201);
    assert_eq!(
        raw(server, "GET", "/pub/a", &a.tenant(), vec![]).await.text,
        "file"
    );
    assert_eq!(
        raw(server, "GET", "/pub/a/b", &a.tenant(), vec![])
            .await
            .text,
        "below"
    );
    let listing = raw(server, "GET", "/pub/a/", &a.tenant(), vec![]).await;
    assert_eq!(
        (listing.text.clone(), listing.header("content-type")),
        (format!("pubky://{}/pub/a/b", a.z32), "text/plain")
    );

    // CORS.
    let preflight = [
        h("origin", "https://app.example"),
        h("access-control-request-method", "PUT"),
        h("access-control-request-headers", "pubky-host,content-type"),
    ];
    let options = raw(server, "OPTIONS", "/pub/file.txt", &preflight, vec![]).await;
    assert_eq!(options.status, 200);
    assert_eq!(
        options.header("access-control-allow-origin"),
        "https://app.example"
    );
    assert_eq!(options.header("access-control-allow-credentials"), "true");
    assert_eq!(options.header("access-control-allow-methods"), "PUT");
    assert_eq!(
        options.header("access-control-allow-headers"),
        "pubky-host,content-type"
    );
    let mut cross = a.tenant();
    cross.push(h("origin", "https://app.example"));
    let get = raw(server, "GET", "/pub/file.txt", &cross, vec![]).await;
    assert_eq!(
        get.header("access-control-allow-origin"),
        "https://app.example"
    );
    assert_eq!(get.header("access-control-allow-credentials"), "true");

    // /info and path-addressed storage: the owner in the URL wins over pubky-host.
    let info = raw(server, "GET", "/info", &[], vec![]).await;
    assert_eq!(
        info.text,
        r#"{"features":["path-addressed-storage","grant-proof-logout","webdav-locks","websites"]}"#
    );
    assert_eq!(info.header("cache-control"), "no-store");
    let b = User::signup(server, "/:rw").await;
    let addressed = format!("/storage/{}/pub/file.txt", a.z32);
    let get = raw(server, "GET", &addressed, &b.tenant(), vec![]).await;
    assert_eq!((get.status, get.text.as_str()), (200, "HELLO"));
    let mut headers = vec![h("cookie", &a.cookie), h("pubky-host", &b.z32)];
    let put = raw(
        server,
        "PUT",
        &format!("/storage/{}/pub/pa.txt", a.z32),
        &headers,
        b"addressed".to_vec(),
    )
    .await;
    assert_eq!(put.status, 201, "{}", put.text);
    assert_eq!(
        raw(server, "GET", "/pub/pa.txt", &a.tenant(), vec![])
            .await
            .text,
        "addressed"
    );
    headers.push(h("x", "y"));
    let delete = raw(
        server,
        "DELETE",
        &format!("/storage/{}/pub/pa.txt", a.z32),
        &headers,
        vec![],
    )
    .await;
    assert_eq!(delete.status, 204);
    let head = raw(
        server,
        "HEAD",
        &format!("/storage/{}/pub/pa.txt", a.z32),
        &[],
        vec![],
    )
    .await;
    assert_eq!(head.status, 404);
}

/// Sends a request head with a `Content-Length` but no body, and reads the answer: a refusal must come
/// at once, without waiting for the body.
async fn declared_only(server: &TestServer, user: &User, path: &str, length: u64) -> String {
    let addr = server.icann_url().trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\npubky-host: {}\r\ncookie: {}\r\ncontent-length: {length}\r\n\r\n",
        user.z32, user.cookie
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

/// Quotas (§8.8 example with 1 MB) and the maximum body size.
async fn quotas(server: &TestServer) {
    let a = User::signup(server, "/:rw").await;
    let quota = 1_048_576usize;
    assert_eq!(
        a.put(server, "/pub/fits", &vec![7; quota - 256])
            .await
            .status,
        201
    );
    let over = a.put(server, "/pub/second", &[]).await;
    assert_eq!(
        (over.status, over.text.as_str()),
        (507, "Disk space quota exceeded")
    );
    assert_eq!(
        raw(server, "DELETE", "/pub/fits", &a.auth(), vec![])
            .await
            .status,
        204
    );
    let too_big = a.put(server, "/pub/big", &vec![7; quota - 255]).await;
    assert_eq!(too_big.status, 507);
    assert_eq!(
        a.put(server, "/pub/one", &vec![1; 600_000]).await.status,
        201
    );
    assert_eq!(
        a.put(server, "/pub/one", &vec![2; 600_000]).await.status,
        201
    );
    assert_eq!(
        a.put(server, "/pub/two", &vec![3; 600_000]).await.status,
        507
    );
    assert_eq!(
        a.put(server, "/pub/one", &vec![4; 1_100_000]).await.status,
        507
    );
    let kept = raw(server, "GET", "/pub/one", &a.tenant(), vec![]).await;
    assert_eq!(kept.text.len(), 600_000);
    // Declared lengths are judged before any body byte is read.
    let answer = declared_only(server, &a, "/pub/two", 600_000).await;
    assert!(answer.starts_with("HTTP/1.1 507"), "{answer}");
    let answer = declared_only(server, &a, "/pub/huge", 200 << 20).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Errors the handler would give first keep their precedence over 507.
    let scoped = User::signup(server, "/pub/app/:rw").await;
    let answer = declared_only(server, &scoped, "/pub/elsewhere", 2 << 20).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let answer = declared_only(server, &scoped, "/pub/app/%FF", 2 << 20).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // A chunked body without Content-Length is stopped by the streamed count.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![5u8; 100_000])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = reqwest::Client::new()
        .put(format!("{}/pub/chunked", server.icann_url()))
        .header("pubky-host", &a.z32)
        .header("cookie", &a.cookie)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 507);
    assert_eq!(
        raw(server, "HEAD", "/pub/chunked", &a.tenant(), vec![])
            .await
            .status,
        404
    );
    assert_eq!(
        raw(server, "DELETE", "/pub/one", &a.auth(), vec![])
            .await
            .status,
        204
    );
}

/// One row of the table: method, exact path, headers, body, status, and the exact body if it matters.
type Case = (
    &'static str,
    String,
    Vec<(String, String)>,
    Vec<u8>,
    u16,
    Option<String>,
);

/// At least 60 bad or tricky requests, each with the spec's status and message.
async fn hostile_table(server: &TestServer) {
    let a = User::signup(server, "/:rw").await;
    let b = User::signup(server, "/:rw").await;
    assert_eq!(a.put(server, "/pub/file.txt", b"hello").await.status, 201);
    assert_eq!(a.put(server, "/pub/dir/x.txt", b"x").await.status, 201);
    let stranger = Keypair::random().public_key().z32();
    let scoped = User::signup(server, "/pub/pubky.app/:rw,/pub/foo.bar/file:r").await;
    let unslashed = User::signup(server, "/pub/app:rw").await;
    let no_write = "Session does not have write access to path".to_string();

    let auth = a.auth();
    let tenant = a.tenant();
    let none: Vec<(String, String)> = vec![];
    let with = |base: &Vec<(String, String)>, name: &str, value: &str| {
        let mut headers = base.clone();
        headers.push(h(name, value));
        headers
    };
    let cookie_only = |value: String| vec![h("pubky-host", &a.z32), h("cookie", &value)];
    let b_secret = b.cookie.split_once('=').unwrap().1.to_string();
    let long = "s".repeat(256);
    let ok_long = "s".repeat(255);
    let deep = format!("/pub/{}", vec!["d".repeat(200); 21].join("/"));
    let invalid_url = |reason: &str| format!("Invalid URL: {reason}");
    let control = invalid_url("Path contains a control character");
    let writing = "Writing to directories other than '/pub/' and '/priv/' is forbidden".to_string();
    let reading =
        "Reading from directories other than '/pub/' and '/priv/' is forbidden".to_string();
    let private = "Authentication required to read private storage".to_string();
    let missing_host = "Missing request tenant".to_string();
    let no_cookie = "No authenticated session found".to_string();
    let not_found = "Not Found".to_string();
    let is_dir = invalid_url("Path names a directory, not a file");

    // (method, path, headers, body, status, exact body or None)
    let cases: Vec<Case> = vec![
        (
            "PUT",
            "/pub/%2E./x".into(),
            auth.clone(),
            vec![],
            403,
            Some(writing.clone()),
        ),
        (
            "PUT",
            "/pub/a/%2e%2e/%2e%2e/%2e%2e/x".into(),
            auth.clone(),
            vec![],
            400,
            Some(invalid_url("Path escapes the root with ..")),
        ),
        (
            "PUT",
            "/pub/%2e%2e/x".into(),
            auth.clone(),
            vec![],
            403,
            Some(writing.clone()),
        ),
        (
            "PUT",
            "/pub/%2E%2E/%2e%2e/x".into(),
            auth.clone(),
            vec![],
            400,
            Some(invalid_url("Path escapes the root with ..")),
        ),
        (
            "GET",
            "/pub/%2e%2e/priv/x".into(),
            tenant.clone(),
            vec![],
            401,
            Some(private.clone()),
        ),
        (
            "PUT",
            "/pub/a%00b".into(),
            auth.clone(),
            vec![],
            400,
            Some(control.clone()),
        ),
        (
            "PUT",
            "/pub/a%01b".into(),
            auth.clone(),
            vec![],
            400,
            Some(control.clone()),
        ),
        (
            "PUT",
            "/pub/a%1Fb".into(),
            auth.clone(),
            vec![],
            400,
            Some(control.clone()),
        ),
        (
            "PUT",
            "/pub/a%7Fb".into(),
            auth.clone(),
            vec![],
            400,
            Some(control.clone()),
        ),
        (
            "PUT",
            "/pub/a%C2%80b".into(),
            auth.clone(),
            vec![],
            400,
            Some(control.clone()),
        ),
        (
            "GET",
            "/pub/a%0Ab".into(),
            tenant.clone(),
            vec![],
            400,
            Some(control.clone()),
        ),
        (
            "PUT",
            "/pub/%FF".into(),
            auth.clone(),
            vec![],
            400,
            Some(invalid_url("Path is not valid UTF-8")),
        ),
        (
            "GET",
            "/pub/%C3%28".into(),
            tenant.clone(),
            vec![],
            400,
            Some(invalid_url("Path is not valid UTF-8")),
        ),
        (
            "PUT",
            format!("/pub/{long}"),
            auth.clone(),
            vec![],
            400,
            Some(invalid_url("Path segment is longer than 255 bytes")),
        ),
        (
            "PUT",
            format!("/pub/{ok_long}"),
            auth.clone(),
            b"ok".to_vec(),
            201,
            Some(String::new()),
        ),
        (
            "PUT",
            deep.clone(),
            auth.clone(),
            vec![],
            400,
            Some(invalid_url("Path is longer than 4096 bytes")),
        ),
        (
            "PUT",
            "/pub/dir/".into(),
            auth.clone(),
            vec![],
            400,
            Some(is_dir.clone()),
        ),
        (
            "DELETE",
            "/pub/dir/".into(),
            auth.clone(),
            vec![],
            400,
            Some(is_dir.clone()),
        ),
        (
            "PUT",
            "/pub/a%2Fb".into(),
            auth.clone(),
            b"slash".to_vec(),
            201,
            Some(String::new()),
        ),
        (
            "GET",
            "/pub/a/b".into(),
            tenant.clone(),
            vec![],
            200,
            Some("slash".into()),
        ),
        (
            "PUT",
            "/pub/a/%2e/c//d".into(),
            auth.clone(),
            b"dots".to_vec(),
            201,
            Some(String::new()),
        ),
        (
            "GET",
            "/pub/a/c/d".into(),
            tenant.clone(),
            vec![],
            200,
            Some("dots".into()),
        ),
        (
            "PUT",
            "/pub".into(),
            auth.clone(),
            vec![],
            403,
            Some(writing.clone()),
        ),
        (
            "PUT",
            "/priv/x".into(),
            auth.clone(),
            vec![],
            201,
            Some(String::new()),
        ),
        (
            "GET",
            "/priv/x".into(),
            tenant.clone(),
            vec![],
            401,
            Some(private.clone()),
        ),
        (
            "GET",
            "/pub".into(),
            tenant.clone(),
            vec![],
            403,
            Some(reading.clone()),
        ),
        (
            "GET",
            "/events".into(),
            tenant.clone(),
            vec![],
            403,
            Some(reading.clone()),
        ),
        (
            "DELETE",
            "/dav/x".into(),
            auth.clone(),
            vec![],
            403,
            Some(writing.clone()),
        ),
        (
            "GET",
            "/priv/x".into(),
            none.clone(),
            vec![],
            400,
            Some(missing_host.clone()),
        ),
        (
            "GET",
            "/pub/file.txt".into(),
            none.clone(),
            vec![],
            400,
            Some(missing_host.clone()),
        ),
        (
            "GET",
            "/pub/file.txt".into(),
            vec![h("pubky-host", &format!("pubky{}", a.z32))],
            vec![],
            400,
            Some(missing_host.clone()),
        ),
        (
            "GET",
            "/pub/file.txt".into(),
            vec![h("pubky-host", "not-a-key")],
            vec![],
            400,
            Some(missing_host.clone()),
        ),
        (
            "GET",
            "/pub/file.txt".into(),
            vec![h("pubky-host", &a.z32.to_uppercase())],
            vec![],
            400,
            Some(missing_host.clone()),
        ),
        (
            "GET",
            "/pub/file.txt".into(),
            vec![h("pubky-host", &format!("{}:6287", a.z32))],
            vec![],
            400,
            Some(missing_host.clone()),
        ),
        (
            "GET",
            format!("/pub/file.txt?pubky-host=pubky{}", a.z32),
            none.clone(),
            vec![],
            400,
            Some(missing_host.clone()),
        ),
        (
            "GET",
            format!("/pub/file.txt?pubky-host={}", a.z32),
            none.clone(),
            vec![],
            200,
            Some("hello".into()),
        ),
        (
            "GET",
            "/pub/file.txt".into(),
            vec![h("host", &format!("_pubky.{}", a.z32))],
            vec![],
            200,
            Some("hello".into()),
        ),
        (
            "GET",
            "/pub/file.txt".into(),
            vec![
                h("host", &format!("_pubky.{}", b.z32)),
                h("pubky-host", &a.z32),
            ],
            vec![],
            200,
            Some("hello".into()),
        ),
        (
            "GET",
            format!("/pub/file.txt?pubky-host={}", b.z32),
            tenant.clone(),
            vec![],
            200,
            Some("hello".into()),
        ),
        (
            "GET",
            "/pub/file.txt".into(),
            vec![h("pubky-host", &stranger)],
            vec![],
            404,
            Some(not_found.clone()),
        ),
        (
            "HEAD",
            "/pub/file.txt".into(),
            vec![h("pubky-host", &stranger)],
            vec![],
            404,
            Some(String::new()),
        ),
        (
            "GET",
            "/pub/missing".into(),
            tenant.clone(),
            vec![],
            404,
            Some(not_found.clone()),
        ),
        (
            "HEAD",
            "/pub/dir/".into(),
            tenant.clone(),
            vec![],
            404,
            Some(String::new()),
        ),
        (
            "DELETE",
            "/pub/missing".into(),
            auth.clone(),
            vec![],
            404,
            Some(not_found.clone()),
        ),
        (
            "GET",
            "/pub/dir/?cursor=/pub/x".into(),
            tenant.clone(),
            vec![],
            400,
            Some("Invalid cursor".into()),
        ),
        (
            "GET",
            format!("/pub/dir/?cursor=pubky{}/pub/x", a.z32),
            tenant.clone(),
            vec![],
            400,
            Some("Invalid cursor".into()),
        ),
        (
            "GET",
            format!("/pub/dir/?cursor={}", a.z32),
            tenant.clone(),
            vec![],
            400,
            Some("Invalid cursor".into()),
        ),
        (
            "GET",
            "/pub/dir/?reverse=maybe".into(),
            tenant.clone(),
            vec![],
            400,
            Some("Invalid boolean parameter".into()),
        ),
        (
            "GET",
            "/pub/dir/?shallow=2".into(),
            tenant.clone(),
            vec![],
            400,
            Some("Invalid boolean parameter".into()),
        ),
        (
            "GET",
            "/pub/file.txt?reverse=maybe".into(),
            tenant.clone(),
            vec![],
            400,
            Some("Invalid boolean parameter".into()),
        ),
        (
            "GET",
            "/pub/nodir/".into(),
            tenant.clone(),
            vec![],
            404,
            Some("Directory Not Found".into()),
        ),
        (
            "GET",
            "/pub/nodir/?cursor=bad".into(),
            tenant.clone(),
            vec![],
            404,
            Some("Directory Not Found".into()),
        ),
        (
            "GET",
            "/pub/file.txt/".into(),
            tenant.clone(),
            vec![],
            404,
            Some("Directory Not Found".into()),
        ),
        (
            "GET",
            "/pub/dir/?limit=abc".into(),
            tenant.clone(),
            vec![],
            200,
            Some(format!("pubky://{}/pub/dir/x.txt", a.z32)),
        ),
        (
            "GET",
            "/pub/dir/?limit=99999999".into(),
            tenant.clone(),
            vec![],
            200,
            Some(format!("pubky://{}/pub/dir/x.txt", a.z32)),
        ),
        (
            "GET",
            "/pub/dir/?limit=0".into(),
            tenant.clone(),
            vec![],
            200,
            Some(String::new()),
        ),
        (
            "GET",
            "/pub/dir/?cursor=".into(),
            tenant.clone(),
            vec![],
            200,
            Some(format!("pubky://{}/pub/dir/x.txt", a.z32)),
        ),
        (
            "PUT",
            "/pub/new".into(),
            tenant.clone(),
            b"x".to_vec(),
            401,
            Some(no_cookie.clone()),
        ),
        (
            "DELETE",
            "/pub/file.txt".into(),
            tenant.clone(),
            vec![],
            401,
            Some(no_cookie.clone()),
        ),
        (
            "PUT",
            "/pub/new".into(),
            cookie_only(format!("{}=SHORT", a.z32)),
            b"x".to_vec(),
            401,
            Some(no_cookie.clone()),
        ),
        (
            "PUT",
            "/pub/new".into(),
            cookie_only(format!("{}=AAAAAAAAAAAAAAAAAAAAAAAAAA", a.z32)),
            b"x".to_vec(),
            401,
            Some("No authenticated session found".into()),
        ),
        (
            "PUT",
            "/pub/new".into(),
            cookie_only(format!("{}={b_secret}", a.z32)),
            b"x".to_vec(),
            401,
            Some("No authenticated session found".into()),
        ),
        (
            "PUT",
            "/pub/new".into(),
            vec![h("pubky-host", &a.z32), h("cookie", &b.cookie)],
            b"x".to_vec(),
            401,
            Some(no_cookie.clone()),
        ),
        (
            "PATCH",
            "/pub/file.txt".into(),
            tenant.clone(),
            vec![],
            405,
            Some(String::new()),
        ),
        (
            "POST",
            "/pub/file.txt".into(),
            auth.clone(),
            vec![],
            405,
            Some(String::new()),
        ),
        (
            "GET",
            "/signup".into(),
            none.clone(),
            vec![],
            405,
            Some(String::new()),
        ),
        (
            "PUT",
            "/session".into(),
            auth.clone(),
            vec![],
            405,
            Some(String::new()),
        ),
        (
            "POST",
            "/".into(),
            none.clone(),
            vec![],
            405,
            Some(String::new()),
        ),
        (
            "GET",
            "/signup_tokens/".into(),
            tenant.clone(),
            vec![],
            403,
            Some(reading.clone()),
        ),
        (
            "GET",
            "/session/".into(),
            none.clone(),
            vec![],
            400,
            Some(missing_host.clone()),
        ),
        (
            "GET",
            format!("/storage/{}/pub/file.txt", a.z32),
            b.tenant(),
            vec![],
            200,
            Some("hello".into()),
        ),
        (
            "GET",
            "/storage/notakey/pub/file.txt".into(),
            tenant.clone(),
            vec![],
            400,
            Some("Invalid URL: invalid public key \"notakey\"".into()),
        ),
        (
            "GET",
            format!("/storage/pubky{}/pub/file.txt", a.z32),
            tenant.clone(),
            vec![],
            400,
            None,
        ),
        (
            "PUT",
            format!("/storage/{}/priv/x", a.z32),
            auth.clone(),
            vec![],
            201,
            Some(String::new()),
        ),
        (
            "PUT",
            format!("/storage/{}/pub/%2e%2e/x", a.z32),
            auth.clone(),
            vec![],
            403,
            Some(writing.clone()),
        ),
        (
            "PUT",
            format!("/storage/{}/pub/x", b.z32),
            auth.clone(),
            vec![],
            401,
            Some(no_cookie.clone()),
        ),
        (
            "GET",
            format!("/storage/{}", a.z32),
            none.clone(),
            vec![],
            403,
            Some(reading.clone()),
        ),
        (
            "GET",
            "/pub/file.txt".into(),
            with(&tenant, "range", "bytes=0-1,3-4"),
            vec![],
            200,
            Some("hello".into()),
        ),
        (
            "GET",
            "/pub/file.txt".into(),
            with(&tenant, "range", "bytes=9-"),
            vec![],
            416,
            None,
        ),
        (
            "GET",
            "/pub/file.txt".into(),
            with(&tenant, "range", "lines=0-1"),
            vec![],
            200,
            Some("hello".into()),
        ),
        (
            "PUT",
            "/pub/pubky.app/foo".into(),
            scoped.auth(),
            b"x".to_vec(),
            201,
            Some(String::new()),
        ),
        (
            "PUT",
            "/pub/pubky.app".into(),
            scoped.auth(),
            b"x".to_vec(),
            403,
            Some(no_write.clone()),
        ),
        (
            "PUT",
            "/pub/foo.bar/file".into(),
            scoped.auth(),
            b"x".to_vec(),
            403,
            Some(no_write.clone()),
        ),
        (
            "DELETE",
            "/pub/pubky.app/foo".into(),
            scoped.auth(),
            vec![],
            204,
            Some(String::new()),
        ),
        // A file scope (no trailing slash) covers that file only (PROTOCOL-0.17.md §4.3).
        (
            "PUT",
            "/pub/app".into(),
            unslashed.auth(),
            b"x".to_vec(),
            201,
            Some(String::new()),
        ),
        (
            "PUT",
            "/pub/app/x".into(),
            unslashed.auth(),
            b"x".to_vec(),
            403,
            Some(no_write.clone()),
        ),
        (
            "PUT",
            "/pub/app.evil/x".into(),
            unslashed.auth(),
            b"x".to_vec(),
            403,
            Some(no_write.clone()),
        ),
        (
            "PUT",
            "/pub/app/%2e%2e/app.evil/x".into(),
            unslashed.auth(),
            b"x".to_vec(),
            403,
            Some(no_write.clone()),
        ),
        (
            "OPTIONS",
            "/anything/at/all".into(),
            none.clone(),
            vec![],
            200,
            Some(String::new()),
        ),
        (
            "POST",
            "/signup".into(),
            none.clone(),
            b"garbage".to_vec(),
            400,
            Some("Hit the end of buffer, expected more data".into()),
        ),
    ];
    assert!(cases.len() >= 60, "{} cases", cases.len());
    for (method, path, headers, body, status, text) in cases {
        let answer = exact(server, method, &path, &headers, &body).await;
        let shown: String = path.chars().take(80).collect();
        assert_eq!(answer.status, status, "{method} {shown}: {}", answer.text);
        if let Some(text) = text {
            assert_eq!(answer.text, text, "{method} {shown}");
        }
        if status >= 400 && !answer.text.is_empty() {
            assert_eq!(
                answer.header("content-type"),
                "text/plain; charset=utf-8",
                "{method} {shown}"
            );
        }
    }
    // A path within the limits that PostgreSQL cannot index (3,700 random bytes, which do not compress;
    // it indexes about 2,700): a clear 400 there, stored on SQLite.
    let keys: Vec<String> = (0..70)
        .map(|_| Keypair::random().public_key().z32())
        .collect();
    let unindexable = format!("/pub/{}", keys.join("/"));
    let answer = exact(server, "PUT", &unindexable, &auth, b"long").await;
    match server.metadata() {
        Metadata::Postgres => {
            assert_eq!(answer.status, 400, "{}", answer.text);
            assert_eq!(answer.text, invalid_url("Path is too long to store"));
            let read = raw(server, "GET", &unindexable, &tenant, vec![]).await;
            assert_eq!(read.status, 404);
        }
        Metadata::Sqlite => {
            assert_eq!(answer.status, 201, "{}", answer.text);
            let read = raw(server, "GET", &unindexable, &tenant, vec![]).await;
            assert_eq!(read.text, "long");
        }
    }
    // Healthy after: the file is intact and the server answers.
    assert_eq!(
        raw(server, "GET", "/pub/file.txt", &tenant, vec![])
            .await
            .text,
        "hello"
    );
    assert_eq!(
        raw(server, "GET", "/", &none, vec![]).await.text,
        "Pubky Homeserver"
    );
}

/// The metrics listener reports what the suite did: sign-ups, request durations by route and status,
/// bytes written and read.
async fn served_metrics(server: &TestServer) {
    let metrics = server.metrics().await;
    let scope = "otel_scope_name=\"pubky_homeserver\"";
    assert!(
        metrics.contains(&format!("signup_count_total{{{scope}}} ")),
        "{metrics}"
    );
    let put = format!(
        "http_request_duration_seconds_count{{method=\"PUT\",route=\"/pub/{{path}}\",status=\"201\",{scope}}}"
    );
    assert!(metrics.contains(&put), "{put} in\n{metrics}");
    let refused = format!(
        "http_request_duration_seconds_count{{method=\"PUT\",route=\"/pub/{{path}}\",status=\"401\",{scope}}}"
    );
    assert!(metrics.contains(&refused), "{metrics}");
    assert!(metrics.contains("db_pool_connections{pool="), "{metrics}");
    assert!(metrics.contains("state=\"idle\""), "{metrics}");
    let blob_errors = format!("storage_errors_total{{backend=\"blob\",{scope}}} 0");
    assert!(
        metrics.contains(&blob_errors),
        "{blob_errors} in\n{metrics}"
    );
    for counter in ["storage_bytes_written_total", "storage_bytes_read_total"] {
        assert!(
            metrics.contains(&format!("{counter}{{{scope}}} ")),
            "{counter}"
        );
    }
}

async fn storage_suite(metadata: Metadata, blobs: Blobs) {
    let net = TestNet::new();
    let server = net
        .server()
        .metadata(metadata)
        .blobs(blobs)
        .config("[metrics]\nenabled = true\nlisten_socket = \"127.0.0.1:0\"")
        .start()
        .await;
    net.wait_until_resolvable(&server).await;
    sdk_verbs(&net, &server).await;
    http_semantics(&server).await;
    hostile_table(&server).await;
    served_metrics(&server).await;
    let limited = net
        .server()
        .metadata(metadata)
        .blobs(blobs)
        .default_quota_mb(1)
        .start()
        .await;
    quotas(&limited).await;
    for server in [server, limited] {
        let log = server.log();
        assert!(server.stop().await.success(), "{log}");
    }
}

homestead_integration_tests::on_main_backend_pairs!(storage_suite: storage_on_sqlite_fs, storage_on_postgres_s3);

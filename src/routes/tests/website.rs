//! Websites by `Host` (PROTOCOL-0.17.md §18) through the real client service: which requests are sites,
//! how paths map onto `/pub/website/<label>/`, and every answer of §18.4 with its headers.

use axum::body::Body;
use http::{Method, StatusCode, header};
use pubky_common::crypto::Keypair;

use super::{Answer, TestApp, expect, request};

/// An app with one user owning a `_` site and a `blog` site.
struct Sites {
    app: TestApp,
    key: String,
}

impl Sites {
    async fn new() -> Self {
        Self::on(TestApp::builder().build().await).await
    }

    async fn on(app: TestApp) -> Self {
        let key = Keypair::random().public_key().z32();
        app.sign_up(&key).await;
        for (path, body) in [
            ("/pub/website/_/index.html", "<h1>home</h1>"),
            ("/pub/website/_/style.css", "h1 { color: red }"),
            ("/pub/website/_/docs/index.html", "<h1>docs</h1>"),
            ("/pub/website/_/a b/index.html", "spaced"),
            ("/pub/website/_/evil.com/index.html", "local"),
            ("/pub/website/_/404.html", "<h1>lost</h1>"),
            ("/pub/website/blog/index.html", "<h1>blog</h1>"),
            ("/pub/website/blog/post.html", "post"),
        ] {
            app.write(&key, path, body).await;
        }
        Self { app, key }
    }

    async fn send(
        &self,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut builder = request(method, path).header(header::HOST, host);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.app.client(builder.body(Body::empty()).unwrap()).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, &self.key, path, &[]).await
    }
}

/// Asserts the headers every website answer carries, and that it carries no handler `Vary`.
fn website_headers(answer: &Answer) {
    assert_eq!(answer.header(header::CACHE_CONTROL), "no-cache");
    assert_eq!(answer.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(answer.header(header::CONTENT_SECURITY_POLICY), "");
    assert!(!answer.header(header::VARY).contains("pubky-host"));
    assert!(!answer.header(header::VARY).contains("Cookie"));
}

#[tokio::test]
async fn host_forms_name_sites_or_keep_the_api() {
    let sites = Sites::new().await;
    let key = &sites.key;
    let home = |host: String| {
        let sites = &sites;
        async move { sites.send(Method::GET, &host, "/", &[]).await.text() }
    };
    assert_eq!(home(key.clone()).await, "<h1>home</h1>");
    assert_eq!(home(format!("blog.{key}")).await, "<h1>blog</h1>");
    assert_eq!(
        home(format!("BLOG.{}.:6286", key.to_uppercase())).await,
        "<h1>blog</h1>"
    );
    for host in [
        format!("_pubky.{key}"),
        format!("_.{key}"),
        format!("a.b.{key}"),
        format!("-a.{key}"),
        format!("pubky{key}"),
        "localhost:6286".to_string(),
    ] {
        assert_eq!(home(host.clone()).await, "Pubky Homeserver", "{host}");
    }
    // The server's own key keeps the API.
    let server = sites.app.state.server_key.to_z32();
    assert_eq!(home(server).await, "Pubky Homeserver");
    // A label with no site is a 404, never the `_` site.
    let missing = sites
        .send(Method::GET, &format!("nosite.{key}"), "/", &[])
        .await;
    expect(&missing, 404, "Not Found");
    website_headers(&missing);
    let no_fallback = sites
        .send(Method::GET, &format!("blog.{key}"), "/style.css", &[])
        .await;
    expect(&no_fallback, 404, "Not Found");
}

#[tokio::test]
async fn reserved_first_segments_keep_the_api() {
    let sites = Sites::new().await;
    // The storage API answers its own way: a listing of the owner's files, with the storage headers.
    let listing = sites.get("/pub/website/_/").await;
    assert_eq!(listing.status, StatusCode::OK);
    assert!(listing.text().contains("index.html"), "{}", listing.text());
    assert_ne!(listing.header(header::CACHE_CONTROL), "no-cache");
    let file = sites.get("/pub/website/_/style.css").await;
    assert_eq!(
        file.header(header::CACHE_CONTROL),
        "private, must-revalidate"
    );
    let info = sites.get("/info").await;
    assert!(info.text().starts_with(r#"{"features""#));
    // A first segment that only starts like a reserved one is a site path.
    let site = sites.get("/%70ub/website/_/style.css").await;
    expect(&site, 404, "<h1>lost</h1>");
    // Other methods keep the API whatever the path.
    let options = sites.send(Method::DELETE, &sites.key, "/x", &[]).await;
    assert_eq!(options.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn files_index_pages_and_headers() {
    let sites = Sites::new().await;
    let css = sites.get("/style.css").await;
    assert_eq!(
        (css.status, css.text().as_str()),
        (StatusCode::OK, "h1 { color: red }")
    );
    assert_eq!(css.header(header::CONTENT_TYPE), "text/css");
    assert_eq!(css.header(header::CONTENT_LENGTH), "17");
    assert!(css.header(header::ETAG).starts_with('"'));
    assert!(!css.header(header::LAST_MODIFIED).is_empty());
    assert_eq!(css.header(header::ACCEPT_RANGES), "");
    website_headers(&css);
    for path in ["/", "/docs/", "/docs/./", "/x/..", "/%64ocs/", "/a%20b/"] {
        let page = sites.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        website_headers(&page);
    }
    assert_eq!(sites.get("/docs/").await.text(), "<h1>docs</h1>");
    // A range is not served: the file comes whole.
    let ranged = sites
        .send(
            Method::GET,
            &sites.key,
            "/style.css",
            &[("range", "bytes=0-1")],
        )
        .await;
    assert_eq!((ranged.status, ranged.body.len()), (StatusCode::OK, 17));
    let head = sites
        .send(Method::HEAD, &sites.key, "/style.css", &[])
        .await;
    assert_eq!((head.status, head.body.len()), (StatusCode::OK, 0));
    assert_eq!(head.header(header::CONTENT_LENGTH), "17");
    assert_eq!(head.header(header::ETAG), css.header(header::ETAG));
    website_headers(&head);
}

#[tokio::test]
async fn conditional_requests_answer_304_for_get_and_head() {
    let sites = Sites::new().await;
    let page = sites.get("/").await;
    let etag = page.header(header::ETAG).to_string();
    let modified = page.header(header::LAST_MODIFIED).to_string();
    for method in [Method::GET, Method::HEAD] {
        for condition in [
            ("if-none-match", etag.as_str()),
            ("if-modified-since", &modified),
        ] {
            let answer = sites
                .send(method.clone(), &sites.key, "/", &[condition])
                .await;
            assert_eq!(
                answer.status,
                StatusCode::NOT_MODIFIED,
                "{method} {condition:?}"
            );
            assert_eq!(answer.header(header::ETAG), etag);
            assert!(answer.body.is_empty());
            website_headers(&answer);
        }
        let stale = sites
            .send(
                method.clone(),
                &sites.key,
                "/",
                &[("if-none-match", "\"old\"")],
            )
            .await;
        assert_eq!(stale.status, StatusCode::OK, "{method}");
    }
}

#[tokio::test]
async fn directories_redirect_keeping_the_query_and_the_host() {
    let sites = Sites::new().await;
    let redirect = sites.get("/docs?x=1&y").await;
    assert_eq!(redirect.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(redirect.header(header::LOCATION), "/docs/?x=1&y");
    assert!(redirect.body.is_empty());
    website_headers(&redirect);
    assert_eq!(sites.get("/docs").await.header(header::LOCATION), "/docs/");
    assert_eq!(
        sites.get("/a%20b").await.header(header::LOCATION),
        "/a%20b/"
    );
    // `//evil.com` is the site's own `/evil.com`.
    for path in [
        "//evil.com",
        "/%2Fevil.com",
        "/./evil.com",
        "/x/../evil.com",
    ] {
        let answer = sites.get(path).await;
        assert_eq!(answer.status, StatusCode::MOVED_PERMANENTLY, "{path}");
        assert_eq!(answer.header(header::LOCATION), "/evil.com/", "{path}");
    }
    let head = sites.send(Method::HEAD, &sites.key, "/docs", &[]).await;
    assert_eq!(head.status, StatusCode::MOVED_PERMANENTLY);
    // A directory-shaped path without index.html does not redirect.
    let blog = format!("blog.{}", sites.key);
    expect(
        &sites.send(Method::GET, &blog, "/nothing/", &[]).await,
        404,
        "Not Found",
    );
}

#[tokio::test]
async fn missing_pages_get_the_sites_404_page_and_never_a_listing() {
    let sites = Sites::new().await;
    for path in ["/nothing", "/nothing/", "/docs/nothing.css"] {
        let lost = sites.get(path).await;
        expect(&lost, 404, "<h1>lost</h1>");
        assert_eq!(lost.header(header::CONTENT_TYPE), "text/html");
        assert_eq!(lost.header(header::ETAG), "");
        assert_eq!(lost.header(header::LAST_MODIFIED), "");
        website_headers(&lost);
    }
    // Conditions are not evaluated on the 404 page.
    let etag = sites
        .get("/404.html")
        .await
        .header(header::ETAG)
        .to_string();
    let lost = sites
        .send(
            Method::GET,
            &sites.key,
            "/nothing",
            &[("if-none-match", &etag)],
        )
        .await;
    expect(&lost, 404, "<h1>lost</h1>");
    let head = sites.send(Method::HEAD, &sites.key, "/nothing", &[]).await;
    assert_eq!((head.status, head.body.len()), (StatusCode::NOT_FOUND, 0));
    // The blog has no 404 page, and a directory without index.html lists nothing.
    let blog = format!("blog.{}", sites.key);
    sites
        .app
        .write(&sites.key, "/pub/website/blog/d/f.txt", "f")
        .await;
    for path in ["/d/", "/d", "/nothing"] {
        let answer = sites.send(Method::GET, &blog, path, &[]).await;
        expect(&answer, 404, "Not Found");
        website_headers(&answer);
    }
}

#[tokio::test]
async fn bad_paths_are_400s_without_website_headers() {
    let sites = Sites::new().await;
    for (path, text) in [
        ("/%FF", "Website path is not valid UTF-8"),
        (
            "/../x",
            "Invalid website path: Path escapes the root with ..",
        ),
        (
            "/a%00b",
            "Invalid website path: Path contains a control character",
        ),
    ] {
        let answer = sites.get(path).await;
        expect(&answer, 400, text);
        assert_eq!(answer.header(header::CACHE_CONTROL), "");
        assert_eq!(answer.header(header::X_CONTENT_TYPE_OPTIONS), "");
    }
}

#[tokio::test]
async fn unknown_and_disabled_owners() {
    let sites = Sites::new().await;
    let stranger = Keypair::random().public_key().z32();
    let unknown = sites.send(Method::GET, &stranger, "/", &[]).await;
    expect(&unknown, 404, "Not Found");
    website_headers(&unknown);
    let accounts = sites.app.store();
    accounts
        .accounts()
        .set_disabled(&sites.key, true)
        .await
        .unwrap();
    for path in ["/", "/nothing", "/docs"] {
        let disabled = sites.get(path).await;
        expect(&disabled, 403, "User is disabled");
        website_headers(&disabled);
    }
}

#[tokio::test]
async fn cookies_and_bearers_play_no_part() {
    let sites = Sites::new().await;
    let answer = sites
        .send(
            Method::GET,
            &sites.key,
            "/",
            &[
                ("cookie", "x=y"),
                ("authorization", "Bearer nonsense"),
                ("pubky-host", &Keypair::random().public_key().z32()),
            ],
        )
        .await;
    assert_eq!(answer.text(), "<h1>home</h1>");
    assert_eq!(answer.header(header::SET_COOKIE), "");
    let query = sites
        .get(&format!(
            "/?pubky-host={}",
            Keypair::random().public_key().z32()
        ))
        .await;
    assert_eq!(query.text(), "<h1>home</h1>");
}

#[tokio::test]
async fn the_switch_turns_websites_and_their_feature_off() {
    let on = Sites::new().await;
    let info = on.get("/info").await;
    assert_eq!(
        info.text(),
        r#"{"features":["path-addressed-storage","grant-proof-logout","webdav-locks","websites"]}"#
    );
    let off = Sites::on(TestApp::builder().websites(false).build().await).await;
    assert_eq!(off.get("/").await.text(), "Pubky Homeserver");
    // The API reads the owner-relative `/style.css`, outside `/pub/`.
    assert_eq!(off.get("/style.css").await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        off.get("/info").await.text(),
        r#"{"features":["path-addressed-storage","grant-proof-logout","webdav-locks"]}"#
    );
}

#[tokio::test]
async fn website_requests_are_not_storage_requests() {
    let sites = Sites::new().await;
    for path in ["/", "/style.css", "/nothing", "/docs"] {
        sites.get(path).await;
    }
    let metrics = sites.app.state.metrics.render().unwrap();
    assert!(
        !metrics.contains("storage_request_count_total{"),
        "{metrics}"
    );
    assert!(metrics.contains(r#"route="website""#), "{metrics}");
    // A storage read of the same file is counted.
    sites.get("/pub/website/_/style.css").await;
    let metrics = sites.app.state.metrics.render().unwrap();
    assert!(
        metrics.contains("storage_request_count_total{"),
        "{metrics}"
    );
}

#[tokio::test]
async fn rate_limits_match_the_target_file() {
    let limit: homestead_config::RateLimit = toml::from_str(
        "path = \"/pub/website/_/index.html\"\nmethod = \"GET\"\nquota = \"1r/h\"\nkey = \"ip\"",
    )
    .unwrap();
    let sites = Sites::on(TestApp::builder().rate_limits(vec![limit]).build().await).await;
    assert_eq!(sites.get("/").await.status, StatusCode::OK);
    assert_eq!(
        sites.get("/index.html").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(sites.get("/style.css").await.status, StatusCode::OK);
}

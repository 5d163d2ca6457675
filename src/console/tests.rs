//! The console through the admin router: its page, sign-in, the session and CSRF checks, and the
//! one-line refusals of bad input.

use axum::body::Body;
use homestead_config::StorageType;
use http::{Method, StatusCode, header};
use pubky_common::crypto::Keypair;
use serde_json::{Value, json};

use crate::pkarr_record::PublishStatus;
use crate::routes::tests::{Answer, TestApp, expect, request};
use crate::user_republisher::{FinishedRun, RunSummary};

const HOST: &str = "127.0.0.1:6288";
const ORIGIN: &str = "http://127.0.0.1:6288";

/// A signed-in browser: its cookie pair and CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
}

async fn sign_in(app: &TestApp, password: &str) -> Answer {
    let body = json!({ "password": password }).to_string();
    let sign_in = request(Method::POST, "/console/api/sign-in")
        .header("host", HOST)
        .header("origin", ORIGIN)
        .header("sec-fetch-site", "same-origin")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    app.admin(sign_in).await
}

async fn browser(app: &TestApp) -> Browser {
    let answer = sign_in(app, "secret").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let cookie = answer.header(header::SET_COOKIE);
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    Browser {
        cookie: cookie.split(';').next().unwrap().to_string(),
        csrf: body["csrf_token"].as_str().unwrap().to_string(),
    }
}

impl Browser {
    /// A same-origin request as the page sends it: cookie, and the CSRF token when `csrf`.
    async fn send(
        &self,
        app: &TestApp,
        method: Method,
        uri: &str,
        body: Option<Value>,
        csrf: bool,
    ) -> Answer {
        let mut builder = request(method, uri)
            .header("host", HOST)
            .header("origin", ORIGIN)
            .header("sec-fetch-site", "same-origin")
            .header(header::COOKIE, &self.cookie);
        if csrf {
            builder = builder.header("x-csrf-token", &self.csrf);
        }
        let body = match body {
            Some(body) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        app.admin(builder.body(body).unwrap()).await
    }

    async fn get(&self, app: &TestApp, uri: &str) -> Answer {
        self.send(app, Method::GET, uri, None, false).await
    }

    async fn json(&self, app: &TestApp, uri: &str) -> Value {
        let answer = self.get(app, uri).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", answer.text());
        serde_json::from_slice(&answer.body).unwrap()
    }
}

#[tokio::test]
async fn the_page_and_its_files_are_embedded_and_locked_down() {
    let app = TestApp::builder().build().await;
    let get = |uri: &str| request(Method::GET, uri).body(Body::empty()).unwrap();
    let page = app.admin(get("/console/")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("<script src=\"console.js\""));
    assert!(
        page.header(header::CONTENT_SECURITY_POLICY)
            .contains("script-src 'self'")
    );
    assert_eq!(page.header(header::X_FRAME_OPTIONS), "DENY");
    let script = app.admin(get("/console/console.js")).await;
    assert_eq!(
        script.header(header::CONTENT_TYPE),
        "text/javascript; charset=utf-8"
    );
    let style = app.admin(get("/console/console.css")).await;
    assert_eq!(
        style.header(header::CONTENT_TYPE),
        "text/css; charset=utf-8"
    );
    expect(
        &app.admin(get("/console/other.js")).await,
        404,
        "No such console file",
    );
    let bare = app.admin(get("/console")).await;
    assert_eq!(
        (bare.status, bare.header(header::LOCATION)),
        (StatusCode::PERMANENT_REDIRECT, "/console/")
    );
    // The admin listener's DNS-rebinding guard covers the console too.
    let rebound = request(Method::GET, "/console/")
        .header("host", "attacker.example:6288")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.admin(rebound).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn sign_in_needs_the_password_and_gives_a_console_only_cookie() {
    let app = TestApp::builder().build().await;
    let started = std::time::Instant::now();
    expect(&sign_in(&app, "guess").await, 401, "Wrong password");
    assert!(started.elapsed() >= super::api::WRONG_PASSWORD_DELAY);
    // While a wrong guess is held, another attempt is turned away at once instead of queueing.
    let (held, busy) = tokio::join!(sign_in(&app, "guess"), async {
        tokio::time::sleep(super::api::WRONG_PASSWORD_DELAY / 4).await;
        sign_in(&app, "secret").await
    });
    expect(&held, 401, "Wrong password");
    expect(
        &busy,
        429,
        "Another sign-in is being checked: try again in a second",
    );
    assert_eq!(busy.header(header::RETRY_AFTER), "1");
    let right = sign_in(&app, "secret").await;
    assert_eq!(right.status, StatusCode::OK);
    let cookie = right.header(header::SET_COOKIE);
    assert!(cookie.starts_with("homestead_console="), "{cookie}");
    for attribute in [
        "; Path=/console;",
        "; HttpOnly;",
        "; SameSite=Strict;",
        "; Max-Age=28800",
    ] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    // Bad bodies are refused with a line of text.
    let missing = request(Method::POST, "/console/api/sign-in")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let missing = app.admin(missing).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(missing.text().contains("missing field `password`"));
    assert!(!missing.text().contains('\n'));

    // The cookie opens the console's API, never the header-based admin API.
    let browser = browser(&app).await;
    let info = request(Method::GET, "/info")
        .header(header::COOKIE, &browser.cookie)
        .body(Body::empty())
        .unwrap();
    expect(&app.admin(info).await, 401, "Missing admin password");
    let info = request(Method::GET, "/info")
        .header("x-admin-password", "secret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.admin(info).await.status, StatusCode::OK);
    let session = browser.json(&app, "/console/api/session").await;
    assert_eq!(session["csrf_token"], browser.csrf.as_str());
}

#[tokio::test]
async fn the_api_needs_a_session_and_changes_need_its_csrf_token() {
    let app = TestApp::builder().build().await;
    let user = Keypair::random().public_key().z32();
    app.sign_up(&user).await;
    let anonymous = request(Method::GET, "/console/api/overview")
        .body(Body::empty())
        .unwrap();
    expect(
        &app.admin(anonymous).await,
        401,
        "Not signed in (or the session expired): sign in again",
    );
    let browser = browser(&app).await;
    // The operator routes are the admin API's own: the event stream too, behind the session.
    let stream = request(Method::GET, "/console/api/events-stream?limit=1")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.admin(stream).await.status, StatusCode::UNAUTHORIZED);
    let stream = browser
        .get(&app, "/console/api/events-stream?limit=1")
        .await;
    assert_eq!(
        (stream.status, stream.header(header::CONTENT_TYPE)),
        (StatusCode::OK, "text/event-stream")
    );
    let disable = format!("/console/api/users/{user}/disable");
    let no_token = browser
        .send(&app, Method::POST, &disable, None, false)
        .await;
    expect(
        &no_token,
        403,
        "Missing or wrong CSRF token: reload the console",
    );
    let wrong = Browser {
        cookie: browser.cookie.clone(),
        csrf: "guess".into(),
    };
    let wrong = wrong.send(&app, Method::POST, &disable, None, true).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    // A form on another origin is refused before anything else, cookie or not.
    let cross_site = request(Method::POST, &disable)
        .header("host", HOST)
        .header("origin", "null")
        .header("sec-fetch-site", "cross-site")
        .header(header::COOKIE, &browser.cookie)
        .header("x-csrf-token", &browser.csrf)
        .body(Body::empty())
        .unwrap();
    expect(
        &app.admin(cross_site).await,
        403,
        "Cross-site request refused: use the console page itself",
    );
    let other_port = request(Method::POST, "/console/api/sign-in")
        .header("host", HOST)
        .header("origin", "http://127.0.0.1:8080")
        .body(Body::from(r#"{"password":"secret"}"#))
        .unwrap();
    assert_eq!(app.admin(other_port).await.status, StatusCode::FORBIDDEN);
    let stored = app.store().accounts().user(&user).await.unwrap().unwrap();
    assert!(!stored.disabled, "no refused request changed anything");
    // The reference's minting GET is a write: it needs the CSRF token, and a page on another port of
    // the same host (same site: the cookie goes along) cannot even load an API answer.
    let minted = || async {
        app.store()
            .operations()
            .counts()
            .await
            .unwrap()
            .signup_tokens
    };
    let before = minted().await;
    let mint_get = browser
        .send(
            &app,
            Method::GET,
            "/console/api/generate_signup_token",
            None,
            false,
        )
        .await;
    expect(
        &mint_get,
        403,
        "Missing or wrong CSRF token: reload the console",
    );
    for marker in ["same-site", "cross-site"] {
        let image = request(Method::GET, "/console/api/generate_signup_token")
            .header("host", HOST)
            .header("sec-fetch-site", marker)
            .header(header::COOKIE, &browser.cookie)
            .body(Body::empty())
            .unwrap();
        let refused = app.admin(image).await;
        expect(
            &refused,
            403,
            "Cross-site request refused: use the console page itself",
        );
        let read = request(Method::GET, "/console/api/overview")
            .header("host", HOST)
            .header("sec-fetch-site", marker)
            .header(header::COOKIE, &browser.cookie)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            app.admin(read).await.status,
            StatusCode::FORBIDDEN,
            "{marker}"
        );
    }
    assert_eq!(
        minted().await,
        before,
        "no token was minted by a refused request"
    );
    let mint_get = browser
        .send(
            &app,
            Method::GET,
            "/console/api/generate_signup_token",
            None,
            true,
        )
        .await;
    assert_eq!(mint_get.status, StatusCode::OK);
    assert_eq!(minted().await, before + 1);

    let done = browser.send(&app, Method::POST, &disable, None, true).await;
    expect(&done, 200, "Ok");
    let stored = app.store().accounts().user(&user).await.unwrap().unwrap();
    assert!(stored.disabled);

    // Signing out ends the session on the server, whatever the browser keeps.
    let out = browser
        .send(&app, Method::POST, "/console/api/sign-out", None, true)
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(out.header(header::SET_COOKIE).contains("Max-Age=0"));
    assert_eq!(
        browser.get(&app, "/console/api/overview").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn overview_reports_counts_health_publishing_and_request_rate() {
    let app = TestApp::builder().build().await;
    let user = Keypair::random().public_key().z32();
    app.sign_up(&user).await;
    app.write(&user, "/pub/a.txt", "hello").await;
    let root = request(Method::GET, "/").body(Body::empty()).unwrap();
    app.client(root).await;
    let browser = browser(&app).await;
    let overview = browser.json(&app, "/console/api/overview").await;
    assert_eq!(overview["counts"]["users"], 1);
    assert_eq!(overview["counts"]["used_bytes"], 5 + 256);
    assert_eq!(overview["health"], json!({"database": true, "blobs": true}));
    assert_eq!(overview["publish"]["last_attempt"], Value::Null);
    assert_eq!(overview["republisher"], Value::Null);
    assert_eq!(overview["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(overview["request_rate"]["slot_secs"], 10);
    let counts = overview["request_rate"]["counts"].as_array().unwrap();
    assert_eq!(counts.iter().filter_map(Value::as_u64).sum::<u64>(), 1);
    // Memory (like S3) has no fixed total.
    assert_eq!(
        overview["blob_store"],
        json!({"describe": "in-memory", "total_bytes": null, "free_bytes": null})
    );
}

#[tokio::test]
async fn overview_gives_the_blob_volume_of_a_filesystem_store() {
    let app = TestApp::builder()
        .blobs(StorageType::FileSystem)
        .build()
        .await;
    let browser = browser(&app).await;
    let store = browser.json(&app, "/console/api/overview").await["blob_store"].clone();
    assert!(
        store["describe"]
            .as_str()
            .unwrap()
            .starts_with("filesystem ("),
        "{store}"
    );
    let volume = app.store().blob_store().volume_space().unwrap().unwrap();
    assert_eq!(store["total_bytes"], volume.total_bytes, "{store}");
    let free = store["free_bytes"].as_u64().unwrap();
    assert!(0 < free && free <= volume.total_bytes, "{store}");
    assert_eq!(store.get("error"), None, "{store}");
}

#[tokio::test]
async fn overview_reports_publishing_the_republisher_and_token_use() {
    let app = TestApp::builder().build().await;
    let browser = browser(&app).await;
    let overview = || {
        let (browser, app) = (&browser, &app);
        async move { browser.json(app, "/console/api/overview").await }
    };
    *app.state.admin.publish.lock().unwrap() = PublishStatus {
        published: 3,
        failed: 1,
        last_error: None,
        last_attempt_micros: Some(1_700_000_000_123_456),
    };
    assert_eq!(
        overview().await["publish"],
        json!({
            "published": 3, "failed": 1, "last_error": null,
            "last_attempt": "2023-11-14T22:13:20.123456",
        })
    );
    *app.state.admin.publish.lock().unwrap() = PublishStatus {
        published: 3,
        failed: 2,
        last_error: Some("no DHT node answered".into()),
        last_attempt_micros: Some(1_700_000_060_000_001),
    };
    assert_eq!(
        overview().await["publish"],
        json!({
            "published": 3, "failed": 2, "last_error": "no DHT node answered",
            "last_attempt": "2023-11-14T22:14:20.000001",
        })
    );
    *app.state.admin.republisher.lock().unwrap() = Some(FinishedRun {
        summary: RunSummary {
            republished: 5,
            restored: 2,
            elsewhere: 1,
            missing: 0,
            failed: 3,
        },
        finished_micros: 1_700_000_000_000_000,
    });
    assert_eq!(
        overview().await["republisher"],
        json!({
            "republished": 5, "restored": 2, "elsewhere": 1, "missing": 0, "failed": 3,
            "finished_at": "2023-11-14T22:13:20",
        })
    );
    let minted = browser
        .send(
            &app,
            Method::POST,
            "/console/api/mint",
            Some(json!({"count": 3})),
            true,
        )
        .await;
    let minted: Value = serde_json::from_slice(&minted.body).unwrap();
    let token = minted["tokens"][0].as_str().unwrap();
    let user = Keypair::random().public_key().z32();
    let store = app.store();
    store
        .accounts()
        .create_user(&user, Some(token), 1)
        .await
        .unwrap();
    let counts = overview().await["counts"].clone();
    assert_eq!(
        (
            &counts["users"],
            &counts["signup_tokens"],
            &counts["unused_signup_tokens"]
        ),
        (&json!(1), &json!(3), &json!(2)),
        "{counts}"
    );
}

#[tokio::test]
async fn tokens_are_minted_in_batches_and_bad_input_is_named() {
    let app = TestApp::builder().build().await;
    let browser = browser(&app).await;
    let mint = |body: Value| {
        let browser = &browser;
        let app = &app;
        async move {
            browser
                .send(app, Method::POST, "/console/api/mint", Some(body), true)
                .await
        }
    };
    let minted = mint(json!({"count": 3, "quota": {"storage_quota_mb": 5}})).await;
    assert_eq!(minted.status, StatusCode::OK, "{}", minted.text());
    let minted: Value = serde_json::from_slice(&minted.body).unwrap();
    let tokens = minted["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 3);
    let listed = browser
        .json(&app, "/console/api/signup_tokens?state=unused")
        .await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(
        items
            .iter()
            .all(|t| t["quota"] == json!({"storage_quota_mb": 5}))
    );
    expect(
        &mint(json!({"count": 0})).await,
        400,
        "count: expected a whole number from 1 to 100, not 0",
    );
    expect(
        &mint(json!({"count": "many"})).await,
        400,
        "count: expected a whole number from 1 to 100, not \"many\"",
    );
    expect(
        &mint(json!({"quota": {"storage_quota_mb": "lots"}})).await,
        422,
        "storage_quota_mb: expected \"unlimited\" or a non-negative integer, not \"lots\"",
    );
}

#[tokio::test]
async fn users_are_searched_by_key_prefix_and_quota_edits_are_validated() {
    let app = TestApp::builder().build().await;
    let user = Keypair::random().public_key().z32();
    app.sign_up(&user).await;
    app.sign_up(&Keypair::random().public_key().z32()).await;
    let browser = browser(&app).await;
    let found = browser
        .json(
            &app,
            &format!("/console/api/user_search?prefix={}", &user[..6]),
        )
        .await;
    assert_eq!(found["complete"], true);
    let keys: Vec<&str> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["pubky"].as_str().unwrap())
        .collect();
    assert_eq!(keys, [user.as_str()]);
    let long = "y".repeat(53);
    for bad in ["l0v2", "", long.as_str()] {
        expect(
            &browser
                .get(&app, &format!("/console/api/user_search?prefix={bad}"))
                .await,
            400,
            "Key prefix: 1 to 52 letters of the key alphabet (ybndrfg8ejkmcpqxot1uwisza345h769)",
        );
    }
    let quota = format!("/console/api/users/{user}/quota");
    let bad = browser
        .send(
            &app,
            Method::PATCH,
            &quota,
            Some(json!({"storage_quota_mb": -1})),
            true,
        )
        .await;
    expect(
        &bad,
        422,
        "storage_quota_mb: expected \"unlimited\" or a non-negative integer, not -1",
    );
    let good = browser
        .send(
            &app,
            Method::PATCH,
            &quota,
            Some(json!({"storage_quota_mb": 1, "rate_read": null})),
            true,
        )
        .await;
    assert_eq!(good.status, StatusCode::OK, "{}", good.text());
    let stored = browser
        .json(&app, &format!("/console/api/users/{user}"))
        .await;
    assert_eq!(stored["quota"]["overrides"]["storage_quota_mb"], 1);
}

//! CORS for browser apps on another origin: preflights mirror the request, and every answer of the client
//! API (reads and refusals alike: 401, 403, 429, 507) names the origin, allows credentials and exposes
//! what an app must read.

use axum::body::Body;
use http::{Method, StatusCode, header};
use pubky_common::crypto::Keypair;

use super::{Answer, TestApp, request, token};

/// A web app's origin on another local site.
const ORIGIN: &str = "http://127.0.0.1:5173";

/// `Access-Control-Expose-Headers` on every answer.
pub(super) const EXPOSED: &str =
    "retry-after,lock-token,timeout,etag,last-modified,content-length,content-range";

/// Asserts the CORS headers of an answer to a request from [`ORIGIN`].
fn assert_cors(answer: &Answer, what: &str) {
    assert_eq!(
        answer.header(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        ORIGIN,
        "{what}"
    );
    assert_eq!(
        answer.header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
        "true",
        "{what}"
    );
    assert_eq!(
        answer.header(header::ACCESS_CONTROL_EXPOSE_HEADERS),
        EXPOSED,
        "{what}"
    );
}

#[tokio::test]
async fn a_preflight_mirrors_the_method_and_headers() {
    let app = TestApp::builder().build().await;
    let preflight = request(Method::OPTIONS, "/pub/app/file")
        .header(header::ORIGIN, ORIGIN)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PUT")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "pubky-host,content-type",
        )
        .body(Body::empty())
        .unwrap();
    let preflight = app.client(preflight).await;
    assert_eq!(preflight.status, StatusCode::OK);
    assert_eq!(
        preflight.header(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        ORIGIN
    );
    assert_eq!(
        preflight.header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
        "true"
    );
    assert_eq!(
        preflight.header(header::ACCESS_CONTROL_ALLOW_METHODS),
        "PUT"
    );
    assert_eq!(
        preflight.header(header::ACCESS_CONTROL_ALLOW_HEADERS),
        "pubky-host,content-type"
    );
}

#[tokio::test]
async fn reads_and_refusals_carry_cors_and_the_exposed_headers() {
    let limit: homestead_config::RateLimit = toml::from_str(
        "path = \"/pub/app/limited\"\nmethod = \"GET\"\nquota = \"1r/h\"\nkey = \"ip\"",
    )
    .unwrap();
    let app = TestApp::builder().rate_limits(vec![limit]).build().await;
    let keypair = Keypair::random();
    let user = keypair.public_key().z32();
    let signup = request(Method::POST, "/signup")
        .header(header::ORIGIN, ORIGIN)
        .body(Body::from(token(&keypair, "/pub/app/:rw")))
        .unwrap();
    let signup = app.client(signup).await;
    assert_eq!(signup.status, StatusCode::OK, "{}", signup.text());
    assert_cors(&signup, "sign-up");
    let cookie = signup
        .header(header::SET_COOKIE)
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let call = |method: Method, path: &str, signed_in: bool| {
        let mut builder = request(method, path)
            .header("pubky-host", &user)
            .header(header::ORIGIN, ORIGIN);
        if signed_in {
            builder = builder.header(header::COOKIE, &cookie);
        }
        builder.body(Body::from("hello")).unwrap()
    };

    let created = app.client(call(Method::PUT, "/pub/app/file", true)).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_cors(&created, "201");
    let read = app.client(call(Method::GET, "/pub/app/file", false)).await;
    assert_eq!(
        (read.status, read.text().as_str()),
        (StatusCode::OK, "hello")
    );
    assert!(
        read.header(header::ETAG).starts_with('"'),
        "an ETag to expose"
    );
    assert_cors(&read, "200");

    let anonymous = app.client(call(Method::PUT, "/pub/app/file", false)).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_cors(&anonymous, "401");
    let outside = app.client(call(Method::PUT, "/pub/other/file", true)).await;
    assert_eq!(outside.status, StatusCode::FORBIDDEN);
    assert_cors(&outside, "403");

    let first = app
        .client(call(Method::GET, "/pub/app/limited", false))
        .await;
    assert_eq!(first.status, StatusCode::NOT_FOUND);
    let limited = app
        .client(call(Method::GET, "/pub/app/limited", false))
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_cors(&limited, "429");

    let quota = request(Method::PATCH, &format!("/users/{user}/quota"))
        .header("x-admin-password", "secret")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"storage_quota_mb": 0}"#))
        .unwrap();
    assert_eq!(app.admin(quota).await.status, StatusCode::OK);
    let full = app.client(call(Method::PUT, "/pub/app/more", true)).await;
    assert_eq!(full.status, StatusCode::INSUFFICIENT_STORAGE);
    assert_cors(&full, "507");
}

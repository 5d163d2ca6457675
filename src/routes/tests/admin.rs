//! The operator's API, and the write allow-lists it sets.

use axum::body::Body;
use homestead_config::SignupMode;
use http::{Method, StatusCode, header};
use pubky_common::crypto::Keypair;

use super::{TestApp, request, token};

#[tokio::test]
async fn admin_routes_need_the_password() {
    let app = TestApp::builder()
        .signup_mode(SignupMode::TokenRequired)
        .build()
        .await;
    let root = app
        .admin(request(Method::GET, "/").body(Body::empty()).unwrap())
        .await;
    assert_eq!(root.text(), "Homeserver - Admin Endpoint");
    let missing = request(Method::GET, "/generate_signup_token")
        .body(Body::empty())
        .unwrap();
    let missing = app.admin(missing).await;
    assert_eq!(
        (missing.status, missing.text().as_str()),
        (StatusCode::UNAUTHORIZED, "Missing admin password")
    );
    let wrong = request(Method::GET, "/generate_signup_token")
        .header("x-admin-password", "guess")
        .body(Body::empty())
        .unwrap();
    let wrong = app.admin(wrong).await;
    assert_eq!(
        (wrong.status, wrong.text().as_str()),
        (StatusCode::UNAUTHORIZED, "Invalid admin password")
    );
    let good = request(Method::GET, "/generate_signup_token")
        .header("x-admin-password", "secret")
        .body(Body::empty())
        .unwrap();
    let good = app.admin(good).await;
    assert_eq!(good.status, StatusCode::OK);
    assert!(
        crate::signup_token::is_well_formed(&good.text()),
        "{}",
        good.text()
    );
    // A browser page, even under a name pointed at loopback, gets neither CORS nor an answer.
    let rebound = request(Method::GET, "/generate_signup_token")
        .header("host", "attacker.example:6288")
        .header("origin", "http://attacker.example:6288")
        .header("x-admin-password", "secret")
        .body(Body::empty())
        .unwrap();
    let rebound = app.admin(rebound).await;
    assert_eq!(rebound.status, StatusCode::FORBIDDEN);
    let preflight = request(Method::OPTIONS, "/generate_signup_token")
        .header("host", "127.0.0.1:6288")
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "x-admin-password")
        .body(Body::empty())
        .unwrap();
    let preflight = app.admin(preflight).await;
    assert_eq!(
        preflight.header(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "",
        "no CORS on the admin API"
    );
    let local = request(Method::GET, "/generate_signup_token")
        .header("host", "localhost:6288")
        .header("x-admin-password", "secret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.admin(local).await.status, StatusCode::OK);
}

#[tokio::test]
async fn admin_counts_users_and_tokens_and_deletes_entries() {
    let app = TestApp::builder()
        .signup_mode(SignupMode::TokenRequired)
        .build()
        .await;
    let admin = |method: Method, uri: &str| {
        request(method, uri)
            .header("x-admin-password", "secret")
            .body(Body::empty())
            .unwrap()
    };
    let keys: Vec<String> = (0..3)
        .map(|_| Keypair::random().public_key().z32())
        .collect();
    for key in &keys {
        app.sign_up(key).await;
    }
    let minted = app
        .admin(admin(Method::GET, "/generate_signup_token"))
        .await;
    assert_eq!(minted.status, StatusCode::OK);
    let info = app.admin(admin(Method::GET, "/info")).await;
    let info: serde_json::Value = serde_json::from_slice(&info.body).unwrap();
    assert_eq!(
        (
            info["num_users"].as_u64(),
            info["num_unused_signup_codes"].as_u64(),
            info["num_pop_nonces"].as_u64()
        ),
        (Some(3), Some(1), Some(0))
    );

    app.write(&keys[0], "/pub/app/file", "x").await;
    let uri = format!("/webdav/{}/pub/app/file", keys[0]);
    assert_eq!(
        app.admin(admin(Method::DELETE, &uri)).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.admin(admin(Method::DELETE, &uri)).await.status,
        StatusCode::NOT_FOUND
    );
    let bad = app
        .admin(admin(Method::DELETE, "/webdav/nokey/pub/x"))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let unauthorized = app
        .admin(request(Method::GET, "/users").body(Body::empty()).unwrap())
        .await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn quota_admin_and_write_allow_lists() {
    let app = TestApp::builder()
        .signup_mode(SignupMode::TokenRequired)
        .build()
        .await;
    let json = |method: Method, uri: &str, body: &str| {
        request(method, uri)
            .header("x-admin-password", "secret")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    // A token that makes its user read-only below /pub/app/ with a 1 MB quota.
    let minted = app
        .admin(json(
            Method::POST,
            "/generate_signup_token",
            r#"{"storage_quota_mb": 1, "allowed_write_paths": ["/pub/app/"]}"#,
        ))
        .await;
    assert_eq!(minted.status, StatusCode::OK, "{}", minted.text());
    let keypair = Keypair::random();
    let user = keypair.public_key().z32();
    let signup = request(
        Method::POST,
        &format!("/signup?signup_token={}", minted.text()),
    )
    .body(Body::from(token(&keypair, "/:rw")))
    .unwrap();
    let signup = app.client(signup).await;
    assert_eq!(signup.status, StatusCode::OK, "{}", signup.text());
    let cookie = signup
        .header(header::SET_COOKIE)
        .split(';')
        .next()
        .unwrap()
        .to_string();

    let quota = app
        .admin(json(Method::GET, &format!("/users/{user}/quota"), ""))
        .await;
    assert_eq!(
        quota.text(),
        r#"{"effective":{"storage_quota_mb":1,"rate_read":"unlimited","rate_write":"unlimited","allowed_write_paths":["/pub/app/"]},"overrides":{"storage_quota_mb":1,"allowed_write_paths":["/pub/app/"]}}"#
    );
    let put = |path: &str| {
        request(Method::PUT, path)
            .header("pubky-host", &user)
            .header("cookie", &cookie)
            .body(Body::from("x"))
            .unwrap()
    };
    assert_eq!(
        app.client(put("/pub/app/ok")).await.status,
        StatusCode::CREATED
    );
    let outside = app.client(put("/pub/other")).await;
    assert_eq!(
        (outside.status, outside.text().as_str()),
        (StatusCode::FORBIDDEN, "Write to this path is not allowed")
    );

    // Lift the restriction; bad patches are 422 and change nothing; unknown users 404.
    let bad = app
        .admin(json(
            Method::PATCH,
            &format!("/users/{user}/quota"),
            r#"{"rate_read_burst": 5}"#,
        ))
        .await;
    assert_eq!(
        bad.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        bad.text()
    );
    let syntax = app
        .admin(json(Method::PATCH, &format!("/users/{user}/quota"), "{"))
        .await;
    assert_eq!(syntax.status, StatusCode::BAD_REQUEST);
    let stranger = Keypair::random().public_key().z32();
    let missing = app
        .admin(json(
            Method::PATCH,
            &format!("/users/{stranger}/quota"),
            "{}",
        ))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let lifted = app
        .admin(json(
            Method::PATCH,
            &format!("/users/{user}/quota"),
            r#"{"allowed_write_paths": null}"#,
        ))
        .await;
    assert_eq!(lifted.status, StatusCode::OK);
    assert_eq!(
        app.client(put("/pub/other")).await.status,
        StatusCode::CREATED
    );
    let quota = app
        .admin(json(Method::GET, &format!("/users/{user}/quota"), ""))
        .await;
    assert_eq!(
        quota.text(),
        r#"{"effective":{"storage_quota_mb":1,"rate_read":"unlimited","rate_write":"unlimited"},"overrides":{"storage_quota_mb":1}}"#
    );
}

//! Sign-up, sessions and writes through them.

use axum::body::Body;
use homestead_config::SignupMode;
use http::{Method, StatusCode, header};
use pubky_common::crypto::Keypair;

use super::{TestApp, request, token};

#[tokio::test]
async fn signup_session_write_and_signout() {
    let app = TestApp::builder().build().await;
    let keypair = Keypair::random();
    let user = keypair.public_key().z32();

    let signup = request(Method::POST, "/signup")
        .header("host", "127.0.0.1:6286")
        .body(Body::from(token(&keypair, "/pub/app/:rw")))
        .unwrap();
    let signup = app.client(signup).await;
    assert_eq!(signup.status, StatusCode::OK, "{}", signup.text());
    assert_eq!(
        signup.header(header::CONTENT_TYPE),
        "application/octet-stream"
    );
    let info = pubky_common::session::CookieSessionRecord::deserialize(&signup.body).unwrap();
    assert_eq!(info.public_key().z32(), user);
    let cookie = signup.header(header::SET_COOKIE).to_string();
    assert!(cookie.starts_with(&format!("{user}=")), "{cookie}");
    assert!(
        cookie.contains("; HttpOnly; Path=/; Max-Age=31536000; Expires="),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();

    // A second signup of the same key is a conflict.
    let again = request(Method::POST, "/signup")
        .body(Body::from(token(&keypair, "/:rw")))
        .unwrap();
    let again = app.client(again).await;
    assert_eq!(
        (again.status, again.text().as_str()),
        (StatusCode::CONFLICT, "User already exists")
    );

    let session = request(Method::GET, "/session")
        .header("pubky-host", &user)
        .header("cookie", &pair)
        .body(Body::empty())
        .unwrap();
    let session = app.client(session).await;
    assert_eq!(session.status, StatusCode::OK);
    assert_eq!(session.header(header::VARY), "cookie, pubky-host");
    let info = pubky_common::session::CookieSessionRecord::deserialize(&session.body).unwrap();
    assert_eq!(info.capabilities().len(), 1);
    assert!(
        info.created_at() < 10_000_000_000,
        "seconds, not microseconds"
    );

    let put = |path: &str, body: &'static str| {
        request(Method::PUT, path)
            .header("pubky-host", &user)
            .header("cookie", &pair)
            .body(Body::from(body))
            .unwrap()
    };
    assert_eq!(
        app.client(put("/pub/app/a.txt", "hello")).await.status,
        StatusCode::CREATED
    );
    let outside = app.client(put("/pub/app.evil/x", "x")).await;
    assert_eq!(outside.status, StatusCode::FORBIDDEN);
    assert_eq!(outside.text(), "Session does not have write access to path");
    let too_big = app
        .client(put(
            "/pub/app/big",
            include_str!("../../../deploy/config.sample.toml"),
        ))
        .await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);

    let get = request(Method::GET, &format!("/pub/app/a.txt?pubky-host={user}"))
        .body(Body::empty())
        .unwrap();
    let get = app.client(get).await;
    assert_eq!((get.status, get.text().as_str()), (StatusCode::OK, "hello"));
    assert_eq!(
        get.header(header::ETAG),
        "\"6o8WPbOGgpJeRJHF5Y1Ls1Bu+MFOt4qG6QjFYkpnIA8=\""
    );
    assert_eq!(get.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(get.header(header::CONTENT_SECURITY_POLICY), "sandbox");

    let signout = request(Method::DELETE, "/session")
        .header("pubky-host", &user)
        .header("cookie", &pair)
        .body(Body::empty())
        .unwrap();
    let signout = app.client(signout).await;
    assert_eq!(signout.status, StatusCode::OK);
    assert!(signout.header(header::SET_COOKIE).contains("Max-Age=0"));
    let after = app.client(put("/pub/app/a.txt", "again")).await;
    assert_eq!(
        (after.status, after.text().as_str()),
        (StatusCode::UNAUTHORIZED, "No authenticated session found")
    );
}

#[tokio::test]
async fn token_mode_ranks_token_errors_below_auth_errors() {
    let app = TestApp::builder()
        .signup_mode(SignupMode::TokenRequired)
        .build()
        .await;
    // A bad AuthToken is reported before the missing signup token.
    let bad = request(Method::POST, "/signup")
        .body(Body::from(vec![0u8; 10]))
        .unwrap();
    let bad = app.client(bad).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.text(), "Hit the end of buffer, expected more data");
    let keypair = Keypair::random();
    let missing = request(Method::POST, "/signup")
        .body(Body::from(token(&keypair, "/:rw")))
        .unwrap();
    let missing = app.client(missing).await;
    assert_eq!(
        (missing.status, missing.text().as_str()),
        (StatusCode::BAD_REQUEST, "Token required")
    );
}

#[tokio::test]
async fn localhost_cookies_are_partitioned() {
    // Browsers keep `Secure` cookies on http://localhost, and a partitioned one even where third-party
    // cookies are blocked, so a page on another local site can sign in; an IP address keeps the
    // reference's plain cookie. Sign-out's removal cookie carries the same attributes, or a browser would
    // not match it to the partitioned cookie.
    let app = TestApp::builder().build().await;
    for (host, attributes) in [
        (
            "localhost:6286",
            "; HttpOnly; SameSite=None; Secure; Partitioned; Path=/; Max-Age=31536000;",
        ),
        ("127.0.0.1:6286", "; HttpOnly; Path=/; Max-Age=31536000;"),
    ] {
        let keypair = Keypair::random();
        let user = keypair.public_key().z32();
        let signup = request(Method::POST, "/signup")
            .header("host", host)
            .body(Body::from(token(&keypair, "/:rw")))
            .unwrap();
        let signup = app.client(signup).await;
        assert_eq!(signup.status, StatusCode::OK, "{}", signup.text());
        let cookie = signup.header(header::SET_COOKIE).to_string();
        assert!(cookie.contains(attributes), "{host}: {cookie}");
        let pair = cookie.split(';').next().unwrap().to_string();
        let signout = request(Method::DELETE, "/session")
            .header("host", host)
            .header("pubky-host", &user)
            .header("cookie", &pair)
            .body(Body::empty())
            .unwrap();
        let signout = app.client(signout).await;
        assert_eq!(signout.status, StatusCode::OK);
        let removal = signout.header(header::SET_COOKIE);
        let removal_attributes = attributes.replace("Max-Age=31536000", "Max-Age=0");
        assert!(removal.contains(&removal_attributes), "{host}: {removal}");
    }
}

//! The client API's own routes: root, info and the event feed.

use axum::body::Body;
use http::{Method, StatusCode, header};
use pubky_common::crypto::Keypair;

use super::{TestApp, request};

#[tokio::test]
async fn root_and_info() {
    let app = TestApp::builder().build().await;
    let root = app
        .client(request(Method::GET, "/").body(Body::empty()).unwrap())
        .await;
    assert_eq!(root.status, StatusCode::OK);
    assert_eq!(
        root.header(header::CONTENT_TYPE),
        "text/plain; charset=utf-8"
    );
    assert_eq!(root.text(), "Pubky Homeserver");
    let head = app
        .client(request(Method::HEAD, "/").body(Body::empty()).unwrap())
        .await;
    assert_eq!((head.status, head.body.len()), (StatusCode::OK, 0));
    let post = app
        .client(request(Method::POST, "/").body(Body::empty()).unwrap())
        .await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    let info = app
        .client(request(Method::GET, "/info").body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        info.text(),
        r#"{"features":["path-addressed-storage","grant-proof-logout","webdav-locks","websites"]}"#
    );
    assert_eq!(info.header(header::CACHE_CONTROL), "no-store");
    // Browser apps may read the lock headers, the validators and the sizes, with or without an Origin.
    assert_eq!(
        info.header(header::ACCESS_CONTROL_EXPOSE_HEADERS),
        super::cors::EXPOSED
    );
}

#[tokio::test]
async fn feed_accepts_legacy_timestamp_cursors() {
    let app = TestApp::builder().build().await;
    let store = app.store();
    let user = Keypair::random().public_key().z32();
    app.sign_up(&user).await;
    for name in ["first", "second"] {
        app.write(&user, &format!("/pub/{name}"), "x").await;
    }
    let events = store.events(0, 10, &Default::default()).await.unwrap();
    let legacy = base32::encode(
        base32::Alphabet::Crockford,
        &(events[0].created_at as u64).to_be_bytes(),
    );
    assert_eq!(legacy.len(), 13);
    let page = app
        .client(
            request(Method::GET, &format!("/events/?cursor={legacy}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        page.text(),
        format!("PUT pubky://{user}/pub/second\ncursor: {}", events[1].id)
    );
    let unknown = app
        .client(
            request(Method::GET, "/events/?cursor=0030M90R3S000")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.text().as_str()),
        (StatusCode::BAD_REQUEST, "Invalid cursor")
    );
}

//! The order in which the client router refuses a `PUT` before touching its body: the body-size cap,
//! authorization and capability errors, a disabled user, the allow-list, then the quota.

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use pubky_common::auth::AuthToken;
use pubky_common::capabilities::Capabilities;
use pubky_common::crypto::Keypair;
use tower::ServiceExt;

use super::{TestApp, unreadable};
use crate::routes::admin_router;
use crate::stack::client_router;

/// The status and text of `request`'s answer.
async fn answer(router: &Router, request: Request<Body>) -> (u16, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A body that fails if anyone reads it.
#[tokio::test]
async fn a_put_is_refused_in_order_before_its_body_is_read() {
    let app = TestApp::builder().build().await;
    let (client, admin) = (client_router(&app.state), admin_router(app.state.clone()));
    let keypair = Keypair::random();
    let user = keypair.public_key().z32();
    let capabilities: Capabilities = "/pub/app/:rw".parse().unwrap();
    let token = AuthToken::sign(&keypair, capabilities).serialize();
    let signup = client
        .clone()
        .oneshot(Request::post("/signup").body(Body::from(token)).unwrap())
        .await
        .unwrap();
    assert_eq!(signup.status(), StatusCode::OK);
    let cookie = signup.headers()[header::SET_COOKIE].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let operator = |method: Method, uri: String, body: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("x-admin-password", "secret")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let quota = format!("/users/{user}/quota");
    let limits = r#"{"storage_quota_mb": 0, "allowed_write_paths": ["/pub/app/a"]}"#;
    let (status, _) = answer(&admin, operator(Method::PATCH, quota.clone(), limits)).await;
    assert_eq!(status, 200);
    let put = |path: &str, length: u64, signed_in: bool| {
        let mut request = Request::put(path)
            .header("pubky-host", &user)
            .header(header::CONTENT_LENGTH, length);
        if signed_in {
            request = request.header(header::COOKIE, &cookie);
        }
        request.body(unreadable()).unwrap()
    };
    let expect = |status: u16, text: &str| (status, text.to_string());

    // The declared size first, from anyone.
    assert_eq!(
        answer(&client, put("/pub/app/a", 2000, false)).await,
        expect(413, "Request body is larger than the limit of 1024 bytes")
    );
    // Then authentication, the capability and the user's own limits, each before the quota.
    assert_eq!(
        answer(&client, put("/pub/app/a", 1, false)).await,
        expect(401, "No authenticated session found")
    );
    assert_eq!(
        answer(&client, put("/pub/other", 1, true)).await,
        expect(403, "Session does not have write access to path")
    );
    let disable = format!("/users/{user}/disable");
    assert_eq!(
        answer(&admin, operator(Method::POST, disable, "")).await.0,
        200
    );
    assert_eq!(
        answer(&client, put("/pub/app/b", 1, true)).await,
        expect(403, "User is disabled")
    );
    let enable = format!("/users/{user}/enable");
    assert_eq!(
        answer(&admin, operator(Method::POST, enable, "")).await.0,
        200
    );
    assert_eq!(
        answer(&client, put("/pub/app/b", 1, true)).await,
        expect(403, "Write to this path is not allowed")
    );
    // The quota last, still without reading the body.
    assert_eq!(
        answer(&client, put("/pub/app/a", 1, true)).await,
        expect(507, "Disk space quota exceeded")
    );
    // With room, the body is read (and this one fails).
    let lift = r#"{"storage_quota_mb": "unlimited"}"#;
    assert_eq!(
        answer(&admin, operator(Method::PATCH, quota, lift)).await.0,
        200
    );
    assert_eq!(
        answer(&client, put("/pub/app/a", 1, true)).await,
        expect(
            400,
            "Request body could not be read: the handler read the body"
        )
    );
}

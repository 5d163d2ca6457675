//! The HTTP routes: thin handlers that answer from request facts and, later, the Store.

use axum::Router;
use axum::routing::get;

/// The client API, served identically on the ICANN and PubkyTLS listeners.
pub fn client_router() -> Router {
    Router::new().route("/", get(root))
}

/// The operator's API on the admin listener.
pub fn admin_router() -> Router {
    Router::new().route("/", get(admin_root))
}

/// Liveness text (PROTOCOL.md §13.6), whatever the tenant.
async fn root() -> &'static str {
    "Pubky Homeserver"
}

/// Liveness text of the admin listener (OPERATIONS.md §5.2); needs no password.
async fn admin_root() -> &'static str {
    "Homeserver - Admin Endpoint"
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http::{Method, Request, StatusCode, header};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn call(router: Router, method: Method, uri: &str) -> (StatusCode, String, String) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn root_answers_as_the_reference() {
        let (status, content_type, body) = call(client_router(), Method::GET, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "text/plain; charset=utf-8");
        assert_eq!(body, "Pubky Homeserver");
        let (status, _, body) = call(client_router(), Method::HEAD, "/").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
        let (status, _, _) = call(client_router(), Method::POST, "/").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn admin_root_needs_no_password() {
        let (status, _, body) = call(admin_router(), Method::GET, "/").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "Homeserver - Admin Endpoint")
        );
    }
}

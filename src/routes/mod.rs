//! The HTTP routes: thin handlers that answer from request facts and the Store, behind the tenant,
//! session and signup layers.

pub mod admin;
mod auth;
mod events;
pub(crate) mod listing;
mod signup_tokens;
pub(crate) mod storage;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use homestead_backends::{EventBus, Store};
use homestead_config::SignupMode;
use homestead_middleware::{
    BandwidthLayer, DrainLayer, QuotaLayer, RateLimitLayer, SessionLayer, SignupLayer, TenantLayer,
};
use http::{HeaderValue, header};
use tower_http::cors::CorsLayer;

use std::sync::Arc;

use crate::lookups::{StoreBandwidth, StoreQuotas, StoreSessions, StoreSignupTokens};
use crate::metrics::Metrics;

/// What handlers share: one allocation, so that the per-request clones axum makes cost one counter.
#[derive(Debug, Clone)]
pub struct AppState(Arc<AppParts>);

impl From<AppParts> for AppState {
    fn from(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The parts of the [`AppState`].
#[derive(Debug)]
pub struct AppParts {
    /// Metadata and blobs.
    pub store: Store,
    /// Committed events, for live streams.
    pub bus: EventBus,
    /// Who may sign up.
    pub signup_mode: SignupMode,
    /// Largest accepted upload, if limited.
    pub max_body_bytes: Option<u64>,
    /// The admin password.
    pub admin_password: String,
    /// What the admin info reports beside the database.
    pub admin: admin::AdminFacts,
    /// Instruments.
    pub metrics: Arc<Metrics>,
    /// Request-count limits.
    pub rate_limits: RateLimitLayer,
    /// Default bandwidth settings.
    pub default_quotas: homestead_config::DefaultQuotas,
    /// Proxies whose forwarded addresses are believed.
    pub trusted_proxies: Vec<homestead_config::IpRange>,
    /// Longest pause allowed between two pieces of an upload.
    pub body_read_timeout: std::time::Duration,
    /// Event streams open at once, in total and per client address.
    pub stream_slots: Arc<crate::stream_slots::StreamSlots>,
}

/// The most of an unread upload read before a refusal is sent, so that the client sees the refusal
/// rather than a reset connection; beyond it, the connection is closed.
const DRAIN_MAX_BYTES: u64 = 16 << 20;
/// How long an unread upload may take to arrive before a refusal goes out anyway.
const DRAIN_MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The client API, served identically on the ICANN and PubkyTLS listeners.
pub fn client_router(app: AppState) -> Router {
    let signup = match app.signup_mode {
        SignupMode::Open => SignupLayer::open(),
        SignupMode::TokenRequired => {
            SignupLayer::token_required(StoreSignupTokens(app.store.clone()))
        }
    };
    Router::new()
        .route("/", get(root))
        .route("/info", get(info))
        .route("/signup", post(auth::signup))
        .route(
            "/session",
            post(auth::signin).get(auth::session).delete(auth::signout),
        )
        .route("/signup_tokens/{token}", get(signup_tokens::status))
        .route("/events/", get(events::feed))
        .route("/events-stream", get(events::stream))
        .route("/storage/{*rest}", any(storage::path_addressed))
        .fallback(storage::tenant_route)
        .with_state(app.clone())
        .layer(QuotaLayer::new(
            StoreQuotas(app.store.clone()),
            app.max_body_bytes,
        ))
        .layer(signup)
        .layer(BandwidthLayer::new(
            StoreBandwidth {
                defaults: app.default_quotas.clone(),
            },
            app.default_quotas
                .unauthenticated_ip_rate_read
                .map(|b| crate::lookups::rate(b, None)),
            app.trusted_proxies.clone(),
            axum::body::Body::new,
        ))
        .layer(app.rate_limits.users())
        .layer(SessionLayer::new(StoreSessions(app.store.clone())))
        .layer(axum::middleware::from_fn_with_state(
            app.store.clone(),
            refuse_while_database_down,
        ))
        .layer(app.rate_limits.clone())
        .layer(TenantLayer)
        .layer(cors())
        .layer(DrainLayer::new(
            DRAIN_MAX_BYTES,
            DRAIN_MAX_WAIT,
            axum::body::Body::new,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.metrics.clone(),
            crate::metrics::record_request,
        ))
        .layer(crate::request_span::layer())
}

/// Maximally permissive CORS with credentials, mirroring the request (PROTOCOL.md §4.4), so browser apps
/// on any origin can use the ICANN endpoint.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(tower_http::cors::AllowOrigin::mirror_request())
        .allow_methods(tower_http::cors::AllowMethods::mirror_request())
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
        .allow_credentials(true)
}

/// The operator's API on the admin listener.
pub fn admin_router(app: AppState) -> Router {
    let protected = Router::new()
        .route(
            "/generate_signup_token",
            get(admin::generate_signup_token).post(admin::generate_signup_token_with_quota),
        )
        .route(
            "/users/{user}/quota",
            get(admin::user_quota).patch(admin::patch_user_quota),
        )
        .route("/info", get(admin::info))
        .route("/users", get(admin::users))
        .route("/signup_tokens", get(admin::signup_tokens))
        .route(
            "/webdav/{user}/pub/{*path}",
            axum::routing::delete(admin::delete_entry),
        )
        .route("/users/{user}/disable", post(admin::disable_user))
        .route("/users/{user}/enable", post(admin::enable_user))
        .route_layer(axum::middleware::from_fn_with_state(
            app.store.clone(),
            refuse_while_database_down,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            admin::require_password,
        ));
    // No CORS: no browser page may call the operator's API.
    Router::new()
        .route("/", get(admin::root))
        .merge(protected)
        .with_state(app)
        .layer(axum::middleware::from_fn(admin::require_local_host))
}

/// While the database does not answer, every request that needs it gets a 503 at once rather than
/// waiting out connection timeouts; the health watcher lifts this as soon as the database is back.
async fn refuse_while_database_down(
    axum::extract::State(store): axum::extract::State<Store>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if store.health().database_up() {
        next.run(request).await
    } else {
        crate::http_error::HttpError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "Storage unavailable: the database does not answer",
        )
        .into_response()
    }
}

/// Liveness text (PROTOCOL.md §13.6), whatever the tenant.
async fn root() -> &'static str {
    "Pubky Homeserver"
}

/// What this server offers beyond the 0.9.3 protocol; SDKs since 0.11 look for path-addressed storage.
async fn info() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        r#"{"features":["path-addressed-storage"]}"#,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use homestead_backends::BlobStore;
    use homestead_backends::metadata::{self, Quota, WriteMode, now_micros};
    use homestead_config::{DatabaseUrl, Storage, StorageType};
    use http::{Method, Request, StatusCode, header};
    use http_body_util::BodyExt;
    use pubky_common::auth::AuthToken;
    use pubky_common::capabilities::Capabilities;
    use pubky_common::crypto::Keypair;
    use tempfile::TempDir;
    use tower::ServiceExt;

    use super::*;

    /// A server state on a temporary SQLite file and in-memory blobs.
    pub(crate) async fn app(signup_mode: SignupMode) -> (AppState, TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::sqlite_file(&dir.path().join("test.db"));
        let metadata = metadata::open(&url).await.unwrap();
        let storage = Storage {
            kind: StorageType::InMemory,
            ..Storage::default()
        };
        let blobs = BlobStore::open(&storage, &dir.path().join("blobs")).unwrap();
        let store = Store::new(
            Arc::from(metadata),
            &blobs,
            Quota::Unlimited,
            homestead_backends::entry_cache::TTL,
        );
        let (bus, _pump) = EventBus::start(store.clone()).await.unwrap();
        let state = AppState::from(AppParts {
            store,
            bus,
            signup_mode,
            max_body_bytes: Some(1024),
            admin_password: "secret".into(),
            admin: admin::AdminFacts::default(),
            metrics: Arc::new(crate::metrics::Metrics::new(None).unwrap()),
            rate_limits: RateLimitLayer::new(Vec::new(), Vec::new()),
            default_quotas: Default::default(),
            trusted_proxies: Vec::new(),
            body_read_timeout: std::time::Duration::from_secs(5),
            stream_slots: crate::stream_slots::StreamSlots::new(100, 10),
        });
        (state, dir)
    }

    struct Answer {
        status: StatusCode,
        headers: http::HeaderMap,
        body: Vec<u8>,
    }

    impl Answer {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }

        fn header(&self, name: header::HeaderName) -> &str {
            self.headers.get(name).map_or("", |v| v.to_str().unwrap())
        }
    }

    async fn call(router: &Router, request: Request<Body>) -> Answer {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: body.to_vec(),
        }
    }

    fn request(method: Method, uri: &str) -> http::request::Builder {
        Request::builder().method(method).uri(uri)
    }

    fn token(keypair: &Keypair, capabilities: &str) -> Vec<u8> {
        let capabilities: Capabilities = capabilities.parse().unwrap();
        AuthToken::sign(keypair, capabilities).serialize()
    }

    #[tokio::test]
    async fn root_and_info() {
        let (state, _dir) = app(SignupMode::Open).await;
        let router = client_router(state);
        let root = call(
            &router,
            request(Method::GET, "/").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(root.status, StatusCode::OK);
        assert_eq!(
            root.header(header::CONTENT_TYPE),
            "text/plain; charset=utf-8"
        );
        assert_eq!(root.text(), "Pubky Homeserver");
        let head = call(
            &router,
            request(Method::HEAD, "/").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!((head.status, head.body.len()), (StatusCode::OK, 0));
        let post = call(
            &router,
            request(Method::POST, "/").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
        let info = call(
            &router,
            request(Method::GET, "/info").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(info.text(), r#"{"features":["path-addressed-storage"]}"#);
        assert_eq!(info.header(header::CACHE_CONTROL), "no-store");
    }

    #[tokio::test]
    async fn admin_routes_need_the_password() {
        let (state, _dir) = app(SignupMode::TokenRequired).await;
        let router = admin_router(state);
        let root = call(
            &router,
            request(Method::GET, "/").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(root.text(), "Homeserver - Admin Endpoint");
        let missing = request(Method::GET, "/generate_signup_token")
            .body(Body::empty())
            .unwrap();
        let missing = call(&router, missing).await;
        assert_eq!(
            (missing.status, missing.text().as_str()),
            (StatusCode::UNAUTHORIZED, "Missing admin password")
        );
        let wrong = request(Method::GET, "/generate_signup_token")
            .header("x-admin-password", "guess")
            .body(Body::empty())
            .unwrap();
        let wrong = call(&router, wrong).await;
        assert_eq!(
            (wrong.status, wrong.text().as_str()),
            (StatusCode::UNAUTHORIZED, "Invalid admin password")
        );
        let good = request(Method::GET, "/generate_signup_token")
            .header("x-admin-password", "secret")
            .body(Body::empty())
            .unwrap();
        let good = call(&router, good).await;
        assert_eq!(good.status, StatusCode::OK);
        assert!(
            homestead_middleware::signup::is_well_formed(&good.text()),
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
        let rebound = call(&router, rebound).await;
        assert_eq!(rebound.status, StatusCode::FORBIDDEN);
        let preflight = request(Method::OPTIONS, "/generate_signup_token")
            .header("host", "127.0.0.1:6288")
            .header("origin", "http://evil.example")
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "x-admin-password")
            .body(Body::empty())
            .unwrap();
        let preflight = call(&router, preflight).await;
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
        assert_eq!(call(&router, local).await.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn signup_session_write_and_signout() {
        let (state, _dir) = app(SignupMode::Open).await;
        let router = client_router(state);
        let keypair = Keypair::random();
        let user = keypair.public_key().z32();

        let signup = request(Method::POST, "/signup")
            .header("host", "localhost:6286")
            .body(Body::from(token(&keypair, "/pub/app/:rw")))
            .unwrap();
        let signup = call(&router, signup).await;
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
        let again = call(&router, again).await;
        assert_eq!(
            (again.status, again.text().as_str()),
            (StatusCode::CONFLICT, "User already exists")
        );

        let session = request(Method::GET, "/session")
            .header("pubky-host", &user)
            .header("cookie", &pair)
            .body(Body::empty())
            .unwrap();
        let session = call(&router, session).await;
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
            call(&router, put("/pub/app/a.txt", "hello")).await.status,
            StatusCode::CREATED
        );
        let outside = call(&router, put("/pub/app.evil/x", "x")).await;
        assert_eq!(outside.status, StatusCode::FORBIDDEN);
        assert_eq!(outside.text(), "Session does not have write access to path");
        let too_big = call(
            &router,
            put(
                "/pub/app/big",
                include_str!("../../deploy/config.sample.toml"),
            ),
        )
        .await;
        assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);

        let get = request(Method::GET, &format!("/pub/app/a.txt?pubky-host={user}"))
            .body(Body::empty())
            .unwrap();
        let get = call(&router, get).await;
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
        let signout = call(&router, signout).await;
        assert_eq!(signout.status, StatusCode::OK);
        assert!(signout.header(header::SET_COOKIE).contains("Max-Age=0"));
        let after = call(&router, put("/pub/app/a.txt", "again")).await;
        assert_eq!(
            (after.status, after.text().as_str()),
            (
                StatusCode::UNAUTHORIZED,
                "No session found for session secret"
            )
        );
    }

    #[tokio::test]
    async fn token_mode_ranks_token_errors_below_auth_errors() {
        let (state, _dir) = app(SignupMode::TokenRequired).await;
        let router = client_router(state);
        // A bad AuthToken is reported before the missing signup token.
        let bad = request(Method::POST, "/signup")
            .body(Body::from(vec![0u8; 10]))
            .unwrap();
        let bad = call(&router, bad).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert_eq!(bad.text(), "Hit the end of buffer, expected more data");
        let keypair = Keypair::random();
        let missing = request(Method::POST, "/signup")
            .body(Body::from(token(&keypair, "/:rw")))
            .unwrap();
        let missing = call(&router, missing).await;
        assert_eq!(
            (missing.status, missing.text().as_str()),
            (StatusCode::BAD_REQUEST, "Token required")
        );
    }

    #[tokio::test]
    async fn feed_accepts_legacy_timestamp_cursors() {
        let (state, _dir) = app(SignupMode::Open).await;
        let store = state.store.clone();
        let router = client_router(state);
        let user = Keypair::random().public_key().z32();
        store
            .accounts()
            .create_user(&user, None, now_micros())
            .await
            .unwrap();
        let writer = store.accounts().user(&user).await.unwrap().unwrap();
        for name in ["first", "second"] {
            let path = homestead_backends::EntryPath::parse(&format!("/pub/{name}")).unwrap();
            let body =
                futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from("x"))]);
            let plan = store.prepare(&writer, &path).await;
            let plan = plan.unwrap().unwrap();
            store
                .commit(plan, body, WriteMode::Overwrite, Default::default())
                .await
                .unwrap();
        }
        let events = store.events(0, 10, &Default::default()).await.unwrap();
        let legacy = base32::encode(
            base32::Alphabet::Crockford,
            &(events[0].created_at as u64).to_be_bytes(),
        );
        assert_eq!(legacy.len(), 13);
        let page = call(
            &router,
            request(Method::GET, &format!("/events/?cursor={legacy}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(
            page.text(),
            format!("PUT pubky://{user}/pub/second\ncursor: {}", events[1].id)
        );
        let unknown = call(
            &router,
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

    #[tokio::test]
    async fn admin_lists_users_and_tokens_and_deletes_entries() {
        let (state, _dir) = app(SignupMode::TokenRequired).await;
        let store = state.store.clone();
        let router = admin_router(state);
        let admin = |method: Method, uri: &str| {
            request(method, uri)
                .header("x-admin-password", "secret")
                .body(Body::empty())
                .unwrap()
        };
        let mut keys: Vec<String> = (0..3)
            .map(|_| Keypair::random().public_key().z32())
            .collect();
        keys.sort();
        for key in &keys {
            store
                .accounts()
                .create_user(key, None, now_micros())
                .await
                .unwrap();
        }
        let first = call(&router, admin(Method::GET, "/users?limit=2")).await;
        let first: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
        assert_eq!(first["users"].as_array().unwrap().len(), 2);
        assert_eq!(first["next_cursor"], keys[1].as_str());
        let rest = call(
            &router,
            admin(Method::GET, &format!("/users?limit=2&cursor={}", keys[1])),
        )
        .await;
        let rest: serde_json::Value = serde_json::from_slice(&rest.body).unwrap();
        assert_eq!(rest["users"][0]["public_key"], keys[2].as_str());
        assert_eq!(rest["next_cursor"], serde_json::Value::Null);

        let token = call(&router, admin(Method::GET, "/generate_signup_token"))
            .await
            .text();
        let tokens = call(&router, admin(Method::GET, "/signup_tokens")).await;
        let tokens: serde_json::Value = serde_json::from_slice(&tokens.body).unwrap();
        assert_eq!(tokens["signup_tokens"][0]["token"], token.as_str());
        assert_eq!(
            tokens["signup_tokens"][0]["used_by"],
            serde_json::Value::Null
        );
        let info = call(&router, admin(Method::GET, "/info")).await;
        let info: serde_json::Value = serde_json::from_slice(&info.body).unwrap();
        assert_eq!(
            (
                info["num_users"].as_u64(),
                info["num_unused_signup_codes"].as_u64()
            ),
            (Some(3), Some(1))
        );

        let path = homestead_backends::EntryPath::parse("/pub/app/file").unwrap();
        let body = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from("x"))]);
        let writer = store.accounts().user(&keys[0]).await.unwrap().unwrap();
        let plan = store.prepare(&writer, &path).await;
        let plan = plan.unwrap().unwrap();
        store
            .commit(plan, body, WriteMode::Overwrite, Default::default())
            .await
            .unwrap();
        let uri = format!("/webdav/{}/pub/app/file", keys[0]);
        assert_eq!(
            call(&router, admin(Method::DELETE, &uri)).await.status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            call(&router, admin(Method::DELETE, &uri)).await.status,
            StatusCode::NOT_FOUND
        );
        let bad = call(&router, admin(Method::DELETE, "/webdav/nokey/pub/x")).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        let unauthorized = call(
            &router,
            request(Method::GET, "/users").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn quota_admin_and_write_allow_lists() {
        let (state, _dir) = app(SignupMode::TokenRequired).await;
        let client = client_router(state.clone());
        let admin = admin_router(state);
        let json = |method: Method, uri: &str, body: &str| {
            request(method, uri)
                .header("x-admin-password", "secret")
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap()
        };
        // A token that makes its user read-only below /pub/app/ with a 1 MB quota.
        let minted = call(
            &admin,
            json(
                Method::POST,
                "/generate_signup_token",
                r#"{"storage_quota_mb": 1, "allowed_write_paths": ["/pub/app/"]}"#,
            ),
        )
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
        let signup = call(&client, signup).await;
        assert_eq!(signup.status, StatusCode::OK, "{}", signup.text());
        let cookie = signup
            .header(header::SET_COOKIE)
            .split(';')
            .next()
            .unwrap()
            .to_string();

        let quota = call(
            &admin,
            json(Method::GET, &format!("/users/{user}/quota"), ""),
        )
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
            call(&client, put("/pub/app/ok")).await.status,
            StatusCode::CREATED
        );
        let outside = call(&client, put("/pub/other")).await;
        assert_eq!(
            (outside.status, outside.text().as_str()),
            (StatusCode::FORBIDDEN, "Write to this path is not allowed")
        );

        // Lift the restriction; bad patches are 422 and change nothing; unknown users 404.
        let bad = call(
            &admin,
            json(
                Method::PATCH,
                &format!("/users/{user}/quota"),
                r#"{"rate_read_burst": 5}"#,
            ),
        )
        .await;
        assert_eq!(
            bad.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            bad.text()
        );
        let syntax = call(
            &admin,
            json(Method::PATCH, &format!("/users/{user}/quota"), "{"),
        )
        .await;
        assert_eq!(syntax.status, StatusCode::BAD_REQUEST);
        let stranger = Keypair::random().public_key().z32();
        let missing = call(
            &admin,
            json(Method::PATCH, &format!("/users/{stranger}/quota"), "{}"),
        )
        .await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        let lifted = call(
            &admin,
            json(
                Method::PATCH,
                &format!("/users/{user}/quota"),
                r#"{"allowed_write_paths": null}"#,
            ),
        )
        .await;
        assert_eq!(lifted.status, StatusCode::OK);
        assert_eq!(
            call(&client, put("/pub/other")).await.status,
            StatusCode::CREATED
        );
        let quota = call(
            &admin,
            json(Method::GET, &format!("/users/{user}/quota"), ""),
        )
        .await;
        assert_eq!(
            quota.text(),
            r#"{"effective":{"storage_quota_mb":1,"rate_read":"unlimited","rate_write":"unlimited"},"overrides":{"storage_quota_mb":1}}"#
        );
    }
}

//! The HTTP routes: thin handlers that answer from request facts and the Store, behind the layers that
//! [`crate::stack`] puts around them.

pub mod admin;
mod auth;
pub(crate) mod cache_policy;
mod event_stream;
mod events;
mod grants;
pub(crate) mod listing;
pub mod locks;
mod private_stream;
mod signup_tokens;
pub(crate) mod storage;
pub(crate) mod website;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use homestead_backends::{EventBus, Store};
use homestead_config::SignupMode;
use homestead_middleware::RateLimitLayer;
use http::{HeaderValue, header};

use std::sync::Arc;

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
    /// The server's public key: the audience of proofs, the `homeserver` of grant sessions.
    pub server_key: pkarr::PublicKey,
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
    /// Longest pause allowed between two pieces of an upload.
    pub body_read_timeout: std::time::Duration,
    /// Event streams open at once, in total and per client address.
    pub stream_slots: Arc<crate::stream_slots::StreamSlots>,
    /// Serve websites by `Host` (`[drive] websites`, PROTOCOL-0.17.md §18).
    pub websites: bool,
}

/// The client API's routes (their layers are added by [`crate::stack::client_router`]).
pub(crate) fn client_routes(app: AppState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/info", get(info))
        .route("/signup", post(auth::signup))
        .route(
            "/session",
            post(auth::signin).get(auth::session).delete(auth::signout),
        )
        .route("/auth/grant/signup", post(grants::signup))
        .route(
            "/auth/grant/session",
            post(grants::exchange)
                .get(grants::inspect)
                .delete(grants::sign_out),
        )
        .route("/auth/grant/sessions", get(grants::list))
        .route(
            "/auth/grant/session/{gid}",
            axum::routing::delete(grants::revoke_one),
        )
        .route("/signup_tokens/{token}", any(signup_tokens::route))
        .route("/events/", get(events::feed))
        .route("/events-stream", any(events::stream_route))
        .route("/storage/{*rest}", any(storage::path_addressed))
        .fallback(storage::tenant_route)
        .with_state(app)
}

/// The operator's routes, without their authentication: the admin API serves them behind the password
/// header, the console behind its session.
pub(crate) fn operator_routes(app: &AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/generate_signup_token",
            get(admin::generate_signup_token).post(admin::generate_signup_token_with_quota),
        )
        .route(
            "/users/{user}/quota",
            get(admin::user_quota).patch(admin::patch_user_quota),
        )
        .route("/info", get(admin::info))
        .route("/events-stream", any(events::admin_stream_route))
        .route("/users", get(admin::users))
        .route("/users/{user}", get(admin::user))
        .route("/signup_tokens", get(admin::signup_tokens))
        .route(
            "/webdav/{user}/{*path}",
            axum::routing::delete(admin::delete_entry),
        )
        .route("/users/{user}/disable", post(admin::disable_user))
        .route("/users/{user}/enable", post(admin::enable_user))
        .route_layer(crate::stack::DatabaseGuard(app.store.clone()))
}

/// The operator's API on the admin listener, and its console under `/console/`.
pub fn admin_router(app: AppState) -> Router {
    let protected = operator_routes(&app).route_layer(axum::middleware::from_fn_with_state(
        app.clone(),
        admin::require_password,
    ));
    // No CORS: no browser page may call the operator's API.
    Router::new()
        .route("/", get(admin::root))
        .merge(protected)
        .with_state(app.clone())
        .merge(crate::console::router(app))
        .layer(axum::middleware::from_fn(admin::require_local_host))
}

/// Liveness text (PROTOCOL.md §13.6), whatever the tenant.
async fn root() -> &'static str {
    "Pubky Homeserver"
}

/// What this server offers beyond the 0.9.3 protocol (PROTOCOL-0.17.md §16), in the reference's order; the
/// SDK switches on these, so an id is listed only once its behaviour is served: `websites` only while
/// they are on.
async fn info(axum::extract::State(app): axum::extract::State<AppState>) -> impl IntoResponse {
    let features = match app.websites {
        true => {
            r#"{"features":["path-addressed-storage","grant-proof-logout","webdav-locks","websites"]}"#
        }
        false => r#"{"features":["path-addressed-storage","grant-proof-logout","webdav-locks"]}"#,
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        features,
    )
}

#[cfg(test)]
pub(crate) mod tests;

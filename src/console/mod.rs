//! The operator console: a small web app under `/console/` on the admin listener. Its pages are plain
//! HTML, CSS and JavaScript embedded in the binary ([`assets`]); its API under `/console/api/` serves
//! the admin API's routes ([`crate::routes::operator_routes`]) behind a cookie session and a CSRF token
//! instead of the password header ([`guard`]), plus a few of its own ([`api`]).
//!
//! ```text
//! ssh -L 6288:127.0.0.1:6288 operator@server   # then open http://127.0.0.1:6288/console/
//! ```

mod api;
mod assets;
mod guard;
mod request_rate;
mod sessions;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::routing::{get, post};

pub use request_rate::RequestRate;

use crate::routes::{AppState, operator_routes};

/// The console's state: the server's, the sessions, the sign-in queue and the start time.
#[derive(Debug, Clone)]
pub struct Console(Arc<ConsoleParts>);

/// The parts of a [`Console`].
#[derive(Debug)]
pub struct ConsoleParts {
    app: AppState,
    sessions: sessions::Sessions,
    /// Sign-in attempts are checked one at a time, so that a wrong password's delay slows every guesser.
    sign_in_check: tokio::sync::Mutex<()>,
    started: Instant,
}

impl std::ops::Deref for Console {
    type Target = ConsoleParts;

    fn deref(&self) -> &ConsoleParts {
        &self.0
    }
}

/// The console's routes: `/console/` and its assets, and `/console/api/`.
pub fn router(app: AppState) -> Router {
    let console = Console(Arc::new(ConsoleParts {
        app: app.clone(),
        sessions: sessions::Sessions::default(),
        sign_in_check: tokio::sync::Mutex::new(()),
        started: Instant::now(),
    }));
    let own = Router::new()
        .route("/session", get(api::session))
        .route("/sign-out", post(api::sign_out))
        .route("/overview", get(api::overview))
        .route("/mint", post(api::mint))
        .route("/user_search", get(api::user_search))
        .with_state(console.clone());
    let signed_in = operator_routes(&app)
        .with_state(app)
        .merge(own)
        .route_layer(axum::middleware::from_fn_with_state(
            console.clone(),
            guard::require_session,
        ));
    let api = Router::new()
        .route("/sign-in", post(api::sign_in))
        .with_state(console)
        .merge(signed_in);
    Router::new()
        .nest("/console/api", api)
        .route("/console", get(assets::to_index))
        .route("/console/", get(assets::index))
        .route("/console/{asset}", get(assets::asset))
        .layer(axum::middleware::from_fn(guard::same_origin))
}

//! Router tests on a [`TestApp`]: the real client service (host dispatch, layers, routes) and the admin
//! router over a Store on a temporary SQLite file and (unless told) in-memory blobs.

mod admin;
mod admin_lists;
mod auth;
mod client;
mod conditional;
mod cors;
mod grants;
mod locks;
mod private;
mod put_refusals;
mod website;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use homestead_backends::metadata::{self, Quota, WriteMode, now_micros};
use homestead_backends::{BlobStore, Store};
use homestead_config::{DatabaseUrl, SignupMode, Storage, StorageType};
use homestead_middleware::RateLimitLayer;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use pubky_common::auth::AuthToken;
use pubky_common::capabilities::Capabilities;
use pubky_common::crypto::Keypair;
use tempfile::TempDir;
use tower::ServiceExt;

use super::{AppParts, AppState, admin_router};
use crate::stack::{HostDispatch, client_service};

/// A server for one test: its state, what its client and admin listeners would serve, and the
/// temporary directory holding its database (removed when dropped).
pub(crate) struct TestApp {
    /// The shared state, e.g. to reach the Store directly.
    pub(crate) state: AppState,
    client: HostDispatch,
    admin: Router,
    _dir: TempDir,
}

/// The options of a [`TestApp`].
pub(crate) struct TestAppBuilder {
    signup_mode: SignupMode,
    websites: bool,
    rate_limits: Vec<homestead_config::RateLimit>,
    blobs: StorageType,
}

impl TestApp {
    /// A builder with open sign-up, websites on and no rate limits.
    pub(crate) fn builder() -> TestAppBuilder {
        TestAppBuilder {
            signup_mode: SignupMode::Open,
            websites: true,
            rate_limits: Vec::new(),
            blobs: StorageType::InMemory,
        }
    }

    /// Creates the user `key` directly in the Store.
    pub(crate) async fn sign_up(&self, key: &str) {
        let accounts = self.state.store.accounts();
        accounts.create_user(key, None, now_micros()).await.unwrap();
    }

    /// Writes `body` to `path` of `user` directly through the Store.
    pub(crate) async fn write(&self, user: &str, path: &str, body: &'static str) {
        let store = &self.state.store;
        let writer = store.accounts().user(user).await.unwrap().unwrap();
        let path = homestead_backends::EntryPath::parse(path).unwrap();
        let plan = store.prepare(&writer, &path, WriteMode::Overwrite);
        let plan = plan.await.unwrap().unwrap();
        let body = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(body))]);
        store.commit(plan, body, Default::default()).await.unwrap();
    }

    /// The Store of the app.
    pub(crate) fn store(&self) -> Store {
        self.state.store.clone()
    }

    /// What the ICANN and PubkyTLS listeners serve.
    pub(crate) fn client_service(&self) -> HostDispatch {
        self.client.clone()
    }

    /// Sends `request` to the client API.
    pub(crate) async fn client(&self, request: Request<Body>) -> Answer {
        answer(self.client.clone().oneshot(request).await.unwrap()).await
    }

    /// Sends `request` to the admin API.
    pub(crate) async fn admin(&self, request: Request<Body>) -> Answer {
        answer(self.admin.clone().oneshot(request).await.unwrap()).await
    }
}

impl TestAppBuilder {
    /// Who may sign up.
    pub(crate) fn signup_mode(mut self, signup_mode: SignupMode) -> Self {
        self.signup_mode = signup_mode;
        self
    }

    /// Whether websites are served (`[drive] websites`).
    pub(crate) fn websites(mut self, websites: bool) -> Self {
        self.websites = websites;
        self
    }

    /// The `[[drive.rate_limits]]`.
    pub(crate) fn rate_limits(mut self, limits: Vec<homestead_config::RateLimit>) -> Self {
        self.rate_limits = limits;
        self
    }

    /// The blob store: in memory unless told (a filesystem one lives in the temporary directory).
    pub(crate) fn blobs(mut self, kind: StorageType) -> Self {
        self.blobs = kind;
        self
    }

    /// A server state on a temporary SQLite file and (unless told) in-memory blobs: admin password
    /// `secret`, uploads of at most 1024 bytes.
    pub(crate) async fn build(self) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::sqlite_file(&dir.path().join("test.db"));
        let metadata = metadata::open(&url).await.unwrap();
        let storage = Storage {
            kind: self.blobs,
            ..Storage::default()
        };
        let blobs = BlobStore::open(&storage, &dir.path().join("blobs")).unwrap();
        let store = Store::new(
            Arc::from(metadata),
            &blobs,
            Quota::Unlimited,
            homestead_backends::entry_cache::TTL,
        );
        let _tail = store.start_event_tail().await.unwrap();
        let bus = store.event_bus();
        let state = AppState::from(AppParts {
            // Seed 02: the server of the spec's proof vectors.
            server_key: pubky_common::crypto::Keypair::from_secret(&[2; 32])
                .public_key()
                .into(),
            store,
            bus,
            signup_mode: self.signup_mode,
            max_body_bytes: Some(1024),
            admin_password: "secret".into(),
            admin: super::admin::AdminFacts::default(),
            metrics: Arc::new(crate::metrics::Metrics::new(None).unwrap()),
            rate_limits: RateLimitLayer::new(self.rate_limits),
            default_quotas: Default::default(),
            body_read_timeout: std::time::Duration::from_secs(5),
            stream_slots: crate::stream_slots::StreamSlots::new(100, 10),
            websites: self.websites,
        });
        TestApp {
            client: client_service(&state),
            admin: admin_router(state.clone()),
            state,
            _dir: dir,
        }
    }
}

/// A response with its body read.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    headers: http::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// The body as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The status code and the body text.
    pub(crate) fn refusal(&self) -> (u16, String) {
        (self.status.as_u16(), self.text())
    }

    /// A header's value, empty when absent.
    pub(crate) fn header(&self, name: header::HeaderName) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

async fn answer(response: axum::response::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: body.to_vec(),
    }
}

/// Asserts that `answer` has `status` and the body `text`.
pub(crate) fn expect(answer: &Answer, status: u16, text: &str) {
    assert_eq!(answer.refusal(), (status, text.to_string()));
}

/// A request body that fails when read: a handler that refuses before reading the body never sees the
/// failure.
pub(crate) fn unreadable() -> Body {
    Body::from_stream(futures_util::stream::iter([Err::<bytes::Bytes, _>(
        std::io::Error::other("the handler read the body"),
    )]))
}

/// A request builder.
pub(crate) fn request(method: Method, uri: &str) -> http::request::Builder {
    Request::builder().method(method).uri(uri)
}

/// A signed AuthToken of `keypair` for `capabilities`.
pub(crate) fn token(keypair: &Keypair, capabilities: &str) -> Vec<u8> {
    let capabilities: Capabilities = capabilities.parse().unwrap();
    AuthToken::sign(keypair, capabilities).serialize()
}

//! SDK glue the tests share: reading a refusal out of an SDK error, raw bearer requests for what the SDK
//! does not expose (a stale token, another instance), and the keyless-app flow through a [`Relay`].

use std::time::Duration;

use pubky::errors::{CredentialRefreshError, RequestError};
use pubky::{
    AuthFlowKind, Capabilities, ClientId, Method, PubkyGrantAuthFlow, PubkySession, PubkySigner,
    SessionStorage,
};

use crate::{Relay, TestNet, TestServer};

/// The status and body of an SDK call the server refused; panics on success or on another error.
pub fn server_error<T>(result: pubky::Result<T>) -> (u16, String) {
    match result {
        Err(pubky::Error::Request(RequestError::Server { status, message })) => {
            (status.as_u16(), message)
        }
        Err(other) => panic!("expected a server error, got {other}"),
        Ok(_) => panic!("expected a server error, got success"),
    }
}

/// The status of a grant refresh (`POST /auth/grant/session`) the server refused; the SDK keeps no body.
pub fn refresh_status<T>(result: pubky::Result<T>) -> u16 {
    match result {
        Err(pubky::Error::CredentialRefresh(CredentialRefreshError::Request {
            status: Some(status),
        })) => status.as_u16(),
        Err(other) => panic!("expected a refused refresh, got {other}"),
        Ok(_) => panic!("expected a refused refresh, got success"),
    }
}

/// A client id the SDK accepts.
pub fn client_id(id: &str) -> ClientId {
    ClientId::new(id).expect("valid client id")
}

/// `method path` on `server`'s ICANN listener with `Authorization: Bearer <bearer>`; status and body.
pub async fn bearer_call(
    server: &TestServer,
    method: Method,
    path: &str,
    bearer: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", server.icann_url()))
        .bearer_auth(bearer)
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("bearer request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("response body"))
}

/// A keyless application asks `ring`'s user for `requested` through `relay`; the user approves
/// `approved` (a part of it) and the application exchanges the delivered grant for its session.
pub async fn keyless_app(
    net: &TestNet,
    relay: &Relay,
    ring: &PubkySigner,
    (id, requested, approved): (&str, &str, &str),
) -> PubkySession {
    let requested: Capabilities = requested.parse().expect("requested capabilities");
    let approved: Capabilities = approved.parse().expect("approved capabilities");
    let flow = PubkyGrantAuthFlow::builder(&requested, AuthFlowKind::signin(), client_id(id))
        .relay(relay.inbox_url())
        .client(net.sdk_client())
        .start()
        .expect("start the grant auth flow");
    ring.approve_auth_with_capabilities(flow.authorization_url(), &approved)
        .await
        .expect("the signer approves");
    tokio::time::timeout(Duration::from_secs(30), flow.await_approval())
        .await
        .expect("approval within 30 s")
        .expect("grant exchanged for a session")
}

/// Writes `body` to `path` through `storage` and checks the server answered 201.
pub async fn put_created(storage: &SessionStorage, path: &str, body: &'static str) {
    let response = storage.put(path, body).await.expect("PUT");
    assert_eq!(response.status(), 201, "PUT {path}");
}

/// Signs `session` out, checks that a copy of it no longer revalidates, and returns the copy.
pub async fn sign_out(session: PubkySession) -> PubkySession {
    let stale = session.clone();
    session
        .signout()
        .await
        .map_err(|(err, _)| err)
        .expect("signout");
    assert!(stale.revalidate().await.unwrap().is_none(), "session gone");
    stale
}

//! Accounts made over plain HTTP, for tests that drive the API directly rather than through the SDK.

use pubky::{AuthToken, Capabilities, Capability, Keypair};

use crate::TestServer;

/// A user signed up through `POST /signup` on the ICANN listener.
#[derive(Debug, Clone)]
pub struct Account {
    /// The user's key.
    pub keypair: Keypair,
    /// The key as z32.
    pub z32: String,
    /// The session cookie as `name=secret`.
    pub cookie: String,
}

impl Account {
    /// Signs up a fresh key with the root capability.
    pub async fn signup(server: &TestServer) -> Self {
        Self::signup_with(
            server,
            Capabilities::builder().cap(Capability::root()).finish(),
        )
        .await
    }

    /// Signs up a fresh key whose session has `capabilities`.
    pub async fn signup_with(server: &TestServer, capabilities: Capabilities) -> Self {
        Self::signup_at_with(&server.icann_url(), capabilities).await
    }

    /// Signs up a fresh key with the root capability on any homeserver's HTTP endpoint (`http://ip:port`).
    pub async fn signup_at(icann_url: &str) -> Self {
        Self::signup_at_with(
            icann_url,
            Capabilities::builder().cap(Capability::root()).finish(),
        )
        .await
    }

    /// Signs the same user in again with `capabilities`; the new session's cookie as `name=secret`.
    pub async fn signin_with(&self, server: &TestServer, capabilities: Capabilities) -> String {
        let response = reqwest::Client::new()
            .post(format!("{}/session", server.icann_url()))
            .body(AuthToken::sign(&self.keypair, capabilities).serialize())
            .send()
            .await
            .expect("signin request");
        assert_eq!(response.status(), 200, "signin");
        session_cookie(&response)
    }

    async fn signup_at_with(icann_url: &str, capabilities: Capabilities) -> Self {
        let keypair = Keypair::random();
        let response = reqwest::Client::new()
            .post(format!("{icann_url}/signup"))
            .body(AuthToken::sign(&keypair, capabilities).serialize())
            .send()
            .await
            .expect("signup request");
        assert_eq!(response.status(), 200, "signup");
        let cookie = session_cookie(&response);
        Self {
            z32: keypair.public_key().z32(),
            keypair,
            cookie,
        }
    }
}

/// The `name=secret` pair of a response's session cookie.
fn session_cookie(response: &reqwest::Response) -> String {
    response.headers()["set-cookie"]
        .to_str()
        .expect("ASCII cookie")
        .split(';')
        .next()
        .expect("name=value")
        .to_string()
}

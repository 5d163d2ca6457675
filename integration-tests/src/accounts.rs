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

    /// The same user signed in on another `server` (say, after a move) with the root capability.
    pub async fn signed_in_on(&self, server: &TestServer) -> Self {
        let root = Capabilities::builder().cap(Capability::root()).finish();
        Self {
            cookie: self.signin_with(server, root).await,
            ..self.clone()
        }
    }

    /// `PUT` of `body` at `path` (`/pub/...` or `/priv/...`) on `server`, with this user's cookie; the
    /// status.
    pub async fn put(&self, server: &TestServer, path: &str, body: Vec<u8>) -> u16 {
        self.request(server, reqwest::Method::PUT, path)
            .body(body)
            .send()
            .await
            .expect("PUT request")
            .status()
            .as_u16()
    }

    /// `DELETE` of `path` on `server`; the status.
    pub async fn delete(&self, server: &TestServer, path: &str) -> u16 {
        self.request(server, reqwest::Method::DELETE, path)
            .send()
            .await
            .expect("DELETE request")
            .status()
            .as_u16()
    }

    /// `GET` of `path` on `server` with this user's cookie: the response.
    pub async fn get(&self, server: &TestServer, path: &str) -> reqwest::Response {
        self.request(server, reqwest::Method::GET, path)
            .send()
            .await
            .expect("GET request")
    }

    /// Every file path under the directory `dir` (`/pub/` or `/priv/`) on `server`, in listing
    /// order, read in pages of 100; empty when the directory does not exist.
    pub async fn list(&self, server: &TestServer, dir: &str) -> Vec<String> {
        let mut paths = Vec::new();
        loop {
            let mut url = format!("{dir}?limit=100");
            if let Some(last) = paths.last() {
                url.push_str(&format!("&cursor={}{last}", self.z32));
            }
            let response = self.get(server, &url).await;
            if response.status() == 404 {
                return paths;
            }
            assert_eq!(response.status(), 200, "list {dir}");
            let body = response.text().await.expect("listing body");
            let page: Vec<String> = body
                .lines()
                .map(|line| {
                    let prefix = format!("pubky://{}", self.z32);
                    line.strip_prefix(&prefix).expect("own URL").to_string()
                })
                .collect();
            let full = page.len() == 100;
            paths.extend(page);
            if !full {
                return paths;
            }
        }
    }

    fn request(
        &self,
        server: &TestServer,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", server.icann_url()))
            .header("pubky-host", &self.z32)
            .header("cookie", &self.cookie)
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

/// The status and message of an SDK call the server refused; panics on any other outcome.
pub fn refusal<T>(result: pubky::Result<T>) -> (u16, String) {
    match result {
        Err(pubky::Error::Request(pubky::errors::RequestError::Server { status, message })) => {
            (status.as_u16(), message)
        }
        Err(other) => panic!("expected a server refusal, got {other}"),
        Ok(_) => panic!("expected a server refusal, got success"),
    }
}

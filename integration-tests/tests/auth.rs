//! Sign-up, sign-in and sessions: the official SDK against the server on sqlite+fs and postgres+s3, and
//! raw HTTP for what the SDK never sends (malformed and replayed AuthTokens, the spec's byte layouts).

use std::time::{SystemTime, UNIX_EPOCH};

use homestead_integration_tests::{Blobs, Metadata, TestNet, TestServer, refusal};
use pubky::{AuthToken, Capabilities, Capability, Keypair, Method, PubkySession};

fn root_token(keypair: &Keypair) -> Vec<u8> {
    let caps = Capabilities::builder().cap(Capability::root()).finish();
    AuthToken::sign(keypair, caps).serialize()
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// An AuthToken laid out by hand (§6.1), signed over `bytes[signed_from..]`.
fn crafted_token(
    keypair: &Keypair,
    version: u8,
    timestamp: u64,
    caps: &str,
    signed_from: usize,
) -> Vec<u8> {
    let mut token = vec![0u8; 64];
    token.extend_from_slice(b"PUBKY:AUTH");
    token.push(version);
    token.extend_from_slice(&timestamp.to_be_bytes());
    token.extend_from_slice(keypair.public_key().as_bytes());
    assert!(caps.len() < 128, "one-byte varint");
    token.push(caps.len() as u8);
    token.extend_from_slice(caps.as_bytes());
    let signature = keypair.sign(&token[signed_from..]);
    token[..64].copy_from_slice(&signature.to_bytes());
    token
}

struct Raw {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Raw {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn cookie(&self) -> String {
        self.headers
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

async fn raw(
    server: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Raw {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", server.icann_url()))
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("raw request");
    Raw {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

/// The SDK's whole session life: sign-up, session info, writes, a second sign-in, sign-out of one
/// session while the other lives on, and several users in one client.
async fn sdk_sessions(net: &TestNet, server: &TestServer) {
    let pubky = net.pubky();
    let alice = pubky.signer(Keypair::random());
    let session = alice
        .signup(&server.public_key(), None)
        .await
        .expect("signup");
    assert_eq!(session.info().public_key(), &alice.public_key());
    assert_eq!(session.info().capabilities().len(), 1);
    let info = session.revalidate().await.unwrap().expect("session valid");
    assert_eq!(info.public_key(), &alice.public_key());
    assert!(
        info.created_at() < 10_000_000_000,
        "GET /session gives seconds"
    );
    session
        .storage()
        .put("/pub/app/a.txt", "hello")
        .await
        .unwrap();

    // Signing up the same key again is a conflict.
    let (status, message) = refusal(alice.signup(&server.public_key(), None).await);
    assert_eq!((status, message.as_str()), (409, "User already exists"));

    // A second sign-in is an independent session; ending it leaves the first one valid.
    let second = alice.signin_blocking().await.expect("signin");
    second
        .storage()
        .put("/pub/app/b.txt", "second")
        .await
        .unwrap();
    second.signout().await.map_err(|(e, _)| e).expect("signout");
    assert!(session.revalidate().await.unwrap().is_some());
    session
        .storage()
        .put("/pub/app/c.txt", "still")
        .await
        .unwrap();

    // Several users in one client keep their own cookies.
    let bob = pubky.signer(Keypair::random());
    let bob_session = bob
        .signup(&server.public_key(), None)
        .await
        .expect("bob signup");
    bob_session
        .storage()
        .put("/pub/app/a.txt", "bob")
        .await
        .unwrap();
    let text = session
        .storage()
        .get("/pub/app/a.txt")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "hello");
    let text = bob_session
        .storage()
        .get("/pub/app/a.txt")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "bob");

    // Signed out: the SDK sees the session as gone.
    let exported = session.export_secret();
    session
        .clone()
        .signout()
        .await
        .map_err(|(e, _)| e)
        .expect("signout");
    assert!(session.revalidate().await.unwrap().is_none());
    let (status, message) = refusal(session.storage().put("/pub/app/d.txt", "x").await);
    assert_eq!(
        (status, message.as_str()),
        (401, "No authenticated session found")
    );
    assert!(
        PubkySession::import_secret(&exported, Some(net.sdk_client()))
            .await
            .is_err()
    );
    assert!(bob_session.revalidate().await.unwrap().is_some());
}

/// Nobody but the owner's own session writes the owner's data, whatever the client tries.
async fn strangers_cannot_write(net: &TestNet, server: &TestServer) {
    let pubky = net.pubky();
    let alice = pubky.signer(Keypair::random());
    let alice_session = alice.signup(&server.public_key(), None).await.unwrap();
    alice_session
        .storage()
        .put("/pub/app/file", "alice's")
        .await
        .unwrap();
    let bob = net.pubky().signer(Keypair::random());
    let bob_session = bob.signup(&server.public_key(), None).await.unwrap();

    let url = format!("https://_pubky.{}/pub/app/file", alice.public_key().z32());
    let stranger = net.sdk_client();
    // No cookie at all.
    let response = stranger
        .request(Method::PUT, &url)
        .body("evil")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.text().await.unwrap(),
        "No authenticated session found"
    );
    // Bob's own cookie is named after Bob, not Alice.
    let bob_secret = bob_session.export_secret();
    let (bob_z32, secret) = bob_secret.split_once(':').unwrap();
    let own_name = format!("{bob_z32}={secret}");
    let response = stranger
        .request(Method::DELETE, &url)
        .header("cookie", own_name)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // Bob's secret under Alice's name.
    let alices_name = format!("{}={secret}", alice.public_key().z32());
    let response = stranger
        .request(Method::PUT, &url)
        .header("cookie", alices_name)
        .body("evil")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.text().await.unwrap(),
        "No authenticated session found"
    );
    // Bob's session writing through Alice's address (path-addressed form too).
    let path_addressed = format!(
        "{}/storage/{}/pub/app/file",
        server.icann_url(),
        alice.public_key().z32()
    );
    let response = reqwest::Client::new()
        .put(&path_addressed)
        .header("pubky-host", bob_z32)
        .header("cookie", format!("{bob_z32}={secret}"))
        .body("evil")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let text = alice_session
        .storage()
        .get("/pub/app/file")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "alice's");
}

/// Token-required sign-up: missing, malformed, unknown, valid, reused; and the token's status route.
async fn signup_tokens(net: &TestNet, server: &TestServer) {
    let pubky = net.pubky();
    let hs = server.public_key();
    let signer = pubky.signer(Keypair::random());
    let cases = [
        (None, 400, "Token required"),
        (
            Some("invalid"),
            400,
            "Invalid signup token format: Invalid signup code id",
        ),
        (Some("AAAA-BBBB-CCCC"), 401, "Invalid token"),
    ];
    for (token, status, message) in cases {
        let err = signer.signup(&hs, token).await;
        assert_eq!(refusal(err), (status, message.to_string()), "{token:?}");
    }
    let token = server.signup_token().await;
    let status = raw(
        server,
        Method::GET,
        &format!("/signup_tokens/{token}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(status.status, 200);
    assert!(
        status
            .text()
            .starts_with(r#"{"status":"valid","created_at":""#),
        "{}",
        status.text()
    );
    assert_eq!(status.headers["cache-control"], "no-store");

    let session = signer
        .signup(&hs, Some(&token))
        .await
        .expect("signup with a token");
    assert!(session.revalidate().await.unwrap().is_some());
    let other = pubky.signer(Keypair::random());
    let err = other.signup(&hs, Some(&token)).await;
    assert_eq!(refusal(err), (401, "Token already used".to_string()));
    let status = raw(
        server,
        Method::GET,
        &format!("/signup_tokens/{token}"),
        &[],
        vec![],
    )
    .await;
    assert!(
        status.text().starts_with(r#"{"status":"used""#),
        "{}",
        status.text()
    );
    let unknown = raw(
        server,
        Method::GET,
        "/signup_tokens/AAAA-BBBB-CCCC",
        &[],
        vec![],
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.text().as_str()),
        (404, "Token not found")
    );
    let invalid = raw(server, Method::GET, "/signup_tokens/invalid", &[], vec![]).await;
    assert_eq!(invalid.status, 400);
}

/// Eight sign-ups race for one token: exactly one wins.
async fn one_token_one_user(server: &TestServer) {
    let token = server.signup_token().await;
    let url = format!("{}/signup?signup_token={token}", server.icann_url());
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let request = reqwest::Client::new()
                .post(&url)
                .body(root_token(&Keypair::random()));
            tokio::spawn(async move {
                let response = request.send().await.expect("signup request");
                (response.status().as_u16(), response.text().await.unwrap())
            })
        })
        .collect();
    let mut results = Vec::new();
    for attempt in attempts {
        results.push(attempt.await.unwrap());
    }
    let won = results.iter().filter(|(status, _)| *status == 200).count();
    let lost = results
        .iter()
        .filter(|r| **r == (401, "Token already used".to_string()))
        .count();
    assert_eq!((won, lost), (1, 7), "{results:?}");
}

/// Every malformed or replayed AuthToken gets a 400 with the protocol's message, and the server stays up.
async fn bad_tokens_get_400(server: &TestServer) {
    let keypair = Keypair::random();
    let now = now_micros();
    let minute = 60_000_000u64;
    let mut flipped = crafted_token(&keypair, 0, now, "/:rw", 65);
    *flipped.last_mut().unwrap() = b'r';
    let vector = "a1fe48526e59ab7ffa8f09178183928928c860b2f7a5c76423f279c3ad5a5337e12dc410b59a95a3b11b42d6954a1906e56a9ae339dce793f77a5f74e59b61095055424b593a415554480000060a24181e40003b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29232f7075622f6578616d706c652e636f6d2f3a72772c2f7075622f666f6f2e7478743a72";
    let vector: Vec<u8> = (0..vector.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&vector[i..i + 2], 16).unwrap())
        .collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "Hit the end of buffer, expected more data"),
        (
            "74 bytes",
            vec![0; 74],
            "Hit the end of buffer, expected more data",
        ),
        (
            "header only",
            crafted_token(&keypair, 0, now, "/:rw", 65)[..100].to_vec(),
            "Hit the end of buffer, expected more data",
        ),
        (
            "version 1",
            crafted_token(&keypair, 1, now, "/:rw", 65),
            "Unknown version",
        ),
        ("flipped capability", flipped, "Invalid Signature"),
        (
            "signed from 64",
            crafted_token(&keypair, 0, now, "/:rw", 64),
            "Invalid Signature",
        ),
        (
            "spec vector (2023)",
            vector,
            "AuthToken has a timestamp that is more than 3 minutes in the past",
        ),
    ];
    for (what, body, message) in cases {
        for route in ["/signup", "/session"] {
            let answer = raw(server, Method::POST, route, &[], body.clone()).await;
            assert_eq!(
                (answer.status, answer.text()),
                (400, message.to_string()),
                "{what} at {route}"
            );
        }
    }
    // Just outside the window, each token crafted right before it is sent: on a busy machine a token
    // made earlier would drift into the window.
    let edges = [
        ("181 s old", false, "past"),
        ("181 s ahead", true, "future"),
    ];
    for (what, ahead, word) in edges {
        for route in ["/signup", "/session"] {
            let at = now_micros();
            let ts = match ahead {
                true => at + 3 * minute + 1_000_000,
                false => at - 3 * minute - 1_000_000,
            };
            let body = crafted_token(&keypair, 0, ts, "/:rw", 65);
            let answer = raw(server, Method::POST, route, &[], body).await;
            let message =
                format!("AuthToken has a timestamp that is more than 3 minutes in the {word}");
            assert_eq!(
                (answer.status, answer.text()),
                (400, message),
                "{what} at {route}"
            );
        }
    }
    // ±175 s is inside the window.
    for skew in [-175i64, 175] {
        let ts = (now as i64 + skew * 1_000_000) as u64;
        let answer = raw(
            server,
            Method::POST,
            "/signup",
            &[],
            crafted_token(&Keypair::random(), 0, ts, "/:rw", 65),
        )
        .await;
        assert_eq!(answer.status, 200, "skew {skew}: {}", answer.text());
    }
    // Over 2 MiB: 413.
    let huge = raw(
        server,
        Method::POST,
        "/session",
        &[],
        vec![0; (2 << 20) + 1],
    )
    .await;
    assert_eq!(huge.status, 413);

    // A replay is refused at either route, and the server keeps serving.
    let body = root_token(&keypair);
    assert_eq!(
        raw(server, Method::POST, "/signup", &[], body.clone())
            .await
            .status,
        200
    );
    for route in ["/signup", "/session"] {
        let replay = raw(server, Method::POST, route, &[], body.clone()).await;
        assert_eq!(
            (replay.status, replay.text().as_str()),
            (400, "AuthToken already used"),
            "{route}"
        );
    }
    let unknown_user = raw(
        server,
        Method::POST,
        "/session",
        &[],
        root_token(&Keypair::random()),
    )
    .await;
    assert_eq!(
        (unknown_user.status, unknown_user.text().as_str()),
        (404, "Not Found")
    );
    assert_eq!(
        raw(server, Method::GET, "/", &[], vec![]).await.text(),
        "Pubky Homeserver"
    );
}

/// The wire bytes of §6.4/§15.3 and the cookie attributes of §6.5.
async fn session_bytes_and_cookies(server: &TestServer) {
    let keypair = Keypair::random();
    let key = keypair.public_key();
    let hs = server.public_key().z32();
    let signup = raw(
        server,
        Method::POST,
        "/signup",
        &[("host", &hs)],
        root_token(&keypair),
    )
    .await;
    assert_eq!(signup.status, 200, "{}", signup.text());
    assert_eq!(signup.headers["content-type"], "application/octet-stream");
    // 00 ‖ key ‖ varint(created_at µs) ‖ 00 ‖ 00 ‖ 01 04 "/:rw"
    let body = &signup.body;
    assert_eq!(body[0], 0);
    assert_eq!(&body[1..33], key.as_bytes());
    let (created_at, used) = varint(&body[33..]);
    assert!(
        created_at.abs_diff(now_micros()) < 60_000_000,
        "created_at in µs: {created_at}"
    );
    assert_eq!(&body[33 + used..], b"\x00\x00\x01\x04/:rw");
    let cookie = signup.cookie();
    let (pair, attributes) = cookie.split_once("; ").unwrap();
    let (name, secret) = pair.split_once('=').unwrap();
    assert_eq!(name, key.z32());
    assert_eq!(secret.len(), 26);
    assert!(
        secret
            .bytes()
            .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b)),
        "{secret}"
    );
    assert!(
        attributes
            .starts_with("HttpOnly; SameSite=None; Secure; Path=/; Max-Age=31536000; Expires="),
        "{attributes}"
    );

    // Sign-in over a non-secure host: no Secure, no SameSite.
    let host = server.icann_url().trim_start_matches("http://").to_string();
    let signin = raw(
        server,
        Method::POST,
        "/session",
        &[("host", &host)],
        root_token(&keypair),
    )
    .await;
    assert_eq!(signin.status, 200);
    let cookie = signin.cookie();
    let attributes = cookie.split_once("; ").unwrap().1;
    assert!(
        attributes.starts_with("HttpOnly; Path=/; Max-Age=31536000; Expires="),
        "{attributes}"
    );
    let via_domain = raw(
        server,
        Method::POST,
        "/session",
        &[("host", "homeserver.example.com")],
        root_token(&keypair),
    )
    .await;
    assert!(via_domain.cookie().contains("; SameSite=None; Secure;"));
    let via_ip = raw(
        server,
        Method::POST,
        "/session",
        &[("host", "127.0.0.1")],
        root_token(&keypair),
    )
    .await;
    assert!(!via_ip.cookie().contains("Secure"));

    // GET /session: seconds, Vary, Cache-Control; only for the tenant's own session.
    let pair = cookie.split_once("; ").unwrap().0.to_string();
    let z32 = key.z32();
    let session = raw(
        server,
        Method::GET,
        "/session",
        &[("pubky-host", &z32), ("cookie", &pair)],
        vec![],
    )
    .await;
    assert_eq!(session.status, 200);
    assert_eq!(session.headers["vary"], "cookie, pubky-host");
    assert_eq!(session.headers["cache-control"], "private, must-revalidate");
    let (created_at, used) = varint(&session.body[33..]);
    assert!(
        created_at.abs_diff(now_micros() / 1_000_000) < 60,
        "created_at in s: {created_at}"
    );
    assert_eq!(&session.body[33 + used..], b"\x00\x00\x01\x04/:rw");
    let no_tenant = raw(
        server,
        Method::GET,
        "/session",
        &[("cookie", &pair)],
        vec![],
    )
    .await;
    assert_eq!(
        (no_tenant.status, no_tenant.text().as_str()),
        (404, "Pubky Host is missing")
    );
    let no_cookie = raw(
        server,
        Method::GET,
        "/session",
        &[("pubky-host", &z32)],
        vec![],
    )
    .await;
    assert_eq!(no_cookie.status, 404);
    // Someone else's session presented under the tenant's cookie name.
    let other = Keypair::random();
    let other_signup = raw(server, Method::POST, "/signup", &[], root_token(&other)).await;
    let other_secret = other_signup
        .cookie()
        .split_once("; ")
        .unwrap()
        .0
        .split_once('=')
        .unwrap()
        .1
        .to_string();
    let borrowed = format!("{z32}={other_secret}");
    let mismatch = raw(
        server,
        Method::GET,
        "/session",
        &[("pubky-host", &z32), ("cookie", &borrowed)],
        vec![],
    )
    .await;
    assert_eq!(mismatch.status, 404);

    // Sign-out: 200, removal cookie, idempotent.
    for _ in 0..2 {
        let out = raw(
            server,
            Method::DELETE,
            "/session",
            &[("pubky-host", &z32), ("cookie", &pair), ("host", &host)],
            vec![],
        )
        .await;
        assert_eq!((out.status, out.body.len()), (200, 0));
        let removal = out.cookie();
        assert!(
            removal.starts_with(&format!("{z32}=; HttpOnly; Path=/; Max-Age=0; Expires=")),
            "{removal}"
        );
    }
    let gone = raw(
        server,
        Method::GET,
        "/session",
        &[("pubky-host", &z32), ("cookie", &pair)],
        vec![],
    )
    .await;
    assert_eq!(gone.status, 404);
}

/// Disabled users (§7.3): no writes, everything else works.
async fn disabled_users(net: &TestNet, server: &TestServer) {
    let signer = net.pubky().signer(Keypair::random());
    let session = signer.signup(&server.public_key(), None).await.unwrap();
    session
        .storage()
        .put("/pub/app/keep", "kept")
        .await
        .unwrap();
    let z32 = signer.public_key().z32();
    let (status, body) = server
        .admin(Method::POST, &format!("/users/{z32}/disable"))
        .await;
    assert_eq!((status, body.as_str()), (200, "Ok"));
    let (status, message) = refusal(session.storage().put("/pub/app/new", "x").await);
    assert_eq!((status, message.as_str()), (403, "User is disabled"));
    let text = session
        .storage()
        .get("/pub/app/keep")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "kept");
    let again = signer
        .signin_blocking()
        .await
        .expect("disabled users may sign in");
    assert!(again.revalidate().await.unwrap().is_some());
    again
        .storage()
        .delete("/pub/app/keep")
        .await
        .expect("disabled users may delete");
    server
        .admin(Method::POST, &format!("/users/{z32}/enable"))
        .await;
    again
        .storage()
        .put("/pub/app/new", "x")
        .await
        .expect("enabled again");
}

/// Two instances on one PostgreSQL database and bucket: a token used at one is a replay at the other,
/// and a session made by one is good at the other.
async fn shared_instances(net: &TestNet, first: &TestServer) {
    let second = net.server().sharing(first).start().await;
    let keypair = Keypair::random();
    let token = root_token(&keypair);
    let signup = raw(first, Method::POST, "/signup", &[], token.clone()).await;
    assert_eq!(signup.status, 200);
    let replay = raw(&second, Method::POST, "/session", &[], token).await;
    assert_eq!(
        (replay.status, replay.text().as_str()),
        (400, "AuthToken already used")
    );
    let pair = signup.cookie().split_once("; ").unwrap().0.to_string();
    let z32 = keypair.public_key().z32();
    let headers = [("pubky-host", z32.as_str()), ("cookie", pair.as_str())];
    let put = raw(
        &second,
        Method::PUT,
        "/pub/app/shared",
        &headers,
        b"via two".to_vec(),
    )
    .await;
    assert_eq!(put.status, 201, "{}", put.text());
    let get = raw(first, Method::GET, "/pub/app/shared", &headers[..1], vec![]).await;
    assert_eq!(get.text(), "via two");
    let log = second.log();
    assert!(second.stop().await.success(), "{log}");
}

fn varint(bytes: &[u8]) -> (u64, usize) {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("unterminated varint");
}

async fn auth_suite(metadata: Metadata, blobs: Blobs) {
    let net = TestNet::new();
    let server = net.server().metadata(metadata).blobs(blobs).start().await;
    net.wait_until_resolvable(&server).await;
    sdk_sessions(&net, &server).await;
    strangers_cannot_write(&net, &server).await;
    bad_tokens_get_400(&server).await;
    session_bytes_and_cookies(&server).await;
    disabled_users(&net, &server).await;
    if metadata == Metadata::Postgres {
        shared_instances(&net, &server).await;
    }
    let gated = net
        .server()
        .metadata(metadata)
        .blobs(blobs)
        .token_required()
        .start()
        .await;
    net.wait_until_resolvable(&gated).await;
    signup_tokens(&net, &gated).await;
    one_token_one_user(&gated).await;
    for server in [server, gated] {
        let log = server.log();
        assert!(server.stop().await.success(), "{log}");
    }
}

homestead_integration_tests::on_main_backend_pairs!(auth_suite: auth_on_sqlite_fs, auth_on_postgres_s3);

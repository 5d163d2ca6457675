//! Grant authentication over the whole client stack (PROTOCOL-0.17.md §9–§10, checklist §25 items
//! 5–55): the server is seed 02, the user of the spec's grant G1 seed 00 and its client seed 01.

use axum::body::Body;
use homestead_config::SignupMode;
use http::{Method, StatusCode, header};
use pubky_common::auth::grant::GrantClaims;
use pubky_common::auth::jws::{ClientId, GrantId, PopNonce, sign_jws};
use pubky_common::auth::pop::PopProofClaims;
use pubky_common::capabilities::Capability;
use pubky_common::crypto::Keypair;
use serde_json::Value;

use super::{Answer, TestApp, expect, request, token};
use crate::lookups::unix_seconds;

/// §24.2, G1: the user seed 00 grants client seed 01 `/pub/example.app/:rw,/priv/example.app/:r`.
const G1: &str = "eyJhbGciOiJFZERTQSIsInR5cCI6InB1Ymt5LWdyYW50In0.eyJpc3MiOiI4cGlueHhncXM0MW40YWlkaWRlbnc1YXBxcDF1cmZtemR6dHI4anQ0YWJya2RuNDM1ZXdvIiwiY2xpZW50X2lkIjoiZXhhbXBsZS5hcHAiLCJjYXBzIjpbIi9wdWIvZXhhbXBsZS5hcHAvOnJ3IiwiL3ByaXYvZXhhbXBsZS5hcHAvOnIiXSwiY25mIjoidGtycTh6bXdiOGEzbTlrMTVjc3UzcTE3cW1mZ3FucDlkc2ticmc5dXExcnlkcHl4cDdxeSIsImp0aSI6IkFBRUNBd1FGQmdjSUNRb0xEQTBPRHciLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6NDEwMjQ0NDgwMH0.wTDuRQsDiE20kCrahWzdg28HR0n3jZ2kppk5veu1ujvpwGXeTeIZdBhiKH7zKUHdijzMyQh_Pyn-VFWw1C2zDw";
/// §24.3, G2 (an expired signup grant) and P1 (a proof from 2023).
const G2: &str = "eyJhbGciOiJFZERTQSIsInR5cCI6InB1Ymt5LWdyYW50In0.eyJpc3MiOiI4cGlueHhncXM0MW40YWlkaWRlbnc1YXBxcDF1cmZtemR6dHI4anQ0YWJya2RuNDM1ZXdvIiwiY2xpZW50X2lkIjoicHVia3kuc2lnbnVwIiwiY2FwcyI6WyIvOnJ3Il0sImNuZiI6InRrcnE4em13YjhhM205azE1Y3N1M3ExN3FtZmdxbnA5ZHNrYnJnOXVxMXJ5ZHB5eHA3cXkiLCJqdGkiOiJBQUVDQXdRRkJnY0lDUW9MREEwT0R3IiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDAzMDB9.MuArnQfuLiwVm49L_u5k9Zm-e-ZX_f74WsXdYVX2Fn3WWs741BpPwYf4CTZl4NZkNm9F8kzXDLe5WSvhfqrgBA";
const P1: &str = "eyJhbGciOiJFZERTQSIsInR5cCI6InB1Ymt5LXBvcCJ9.eyJhdWQiOiJvcmh6cWRpZXh3bWk2aWlka3R1Y2d1ZDYzdWZhNW53dHN1emR4ZTE3NmE4aXpkNmpzcWt5IiwiZ2lkIjoiQUFFQ0F3UUZCZ2NJQ1FvTERBME9EdyIsIm5vbmNlIjoiRUJFU0V4UVZGaGNZR1JvYkhCMGVIdyIsImlhdCI6MTcwMDAwMDAwMH0.bj7vDvvTmI2Cf0wEsLP8pNh7QcRP5q-yBu9buMup9Uvuy7JkuJxwblr10dLy6CL5jcGdh-0vs0tkdPm3n1O6Cw";
/// The refusal of a grant stored for another user or client key.
const NOT_YOURS: &str = "Grant does not belong to authenticated user";
/// The refusal of a request without a usable session.
const NO_SESSION: &str = "No authenticated session found";
/// G1's id.
const G1_ID: &str = "AAECAwQFBgcICQoLDA0ODw";

fn seed(byte: u8) -> Keypair {
    Keypair::from_secret(&[byte; 32])
}

fn now() -> u64 {
    u64::try_from(unix_seconds()).unwrap()
}

/// A grant of `user` for `client` with `caps`, valid from `iat` to `exp`.
pub(super) struct Grant<'a> {
    user: &'a Keypair,
    client: &'a Keypair,
    client_id: &'a str,
    caps: &'a [&'a str],
    jti: &'a str,
    iat: u64,
    exp: u64,
}

impl Grant<'_> {
    /// A session grant of `user` for `client`, valid for two years.
    pub(super) fn session<'a>(
        user: &'a Keypair,
        client: &'a Keypair,
        caps: &'a [&'a str],
        jti: &'a str,
    ) -> Grant<'a> {
        Grant {
            user,
            client,
            client_id: "example.app",
            caps,
            jti,
            iat: now(),
            exp: now() + 63_072_000,
        }
    }

    /// A root signup grant of `user`.
    fn signup<'a>(user: &'a Keypair, client: &'a Keypair) -> Grant<'a> {
        Grant {
            user,
            client,
            client_id: "pubky.signup",
            caps: &["/:rw"],
            jti: "signup",
            iat: now(),
            exp: now() + 300,
        }
    }

    pub(super) fn jws(&self) -> String {
        GrantClaims {
            iss: self.user.public_key(),
            client_id: ClientId::new(self.client_id).unwrap(),
            caps: self
                .caps
                .iter()
                .map(|c| Capability::try_from(*c).unwrap())
                .collect(),
            cnf: self.client.public_key(),
            jti: GrantId::parse(self.jti).unwrap(),
            iat: self.iat,
            exp: self.exp,
        }
        .sign(self.user, "pubky-grant")
    }
}

/// A proof with header type `typ` for the server `aud` and grant `gid`, signed by `client`, issued at
/// `iat`, with a fresh nonce.
fn proof(client: &Keypair, typ: &str, aud: &Keypair, gid: &str, iat: u64) -> String {
    let claims = PopProofClaims {
        aud: aud.public_key(),
        gid: GrantId::parse(gid).unwrap(),
        nonce: PopNonce::generate(),
        iat,
    };
    sign_jws(client, typ, &claims)
}

/// A fresh proof for grant `gid` on the test server (seed 02), signed by `client`, issued at `iat`.
fn pop_at(client: &Keypair, gid: &str, iat: u64) -> String {
    proof(client, "pubky-pop", &seed(2), gid, iat)
}

fn pop(client: &Keypair, gid: &str) -> String {
    pop_at(client, gid, now())
}

fn body(grant: &str, pop: &str) -> String {
    serde_json::json!({"grant": grant, "pop": pop}).to_string()
}

async fn post(app: &TestApp, uri: &str, json: String) -> Answer {
    let request = request(Method::POST, uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json))
        .unwrap();
    app.client(request).await
}

/// Posts `grant` with a fresh proof to the signup route.
async fn post_signup(app: &TestApp, grant: &Grant<'_>) -> Answer {
    let jws = grant.jws();
    post(
        app,
        "/auth/grant/signup",
        body(&jws, &pop(grant.client, grant.jti)),
    )
    .await
}

/// Signs `user` up through a signup grant.
pub(super) async fn grant_signup(app: &TestApp, user: &Keypair) -> Answer {
    let client = Keypair::random();
    let grant = Grant::signup(user, &client).jws();
    post(
        app,
        "/auth/grant/signup",
        body(&grant, &pop(&client, "signup")),
    )
    .await
}

/// Exchanges `grant` (of client `client`, id `gid`) for a bearer; returns the answer.
pub(super) async fn exchange(app: &TestApp, grant: &str, client: &Keypair, gid: &str) -> Answer {
    post(app, "/auth/grant/session", body(grant, &pop(client, gid))).await
}

/// The bearer of a successful exchange.
pub(super) fn bearer(answer: &Answer) -> String {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let json: Value = serde_json::from_slice(&answer.body).unwrap();
    json["token"].as_str().unwrap().to_string()
}

/// Sends `method uri` with `headers` and no body.
pub(super) async fn call(
    app: &TestApp,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = request(method, uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    app.client(request.body(Body::empty()).unwrap()).await
}

pub(super) async fn with_bearer(app: &TestApp, method: Method, uri: &str, bearer: &str) -> Answer {
    let authorization = format!("Bearer {bearer}");
    call(app, method, uri, &[("authorization", &authorization)]).await
}

/// The status of `GET /auth/grant/session` with `bearer`.
async fn session_status(app: &TestApp, bearer: &str) -> StatusCode {
    with_bearer(app, Method::GET, "/auth/grant/session", bearer)
        .await
        .status
}

#[tokio::test]
async fn signup_grants_create_the_account_and_nothing_else() {
    let app = TestApp::builder().build().await;
    let user = Keypair::random();
    let done = grant_signup(&app, &user).await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{}", done.text());
    assert!(done.body.is_empty());
    assert_eq!(done.header(header::SET_COOKIE), "");
    let stored = app.store().accounts().user(&user.public_key().z32()).await;
    assert!(stored.unwrap().is_some());
    expect(&grant_signup(&app, &user).await, 409, "User already exists");

    let other = Keypair::random();
    let client = Keypair::random();
    let base = || Grant::signup(&other, &client);
    let mut wrong_client = base();
    wrong_client.client_id = "example.app";
    expect(
        &post_signup(&app, &wrong_client).await,
        400,
        "signup grants must use client_id pubky.signup",
    );
    let mut not_root = base();
    not_root.caps = &["/pub/:rw"];
    expect(
        &post_signup(&app, &not_root).await,
        403,
        "Root capability required",
    );
    let mut too_long = base();
    too_long.exp = too_long.iat + 301;
    expect(
        &post_signup(&app, &too_long).await,
        400,
        "signup grant lifetime exceeds 5 minutes",
    );
    let mut future = base();
    future.iat = now() + 200;
    future.exp = future.iat + 300;
    expect(
        &post_signup(&app, &future).await,
        400,
        "signup grant iat is too far in the future",
    );
    // §24.3: an expired signup grant with an old proof.
    let g2 = post(&app, "/auth/grant/signup", body(G2, P1)).await;
    expect(&g2, 401, "Invalid grant: grant has expired");
    // The open mode still checks the token's format, and ignores a well-formed one.
    let grant = base().jws();
    let bad = post(
        &app,
        "/auth/grant/signup?signup_token=invalid",
        body(&grant, &pop(&client, "signup")),
    )
    .await;
    expect(
        &bad,
        400,
        "Invalid signup token format: Invalid signup code id",
    );
    let twice = post(
        &app,
        "/auth/grant/signup?signup_token=a&signup_token=b",
        body(&grant, &pop(&client, "signup")),
    )
    .await;
    assert_eq!(twice.status, StatusCode::BAD_REQUEST);
    assert!(
        twice
            .text()
            .starts_with("Failed to deserialize query string"),
        "{}",
        twice.text()
    );
    let ignored = post(
        &app,
        "/auth/grant/signup?signup_token=AAAA-BBBB-CCCC",
        body(&grant, &pop(&client, "signup")),
    )
    .await;
    assert_eq!(ignored.status, StatusCode::NO_CONTENT, "{}", ignored.text());
}

#[tokio::test]
async fn grant_bodies_follow_the_json_rules() {
    let app = TestApp::builder().build().await;
    let no_type = request(Method::POST, "/auth/grant/signup")
        .body(Body::from(body(G2, P1)))
        .unwrap();
    expect(
        &app.client(no_type).await,
        415,
        "Expected request with `Content-Type: application/json`",
    );
    let broken = post(&app, "/auth/grant/session", "{".into()).await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    assert!(
        broken
            .text()
            .starts_with("Failed to parse the request body as JSON"),
        "{}",
        broken.text()
    );
    let two_parts = post(
        &app,
        "/auth/grant/signup",
        r#"{"grant":"a.b","pop":"a.b.c"}"#.into(),
    )
    .await;
    assert_eq!(two_parts.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        two_parts
            .text()
            .starts_with("Failed to deserialize the JSON body into the target type")
    );
    assert!(
        two_parts.text().contains("exactly 3 dot-separated parts"),
        "{}",
        two_parts.text()
    );
    let huge = format!(
        r#"{{"grant":"{}","pop":"a.b.c"}}"#,
        "a".repeat(2 * 1024 * 1024 + 1)
    );
    let huge = post(&app, "/auth/grant/session", huge).await;
    expect(
        &huge,
        413,
        "Failed to buffer the request body: length limit exceeded",
    );
    // Other methods on the grant paths.
    for (method, uri) in [
        (Method::PUT, "/auth/grant/session"),
        (Method::GET, "/auth/grant/signup"),
    ] {
        let answer = app
            .client(request(method, uri).body(Body::empty()).unwrap())
            .await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{uri}");
        assert!(!answer.header(header::ALLOW).is_empty(), "{uri}");
    }
}

#[tokio::test]
async fn token_mode_redeems_the_token_with_the_account() {
    let app = TestApp::builder()
        .signup_mode(SignupMode::TokenRequired)
        .build()
        .await;
    let signup = |query: &str| {
        let app = &app;
        let query = query.to_string();
        async move {
            let (user, client) = (Keypair::random(), Keypair::random());
            let grant = Grant::signup(&user, &client).jws();
            post(
                app,
                &format!("/auth/grant/signup{query}"),
                body(&grant, &pop(&client, "signup")),
            )
            .await
        }
    };
    expect(&signup("").await, 400, "Token required");
    expect(
        &signup("?signup_token=invalid").await,
        400,
        "Invalid signup token format: Invalid signup code id",
    );
    expect(
        &signup("?signup_token=AAAA-BBBB-CCCC").await,
        401,
        "Invalid token",
    );
    let minted = app
        .admin(
            request(Method::GET, "/generate_signup_token")
                .header("X-Admin-Password", "secret")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let token = minted.text();
    let query = format!("?signup_token={token}");
    assert_eq!(signup(&query).await.status, StatusCode::NO_CONTENT);
    let status = app
        .client(
            request(Method::GET, &format!("/signup_tokens/{token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(status.text().contains("used"), "{}", status.text());
    expect(&signup(&query).await, 401, "Token already used");
}

#[tokio::test]
async fn exchanging_g1_gives_a_bearer_session_in_the_wire_order() {
    let app = TestApp::builder().build().await;
    let (user, client) = (seed(0), seed(1));
    assert_eq!(
        grant_signup(&app, &user).await.status,
        StatusCode::NO_CONTENT
    );
    let answer = exchange(&app, G1, &client, G1_ID).await;
    assert_eq!(answer.header(header::CONTENT_TYPE), "application/json");
    let text = answer.text();
    let order = [
        "\"token\"",
        "\"session\"",
        "\"homeserver\"",
        "\"pubky\"",
        "\"client_id\"",
        "\"capabilities\"",
        "\"grant_id\"",
        "\"token_expires_at\"",
        "\"grant_expires_at\"",
        "\"created_at\"",
    ];
    let places: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(places.windows(2).all(|w| w[0] < w[1]), "{text}");
    let json: Value = serde_json::from_str(&text).unwrap();
    let token = json["token"].as_str().unwrap();
    assert_eq!(token.len(), 43);
    let session = &json["session"];
    assert_eq!(session["homeserver"], seed(2).public_key().z32());
    assert_eq!(session["pubky"], user.public_key().z32());
    assert_eq!(
        session["capabilities"],
        serde_json::json!(["/pub/example.app/:rw", "/priv/example.app/:r"])
    );
    assert_eq!(session["grant_expires_at"], 4_102_444_800u64);
    let created = session["created_at"].as_u64().unwrap();
    assert_eq!(
        session["token_expires_at"].as_u64().unwrap(),
        created + 3600
    );

    // Inside the grant's scope, whatever Host says; outside it; another user's files.
    let put = |uri: String, bearer: String| {
        let app = &app;
        async move {
            let request = request(Method::PUT, &uri)
                .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
                .header("host", "example.com")
                .header("pubky-host", seed(9).public_key().z32())
                .body(Body::from("x"))
                .unwrap();
            app.client(request).await
        }
    };
    let pk = user.public_key().z32();
    let created_file = put(format!("/storage/{pk}/pub/example.app/x"), token.into()).await;
    assert_eq!(
        created_file.status,
        StatusCode::CREATED,
        "{}",
        created_file.text()
    );
    expect(
        &put(format!("/storage/{pk}/pub/other/x"), token.into()).await,
        403,
        "Session does not have write access to path",
    );
    expect(
        &put(format!("/storage/{pk}/pub/example.app"), token.into()).await,
        403,
        "Session does not have write access to path",
    );
    let other = seed(9).public_key().z32();
    app.sign_up(&other).await;
    expect(
        &put(format!("/storage/{other}/pub/example.app/x"), token.into()).await,
        403,
        "Session user does not match target tenant",
    );
    // The legacy route with the bearer: the tenant is the pubky-host (user 9): not the bearer's user.
    expect(
        &put("/pub/example.app/x".into(), token.into()).await,
        403,
        "Session user does not match target tenant",
    );

    // Inspect, then refresh: a new bearer, the old one dead, the stored creation time kept.
    let info = with_bearer(&app, Method::GET, "/auth/grant/session", token).await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.text());
    let info: Value = serde_json::from_slice(&info.body).unwrap();
    assert_eq!(info["grant_id"], G1_ID);
    let second = bearer(&exchange(&app, G1, &client, G1_ID).await);
    assert_ne!(second, token);
    expect(
        &with_bearer(&app, Method::GET, "/auth/grant/session", token).await,
        401,
        NO_SESSION,
    );
    let again = with_bearer(&app, Method::GET, "/auth/grant/session", &second).await;
    let again: Value = serde_json::from_slice(&again.body).unwrap();
    assert_eq!(again["created_at"], info["created_at"]);
}

#[tokio::test]
async fn proofs_are_checked_in_the_spec_order() {
    let app = TestApp::builder().build().await;
    let (user, client) = (seed(0), seed(1));
    grant_signup(&app, &user).await;
    let answer = |pop: String| exchange_with(&app, G1, pop);
    // P1 is for this server (seed 02) but from 2023.
    expect(
        &answer(P1.into()).await,
        401,
        "Invalid PoP proof: PoP timestamp out of range",
    );
    expect(
        &answer(pop_at(&client, G1_ID, now() - 181)).await,
        401,
        "Invalid PoP proof: PoP timestamp out of range",
    );
    expect(
        &answer(pop_at(&client, G1_ID, now() + 181)).await,
        401,
        "Invalid PoP proof: PoP timestamp out of range",
    );
    assert_eq!(
        answer(pop_at(&client, G1_ID, now() - 175)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        answer(pop_at(&client, G1_ID, now() + 175)).await.status,
        StatusCode::OK
    );
    expect(
        &answer(pop(&client, "other")).await,
        401,
        "Invalid PoP proof: PoP grant ID mismatch",
    );
    expect(
        &answer(pop(&seed(7), G1_ID)).await,
        401,
        "Invalid PoP proof: invalid PoP signature",
    );
    let wrong_type = proof(&client, "pubky-grant", &seed(2), G1_ID, now());
    expect(
        &answer(wrong_type).await,
        401,
        "Invalid PoP proof: invalid PoP header type, expected pubky-pop",
    );
    let elsewhere = proof(&client, "pubky-pop", &seed(3), G1_ID, now());
    expect(
        &answer(elsewhere).await,
        401,
        "Invalid PoP proof: PoP audience mismatch",
    );
    // A nonce is used once, by any grant and any proof-taking route.
    let proof = pop(&client, G1_ID);
    assert_eq!(answer(proof.clone()).await.status, StatusCode::OK);
    expect(&answer(proof.clone()).await, 401, "PoP nonce already used");
    let nonce: PopProofClaims = pubky_common::auth::jws::decode_jws_payload(&proof).unwrap();
    let other_client = Keypair::random();
    let other = Grant::session(&user, &other_client, &["/:rw"], "other").jws();
    let reused = sign_jws(
        &other_client,
        "pubky-pop",
        &PopProofClaims {
            gid: GrantId::parse("other").unwrap(),
            ..nonce
        },
    );
    expect(
        &exchange_with(&app, &other, reused).await,
        401,
        "PoP nonce already used",
    );
}

async fn exchange_with(app: &TestApp, grant: &str, pop: String) -> Answer {
    post(app, "/auth/grant/session", body(grant, &pop)).await
}

#[tokio::test]
async fn grants_are_refused_in_the_spec_order() {
    let app = TestApp::builder().build().await;
    let (user, client) = (seed(0), seed(1));
    // No account yet.
    expect(&exchange(&app, G1, &client, G1_ID).await, 404, "Not Found");
    grant_signup(&app, &user).await;
    let tampered = format!("{}x", &G1[..G1.len() - 1]);
    expect(
        &exchange(&app, &tampered, &client, G1_ID).await,
        401,
        "Invalid grant: invalid grant signature",
    );
    let forged = GrantClaims::decode(G1)
        .unwrap()
        .sign(&seed(5), "pubky-grant");
    expect(
        &exchange(&app, &forged, &client, G1_ID).await,
        401,
        "Invalid grant: invalid grant signature",
    );
    let jwt = GrantClaims::decode(G1).unwrap().sign(&user, "JWT");
    expect(
        &exchange(&app, &jwt, &client, G1_ID).await,
        400,
        "Invalid grant: invalid grant header type, expected pubky-grant",
    );
    // A validly signed claim set with an empty action list is no grant.
    let claims = r#"{"iss":"8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo","client_id":"a","caps":["/pub/x:"],"cnf":"tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qy","jti":"j","iat":1,"exp":4102444800}"#;
    let raw = serde_json::from_str::<Value>(claims).unwrap();
    let empty_action = sign_jws(&user, "pubky-grant", &raw);
    expect(
        &exchange(&app, &empty_action, &client, "j").await,
        400,
        "Invalid grant: invalid grant format",
    );
    let hs256 = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let input = format!(
            "{}.{}",
            b64.encode(r#"{"alg":"HS256","typ":"pubky-grant"}"#),
            G1.split('.').nth(1).unwrap()
        );
        format!(
            "{input}.{}",
            b64.encode(user.sign(input.as_bytes()).to_bytes())
        )
    };
    expect(
        &exchange(&app, &hs256, &client, G1_ID).await,
        401,
        "Invalid grant: invalid grant signature",
    );
    let expired = Grant {
        exp: now() - 1,
        ..Grant::session(&user, &client, &["/:rw"], "old")
    };
    expect(
        &exchange(&app, &expired.jws(), &client, "old").await,
        401,
        "Invalid grant: grant has expired",
    );
    // A short grant caps its bearer; root in any spelling; `e` is kept.
    let short = Grant {
        exp: now() + 60,
        ..Grant::session(&user, &client, &["/:wr"], "short")
    };
    let answer = exchange(&app, &short.jws(), &client, "short").await;
    let json: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        json["session"]["token_expires_at"].as_u64().unwrap(),
        short.exp
    );
    assert_eq!(json["session"]["capabilities"], serde_json::json!(["/:rw"]));
    let with_e = Grant::session(&user, &client, &["/:rwe"], "withe").jws();
    let json: Value =
        serde_json::from_slice(&exchange(&app, &with_e, &client, "withe").await.body).unwrap();
    assert_eq!(
        json["session"]["capabilities"],
        serde_json::json!(["/:rwe"])
    );
}

#[tokio::test]
async fn a_reused_grant_id_of_another_user_is_refused() {
    let app = TestApp::builder().build().await;
    let (user, client) = (seed(0), seed(1));
    grant_signup(&app, &user).await;
    let g1_bearer = bearer(&exchange(&app, G1, &client, G1_ID).await);
    let mallory = Keypair::random();
    grant_signup(&app, &mallory).await;
    let stolen_id = Grant::session(&mallory, &mallory, &["/:rw"], G1_ID).jws();
    expect(
        &exchange(&app, &stolen_id, &mallory, G1_ID).await,
        403,
        NOT_YOURS,
    );
    // The same user with another client key is another grant too.
    let other_client = Keypair::random();
    let same_user = Grant::session(&user, &other_client, &["/:rw"], G1_ID).jws();
    expect(
        &exchange(&app, &same_user, &other_client, G1_ID).await,
        403,
        NOT_YOURS,
    );
    assert_eq!(session_status(&app, &g1_bearer).await, StatusCode::OK);
    // Proof logout with the foreign grant is refused the same way.
    let logout = proof_logout(&app, &stolen_id, &mallory, G1_ID).await;
    expect(&logout, 403, NOT_YOURS);
    assert_eq!(session_status(&app, &g1_bearer).await, StatusCode::OK);
}

#[tokio::test]
async fn signing_out_revokes_the_whole_grant() {
    let app = TestApp::builder().build().await;
    let (user, client) = (seed(0), seed(1));
    grant_signup(&app, &user).await;
    let token = bearer(&exchange(&app, G1, &client, G1_ID).await);
    // Without credentials, with a cookie, with a malformed bearer: no bearer identity.
    let none = app
        .client(
            request(Method::GET, "/auth/grant/session")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    expect(&none, 401, NO_SESSION);
    for value in [
        format!("Bearer {}", &token[..42]),
        format!("bearer {token}"),
    ] {
        let request = request(Method::GET, "/auth/grant/session")
            .header(header::AUTHORIZATION, value)
            .body(Body::empty())
            .unwrap();
        expect(&app.client(request).await, 401, NO_SESSION);
    }
    let cookie_user = Keypair::random();
    let cookie = cookie_session(&app, "/signup", &cookie_user, "/:rw").await;
    let tenant = cookie_user.public_key().z32();
    let headers = [("pubky-host", tenant.as_str()), ("cookie", &cookie)];
    let with_cookie = call(&app, Method::GET, "/auth/grant/session", &headers).await;
    expect(&with_cookie, 401, "Unauthorized");

    let delete = with_bearer(&app, Method::DELETE, "/auth/grant/session", &token).await;
    assert_eq!((delete.status, delete.body.len()), (StatusCode::OK, 0));
    expect(
        &with_bearer(&app, Method::GET, "/auth/grant/session", &token).await,
        401,
        NO_SESSION,
    );
    expect(
        &exchange(&app, G1, &client, G1_ID).await,
        401,
        "Grant has been revoked",
    );
    // Idempotent: the dead bearer, no credentials at all.
    assert_eq!(
        with_bearer(&app, Method::DELETE, "/auth/grant/session", &token)
            .await
            .status,
        StatusCode::OK
    );
    let bare = app
        .client(
            request(Method::DELETE, "/auth/grant/session")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(bare.status, StatusCode::OK);
}

/// Signs `keypair` up (`route` `/signup`) or in (`/session`) with an AuthToken for `caps`; returns the
/// `name=secret` pair of the session cookie.
pub(super) async fn cookie_session(
    app: &TestApp,
    route: &str,
    keypair: &Keypair,
    caps: &str,
) -> String {
    let request = request(Method::POST, route)
        .body(Body::from(token(keypair, caps)))
        .unwrap();
    let answer = app.client(request).await;
    let cookie = answer.header(header::SET_COOKIE);
    cookie.split(';').next().unwrap().to_string()
}

async fn proof_logout(app: &TestApp, grant: &str, client: &Keypair, gid: &str) -> Answer {
    let request = request(Method::DELETE, "/auth/grant/session")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body(grant, &pop(client, gid))))
        .unwrap();
    app.client(request).await
}

#[tokio::test]
async fn proof_logout_works_without_a_bearer_even_after_expiry() {
    let app = TestApp::builder().build().await;
    let (user, client) = (seed(0), seed(1));
    grant_signup(&app, &user).await;
    expect(
        &proof_logout(&app, G1, &client, G1_ID).await,
        404,
        "Not Found",
    );
    let token = bearer(&exchange(&app, G1, &client, G1_ID).await);
    let done = proof_logout(&app, G1, &client, G1_ID).await;
    assert_eq!(
        (done.status, done.body.len()),
        (StatusCode::OK, 0),
        "{}",
        done.text()
    );
    expect(
        &with_bearer(&app, Method::GET, "/auth/grant/session", &token).await,
        401,
        NO_SESSION,
    );
    assert_eq!(
        proof_logout(&app, G1, &client, G1_ID).await.status,
        StatusCode::OK
    );
    let wrong_type = request(Method::DELETE, "/auth/grant/session")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(body(G1, &pop(&client, G1_ID))))
        .unwrap();
    assert_eq!(
        app.client(wrong_type).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );

    let short = Grant {
        exp: now() + 2,
        ..Grant::session(&user, &client, &["/:rw"], "short")
    };
    let short = short.jws();
    bearer(&exchange(&app, &short, &client, "short").await);
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert_eq!(
        proof_logout(&app, &short, &client, "short").await.status,
        StatusCode::OK
    );
    expect(
        &exchange(&app, &short, &client, "short").await,
        401,
        "Invalid grant: grant has expired",
    );
}

#[tokio::test]
async fn root_sessions_list_and_revoke_grants() {
    let app = TestApp::builder().build().await;
    let (user, client) = (seed(0), seed(1));
    grant_signup(&app, &user).await;
    let g1_bearer = bearer(&exchange(&app, G1, &client, G1_ID).await);
    let root_client = Keypair::random();
    let root = Grant::session(&user, &root_client, &["/:rw"], "root").jws();
    let root_bearer = bearer(&exchange(&app, &root, &root_client, "root").await);
    let expired = Grant {
        exp: now() + 2,
        ..Grant::session(&user, &client, &["/:rw"], "expiring")
    };
    bearer(&exchange(&app, &expired.jws(), &client, "expiring").await);

    expect(
        &with_bearer(&app, Method::GET, "/auth/grant/sessions", &g1_bearer).await,
        403,
        "Root capability required",
    );
    expect(
        &app.client(
            request(Method::GET, "/auth/grant/sessions")
                .body(Body::empty())
                .unwrap(),
        )
        .await,
        401,
        NO_SESSION,
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let listed = with_bearer(&app, Method::GET, "/auth/grant/sessions", &root_bearer).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    let text = listed.text();
    let g1 = text.find(G1_ID).expect("G1 listed");
    let entry = &text[g1 - "{\"grant_id\":\"".len()..];
    assert!(entry.starts_with(r#"{"grant_id":"AAECAwQFBgcICQoLDA0ODw","client_id":"example.app","capabilities":"/pub/example.app/:rw,/priv/example.app/:r","issued_at":1700000000,"expires_at":4102444800}"#), "{text}");
    assert!(
        !text.contains("expiring"),
        "expired grants are not listed: {text}"
    );
    assert!(
        !text.contains("signup"),
        "signup grants are never stored: {text}"
    );

    // Revoking by id: refusals first, then the grant and its bearer go.
    expect(
        &with_bearer(&app, Method::DELETE, "/auth/grant/session/a.b", &g1_bearer).await,
        403,
        "Root capability required",
    );
    expect(
        &with_bearer(
            &app,
            Method::DELETE,
            "/auth/grant/session/a.b",
            &root_bearer,
        )
        .await,
        400,
        "Invalid grant ID format",
    );
    expect(
        &with_bearer(
            &app,
            Method::DELETE,
            "/auth/grant/session/unknown",
            &root_bearer,
        )
        .await,
        404,
        "Not Found",
    );
    let stranger = Keypair::random();
    grant_signup(&app, &stranger).await;
    let theirs = Grant::session(&stranger, &stranger, &["/:rw"], "theirs").jws();
    bearer(&exchange(&app, &theirs, &stranger, "theirs").await);
    expect(
        &with_bearer(
            &app,
            Method::DELETE,
            "/auth/grant/session/theirs",
            &root_bearer,
        )
        .await,
        403,
        NOT_YOURS,
    );
    let revoked = with_bearer(
        &app,
        Method::DELETE,
        &format!("/auth/grant/session/{G1_ID}"),
        &root_bearer,
    )
    .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(
        with_bearer(
            &app,
            Method::DELETE,
            &format!("/auth/grant/session/{G1_ID}"),
            &root_bearer
        )
        .await
        .status,
        StatusCode::OK
    );
    expect(
        &with_bearer(&app, Method::GET, "/auth/grant/session", &g1_bearer).await,
        401,
        NO_SESSION,
    );
    let listed = with_bearer(&app, Method::GET, "/auth/grant/sessions", &root_bearer)
        .await
        .text();
    assert!(!listed.contains(G1_ID), "{listed}");

    // A root cookie session may list too (the cookie needs the user as tenant).
    let cookie = cookie_session(&app, "/session", &user, "/:rw").await;
    let tenant = user.public_key().z32();
    let headers = [("pubky-host", tenant.as_str()), ("cookie", &cookie)];
    let by_cookie = call(&app, Method::GET, "/auth/grant/sessions", &headers).await;
    assert_eq!(by_cookie.status, StatusCode::OK);
}

#[tokio::test]
async fn bearer_and_cookie_precedence() {
    let app = TestApp::builder().build().await;
    let (a, b) = (Keypair::random(), Keypair::random());
    let cookie_a = cookie_session(&app, "/signup", &a, "/:rw").await;
    let cookie_b = cookie_session(&app, "/signup", &b, "/:rw").await;
    let client = Keypair::random();
    let grant_a = Grant::session(&a, &client, &["/:rw"], "granta").jws();
    let bearer_a = bearer(&exchange(&app, &grant_a, &client, "granta").await);
    let put = |owner: &Keypair, bearer: Option<&str>, cookie: &str| {
        let mut request = request(
            Method::PUT,
            &format!("/storage/{}/pub/x", owner.public_key().z32()),
        )
        .header("cookie", cookie);
        if let Some(bearer) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {bearer}"));
        }
        let request = request.body(Body::from("x")).unwrap();
        let app = &app;
        async move { app.client(request).await }
    };
    // A valid bearer of A and a valid cookie of B, writing to B: the bearer wins, and it is not B's.
    expect(
        &put(&b, Some(&bearer_a), &cookie_b).await,
        403,
        "Session user does not match target tenant",
    );
    // An unknown well-formed bearer falls back to the owner's cookie.
    let unknown = "x".repeat(43);
    assert_eq!(
        put(&b, Some(&unknown), &cookie_b).await.status,
        StatusCode::CREATED
    );
    // No credential at all; A's cookie presented for B's files is no identity.
    expect(&put(&b, None, "").await, 401, NO_SESSION);
    let foreign = format!(
        "{}={}",
        b.public_key().z32(),
        cookie_a.split_once('=').unwrap().1
    );
    expect(&put(&b, None, &foreign).await, 401, NO_SESSION);
}

#[tokio::test]
async fn cookie_capabilities_use_the_new_coverage_rule() {
    let app = TestApp::builder().build().await;
    let user = Keypair::random();
    let cookie = cookie_session(&app, "/signup", &user, "/pub/app:rw").await;
    let put = |path: &'static str| {
        let request = request(Method::PUT, path)
            .header("pubky-host", user.public_key().z32())
            .header("cookie", &cookie)
            .body(Body::from("x"))
            .unwrap();
        let app = &app;
        async move { app.client(request).await.status }
    };
    assert_eq!(put("/pub/app.evil/x").await, StatusCode::FORBIDDEN);
    assert_eq!(put("/pub/app/x").await, StatusCode::FORBIDDEN);
    assert_eq!(put("/pub/app").await, StatusCode::CREATED);
}

#[tokio::test]
async fn the_storage_metric_counts_addressing_and_credentials() {
    let app = TestApp::builder().build().await;
    let user = Keypair::random();
    let pk = user.public_key().z32();
    let cookie = cookie_session(&app, "/signup", &user, "/:rw").await;
    let put = request(Method::PUT, &format!("/storage/{pk}/pub/m?pubky-host={pk}"))
        .header("pubky-host", &pk)
        .header("cookie", &cookie)
        .body(Body::from("x"))
        .unwrap();
    assert_eq!(app.client(put).await.status, StatusCode::CREATED);
    let get = call(&app, Method::GET, "/pub/m", &[("pubky-host", &pk)]).await;
    assert_eq!(get.status, StatusCode::OK);
    let (uri, other_key) = (format!("/storage/{pk}/pub/m"), seed(9).public_key().z32());
    let other = call(&app, Method::GET, &uri, &[("pubky-host", &other_key)]).await;
    assert_eq!(other.status, StatusCode::OK);
    let metrics = app.state.metrics.render().unwrap();
    let sample = |labels: &str| {
        metrics
            .lines()
            .find(|line| line.starts_with("storage_request_count_total{") && line.contains(labels))
            .map(|line| line.rsplit(' ').next().unwrap().to_string())
    };
    assert_eq!(
        sample(r#"addressing_mode="path",auth_method="cookie",pubky_host_header="matching",pubky_host_query="true","#).as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(
        sample(r#"addressing_mode="legacy",auth_method="none",pubky_host_header="matching",pubky_host_query="false","#).as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert!(
        sample(r#"pubky_host_header="other""#).is_some(),
        "{metrics}"
    );
    assert!(!metrics.contains(&pk), "no key in a label");
}

#[tokio::test]
async fn a_bearer_never_writes_another_users_files() {
    let app = TestApp::builder().build().await;
    let (a, b) = (Keypair::random(), Keypair::random());
    let client = Keypair::random();
    grant_signup(&app, &a).await;
    grant_signup(&app, &b).await;
    let root_a = Grant::session(&a, &client, &["/:rw"], "roota").jws();
    let bearer_a = bearer(&exchange(&app, &root_a, &client, "roota").await);
    let b_key = b.public_key().z32();
    // Every way a request can name B as the owner, for every write method.
    let forms: Vec<(String, Vec<(&str, String)>)> = vec![
        (format!("/storage/{b_key}/pub/x"), vec![]),
        (
            format!("/storage/{b_key}/pub/x"),
            vec![("pubky-host", a.public_key().z32())],
        ),
        ("/pub/x".into(), vec![("pubky-host", b_key.clone())]),
        ("/pub/x".into(), vec![("host", format!("_pubky.{b_key}"))]),
        (format!("/pub/x?pubky-host={b_key}"), vec![]),
        (
            format!("/pub/x?pubky-host={b_key}"),
            vec![("pubky-host", b_key.clone())],
        ),
        (format!("/storage/{b_key}/pub/../pub/x"), vec![]),
        (format!("/storage/{b_key}/pub/%78"), vec![]),
    ];
    for method in [Method::PUT, Method::DELETE] {
        for (uri, headers) in &forms {
            let mut request = request(method.clone(), uri)
                .header(header::AUTHORIZATION, format!("Bearer {bearer_a}"));
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            let answer = app.client(request.body(Body::from("evil")).unwrap()).await;
            assert_eq!(
                answer.refusal(),
                (403, "Session user does not match target tenant".into()),
                "{method} {uri} {headers:?}"
            );
        }
    }
    let read = call(&app, Method::GET, &format!("/storage/{b_key}/pub/x"), &[]).await;
    assert_eq!(read.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_cookie_session_route_is_not_for_bearers() {
    let app = TestApp::builder().build().await;
    let (user, client) = (Keypair::random(), Keypair::random());
    grant_signup(&app, &user).await;
    let grant = Grant::session(&user, &client, &["/:rw"], "cookieless").jws();
    let token = bearer(&exchange(&app, &grant, &client, "cookieless").await);
    let (tenant, authorization) = (user.public_key().z32(), format!("Bearer {token}"));
    let headers = [
        ("pubky-host", tenant.as_str()),
        ("authorization", &authorization),
    ];
    expect(
        &call(&app, Method::GET, "/session", &headers).await,
        401,
        "Unauthorized",
    );
}

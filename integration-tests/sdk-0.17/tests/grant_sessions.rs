//! Grant sign-up and sign-in of the 0.17.1 SDK (`signer.signup`, then `signer.signin`), in open and in
//! token-required mode: session info, writes and reads in the root session, a forced refresh that
//! rotates the bearer, revalidation, and sign-out after which the session's writes fail.

use homestead_sdk_0_17_tests::{
    Blobs, Metadata, TestNet, TestServer, bearer_call, client_id, put_created, refresh_status,
    server_error, sign_out,
};
use pubky::{Capability, Keypair, Method, PublicKey};

/// `created_at` of `GET /auth/grant/session` with `bearer` (the time of the grant's first exchange).
async fn grant_created_at(server: &TestServer, bearer: &str) -> u64 {
    let (status, body) =
        bearer_call(server, Method::GET, "/auth/grant/session", bearer, &[], "").await;
    assert_eq!(status, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).expect("JSON session info");
    info["created_at"].as_u64().expect("created_at")
}

/// Signs up (and in) a user with the signup grant, then lives through one root grant session.
async fn session_life(net: &TestNet, server: &TestServer, token: Option<String>) {
    let pubky = net.pubky();
    let alice = pubky.signer(Keypair::random());
    let homeserver: PublicKey = server.public_key();
    alice
        .signup(&homeserver, token.as_deref())
        .await
        .expect("grant signup");
    let (status, message) = server_error(alice.signup(&homeserver, None).await);
    assert_eq!((status, message.as_str()), (409, "User already exists"));

    // The grant session and what the server reports about it.
    let session = alice
        .signin(client_id("homestead.test"))
        .await
        .expect("signin");
    assert_eq!(session.info().public_key(), &alice.public_key());
    assert_eq!(session.info().capabilities(), &[Capability::root()]);
    let view = session.as_grant().expect("a grant session");
    let info = view.session_info().await;
    assert_eq!(info.homeserver, homeserver);
    assert_eq!(info.pubky, alice.public_key());
    assert_eq!(info.client_id.as_str(), "homestead.test");
    assert_eq!(info.capabilities, vec![Capability::root()]);
    assert_eq!(info.token_expires_at, info.created_at + 3600);
    assert!(info.grant_expires_at > info.token_expires_at);
    let live = session
        .revalidate()
        .await
        .unwrap()
        .expect("GET /auth/grant/session");
    assert_eq!(live.public_key(), &alice.public_key());

    // Writes and reads inside the root session.
    let storage = session.storage();
    put_created(&storage, "/pub/homestead.test/a.txt", "hello").await;
    let read = storage.get("/pub/homestead.test/a.txt").await.unwrap();
    assert_eq!(read.text().await.unwrap(), "hello");

    // A refresh re-exchanges the same grant: a new bearer, the old one dead, the grant unchanged.
    let first = view.current_bearer().await;
    let created_at = grant_created_at(server, &first).await;
    let second = view.force_refresh().await.expect("refresh");
    assert_ne!(first, second);
    assert_eq!(second.len(), 43);
    let (status, body) =
        bearer_call(server, Method::GET, "/auth/grant/session", &first, &[], "").await;
    assert_eq!(
        (status, body.as_str()),
        (401, "No authenticated session found")
    );
    assert_eq!(grant_created_at(server, &second).await, created_at);
    put_created(&storage, "/pub/homestead.test/c.txt", "after refresh").await;

    // A second sign-in is a second grant; signing out the first leaves it alone.
    let other = alice
        .signin(client_id("homestead.other"))
        .await
        .expect("second signin");
    let bearer = view.current_bearer().await;
    let stale = sign_out(session).await;
    let (status, message) =
        server_error(stale.storage().put("/pub/homestead.test/d.txt", "x").await);
    assert_eq!(
        (status, message.as_str()),
        (401, "No authenticated session found")
    );
    let path = format!(
        "/storage/{}/pub/homestead.test/d.txt",
        alice.public_key().z32()
    );
    let (status, _) = bearer_call(server, Method::PUT, &path, &bearer, &[], "x").await;
    assert_eq!(status, 401);
    let refused = stale.as_grant().expect("grant").force_refresh().await;
    assert_eq!(
        refresh_status(refused),
        401,
        "the signed-out grant is revoked"
    );
    put_created(&other.storage(), "/pub/homestead.test/d.txt", "other").await;
}

async fn open_suite(metadata: Metadata, blobs: Blobs) {
    let net = TestNet::new();
    let server = net
        .serve(net.server().metadata(metadata).blobs(blobs))
        .await;
    session_life(&net, &server, None).await;
}

async fn token_suite(metadata: Metadata, blobs: Blobs) {
    let net = TestNet::new();
    let builder = net.server().metadata(metadata).blobs(blobs);
    let server = net.serve(builder.token_required()).await;
    let homeserver = server.public_key();
    let signer = net.pubky().signer(Keypair::random());
    let (status, message) = server_error(signer.signup(&homeserver, None).await);
    assert_eq!((status, message.as_str()), (400, "Token required"));
    let (status, message) = server_error(signer.signup(&homeserver, Some("AAAA-BBBB-CCCC")).await);
    assert_eq!((status, message.as_str()), (401, "Invalid token"));

    let token = server.signup_token().await;
    session_life(&net, &server, Some(token.clone())).await;
    let (status, message) = server_error(signer.signup(&homeserver, Some(&token)).await);
    assert_eq!((status, message.as_str()), (401, "Token already used"));
}

homestead_sdk_0_17_tests::on_main_backend_pairs!(open_suite: open_signup_on_sqlite_fs, open_signup_on_postgres_s3);
homestead_sdk_0_17_tests::on_main_backend_pairs!(token_suite: token_signup_on_sqlite_fs, token_signup_on_postgres_s3);

//! The deprecated cookie calls of the 0.17.1 SDK still work: `signup_cookie`, `signin_cookie`, storage
//! through a cookie session, export and restore of its secret, sign-out, and the cookie auth flow of a
//! keyless application through the relay.

#![allow(
    deprecated,
    reason = "these tests exercise the SDK's deprecated cookie API on purpose"
)]

use std::time::Duration;

use homestead_sdk_0_17_tests::{
    Blobs, Metadata, Relay, TestNet, put_created, server_error, sign_out,
};
use pubky::{AuthFlowKind, Capabilities, Capability, Keypair, PubkyCookieAuthFlow};

async fn cookie_suite(metadata: Metadata, blobs: Blobs) {
    let net = TestNet::new();
    let server = net
        .serve(net.server().metadata(metadata).blobs(blobs))
        .await;
    let pubky = net.pubky();
    let alice = pubky.signer(Keypair::random());

    // POST /signup: a root cookie session.
    let session = alice
        .signup_cookie(&server.public_key(), None)
        .await
        .expect("cookie signup");
    assert!(session.as_cookie().is_some() && session.as_grant().is_none());
    assert_eq!(session.info().public_key(), &alice.public_key());
    assert_eq!(session.info().capabilities(), &[Capability::root()]);
    let (status, message) = server_error(alice.signup_cookie(&server.public_key(), None).await);
    assert_eq!((status, message.as_str()), (409, "User already exists"));

    // Storage through the cookie.
    let storage = session.storage();
    put_created(&storage, "/pub/legacy.app/a.txt", "hello").await;
    let read = storage.get("/pub/legacy.app/a.txt").await.unwrap();
    assert_eq!(read.text().await.unwrap(), "hello");
    let live = session.revalidate().await.unwrap().expect("GET /session");
    assert_eq!(live.public_key(), &alice.public_key());

    // The exported secret restores a working session in a fresh client.
    let secret = session
        .as_cookie()
        .and_then(|cookie| cookie.export_secret())
        .expect("cookie secret");
    let restored = net.pubky().restore_session(&secret).await.expect("restore");
    put_created(&restored.storage(), "/pub/legacy.app/c.txt", "again").await;

    // POST /session: a second cookie session of the same user.
    let second = alice.signin_cookie().await.expect("cookie signin");
    assert!(second.as_cookie().is_some());
    put_created(&second.storage(), "/pub/legacy.app/d.txt", "two").await;

    // DELETE /session ends that session only.
    let stale = sign_out(session).await;
    let (status, _) = server_error(stale.storage().put("/pub/legacy.app/e.txt", "x").await);
    assert_eq!(status, 401);
    put_created(&second.storage(), "/pub/legacy.app/e.txt", "still").await;
    assert!(second.revalidate().await.unwrap().is_some());

    // The cookie auth flow of a keyless app: the signer sends an AuthToken through the relay.
    let relay = Relay::start().await;
    let requested: Capabilities = "/pub/legacy.app/:rw".parse().unwrap();
    let flow = PubkyCookieAuthFlow::builder(&requested, AuthFlowKind::signin())
        .relay(relay.inbox_url())
        .client(net.sdk_client())
        .start()
        .expect("start the cookie auth flow");
    alice
        .approve_auth(flow.authorization_url())
        .await
        .expect("approve");
    let app = tokio::time::timeout(Duration::from_secs(30), flow.await_approval())
        .await
        .expect("approval within 30 s")
        .expect("cookie session for the app");
    assert_eq!(app.info().public_key(), &alice.public_key());
    assert_eq!(app.info().capabilities(), requested.as_slice());
    put_created(&app.storage(), "/pub/legacy.app/f.txt", "app").await;
    let (status, message) = server_error(app.storage().put("/pub/other.app/f.txt", "no").await);
    assert_eq!(
        (status, message.as_str()),
        (403, "Session does not have write access to path")
    );
}

homestead_sdk_0_17_tests::on_main_backend_pairs!(cookie_suite: cookie_calls_on_sqlite_fs, cookie_calls_on_postgres_s3);

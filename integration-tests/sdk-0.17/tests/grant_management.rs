//! Grant management: a root session lists the grants of its user (`GET /auth/grant/sessions`) and
//! revokes an application's grant (`DELETE /auth/grant/session/{gid}`), after which the application can
//! no longer write; with two instances on one PostgreSQL database, a revocation through one stops the
//! bearer at the other at once, and so does a refresh through one for the bearer it replaces.

use std::time::Duration;

use homestead_sdk_0_17_tests::{
    Blobs, Metadata, Relay, TestNet, bearer_call, client_id, keyless_app, put_created,
    refresh_status, server_error,
};
use pubky::{GrantManager, Method};

const APP: (&str, &str, &str) = ("chat.app", "/pub/chat.app/:rw", "/pub/chat.app/:rw");

async fn management_suite(metadata: Metadata, blobs: Blobs) {
    let (net, _server, relay, ring) = TestNet::with_ring(metadata, blobs).await;
    let root = ring.signin(client_id("ring.app")).await.expect("signin");
    let app = keyless_app(&net, &relay, &ring, APP).await;
    put_created(&app.storage(), "/pub/chat.app/a", "1").await;

    // The list holds both grants, the app's with its one capability as a string.
    let manager = GrantManager::new(&root);
    let app_grant = app.as_grant().expect("grant").grant_id().await;
    let root_grant = root.as_grant().expect("grant").grant_id().await;
    let grants = manager.list().await.expect("list grants");
    assert_eq!(grants.len(), 2, "{grants:?}");
    let listed = grants
        .iter()
        .find(|g| g.grant_id == app_grant)
        .expect("the app's grant is listed");
    assert_eq!(listed.client_id, "chat.app");
    assert_eq!(listed.capabilities, "/pub/chat.app/:rw");
    assert_eq!(listed.expires_at - listed.issued_at, 2 * 365 * 24 * 3600);
    assert!(grants.iter().any(|g| g.grant_id == root_grant));

    // Only a root capability manages grants; a root cookie session may too.
    let (status, message) = server_error(GrantManager::new(&app).list().await);
    assert_eq!(
        (status, message.as_str()),
        (403, "Root capability required")
    );
    #[allow(
        deprecated,
        reason = "the deprecated cookie session manages grants too"
    )]
    let cookie = ring.signin_cookie().await.expect("cookie signin");
    let by_cookie = GrantManager::new(&cookie)
        .list()
        .await
        .expect("list by cookie");
    assert_eq!(by_cookie.len(), 2);

    // Revocation: gone from the list, the app's writes and refreshes refused, the root unaffected.
    manager.revoke(&app_grant).await.expect("revoke");
    let grants = manager.list().await.expect("list grants");
    assert!(grants.iter().all(|g| g.grant_id != app_grant), "{grants:?}");
    let (status, message) = server_error(app.storage().put("/pub/chat.app/b", "2").await);
    assert_eq!(
        (status, message.as_str()),
        (401, "No authenticated session found")
    );
    assert!(app.revalidate().await.unwrap().is_none());
    let refused = app.as_grant().expect("grant").force_refresh().await;
    assert_eq!(refresh_status(refused), 401);
    manager
        .revoke(&app_grant)
        .await
        .expect("revoking again is fine");
    put_created(&root.storage(), "/pub/chat.app/c", "3").await;
}

homestead_sdk_0_17_tests::on_main_backend_pairs!(management_suite: grant_management_on_sqlite_fs, grant_management_on_postgres_s3);

/// Two instances of one deployment (PostgreSQL and S3 shared): the app's bearer works at both until the
/// root session revokes its grant through the first, and the second refuses it on the next request.
async fn revocation_across_instances() {
    let net = TestNet::new();
    let first_builder = net.server().metadata(Metadata::Postgres).blobs(Blobs::S3);
    let first = net.serve(first_builder).await;
    let second = net.server().sharing(&first).start().await;
    let relay = Relay::start().await;
    let ring = net.signed_up(&first).await;
    let root = ring.signin(client_id("ring.app")).await.expect("signin");
    let app = keyless_app(&net, &relay, &ring, APP).await;
    let view = app.as_grant().expect("grant");
    let bearer = view.current_bearer().await;
    let path = format!("/storage/{}/pub/chat.app/shared", ring.public_key().z32());

    let (status, body) = bearer_call(&second, Method::PUT, &path, &bearer, &[], "via two").await;
    assert_eq!(status, 201, "{body}");
    let read = bearer_call(&first, Method::GET, &path, &bearer, &[], "").await;
    assert_eq!(read, (200, "via two".to_string()));

    // A refresh (the grant exchanged again, with a proof of possession) kills the old bearer on the
    // other instance at once; the new one works there.
    let refreshed = view.force_refresh().await.expect("refresh");
    assert_ne!(refreshed, bearer);
    for server in [&first, &second] {
        let (status, _) =
            bearer_call(server, Method::GET, "/auth/grant/session", &bearer, &[], "").await;
        assert_eq!(status, 401, "the old bearer on {}", server.icann_url());
        let (status, body) =
            bearer_call(server, Method::PUT, &path, &refreshed, &[], "refreshed").await;
        assert_eq!(
            status,
            201,
            "the new bearer on {}: {body}",
            server.icann_url()
        );
    }
    let bearer = refreshed;

    GrantManager::new(&root)
        .revoke(&view.grant_id().await)
        .await
        .expect("revoke through the first instance");
    let (status, body) = bearer_call(&second, Method::PUT, &path, &bearer, &[], "late").await;
    assert_eq!(
        (status, body.as_str()),
        (401, "No authenticated session found")
    );
    let (status, _) = bearer_call(
        &second,
        Method::GET,
        "/auth/grant/session",
        &bearer,
        &[],
        "",
    )
    .await;
    assert_eq!(status, 401);
    let log = second.log();
    assert!(second.stop().await.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_reaches_second_instance_on_postgres_s3() {
    tokio::time::timeout(Duration::from_secs(240), revocation_across_instances())
        .await
        .expect("within 240 s");
}

//! A keyless application (`PubkyGrantAuthFlow`) asks for capabilities through the HTTP relay; the
//! user's signer ("Ring") approves a narrower set; the application exchanges the delivered grant and
//! may write inside its scope and nowhere else.

use homestead_sdk_0_17_tests::{Blobs, Metadata, TestNet, keyless_app, put_created, server_error};
use pubky::Capabilities;

async fn keyless_suite(metadata: Metadata, blobs: Blobs) {
    let (net, server, relay, ring) = TestNet::with_ring(metadata, blobs).await;

    let scope = "/pub/chat.app/:rw";
    let app = keyless_app(
        &net,
        &relay,
        &ring,
        ("chat.app", "/pub/chat.app/:rw,/pub/photos/:r", scope),
    )
    .await;
    let approved: Capabilities = scope.parse().unwrap();
    assert_eq!(app.info().public_key(), &ring.public_key());
    assert_eq!(app.info().capabilities(), approved.as_slice());
    let grant = app
        .as_grant()
        .expect("a grant session")
        .session_info()
        .await;
    assert_eq!(grant.client_id.as_str(), "chat.app");
    assert_eq!(grant.capabilities, approved.to_vec());
    assert_eq!(grant.homeserver, server.public_key());

    // Inside the scope.
    let storage = app.storage();
    put_created(&storage, "/pub/chat.app/room/1.json", "{}").await;
    let read = storage.get("/pub/chat.app/room/1.json").await.unwrap();
    assert_eq!(read.text().await.unwrap(), "{}");
    let gone = storage.delete("/pub/chat.app/room/1.json").await.unwrap();
    assert_eq!(gone.status(), 204);

    // Outside it: what was requested but not approved, a neighbour, the scope's parent.
    for path in [
        "/pub/photos/cat.jpg",
        "/pub/chat.app.evil/x",
        "/pub/chat.app",
    ] {
        let (status, message) = server_error(storage.put(path, "no").await);
        assert_eq!(
            (status, message.as_str()),
            (403, "Session does not have write access to path"),
            "{path}"
        );
    }
}

homestead_sdk_0_17_tests::on_main_backend_pairs!(keyless_suite: keyless_app_on_sqlite_fs, keyless_app_on_postgres_s3);

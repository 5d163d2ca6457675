//! The server is reachable the way real clients reach it, on every pair of backends: the SDK finds it
//! through its PKARR record on the local DHT and talks PubkyTLS; browsers' path, the ICANN listener,
//! answers plain HTTP; SIGTERM stops it cleanly.

use std::time::Duration;

use homestead_integration_tests::{Blobs, Metadata, TestNet, TestServer, eventually};
use pubky::Method;

async fn icann_root_answers(server: &TestServer) {
    let response = reqwest::get(format!("{}/", server.icann_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(content_type, "text/plain; charset=utf-8");
    assert_eq!(response.text().await.unwrap(), "Pubky Homeserver");
}

async fn sdk_reaches_server_over_pubky_tls(net: &TestNet, server: &TestServer) {
    let key = server.public_key();
    let client = net.sdk_client();
    let packet = net.wait_until_resolvable(server).await;
    // HTTPS to itself, HTTPS to the ICANN domain, and the A record.
    assert_eq!(packet.all_resource_records().count(), 3);

    let url = format!("https://{}/", key.z32());
    let body = eventually("GET over PubkyTLS", Duration::from_secs(30), || {
        let request = client.request(Method::GET, &url);
        async move {
            let response = request.send().await?;
            assert_eq!(response.status(), 200);
            response.text().await
        }
    })
    .await;
    assert_eq!(body, "Pubky Homeserver");
}

async fn smoke(metadata: Metadata, blobs: Blobs) {
    let net = TestNet::new();
    let server = net.server().metadata(metadata).blobs(blobs).start().await;
    icann_root_answers(&server).await;
    sdk_reaches_server_over_pubky_tls(&net, &server).await;
    let admin = reqwest::get(server.admin_url().unwrap()).await.unwrap();
    assert_eq!(admin.text().await.unwrap(), "Homeserver - Admin Endpoint");
    let log = server.log();
    let status = server.stop().await;
    assert!(status.success(), "exit status {status:?}\n{log}");
}

macro_rules! smoke_tests {
    ($($name:ident: $metadata:ident + $blobs:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
            smoke(Metadata::$metadata, Blobs::$blobs).await;
        }
    )*};
}

smoke_tests! {
    sqlite_fs: Sqlite + Fs;
    sqlite_memory: Sqlite + Memory;
    sqlite_s3: Sqlite + S3;
    postgres_fs: Postgres + Fs;
    postgres_memory: Postgres + Memory;
    postgres_s3: Postgres + S3;
}

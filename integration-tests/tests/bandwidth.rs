//! Bandwidth limits: uploads by a user and downloads without a session are slowed to the configured rates
//! (never refused), and a user's own setting from the admin API overrides the default.

use std::time::{Duration, Instant};

use homestead_integration_tests::{Account, TestNet};

const BODY: usize = 300 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn bodies_are_slowed_to_the_configured_rates() {
    let net = TestNet::new();
    let server = net
        .server()
        .config("[default_quotas]\nrate_write = \"100kb/s\"\nunauthenticated_ip_rate_read = \"100kb/s\"")
        .start()
        .await;
    let user = Account::signup(&server).await;
    let client = reqwest::Client::new();
    let url = format!("{}/pub/big", server.icann_url());
    let put = || {
        client
            .put(&url)
            .header("pubky-host", &user.z32)
            .header("cookie", &user.cookie)
            .body(vec![7u8; BODY])
            .send()
    };

    // 300 KiB at 100 KiB/s with a 100 KiB bucket: about two seconds.
    let started = Instant::now();
    assert_eq!(put().await.unwrap().status(), 201);
    let upload = started.elapsed();
    assert!(
        upload >= Duration::from_millis(1500),
        "upload took {upload:?}"
    );

    let started = Instant::now();
    let body = client
        .get(&url)
        .header("pubky-host", &user.z32)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let download = started.elapsed();
    assert_eq!(body.len(), BODY);
    assert!(
        download >= Duration::from_millis(1500),
        "anonymous download took {download:?}"
    );

    // The user's own setting wins over the default.
    let patch = client
        .patch(format!(
            "{}/users/{}/quota",
            server.admin_url().unwrap(),
            user.z32
        ))
        .header(
            "x-admin-password",
            homestead_integration_tests::ADMIN_PASSWORD,
        )
        .header("content-type", "application/json")
        .body(r#"{"rate_write": "unlimited"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 200);
    let started = Instant::now();
    assert_eq!(put().await.unwrap().status(), 201);
    let unlimited = started.elapsed();
    assert!(
        unlimited < Duration::from_millis(1000),
        "unlimited upload took {unlimited:?}"
    );
    assert!(server.stop().await.success());
}

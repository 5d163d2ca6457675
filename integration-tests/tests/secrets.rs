//! Secrets stay out of the logs: with every target at `trace`, a sign-up, a sign-in, session reads and
//! writes, and signup tokens in paths and queries leave neither a session secret, nor a token, nor the
//! server's secret key in the server's log.

use homestead_integration_tests::{Account, TestNet};

#[tokio::test(flavor = "multi_thread")]
async fn session_secrets_and_the_server_key_are_never_logged() {
    let net = TestNet::new();
    let server = net
        .server()
        .config("[logging]\nlevel = \"trace\"\nmodule_levels = []")
        .start()
        .await;
    let user = Account::signup(&server).await;
    let client = reqwest::Client::new();
    let base = server.icann_url();
    let session = client
        .get(format!("{base}/session"))
        .header("pubky-host", &user.z32)
        .header("cookie", &user.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), 200);
    let put = client
        .put(format!("{base}/pub/file"))
        .header("pubky-host", &user.z32)
        .header("cookie", &user.cookie)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let signout = client
        .delete(format!("{base}/session"))
        .header("pubky-host", &user.z32)
        .header("cookie", &user.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(signout.status(), 200);
    // A signup token in a path and in a query (a failed sign-up leaves it usable).
    let token = server.signup_token().await;
    let status = client
        .get(format!("{base}/signup_tokens/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 400, "open sign-up: tokens not required");
    let failed = client
        .post(format!("{base}/signup?signup_token={token}"))
        .body("not an auth token")
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 400);

    let secret = user.cookie.split_once('=').unwrap().1.to_string();
    let server_key = std::fs::read_to_string(server.data_dir().join("secret")).unwrap();
    let server_key = server_key.trim().to_string();
    assert_eq!(server_key.len(), 64, "the key file holds hex");
    let (status, log) = server.stop_with_log().await;
    assert!(status.success(), "{log}");
    assert!(log.lines().count() > 50, "trace logging is on:\n{log}");
    assert!(log.contains("shutting down"), "the log is complete:\n{log}");
    assert!(!log.contains(&secret), "a session secret was logged");
    assert!(!log.contains(&token), "a signup token was logged:\n{log}");
    assert!(
        !log.to_lowercase().contains(&server_key.to_lowercase()),
        "the server key was logged"
    );
}

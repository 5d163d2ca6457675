//! `homestead import-reference` from the real pubky-homeserver 0.17.1 (the binary at
//! `TEST_REFERENCE_0_17_BIN`, which scripts/test installs): the reference runs as a process on PostgreSQL
//! and its file-system storage, a user signs up and in through grants with this SDK and writes public and
//! private files, the reference is stopped, and Homestead imports it into sqlite+fs. Homestead then serves
//! the same files under the same ETags and the same event feed, and the user's SDK session goes on as if
//! nothing happened: the imported bearer writes and reads private data, and a refresh re-exchanges the
//! imported grant with the same proof-of-possession key.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use homestead_sdk_0_17_tests::{
    Reference, ReferenceOptions, TestNet, bearer_call, binary, client_id, put_created,
    reference_binary,
};
use pubky::{Keypair, Method};

/// Status, ETag and body of an anonymous GET of `user`'s `path`.
async fn public_read(base: &str, user: &str, path: &str) -> (u16, String, String) {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header("pubky-host", user)
        .send()
        .await
        .expect("request");
    let etag = response
        .headers()
        .get("etag")
        .map_or(String::new(), |v| v.to_str().unwrap().to_string());
    (
        response.status().as_u16(),
        etag,
        response.text().await.unwrap(),
    )
}

async fn feed(base: &str) -> String {
    let response = reqwest::get(format!("{base}/events/?limit=1000"))
        .await
        .expect("events");
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

fn import(target: &Path, reference: &Reference) -> std::process::Output {
    Command::new(binary())
        .arg("--data-dir")
        .arg(target)
        .arg("import-reference")
        .arg("--from")
        .arg(reference.dir())
        .args(["--from-database-url", reference.database().url().as_str()])
        .output()
        .expect("run homestead import-reference")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_0_17_1_reference_moves_with_its_grant_sessions() {
    let Some(binary) = reference_binary("TEST_REFERENCE_0_17_BIN") else {
        return;
    };
    let run = async {
        let net = TestNet::new();
        let keypair = Keypair::random();
        let options = ReferenceOptions {
            secret: Some(keypair.secret_key()),
            ..ReferenceOptions::default()
        };
        let mut reference = Reference::start(&binary, net.bootstrap(), options).await;
        let key = keypair.public_key();
        net.wait_until_key_resolvable(&key).await;

        // Alice signs up and in through grants; her session holds a bearer and a PoP key.
        let alice = net.pubky().signer(Keypair::random());
        alice
            .signup(&key, None)
            .await
            .expect("grant signup on the reference");
        let session = alice
            .signin(client_id("import.test"))
            .await
            .expect("grant signin on the reference");
        let user = alice.public_key().z32();
        let storage = session.storage();
        put_created(&storage, "/pub/app/a.txt", "hello").await;
        put_created(&storage, "/pub/app/dir/b.json", "{\"b\":1}").await;
        put_created(&storage, "/pub/app/a.txt", "hello again").await;
        put_created(&storage, "/priv/app/secret.txt", "mine").await;
        let bearer = session
            .as_grant()
            .expect("a grant session")
            .current_bearer()
            .await;
        let paths = ["/pub/app/a.txt", "/pub/app/dir/b.json"];
        let mut served = Vec::new();
        for path in paths {
            let answer = public_read(reference.url(), &user, path).await;
            assert_eq!(answer.0, 200, "{path} on the reference");
            served.push(answer);
        }
        let events = feed(reference.url()).await;
        reference.stop();

        let server = net
            .server()
            .start_after(|dir| {
                let out = import(dir, &reference);
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success(),
                    "stdout {stdout}\nstderr {}\nreference log {}",
                    String::from_utf8_lossy(&out.stderr),
                    reference.log()
                );
                for part in [
                    "users 1",
                    "grants 1",
                    "bearer sessions 1",
                    "files 3",
                    "mismatches 0",
                ] {
                    assert!(stdout.contains(part), "{part:?} missing from {stdout}");
                }
            })
            .await;
        assert_eq!(server.public_key(), key, "the reference's key");
        for (path, theirs) in paths.iter().zip(&served) {
            let mine = public_read(&server.icann_url(), &user, path).await;
            assert_eq!(&mine, theirs, "{path}");
        }
        assert_eq!(feed(&server.icann_url()).await, events, "the event feed");

        // The reference's bearer is Homestead's now: it reads Alice's private file.
        let secret_path = format!("/storage/{user}/priv/app/secret.txt");
        let (status, body) =
            bearer_call(&server, Method::GET, &secret_path, &bearer, &[], "").await;
        assert_eq!(
            (status, body.as_str()),
            (200, "mine"),
            "the imported bearer"
        );
        // The app keeps its grant: restored on a fresh client (the old one caches the reference's
        // record), the SDK re-exchanges the imported grant with its PoP key and goes on through the
        // server record, which now leads to Homestead.
        net.wait_until_resolvable(&server).await;
        let grant = session
            .as_grant()
            .expect("a grant session")
            .export_local_secret()
            .await
            .expect("a local PoP key");
        let restored = net
            .pubky()
            .restore_session(&grant)
            .await
            .expect("the imported grant restored on Homestead");
        let storage = restored.storage();
        let private = storage
            .get("/priv/app/secret.txt")
            .await
            .expect("private read")
            .text()
            .await
            .unwrap();
        assert_eq!(private, "mine");
        put_created(&storage, "/pub/app/after.txt", "after the switch").await;
        let view = restored.as_grant().expect("a grant session");
        let before = view.current_bearer().await;
        let refreshed = view
            .force_refresh()
            .await
            .expect("a refresh of the imported grant");
        assert_ne!(refreshed, before);
        put_created(&storage, "/pub/app/refreshed.txt", "refreshed").await;
        // New events follow the imported ones, whose ids and order stayed.
        let lines = |feed: &str| -> Vec<String> {
            feed.lines()
                .filter(|l| !l.starts_with("cursor:"))
                .map(str::to_string)
                .collect()
        };
        let (imported, now) = (lines(&events), lines(&feed(&server.icann_url()).await));
        assert_eq!(now[..imported.len()], imported[..]);
        let new: Vec<&str> = now[imported.len()..].iter().map(String::as_str).collect();
        assert_eq!(
            new,
            [
                format!("PUT pubky://{user}/pub/app/after.txt"),
                format!("PUT pubky://{user}/pub/app/refreshed.txt"),
            ]
        );
    };
    tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("within 240 s");
}

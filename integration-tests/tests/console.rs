//! The operator console in a real browser: headless Chromium (scripts/test installs it) driven over the
//! DevTools protocol signs in, mints a token that the official SDK signs a user up with, finds that
//! user, sets their quota and sees a PUT over it refused, follows their events live, disables them and
//! signs out; a form on another origin cannot act. Screenshots of every page land in
//! `<target dir>/screenshots/console/` (named in the README) for a reviewer to look at.

use std::path::PathBuf;
use std::time::Duration;

use homestead_integration_tests::{
    ADMIN_PASSWORD, Blobs, Browser, CuttableProxy, Metadata, TestNet, refusal, socket_of,
};
use pubky::{Keypair, PubkySession};

/// `<target dir>/screenshots/console/`: the test binary is `<target dir>/<profile>/deps/console-*`.
fn screenshots() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe.ancestors().nth(3).expect("target directory");
    target.join("screenshots").join("console")
}

/// Whether an element matching `selector` is shown (it and none of its ancestors hidden).
fn shown(selector: &str) -> String {
    format!(
        "(() => {{ const el = document.querySelector({selector:?}); return !!el && el.offsetParent !== null; }})()"
    )
}

/// Whether the element matching `selector` holds `text` (as written, not as styled).
fn contains(selector: &str, text: &str) -> String {
    format!(
        "(document.querySelector({selector:?}) || {{textContent: ''}}).textContent.includes({text:?})"
    )
}

async fn console_story(metadata: Metadata, blobs: Blobs) {
    let net = TestNet::new();
    let server = net
        .server()
        .metadata(metadata)
        .blobs(blobs)
        .token_required()
        .start()
        .await;
    net.wait_until_resolvable(&server).await;
    let admin = server.admin_url().expect("admin listener");
    let console = format!("{admin}/console/");
    let shots = screenshots().join(format!("{metadata:?}-{blobs:?}").to_lowercase());
    let shot = |browser: &mut Browser, name: &str| browser.screenshot(&shots.join(name));
    let mut browser = Browser::launch(1280, 860);

    // Sign in: a wrong password is refused in the form, the right one opens the overview.
    browser.navigate(&console);
    browser.wait_for("the sign-in form", &shown("#password"));
    shot(&mut browser, "01-sign-in.png");
    browser.type_into("#password", "guess");
    browser.press("Enter");
    browser.wait_for(
        "the wrong password refused",
        &contains("#sign-in-error", "Wrong password"),
    );
    assert!(!browser.eval(&shown("#nav")).as_bool().unwrap());
    shot(&mut browser, "02-wrong-password.png");
    browser.type_into("#password", ADMIN_PASSWORD);
    browser.press("Enter");
    browser.wait_for("the overview", &contains("#overview-cards", "Uptime"));
    browser.wait_for("the rate chart", &shown("#rate-chart svg"));
    let cookie = browser.eval("document.cookie");
    assert_eq!(cookie, "", "the session cookie is HttpOnly");

    // The keyboard reaches everything: after the skip link come the page links, and Enter follows one.
    browser.eval("document.querySelector('.skip').focus()");
    let mut order = Vec::new();
    for _ in 0..4 {
        browser.press("Tab");
        order.push(browser.eval("document.activeElement.textContent.trim()"));
    }
    assert_eq!(order, ["Overview", "Users", "Signup tokens", "Live events"]);
    browser.press("Enter");
    browser.wait_for("the events page by keyboard", &shown("#events-form"));

    // Mint a token in the page; the SDK signs a user up with it.
    browser.click("nav a[href='#tokens']");
    browser.wait_for("the tokens page", &shown("#mint-form"));
    browser.click("#mint-form button[type=submit]");
    browser.wait_for("a minted token", &shown("#minted code"));
    let token = browser.text("#minted code");
    assert_eq!(token.len(), 14, "{token}");
    browser.wait_for("the token listed", &contains("#tokens-table", &token));
    shot(&mut browser, "03-tokens.png");
    let keypair = Keypair::random();
    let user = keypair.public_key().z32();
    let session: PubkySession = net
        .pubky()
        .signer(keypair)
        .signup(&server.public_key(), Some(&token))
        .await
        .expect("sign-up with the minted token");
    browser.click("#tokens-form button[type=submit]");
    browser.wait_for("who used the token", &contains("#tokens-table", &user));

    // The user appears in the list, found by a key prefix too.
    browser.click("nav a[href='#users']");
    let row = format!("tr[data-key='{user}']");
    browser.wait_for("the new user", &shown(&row));
    browser.type_into("#users-prefix", &user[..8]);
    browser.press("Enter");
    browser.wait_for("the search result", &contains("#users-note", "1 user(s)"));
    assert!(browser.eval(&shown(&row)).as_bool().unwrap());

    // Quota: a bad value gets the server's reason in the form; 1 MB is saved and enforced.
    browser.click(&format!("{row} .actions button:nth-child(2)"));
    browser.wait_for("the quota editor", &shown("tr.editor form"));
    browser.type_into("tr.editor input[name=storage_quota_mb]", "lots");
    browser.press("Enter");
    browser.wait_for(
        "the server's validation message",
        &contains(
            "tr.editor .error",
            "storage_quota_mb: expected \"unlimited\" or a non-negative integer",
        ),
    );
    shot(&mut browser, "04-users-quota-error.png");
    browser.type_into("tr.editor input[name=storage_quota_mb]", "1");
    browser.press("Enter");
    browser.wait_for(
        "the quota saved",
        &contains("tr.editor .status", "Saved: storage 1 MB."),
    );
    shot(&mut browser, "05-users-quota-saved.png");
    let over = session
        .storage()
        .put("/pub/big.bin", vec![7u8; 1_048_576])
        .await;
    assert_eq!(
        refusal(over),
        (507, "Disk space quota exceeded".to_string())
    );

    // Live events: a write shows up while following; none while paused, then they arrive on resume.
    browser.click("nav a[href='#events']");
    browser.wait_for(
        "the events page",
        &contains("#events-status", "Live: every user."),
    );
    browser.type_into("#events-user", &user);
    browser.press("Enter");
    let following = format!("Live: {}…{}.", &user[..10], &user[user.len() - 4..]);
    browser.wait_for(
        "the filtered live stream",
        &contains("#events-status", &following),
    );
    // Another user's write, made first, must not show in a tail filtered to `user`.
    let (status, other_token) = server
        .admin(reqwest::Method::GET, "/generate_signup_token")
        .await;
    assert_eq!(status, 200, "{other_token}");
    let other: PubkySession = net
        .pubky()
        .signer(Keypair::random())
        .signup(&server.public_key(), Some(other_token.trim()))
        .await
        .expect("sign-up of another user");
    other
        .storage()
        .put("/pub/other-user.txt", "x")
        .await
        .expect("put");
    session
        .storage()
        .put("/pub/hello.txt", "hello")
        .await
        .expect("put");
    browser.wait_for("the event", &contains("#events-list", "/pub/hello.txt"));
    let list = browser.text("#events-list");
    assert!(
        !list.contains("other-user"),
        "another user's event in a filtered tail:\n{list}"
    );
    shot(&mut browser, "06-events.png");
    browser.click("#events-pause");
    browser.wait_for("paused", &contains("#events-status", "Paused"));
    session
        .storage()
        .put("/pub/while-paused.txt", "x")
        .await
        .expect("put");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let list = browser.text("#events-list");
    assert!(
        !list.contains("while-paused"),
        "an event shown while paused:\n{list}"
    );
    browser.click("#events-pause");
    browser.wait_for(
        "the paused event on resume",
        &contains("#events-list", "/pub/while-paused.txt"),
    );

    // Disable: the row says so and the user can no longer write.
    browser.click("nav a[href='#users']");
    browser.wait_for("the user row", &shown(&row));
    browser.click(&format!("{row} .actions button:first-child"));
    browser.wait_for("the user disabled", &contains(&row, "Disabled"));
    shot(&mut browser, "07-users-disabled.png");
    let refused = session.storage().put("/pub/after.txt", "x").await;
    assert_eq!(refusal(refused), (403, "User is disabled".to_string()));

    // The overview counts them, at desktop and phone widths.
    browser.click("nav a[href='#overview']");
    browser.wait_for("the counts", &contains("#overview-cards", "1 disabled"));
    browser.wait_for("the storage chart", &shown("#storage-chart svg"));
    shot(&mut browser, "08-overview-1280.png");
    browser.resize(390, 844);
    browser.navigate(&format!("{console}#overview"));
    browser.wait_for("the counts", &contains("#overview-cards", "1 disabled"));
    browser.wait_for("the storage chart", &shown("#storage-chart svg"));
    shot(&mut browser, "09-overview-390.png");
    browser.navigate(&format!("{console}#users"));
    browser.wait_for("the user row", &shown(&row));
    shot(&mut browser, "10-users-390.png");
    browser.resize(1280, 860);

    // A form on another origin (here a data: page) cannot act, even as a top-level form post.
    let form = format!(
        "data:text/html,<form method=post action='{admin}/console/api/users/{user}/enable'>\
         <button>go</button></form><script>document.forms[0].submit()</script>"
    );
    browser.navigate(&form);
    browser.wait_for(
        "the cross-site refusal",
        &contains("body", "Cross-site request refused"),
    );
    let (status, body) = server
        .admin(reqwest::Method::GET, &format!("/users/{user}"))
        .await;
    assert_eq!(status, 200);
    assert!(body.contains("\"disabled\":true"), "{body}");
    // Nor can a client that holds a session cookie but not its CSRF token.
    let http = reqwest::Client::new();
    let signed_in = http
        .post(format!("{admin}/console/api/sign-in"))
        .header("content-type", "application/json")
        .body(format!("{{\"password\":{ADMIN_PASSWORD:?}}}"))
        .send()
        .await
        .expect("sign-in request");
    assert_eq!(signed_in.status(), 200);
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let forged = http
        .post(format!("{admin}/console/api/users/{user}/enable"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("request");
    assert_eq!(forged.status(), 403);
    assert_eq!(
        forged.text().await.unwrap(),
        "Missing or wrong CSRF token: reload the console"
    );

    // Sign out: back to the sign-in form, and a reload stays signed out.
    browser.navigate(&console);
    browser.wait_for("the overview", &contains("#overview-cards", "Uptime"));
    browser.click("#sign-out");
    browser.wait_for("signed out", &contains("#sign-in-error", "Signed out."));
    browser.navigate(&console);
    browser.wait_for("the sign-in form", &shown("#password"));
    assert!(!browser.eval(&shown("#nav")).as_bool().unwrap());
    shot(&mut browser, "11-signed-out.png");

    // The header-based admin API is unchanged beside the console.
    let (status, info) = server.admin(reqwest::Method::GET, "/info").await;
    assert_eq!(status, 200);
    assert!(info.contains("\"num_disabled_users\":1"), "{info}");
    drop(browser);
    let log = server.log();
    assert!(server.stop().await.success(), "{log}");
}

/// Signs in on a fresh page of `console`.
fn signed_in(console: &str) -> Browser {
    let mut browser = Browser::launch(1280, 860);
    browser.navigate(console);
    browser.wait_for("the sign-in form", &shown("#password"));
    browser.type_into("#password", ADMIN_PASSWORD);
    browser.press("Enter");
    browser.wait_for("the overview", &contains("#overview-cards", "Uptime"));
    browser
}

/// The overview follows the blob store's health: cut off, it says so within a few probes, and again
/// once it answers.
#[tokio::test(flavor = "multi_thread")]
async fn the_overview_shows_a_blob_store_outage() {
    let endpoint = std::env::var("TEST_S3_ENDPOINT").expect("TEST_S3_ENDPOINT: run scripts/test");
    let proxy = CuttableProxy::start(socket_of(&endpoint)).await;
    let net = TestNet::new();
    let server = net
        .server()
        .blobs(Blobs::S3)
        .s3_endpoint(&format!("http://{}", proxy.addr()))
        .start()
        .await;
    let admin = server.admin_url().expect("admin listener");
    let mut browser = signed_in(&format!("{admin}/console/"));
    browser.wait_for(
        "the blob store up",
        &contains("#overview-cards", "Blob store: up"),
    );
    proxy.cut();
    browser.wait_for(
        "the blob store down",
        &contains("#overview-cards", "Blob store: down"),
    );
    browser.screenshot(
        &screenshots()
            .join("outage")
            .join("overview-blob-store-down.png"),
    );
    proxy.restore().await;
    browser.wait_for(
        "the blob store up again",
        &contains("#overview-cards", "Blob store: up"),
    );
    drop(browser);
    let log = server.log();
    assert!(server.stop().await.success(), "{log}");
}

homestead_integration_tests::on_main_backend_pairs!(console_story: console_on_sqlite_fs, console_on_postgres_s3);

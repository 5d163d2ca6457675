//! The operator console in a real browser: headless Chromium (scripts/test installs it) driven over the
//! DevTools protocol signs in, mints tokens (one that the official SDK signs a user up with, three with
//! a quota), filters them, finds that user, sets their quota by keyboard and sees a PUT over it refused,
//! follows their events live, sorts the users by usage, disables and enables them, checks the
//! overview's cards and charts and signs out; a form on another origin cannot act. Every page must fit
//! 390 pixels without scrolling sideways, every request must go to the admin listener and an uncaught
//! error in the page fails the test. Screenshots of every page at 1280 and 390 pixels land in
//! `<target dir>/screenshots/console/` (named in the README) for a reviewer to look at.

use std::path::{Path, PathBuf};
use std::time::Duration;

use homestead_integration_tests::{
    ADMIN_PASSWORD, Blobs, Browser, CuttableProxy, Metadata, TestNet, refusal, socket_of,
};
use pubky::{Keypair, PubkySession};
use serde_json::json;

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

/// Whether the focused element is the one matching `selector`.
fn focused(selector: &str) -> String {
    format!("document.activeElement === document.querySelector({selector:?})")
}

/// Presses Tab and asserts that the focus lands on `selector`.
fn tab_to(browser: &mut Browser, selector: &str) {
    browser.press("Tab");
    let there = browser.eval(&focused(selector)).as_bool().unwrap();
    assert!(there, "Tab should reach {selector}");
}

/// Whether the charts shown were drawn for the viewport's width: at most 390 pixels wide on a phone,
/// wider on a desktop.
fn charts_fit(narrow: bool) -> String {
    let test = if narrow { "<= 390" } else { "> 390" };
    format!(
        "[...document.querySelectorAll('.chart svg')].every((svg) => \
         svg.getBoundingClientRect().width === 0 || svg.viewBox.baseVal.width {test})"
    )
}

/// Screenshots of the page at 1280 and 390 pixels wide (`<name>-1280.png`, `<name>-390.png`), with
/// the assertion at each width that nothing overflows sideways; the browser is left at 1280.
fn at_both_widths(browser: &mut Browser, dir: &Path, name: &str) {
    browser.wait_for("the desktop layout", &charts_fit(false));
    browser.assert_no_sideways_overflow(&format!("{name} at 1280"));
    browser.screenshot(&dir.join(format!("{name}-1280.png")));
    browser.resize(390, 844);
    browser.wait_for(
        "the phone layout",
        &format!("screen.width === 390 && {}", charts_fit(true)),
    );
    browser.assert_no_sideways_overflow(&format!("{name} at 390"));
    browser.screenshot(&dir.join(format!("{name}-390.png")));
    browser.resize(1280, 860);
    browser.wait_for(
        "the desktop layout again",
        &format!("window.innerWidth === 1280 && {}", charts_fit(false)),
    );
}

/// Chooses `value` in the `<select>` matching `selector`.
fn choose(browser: &mut Browser, selector: &str, value: &str) {
    let chosen = browser.eval(&format!(
        "(() => {{ const el = document.querySelector({selector:?}); el.value = {value:?}; \
         return el.value; }})()"
    ));
    assert_eq!(chosen, json!(value), "{selector}");
}

/// The keys of the user rows, in order, as a JSON array.
const USER_ROWS: &str = "JSON.stringify([...document.querySelectorAll('#users-table tbody tr[data-key]')].map((tr) => tr.dataset.key))";

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
    // Every request is recorded, and an uncaught error in the page fails the test.
    browser.watch();

    // Sign in: a wrong password is refused in the form, the right one opens the overview.
    browser.navigate(&console);
    browser.wait_for("the sign-in form", &shown("#password"));
    at_both_widths(&mut browser, &shots, "01-sign-in");
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
    browser.wait_for(
        "the rate chart",
        "!!document.querySelector('#rate-chart polyline')",
    );
    let cookie = browser.eval("document.cookie");
    assert_eq!(cookie, "", "the session cookie is HttpOnly");

    // A failure's reason is one line: JSON without an error string, or no body, gives a sentence
    // with the status instead of the raw body.
    let reasons = browser.eval(
        r#"[oneLine('{"error":{"code":7}}', 502, "Bad Gateway"), oneLine('{"message":"Try later"}', 503, "Service Unavailable"),
            oneLine("", 500, ""), oneLine("<h1>Bad  gateway</h1>", 502, "Bad Gateway"), oneLine("Wrong password", 401, "Unauthorized")]"#,
    );
    assert_eq!(
        reasons,
        json!([
            "The server answered 502 Bad Gateway.",
            "Try later",
            "The server answered 500.",
            "Bad gateway",
            "Wrong password"
        ])
    );

    // The keyboard reaches everything: after the skip link come the page links, and Enter follows one;
    // the new page's heading takes the focus.
    browser.eval("document.querySelector('.skip').focus()");
    let mut order = Vec::new();
    for _ in 0..4 {
        browser.press("Tab");
        order.push(browser.eval("document.activeElement.textContent.trim()"));
    }
    assert_eq!(order, ["Overview", "Users", "Signup tokens", "Live events"]);
    browser.press("Enter");
    browser.wait_for("the events page by keyboard", &shown("#events-form"));
    browser.wait_for("the events heading focused", &focused("#events-title"));

    // Mint a token in the page; the SDK signs a user up with it.
    browser.click("nav a[href='#tokens']");
    browser.wait_for("the tokens page", &shown("#mint-form"));
    browser.wait_for("the tokens heading focused", &focused("#tokens-title"));
    browser.click("#mint-form button[type=submit]");
    browser.wait_for("a minted token", &shown("#minted code"));
    let token = browser.text("#minted code");
    assert_eq!(token.len(), 14, "{token}");
    browser.wait_for("the token listed", &contains("#tokens-table", &token));
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

    // Three more at once with a 5 MB quota: three new rows; Copy says it copied.
    browser.type_into("#mint-count", "3");
    browser.type_into("#mint-quota", "5");
    browser.click("#mint-form button[type=submit]");
    browser.wait_for(
        "three minted tokens",
        "document.querySelectorAll('#minted code').length === 3",
    );
    let minted: Vec<String> = serde_json::from_value(
        browser.eval("[...document.querySelectorAll('#minted code')].map((c) => c.textContent)"),
    )
    .unwrap();
    let rows_of = |tokens: &[String]| {
        format!(
            "(() => {{ const rows = [...document.querySelectorAll('#tokens-table tbody tr')].map((tr) => tr.textContent); \
             return {tokens:?}.every((t) => rows.some((row) => row.includes(t) && row.includes('5 MB'))); }})()"
        )
    };
    browser.wait_for("three rows of 5 MB tokens", &rows_of(&minted));
    let rows = browser.eval("document.querySelectorAll('#tokens-table tbody tr').length");
    assert_eq!(rows, json!(4), "one row per token");
    browser.click("#minted li:first-child button");
    browser.wait_for(
        "the copy confirmed",
        "document.querySelector('#minted li:first-child button').textContent === 'Copied'",
    );
    at_both_widths(&mut browser, &shots, "03-tokens");
    // The used/unused filter.
    let table_has = |present: &[&str], absent: &[&str]| {
        format!(
            "(() => {{ const text = document.querySelector('#tokens-table tbody').textContent; \
             return {present:?}.every((t) => text.includes(t)) && !{absent:?}.some((t) => text.includes(t)); }})()"
        )
    };
    let minted_refs: Vec<&str> = minted.iter().map(String::as_str).collect();
    choose(&mut browser, "#tokens-state", "used");
    browser.click("#tokens-form button[type=submit]");
    browser.wait_for(
        "only the used token",
        &table_has(&[&token, &user], &minted_refs),
    );
    choose(&mut browser, "#tokens-state", "unused");
    browser.click("#tokens-form button[type=submit]");
    browser.wait_for(
        "only the unused tokens",
        &table_has(&minted_refs, &[&token]),
    );
    choose(&mut browser, "#tokens-state", "all");

    // The user appears in the list, found by a key prefix too.
    browser.click("nav a[href='#users']");
    browser.wait_for("the users heading focused", &focused("#users-title"));
    let row = format!("tr[data-key='{user}']");
    browser.wait_for("the new user", &shown(&row));
    browser.type_into("#users-prefix", &user[..8]);
    browser.press("Enter");
    browser.wait_for("the search result", &contains("#users-note", "1 user(s)"));
    assert!(browser.eval(&shown(&row)).as_bool().unwrap());

    // Quota, by keyboard: Tab from the search's Apply reaches the row's Disable, then its Edit quota,
    // which Space opens. A bad value gets the server's reason in the form; 1 MB is saved and enforced.
    browser.eval("document.querySelector('#users-form button[type=submit]').focus()");
    tab_to(&mut browser, &format!("{row} .actions button:first-child"));
    tab_to(&mut browser, &format!("{row} .actions button:nth-child(2)"));
    browser.press(" ");
    browser.wait_for("the quota editor", &shown("tr.editor form"));
    assert!(
        browser
            .eval(&focused("tr.editor input[name=storage_quota_mb]"))
            .as_bool()
            .unwrap()
    );
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
    at_both_widths(&mut browser, &shots, "05-users-quota-saved");
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
    let other_keypair = Keypair::random();
    let other_user = other_keypair.public_key().z32();
    let other: PubkySession = net
        .pubky()
        .signer(other_keypair)
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
    at_both_widths(&mut browser, &shots, "06-events");
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

    // Users by storage used: `user` (two files) before `other_user` (one), and the other way round.
    browser.click("nav a[href='#users']");
    // The page's own load (the search still typed in) must end first, or it could land after ours.
    browser.wait_for(
        "the users page's search",
        &format!(
            "{} && {}",
            focused("#users-title"),
            contains("#users-note", "1 user(s)")
        ),
    );
    browser.type_into("#users-prefix", "");
    choose(&mut browser, "#users-sort", "used_bytes");
    choose(&mut browser, "#users-order", "asc");
    browser.click("#users-form button[type=submit]");
    let ascending = json!([&other_user, &user]).to_string();
    browser.wait_for(
        "the users by usage, smallest first",
        &format!("{USER_ROWS} === {ascending:?}"),
    );
    choose(&mut browser, "#users-order", "desc");
    browser.click("#users-form button[type=submit]");
    let descending = json!([&user, &other_user]).to_string();
    browser.wait_for(
        "the users by usage, largest first",
        &format!("{USER_ROWS} === {descending:?}"),
    );

    // A refused disable is told in its row.
    browser.eval("window.goodCsrf = csrfToken; csrfToken = 'wrong'");
    browser.click(&format!("{row} .actions button:first-child"));
    browser.wait_for(
        "the refusal in the row",
        &contains(
            &format!("{row} .actions .error"),
            "Disable failed: Missing or wrong CSRF token: reload the console",
        ),
    );
    assert_eq!(browser.text("#users-error"), "");
    browser.eval("csrfToken = window.goodCsrf");

    // Disable by keyboard (Tab from Apply reaches the first row's Disable, Enter presses it), Enable
    // and Disable again by mouse: the row follows, and a disabled user can no longer write.
    browser.eval("document.querySelector('#users-form button[type=submit]').focus()");
    tab_to(&mut browser, &format!("{row} .actions button:first-child"));
    browser.press("Enter");
    browser.wait_for("the user disabled", &contains(&row, "Disabled"));
    browser.wait_for(
        "the focus on Enable",
        &format!(
            "{} && document.activeElement.textContent === 'Enable'",
            focused(&format!("{row} .actions button:first-child"))
        ),
    );
    let refused = session.storage().put("/pub/after.txt", "x").await;
    assert_eq!(refusal(refused), (403, "User is disabled".to_string()));
    browser.click(&format!("{row} .actions button:first-child"));
    browser.wait_for("the user enabled", &contains(&row, "Enabled"));
    session
        .storage()
        .put("/pub/enabled.txt", "x")
        .await
        .expect("a write once enabled again");
    browser.click(&format!("{row} .actions button:first-child"));
    browser.wait_for("the user disabled again", &contains(&row, "Disabled"));
    at_both_widths(&mut browser, &shots, "07-users-disabled");
    let refused = session.storage().put("/pub/after.txt", "x").await;
    assert_eq!(refusal(refused), (403, "User is disabled".to_string()));

    // The overview counts them: users, tokens (2 used of 5), storage against the blob volume (a
    // filesystem's; S3 has no fixed total); the charts have a bar per user and the requests made.
    browser.click("nav a[href='#overview']");
    browser.wait_for("the counts", &contains("#overview-cards", "1 disabled"));
    let tokens_card = "#overview-cards section[aria-label='Signup tokens']";
    assert_eq!(browser.text(&format!("{tokens_card} .value")), "3 unused");
    assert_eq!(
        browser.text(&format!("{tokens_card} .detail")),
        "2 used of 5 minted"
    );
    let storage_card = browser.text("#overview-cards section[aria-label='Storage used']");
    match blobs {
        Blobs::Fs => assert!(
            storage_card.contains("on the blob volume") && storage_card.contains(" free"),
            "{storage_card}"
        ),
        _ => assert!(
            storage_card.contains("has no fixed total"),
            "{storage_card}"
        ),
    }
    browser.wait_for(
        "a bar per user",
        "document.querySelectorAll('#storage-chart svg > g').length === 2",
    );
    let labels = browser.eval(
        "[...document.querySelectorAll('#storage-chart svg > g')].map((g) => g.querySelector('text').textContent)",
    );
    assert_eq!(
        labels,
        json!([
            format!("{}…", &user[..12]),
            format!("{}…", &other_user[..12])
        ]),
        "largest first, named by key prefix"
    );
    let rate = browser.eval(
        "[document.querySelector('#rate-chart polyline').points.numberOfItems, \
         document.querySelector('#rate-chart title').textContent]",
    );
    assert_eq!(rate[0], json!(60), "a point per 10 s of 10 minutes: {rate}");
    let peak: f64 = rate[1]
        .as_str()
        .and_then(|title| title.rsplit_once("peak "))
        .and_then(|(_, peak)| peak.parse().ok())
        .unwrap_or_else(|| panic!("no peak in the chart's title: {rate}"));
    assert!(peak > 0.0, "{rate}");
    at_both_widths(&mut browser, &shots, "08-overview");

    // Every request of the page went to the admin listener: nothing is fetched from elsewhere.
    let requests = browser.take_requests();
    assert!(
        requests
            .iter()
            .any(|url| url.ends_with("/console/api/overview")),
        "{requests:#?}"
    );
    let elsewhere: Vec<&String> = requests
        .iter()
        .filter(|url| !url.starts_with(&format!("{admin}/")))
        .collect();
    assert!(elsewhere.is_empty(), "requests elsewhere: {elsewhere:#?}");

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
    browser.take_requests();
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
    let requests = browser.take_requests();
    assert!(
        requests
            .iter()
            .all(|url| url.starts_with(&format!("{admin}/"))),
        "requests elsewhere: {requests:#?}"
    );

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
    browser.watch();
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

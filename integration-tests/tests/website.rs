//! A user's website in a real browser: Debian's headless Chromium (scripts/test installs it) loads a small
//! site published under `/pub/website/_/` through the ICANN listener, with the user's key mapped to
//! loopback by `--host-resolver-rules`. The page's script reports what the browser saw (the stylesheet
//! applied, the image decoded, the relative link followed through its redirect) into the DOM that
//! `--dump-dom` prints, and a screenshot is saved to `<target dir>/screenshots/website.png`.

use std::path::{Path, PathBuf};
use std::process::Command;

use homestead_integration_tests::{Account, TestNet, TestServer};

/// A 4×4 PNG of one colour.
const PNG: [u8; 73] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x04, 0x08, 0x02, 0x00, 0x00, 0x00, 0x26, 0x93, 0x09,
    0x29, 0x00, 0x00, 0x00, 0x10, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x50, 0x48, 0x38, 0x00,
    0x47, 0x0c, 0xc4, 0x71, 0x00, 0xfe, 0x43, 0x14, 0x01, 0xec, 0x18, 0x9d, 0x43, 0x00, 0x00, 0x00,
    0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

const INDEX: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>My site</title>
<link rel="stylesheet" href="style.css"></head>
<body><h1 id="title">Hello from my homeserver</h1>
<img id="logo" src="img/logo.png" width="64" height="64" alt="logo">
<p><a id="about" href="about">About me</a></p>
<pre id="report">pending</pre>
<script src="app.js"></script>
</body></html>
"#;

const STYLE: &str = "body { background: rgb(250, 240, 200); }\nh1 { color: rgb(200, 0, 0); }\n\
                     pre { white-space: pre-wrap; word-break: break-all; }\n";

/// Reports, once everything has loaded, the title's colour, the image's size and the linked page's
/// status and text.
const SCRIPT: &str = r#"window.addEventListener('load', async () => {
  const color = getComputedStyle(document.getElementById('title')).color;
  const image = document.getElementById('logo').naturalWidth;
  const about = await fetch(document.getElementById('about').href);
  const text = (await about.text()).trim();
  document.getElementById('report').textContent =
    `color=${color} image=${image} about=${about.status} ${about.url} ${text}`;
});
"#;

/// Publishes the site as `account` with plain `PUT`s.
async fn publish(server: &TestServer, account: &Account) {
    let files: [(&str, Vec<u8>); 5] = [
        ("index.html", INDEX.into()),
        ("style.css", STYLE.into()),
        ("app.js", SCRIPT.into()),
        ("img/logo.png", PNG.to_vec()),
        ("about/index.html", b"<p>about page</p>".to_vec()),
    ];
    let client = reqwest::Client::new();
    for (path, body) in files {
        let response = client
            .put(format!("{}/pub/website/_/{path}", server.icann_url()))
            .header("pubky-host", &account.z32)
            .header("cookie", &account.cookie)
            .body(body)
            .send()
            .await
            .expect("PUT");
        assert_eq!(response.status(), 201, "PUT {path}");
    }
}

/// Runs headless Chromium on `url` with `args`, `key` resolving to loopback; its standard output.
fn chromium(profile: &Path, key: &str, url: &str, args: &[String]) -> String {
    let binary = std::env::var("TEST_CHROMIUM_BIN").unwrap_or_else(|_| "chromium".into());
    let output = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=800,600",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--host-resolver-rules=MAP {key} 127.0.0.1"))
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium (scripts/test installs it)");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Where the screenshot goes: `screenshots/` in the cargo target directory.
fn screenshot_path() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir.join("website.png")
}

/// The sum of the `website` route's request counts with status `status`.
fn website_requests(metrics: &str, status: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("http_request_duration_seconds_count{"))
        .filter(|line| line.contains("route=\"website\"") && line.contains(status))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn a_browser_loads_a_site_with_its_stylesheet_image_and_links() {
    let net = TestNet::new();
    let server = net.server().with_metrics().start().await;
    let account = Account::signup(&server).await;
    publish(&server, &account).await;
    let port = server.icann_url().rsplit(':').next().unwrap().to_string();
    let url = format!("http://{}:{port}/", account.z32);
    let profile = tempfile::tempdir().expect("a profile directory");

    let dom = chromium(profile.path(), &account.z32, &url, &["--dump-dom".into()]);
    assert!(dom.contains("Hello from my homeserver"), "{dom}");
    let about = format!(
        "about=200 http://{}:{port}/about/ <p>about page</p>",
        account.z32
    );
    let expected = format!(
        "color=rgb(200, 0, 0) image=4 {}",
        about.replace('<', "&lt;").replace('>', "&gt;")
    );
    assert!(dom.contains(&expected), "{expected} in\n{dom}");

    let screenshot = screenshot_path();
    let _ = std::fs::remove_file(&screenshot);
    chromium(
        profile.path(),
        &account.z32,
        &url,
        &[format!("--screenshot={}", screenshot.display())],
    );
    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(
        png.starts_with(&PNG[..8]) && png.len() > 1000,
        "a PNG screenshot"
    );

    // The server served the page, stylesheet, script, image, redirect and linked page as website pages.
    let metrics = server.metrics().await;
    assert!(
        website_requests(&metrics, "status=\"200\"") >= 5,
        "{metrics}"
    );
    assert!(
        website_requests(&metrics, "status=\"301\"") >= 1,
        "{metrics}"
    );
}

//! The official JS SDK (`@synonymdev/pubky` from npm, the Rust SDK built to WebAssembly) as a web app uses
//! it: the scripts in `integration-tests/js/` run its Node build (`node.mjs`) and its browser build in
//! Debian's headless Chromium (`browser.mjs`, through puppeteer-core) against Homestead on a local DHT,
//! reached through a PKARR relay and, for a third-party app's sign-in, an HTTP relay. `scripts/test`
//! installs the workspace (`npm ci`); a failing script fails the test with its whole output.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use homestead_integration_tests::{Blobs, Metadata, Relays, TestNet, TestServer};

/// A test network for the JS SDK: the DHT, both relays, an open server and one that needs a signup token.
struct JsNet {
    _net: TestNet,
    relays: Relays,
    server: TestServer,
    token_server: TestServer,
}

impl JsNet {
    async fn start(metadata: Metadata, blobs: Blobs) -> Self {
        let net = TestNet::new();
        let relays = Relays::start(&net).await;
        let server = net.server().metadata(metadata).blobs(blobs).start().await;
        let token_server = net.server().token_required().start().await;
        net.wait_until_resolvable(&server).await;
        net.wait_until_resolvable(&token_server).await;
        Self {
            _net: net,
            relays,
            server,
            token_server,
        }
    }

    /// The environment the scripts read, with `tokens` fresh signup tokens of the token server.
    async fn env(&self, label: &str, tokens: usize) -> Vec<(&'static str, String)> {
        let mut signup_tokens = Vec::new();
        for _ in 0..tokens {
            signup_tokens.push(self.token_server.signup_token().await);
        }
        // The address the SDK derives from the server's record (`localhost` and the HTTP port).
        let port = self.server.icann_addr().port();
        vec![
            ("PUBKY_PKARR_RELAY", self.relays.pkarr_url()),
            ("PUBKY_HTTP_RELAY", self.relays.link_url()),
            ("PUBKY_HOMESERVER", self.server.public_key().z32()),
            ("PUBKY_HOMESERVER_URL", format!("http://localhost:{port}")),
            (
                "PUBKY_TOKEN_HOMESERVER",
                self.token_server.public_key().z32(),
            ),
            ("PUBKY_SIGNUP_TOKENS", signup_tokens.join(",")),
            ("PUBKY_LABEL", label.to_string()),
        ]
    }
}

/// `integration-tests/js/`, with its dependencies installed.
fn js_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        dir.join("node_modules/@synonymdev/pubky").is_dir()
            && dir.join("node_modules/puppeteer-core").is_dir(),
        "the JS workspace is not installed: run `npm ci` in {} (scripts/test does)",
        dir.display()
    );
    dir
}

/// Where screenshots go: `screenshots/` in the cargo target directory.
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

/// How long a script may run before the test gives up on it (a hung browser must not hang CI).
const NODE_DEADLINE: Duration = Duration::from_secs(180);

/// Runs `node <script>` in the JS workspace with `env`; panics with its output unless it succeeds
/// within [`NODE_DEADLINE`].
async fn node(script: &str, env: Vec<(&'static str, String)>) -> String {
    let started = Instant::now();
    let node = std::env::var("TEST_NODE_BIN").unwrap_or_else(|_| "node".into());
    let run = tokio::process::Command::new(node)
        .arg(script)
        .current_dir(js_dir())
        .envs(env)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(NODE_DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("node {script} did not finish within {NODE_DEADLINE:?}"))
        .expect("run node (scripts/test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "node {script} failed:\n{text}");
    println!("node {script}: {:?}\n{text}", started.elapsed());
    text
}

macro_rules! on_backends {
    ($($name:ident: $metadata:ident + $blobs:ident;)*) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread")]
            async fn node_sdk_runs_an_app_end_to_end() {
                let net = JsNet::start(Metadata::$metadata, Blobs::$blobs).await;
                let output = node("node.mjs", net.env(stringify!($name), 1).await).await;
                assert!(output.contains("ok - token-mode sign-up"), "{output}");
                assert!(output.contains("ok - a stranger's write is refused"), "{output}");
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn browser_sdk_runs_an_app_same_site_and_cross_site() {
                let net = JsNet::start(Metadata::$metadata, Blobs::$blobs).await;
                let mut env = net.env(stringify!($name), 2).await;
                let chromium = std::env::var("TEST_CHROMIUM_BIN").unwrap_or_else(|_| "chromium".into());
                env.push(("TEST_CHROMIUM_BIN", chromium));
                let screenshots = screenshot_dir();
                env.push(("SCREENSHOT_DIR", screenshots.display().to_string()));
                let shots = ["same-site", "cross-site"]
                    .map(|case| screenshots.join(format!("js-sdk-{}-{case}.png", stringify!($name))));
                for shot in &shots {
                    let _ = std::fs::remove_file(shot);
                }
                let output = node("browser.mjs", env).await;
                assert!(output.contains("browser: 2 of 2 cases passed"), "{output}");
                for shot in &shots {
                    let png = std::fs::read(shot).expect("the screenshot was saved");
                    assert!(png.starts_with(b"\x89PNG") && png.len() > 1000, "{}", shot.display());
                }
            }
        }
    )*};
}

on_backends! {
    sqlite_fs: Sqlite + Fs;
    postgres_s3: Postgres + S3;
}

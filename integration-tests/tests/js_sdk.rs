//! The official JS SDK (`@synonymdev/pubky` from npm, the Rust SDK built to WebAssembly) as a web app uses
//! it: the scripts in `integration-tests/js/` run its Node build (`node.mjs`) and its browser build in
//! Debian's headless Chromium (`browser.mjs`, through puppeteer-core) against Homestead on a local DHT,
//! reached through a PKARR relay and, for a third-party app's sign-in, an HTTP relay. `scripts/test`
//! installs the workspace (`npm ci`); a failing or hung script fails the test with its whole output.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

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
    let mut command = tokio::process::Command::new(node);
    command.arg(script).current_dir(js_dir()).envs(env);
    match run_within(command, NODE_DEADLINE).await {
        Ran::Overran(text) => {
            panic!("node {script} did not finish within {NODE_DEADLINE:?}; its output:\n{text}")
        }
        Ran::Finished(status, text) => {
            assert!(status.success(), "node {script} failed ({status}):\n{text}");
            println!("node {script}: {:?}\n{text}", started.elapsed());
            text
        }
    }
}

/// How a [`run_within`] ended, with the process's stdout and stderr lines.
enum Ran {
    Finished(ExitStatus, String),
    /// Killed at the deadline, its whole process group with it.
    Overran(String),
}

/// Runs `command` in a process group of its own. At `deadline` the whole group is killed, so that a
/// hung browser script leaves no Chromium running. The output is collected as it comes, so a hung
/// script still shows what it did.
async fn run_within(mut command: tokio::process::Command, deadline: Duration) -> Ran {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the script (scripts/test installs node)");
    let text = Arc::new(Mutex::new(String::new()));
    let readers = [
        collect_lines(child.stdout.take().expect("piped"), text.clone()),
        collect_lines(child.stderr.take().expect("piped"), text.clone()),
    ];
    let status = tokio::time::timeout(deadline, child.wait()).await;
    if status.is_err() {
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on the process group our own child leads.
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
        }
        let _ = child.kill().await;
    }
    for reader in readers {
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    }
    let text = text.lock().expect("output").clone();
    match status {
        Err(_) => Ran::Overran(text),
        Ok(status) => Ran::Finished(status.expect("wait for the process"), text),
    }
}

/// A script that hangs is killed at the deadline with the child it started, and what it printed
/// before is kept for the failure message.
#[tokio::test]
async fn a_hung_script_is_killed_with_its_children_and_its_output_kept() {
    let mut command = tokio::process::Command::new("sh");
    command.args([
        "-c",
        "echo started; sleep 300 & echo child $!; echo to stderr >&2; wait",
    ]);
    let Ran::Overran(text) = run_within(command, Duration::from_secs(2)).await else {
        panic!("the script ended by itself");
    };
    assert!(
        text.contains("started\n") && text.contains("to stderr\n"),
        "{text}"
    );
    let child: u32 = text
        .lines()
        .find_map(|line| line.strip_prefix("child "))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no child pid in {text}"));
    // Killed, then reaped by whoever inherited it: gone, or a zombie for a moment.
    let stat = format!("/proc/{child}/stat");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let alive = std::fs::read_to_string(&stat).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        });
        if !alive {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the script's child {child} outlived it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Appends each line `pipe` gives to `text` until it ends.
fn collect_lines(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    text: Arc<Mutex<String>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut text = text.lock().expect("output");
            text.push_str(&line);
            text.push('\n');
        }
    })
}

/// Asserts that `step` passed `times` times in `output`.
fn passed(output: &str, step: &str, times: usize) {
    let found = output.matches(&format!("ok - {step} (")).count();
    assert_eq!(
        found, times,
        "\"ok - {step}\" {found} times, not {times}:\n{output}"
    );
}

macro_rules! on_backends {
    ($($name:ident: $metadata:ident + $blobs:ident;)*) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread")]
            async fn node_sdk_runs_an_app_end_to_end() {
                let net = JsNet::start(Metadata::$metadata, Blobs::$blobs).await;
                let output = node("node.mjs", net.env(stringify!($name), 1).await).await;
                passed(&output, "sign-out", 1);
                passed(&output, "a stranger's write is refused", 1);
                passed(&output, "token-mode sign-up", 1);
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
                // Each case ran every step, the two controls included.
                for step in [
                    "control: the browser's rule for unpartitioned cookies of the server's site",
                    "the session cookie stays with the site that signed in",
                    "sign-out",
                    "a stranger's write is refused",
                    "token-mode sign-up",
                ] {
                    passed(&output, step, 2);
                }
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

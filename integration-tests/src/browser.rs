//! A headless Chromium driven over the DevTools protocol, for tests of pages that need a real browser
//! (the operator console). Debian's `chromium` (or `TEST_CHROMIUM_BIN`) runs with a fresh profile and
//! a DevTools port chosen by the OS; one blocking WebSocket carries the commands of one page.
//!
//! ```no_run
//! use homestead_integration_tests::Browser;
//!
//! let mut browser = Browser::launch(1280, 900);
//! browser.navigate("http://127.0.0.1:6288/console/");
//! browser.wait_for("the sign-in form", "!!document.querySelector('#password')");
//! browser.screenshot(std::path::Path::new("/tmp/console.png"));
//! ```

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tempfile::TempDir;
use tungstenite::{Message, WebSocket};

/// How long one DevTools answer may take before the test fails.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Browser::wait_for`] polls.
const WAIT: Duration = Duration::from_secs(20);

/// A headless Chromium with one page, killed when dropped.
pub struct Browser {
    child: Child,
    socket: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    width: u32,
    height: u32,
    /// Whether [`Browser::watch`] was called: requests are recorded, uncaught page errors fail the test.
    watching: bool,
    /// The URLs the page requested since [`Browser::watch`] or the last [`Browser::take_requests`].
    requests: Vec<String>,
    _profile: TempDir,
}

impl Browser {
    /// Starts Chromium and opens a blank page of `width` x `height` CSS pixels.
    pub fn launch(width: u32, height: u32) -> Self {
        let binary = std::env::var("TEST_CHROMIUM_BIN").unwrap_or_else(|_| "chromium".into());
        let profile = tempfile::tempdir().expect("profile directory");
        let mut child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("run {binary} (scripts/test installs chromium): {err}"));
        let url = devtools_url(&mut child);
        let address = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .expect("ws://host:port/ URL");
        let stream = TcpStream::connect(address).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .expect("read timeout");
        let (socket, _) = tungstenite::client(url.as_str(), stream).expect("DevTools handshake");
        let mut browser = Self {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            width,
            height,
            watching: false,
            requests: Vec::new(),
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let target = target["targetId"].as_str().expect("targetId").to_string();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        browser.call("Page.enable", json!({}));
        browser.resize(width, height);
        browser
    }

    /// Sends one command (to the page once attached) and returns its result; panics on a protocol
    /// error.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|error| panic!("{method} failed: {error}"))
    }

    /// Sends one command and returns its result or the protocol error (e.g. the page navigated away
    /// while it ran).
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::Text(message.to_string().into()))
            .expect("send to DevTools");
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        while Instant::now() < deadline {
            let text = match self.socket.read().expect("read from DevTools") {
                Message::Text(text) => text,
                _ => continue,
            };
            let answer: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if let Some(event) = answer["method"].as_str() {
                self.observe(event, &answer["params"]);
                continue;
            }
            // Answers to other commands are not waited for.
            if answer["id"] != json!(id) {
                continue;
            }
            if let Some(error) = answer.get("error") {
                return Err(error.clone());
            }
            return Ok(answer["result"].clone());
        }
        panic!("{method}: no answer within {ANSWER_TIMEOUT:?}");
    }

    /// From now on records every request the page makes ([`Browser::take_requests`]) and fails the
    /// test on an uncaught error or unhandled rejection in the page.
    pub fn watch(&mut self) {
        self.call("Network.enable", json!({}));
        self.call("Runtime.enable", json!({}));
        self.watching = true;
    }

    /// The URLs the page requested since the last call (or [`Browser::watch`]), in order.
    pub fn take_requests(&mut self) -> Vec<String> {
        // A round trip first, so that the events sent before it have been read.
        self.eval("0");
        std::mem::take(&mut self.requests)
    }

    /// Notes one DevTools event of a watched page.
    fn observe(&mut self, event: &str, params: &Value) {
        if !self.watching {
            return;
        }
        match event {
            "Network.requestWillBeSent" => {
                let url = params["request"]["url"].as_str().unwrap_or_default();
                self.requests.push(url.to_string());
            }
            "Runtime.exceptionThrown" => {
                let details = &params["exceptionDetails"];
                let message = details["exception"]["description"]
                    .as_str()
                    .or(details["text"].as_str())
                    .unwrap_or_default();
                panic!("uncaught error in the page: {message}\n{details}");
            }
            _ => {}
        }
    }

    /// Sets the page's viewport: phones (under 500 pixels) get the mobile layout.
    pub fn resize(&mut self, width: u32, height: u32) {
        (self.width, self.height) = (width, height);
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500 }),
        );
    }

    /// Loads `url` and waits until the document has loaded.
    pub fn navigate(&mut self, url: &str) {
        let answer = self.call("Page.navigate", json!({ "url": url }));
        if let Some(error) = answer.get("errorText") {
            panic!("navigate to {url}: {error}");
        }
        self.wait_for("the page to load", "document.readyState === 'complete'");
    }

    /// The value of a JavaScript expression (promises are awaited); panics when it throws.
    pub fn eval(&mut self, expression: &str) -> Value {
        let answer = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(details) = answer.get("exceptionDetails") {
            panic!("{expression} threw: {details}");
        }
        answer["result"]["value"].clone()
    }

    /// Polls `expression` until it is true; panics naming `what` after 20 seconds. A page that
    /// navigates while it is asked (a form submission) is asked again.
    pub fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let answer = self.try_call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            );
            if answer.is_ok_and(|answer| answer["result"]["value"] == json!(true)) {
                return;
            }
            if Instant::now() > deadline {
                let page = self.eval("document.body ? document.body.innerText : ''");
                panic!("waited 20 s for {what} ({expression}); the page shows:\n{page}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The visible text of the first element matching a CSS selector, empty when there is none.
    pub fn text(&mut self, selector: &str) -> String {
        let expression =
            format!("(document.querySelector({selector:?}) || {{innerText: ''}}).innerText");
        self.eval(&expression)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Clicks the middle of the first element matching a CSS selector with the mouse, after scrolling
    /// it into view.
    pub fn click(&mut self, selector: &str) {
        let expression = format!(
            "(() => {{ const el = document.querySelector({selector:?}); if (!el) return null; \
             el.scrollIntoView({{block: 'center'}}); const r = el.getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        );
        let point = self.eval(&expression);
        let (x, y) = match (point[0].as_f64(), point[1].as_f64()) {
            (Some(x), Some(y)) => (x, y),
            _ => panic!("nothing to click at {selector}"),
        };
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }

    /// Focuses the field matching a CSS selector, empties it and types `text` as keyboard input.
    pub fn type_into(&mut self, selector: &str, text: &str) {
        let focused = self.eval(&format!(
            "(() => {{ const el = document.querySelector({selector:?}); if (!el) return false; \
             el.focus(); el.value = ''; return true; }})()"
        ));
        assert_eq!(focused, json!(true), "no field at {selector}");
        if !text.is_empty() {
            self.call("Input.insertText", json!({ "text": text }));
        }
    }

    /// Presses a key on the focused element (`"Enter"`, `"Tab"`, `" "`).
    pub fn press(&mut self, key: &str) {
        let (code, text, key_code) = match key {
            "Enter" => (13, "\r", "Enter"),
            "Tab" => (9, "", "Tab"),
            " " => (32, " ", "Space"),
            other => panic!("no key code for {other}"),
        };
        for kind in ["keyDown", "keyUp"] {
            let mut event = json!({ "type": kind, "key": key, "code": key_code, "windowsVirtualKeyCode": code });
            if kind == "keyDown" && !text.is_empty() {
                event["text"] = json!(text);
            }
            self.call("Input.dispatchKeyEvent", event);
        }
    }

    /// Asserts that the page does not overflow its viewport sideways, naming the elements that reach
    /// past its right edge when it does.
    pub fn assert_no_sideways_overflow(&mut self, what: &str) {
        let answer = self.eval(&format!(
            "(() => {{ const root = document.documentElement; \
             const wide = [...document.querySelectorAll('body *')] \
               .filter((el) => el.getBoundingClientRect().right > {} + 0.5) \
               .slice(0, 8).map((el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') \
                 + (el.className && typeof el.className === 'string' ? '.' + el.className.trim().replace(/ +/g, '.') : '') \
                 + ' right=' + Math.round(el.getBoundingClientRect().right)); \
             return [root.scrollWidth, window.innerWidth, wide]; }})()",
            self.width
        ));
        let widths = (answer[0].as_f64(), answer[1].as_f64());
        let (Some(scroll_width), Some(inner_width)) = widths else {
            panic!("{what}: no widths in {answer}");
        };
        assert_eq!(
            inner_width,
            f64::from(self.width),
            "{what}: the viewport is not {} pixels wide: {answer}",
            self.width
        );
        assert!(
            scroll_width <= inner_width,
            "{what} overflows sideways at {} pixels (scrollWidth, innerWidth, widest elements): {answer}",
            self.width
        );
    }

    /// Saves a PNG of the whole page (not only the viewport) to `path`, creating its directory.
    pub fn screenshot(&mut self, path: &Path) {
        let height = self
            .eval("document.documentElement.scrollHeight")
            .as_f64()
            .unwrap_or(f64::from(self.height))
            .max(f64::from(self.height));
        let shot = self.call(
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": { "x": 0, "y": 0, "width": self.width, "height": height, "scale": 1 },
            }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads Chromium's standard error up to its `DevTools listening on ws://...` line, then drains the
/// rest in a thread so that the browser never blocks on a full pipe.
fn devtools_url(child: &mut Child) -> String {
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => match line.split_once("DevTools listening on ") {
                Some((_, url)) => break url.trim().to_string(),
                None => seen.push(line),
            },
            _ => panic!(
                "chromium exited before its DevTools URL:\n{}",
                seen.join("\n")
            ),
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    url
}

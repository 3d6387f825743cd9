//! Real-browser tests: headless Chromium driven over WebDriver (chromedriver +
//! fantoccini) against the real server. They check what HTTP tests cannot:
//! that a person can click through the pages, that the Content-Security-Policy
//! blocks nothing the pages need, and how the pages look (screenshots land in
//! `target/screenshots/`).
//!
//! Each test starts its own chromedriver on its own free port with a fresh
//! profile, so tests run in parallel. Without `/usr/bin/chromedriver` (or
//! `KEYSMITH_CHROMEDRIVER`) they are listed as ignored, except under CI.

mod a11y;
mod axe;
mod csp;
mod emails;
mod layout;
mod oidc;
mod shown_once;
mod signin;
mod team;
mod token_ips;
mod tokens;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::harness::TestApp;

/// How long any wait for the browser (an element, a URL, chromedriver) lasts.
pub const WAIT: Duration = Duration::from_secs(10);

/// Window size of every session; phone checks emulate a phone instead.
pub const WINDOW: (u32, u32) = (1280, 900);

/// One headless Chromium session with the chromedriver that runs it.
pub struct Browser {
    pub client: Client,
    driver: Driver,
    _profile: TempDir,
}

/// The chromedriver process, in a process group of its own so that dropping
/// it also ends the Chromium processes it started, even when a test panics
/// before closing its session.
struct Driver {
    child: Child,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver_path() -> PathBuf {
    std::env::var_os("KEYSMITH_CHROMEDRIVER")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/chromedriver".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

/// Starts chromedriver on a free port and waits until it reports ready.
async fn start_driver() -> (Driver, String) {
    let path = chromedriver_path();
    // Another process may take the port between our probe and chromedriver's
    // bind; a fresh port on the next attempt settles that.
    for _ in 0..3 {
        let port = free_port();
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(&path)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start {}: {e} (apt-get install chromium chromium-driver)",
                        path.display()
                    )
                })
        };
        let mut driver = Driver { child };
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = driver.child.try_wait() {
                break; // exited: most likely the port was taken
            }
            let ready = match http.get(format!("{url}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                return (driver, url);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("chromedriver did not become ready on any of three ports");
}

impl Browser {
    /// A fresh headless Chromium with an empty profile.
    pub async fn start() -> Browser {
        let (driver, url) = start_driver().await;
        let profile = tempfile::tempdir().expect("temp dir for the browser profile");
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        ];
        let mut caps = Capabilities::new();
        caps.insert("goog:chromeOptions".into(), json!({ "args": args }));
        // Keep the console so tests can read CSP violations and script errors.
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        // chromedriver listens on loopback only: plain HTTP, no TLS stack needed.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a WebDriver session with headless Chromium");
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Ends the session (Chromium quits); chromedriver stops on drop.
    pub async fn close(self) {
        let Browser {
            client,
            driver,
            _profile,
        } = self;
        let _ = client.close().await;
        drop(driver);
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The path (and query) of the current page.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current URL");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Waits for an element matching `css` to be present.
    pub async fn wait_for(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .every(Duration::from_millis(50))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => panic!(
                "no element `{css}` within {WAIT:?}: {e}\n{}",
                self.describe().await
            ),
        }
    }

    /// Where the browser is and what it shows, for failure messages.
    pub async fn describe(&self) -> String {
        let url = self.client.current_url().await.map(|u| u.to_string());
        let text = self
            .client
            .execute(
                "return document.body ? document.body.innerText : '';",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let console = self.console().await;
        format!("at {url:?}, the page reads:\n{text}\nconsole: {console:#?}")
    }

    /// Waits for an element whose text is exactly `text` (ignoring surrounding
    /// and repeated white space) under elements matching the tag `tag`.
    pub async fn wait_for_text(&self, tag: &str, text: &str) -> Element {
        let xpath = format!("//{tag}[normalize-space()={}]", xpath_literal(text));
        let found = self
            .client
            .wait()
            .at_most(WAIT)
            .every(Duration::from_millis(50))
            .for_element(Locator::XPath(&xpath))
            .await;
        match found {
            Ok(element) => element,
            Err(e) => panic!(
                "no <{tag}> reading {text:?} within {WAIT:?}: {e}\n{}",
                self.describe().await
            ),
        }
    }

    /// Waits until the current path is `path`.
    pub async fn wait_for_path(&self, path: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.path().await;
            if now == path {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "expected to arrive at {path} within {WAIT:?}, still at {now}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn find(&self, css: &str) -> Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element `{css}`: {e}"))
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("element text")
    }

    /// The live `value` of a form field (what the person sees in it).
    pub async fn value(&self, css: &str) -> String {
        self.find(css)
            .await
            .prop("value")
            .await
            .expect("value property")
            .unwrap_or_default()
    }

    /// Clears a field and types `text` into it, as a person would.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear field");
        field.send_keys(text).await.expect("type into field");
    }

    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click `{css}`: {e}"));
    }

    /// Runs a script in the page and returns its JSON result.
    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Saves a PNG of the viewport as `target/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("screenshots");
        std::fs::create_dir_all(&dir).expect("create target/screenshots");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Everything written to the browser console since the last call:
    /// (level, message) pairs, e.g. ("SEVERE", "Refused to apply inline style…").
    pub async fn console(&self) -> Vec<(String, String)> {
        let log = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .expect("read the browser console log");
        log.as_array()
            .into_iter()
            .flatten()
            .map(|entry| {
                (
                    entry["level"].as_str().unwrap_or_default().to_string(),
                    entry["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Runs a Chrome DevTools Protocol command through chromedriver.
    pub async fn cdp(&self, cmd: &'static str, params: Value) -> Value {
        self.client
            .issue_cmd(Cdp { cmd, params })
            .await
            .unwrap_or_else(|e| panic!("DevTools {cmd}: {e}"))
    }

    /// Lets pages from `origin` write and read the clipboard, so a test can
    /// read back what a Copy button put there.
    pub async fn allow_clipboard(&self, origin: &str) {
        self.cdp(
            "Browser.grantPermissions",
            json!({
                "origin": origin,
                "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"],
            }),
        )
        .await;
    }

    /// Presses the Copy button at `selector` and waits for what it reports:
    /// "Copied" (the clipboard API worked) or "Press Ctrl+C" (the fallback).
    pub async fn press_copy(&self, selector: &str) -> String {
        self.click(selector).await;
        shown_once::wait_until(
            self,
            &format!(
                "const t = document.querySelector({}).textContent;\
                 return t === 'Copied' || t === 'Press Ctrl+C' ? t : null;",
                json!(selector)
            ),
            "the Copy button reports what happened",
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Makes pages match `prefers-color-scheme: dark` (or light).
    pub async fn prefer_dark(&self, dark: bool) {
        let scheme = if dark { "dark" } else { "light" };
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] }),
        )
        .await;
    }

    /// Lays pages out as on a phone of this CSS width (touch, mobile viewport).
    pub async fn emulate_phone(&self, width: u32, height: u32) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 2, "mobile": true }),
        )
        .await;
    }

    /// Presses and releases one key wherever the focus is.
    pub async fn press(&self, key: Key) {
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: key.into() })
            .then(KeyAction::Up { value: key.into() });
        self.client
            .perform_actions(keys)
            .await
            .expect("press a key");
    }

    /// Signs in as `email` (an existing, active user) the way a person does:
    /// the sign-in form, the emailed link, the button.
    pub async fn sign_in(&self, app: &TestApp, email: &str) {
        let before = app
            .dev_mail()
            .await
            .iter()
            .filter(|m| m.to == email)
            .count();
        self.goto(&app.url("/signin")).await;
        self.wait_for("main form[action='/signin']").await;
        self.fill("#email", email).await;
        self.click("main form[action='/signin'] button[type=submit]")
            .await;
        self.wait_for_text("h1", "Check your inbox").await;
        let mail = app.wait_for_dev_mail(email, before + 1).await;
        self.goto(&mail[0].links[0]).await;
        self.wait_for_text("button", "Sign in")
            .await
            .click()
            .await
            .expect("press Sign in");
        self.wait_for(".topbar .user-email").await;
    }
}

/// chromedriver's log endpoint: the browser console since the last read.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (reqwest::Method, Option<String>) {
        (reqwest::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// chromedriver's pass-through to a Chrome DevTools Protocol command.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (reqwest::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (reqwest::Method::POST, Some(body.to_string()))
    }
}

/// `text` as an XPath string literal (XPath 1.0 has no escapes).
fn xpath_literal(text: &str) -> String {
    if !text.contains('"') {
        format!("\"{text}\"")
    } else if !text.contains('\'') {
        format!("'{text}'")
    } else {
        let parts: Vec<String> = text.split('"').map(|p| format!("\"{p}\"")).collect();
        format!("concat({})", parts.join(", '\"', "))
    }
}

/// Console entries that point at a problem: errors and CSP refusals. The
/// browser's own request for `/favicon.ico` (the pages declare none) is not
/// one of the pages' problems.
pub fn problems(console: &[(String, String)]) -> Vec<String> {
    console
        .iter()
        .filter(|(level, message)| {
            (level == "SEVERE" || message.contains("Content Security Policy"))
                && !message.contains("/favicon.ico")
        })
        .map(|(level, message)| format!("{level}: {message}"))
        .collect()
}

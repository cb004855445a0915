//! Headless Chromium driven over WebDriver (W3C), for the status pages' tests: Debian's
//! `chromedriver` started on a free port, one session with a fresh profile, and the handful of
//! commands the tests use. The client is plain HTTP/1.1 over a TCP connection per command (what
//! chromedriver serves on 127.0.0.1), so it needs nothing but `tokio` and `serde_json`: shared by
//! path with the receiver's tests.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The README's set-up command, which installs Chromium and its driver through apt.
const SETUP: &str = ".ci/test --setup-only";

/// How long a wait for the page may take before the test fails: generous, since the machine may
/// be loaded; nothing is asserted about how long anything took.
const PATIENCE: Duration = Duration::from_secs(90);

/// The W3C key every element reference is kept under.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    /// Chromium's profile: new and empty for each browser.
    profile: tempfile::TempDir,
}

/// `name` on the PATH, or a panic naming the command that installs it.
fn installed(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{name} is missing (Debian package {package}): run `{SETUP}` once, as root")
    })
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a new, empty profile.
    pub async fn start() -> Browser {
        let chromium = installed("chromium", "chromium");
        let chromedriver = installed("chromedriver", "chromium-driver");
        let port = super::process::free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            profile,
        };
        browser.wait_for_driver().await;
        let profile_arg = format!("--user-data-dir={}", browser.profile.path().display());
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
            &profile_arg,
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": chromium, "args": args,
        }}}});
        let session = browser
            .command("POST", "/session", Some(capabilities))
            .await;
        browser.session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session from chromedriver: {session}"))
            .to_owned();
        browser
    }

    async fn wait_for_driver(&self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(answer) = send(self.port, "GET", "/status", None).await
                && answer["value"]["ready"] == true
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One WebDriver command; its `value`. A WebDriver error fails the test with its message.
    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let answer = send(self.port, method, path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        if let Some(error) = answer["value"]["error"].as_str() {
            panic!(
                "WebDriver {method} {path}: {error}: {}",
                answer["value"]["message"]
            );
        }
        answer["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.command(
            "POST",
            &self.session_path("/url"),
            Some(json!({"url": url})),
        )
        .await;
    }

    /// The elements matching a CSS selector now (none is not an error).
    async fn find_all(&self, css: &str) -> Vec<String> {
        let found = self
            .command(
                "POST",
                &self.session_path("/elements"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found
            .as_array()
            .map(|elements| {
                elements
                    .iter()
                    .filter_map(|e| e[ELEMENT_KEY].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until an element matches `css`; its reference.
    pub async fn wait_for(&self, css: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(element) = self.find_all(css).await.into_iter().next() {
                return element;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "the page never showed {css:?}; it showed:\n{}",
                    self.text("body").await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the first element matching `css` has text containing `needle`; its text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let text = self.text(css).await;
            if text.contains(needle) {
                return text;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{css:?} never said {needle:?}; it said {text:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until nothing matches `css`.
    pub async fn wait_for_none(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !self.find_all(css).await.is_empty() {
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "the page kept showing {css:?}; it showed:\n{}",
                    self.text("body").await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The rendered text of the first element matching `css`, once there is one.
    pub async fn text(&self, css: &str) -> String {
        let Some(element) = self.find_all(css).await.into_iter().next() else {
            return String::new();
        };
        let path = self.session_path(&format!("/element/{element}/text"));
        self.command("GET", &path, None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn click(&self, css: &str) {
        let element = self.wait_for(css).await;
        let path = self.session_path(&format!("/element/{element}/click"));
        self.command("POST", &path, Some(json!({}))).await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.wait_for(css).await;
        let path = self.session_path(&format!("/element/{element}/value"));
        self.command("POST", &path, Some(json!({"text": text})))
            .await;
    }

    /// Runs a script in the page; its result.
    pub async fn script(&self, script: &str) -> Value {
        let body = json!({"script": script, "args": []});
        self.command("POST", &self.session_path("/execute/sync"), Some(body))
            .await
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = self
            .command("GET", &self.session_path("/screenshot"), None)
            .await;
        let bytes = decode_base64(png.as_str().expect("a screenshot is base64 text"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    /// Ends the session (which stops Chromium), then chromedriver.
    fn drop(&mut self) {
        if !self.session.is_empty()
            && let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port))
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let path = format!("/session/{}", self.session);
            let _ = stream.write_all(request_bytes("DELETE", &path, None).as_slice());
            // The answer comes once Chromium has quit; the connection stays open after it.
            let _ = stream.read(&mut [0u8; 4096]);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn request_bytes(method: &str, path: &str, body: Option<&Value>) -> Vec<u8> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut bytes = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

/// One request on a new connection; the answer's JSON. chromedriver says `Connection: close`
/// but keeps the connection open, so the answer is read up to its `Content-Length`.
async fn send(port: u16, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(&request_bytes(method, path, body.as_ref()))
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if let Some(body) = complete_body(&answer)? {
            return serde_json::from_slice(body)
                .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(body)));
        }
        let read = stream.read(&mut buffer).await.map_err(|e| e.to_string())?;
        if read == 0 {
            return Err("the connection closed before the whole answer came".into());
        }
        answer.extend_from_slice(&buffer[..read]);
    }
}

/// The body of `answer` once its headers and `Content-Length` bytes have all arrived.
fn complete_body(answer: &[u8]) -> Result<Option<&[u8]>, String> {
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .ok_or("an answer without Content-Length")?
        .trim()
        .parse::<usize>()
        .map_err(|e| e.to_string())?;
    let body = &answer[split + 4..];
    Ok((body.len() >= length).then(|| &body[..length]))
}

/// Standard base64 (the screenshot's encoding), padding and line breaks allowed.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c:?}"),
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !matches!(c, b'=' | b'\n' | b'\r'))
        .map(value)
        .collect();
    let mut bytes = Vec::with_capacity(digits.len() * 3 / 4);
    for group in digits.chunks(4) {
        let mut n = 0u32;
        for (i, d) in group.iter().enumerate() {
            n |= u32::from(*d) << (18 - 6 * i);
        }
        bytes.extend_from_slice(&n.to_be_bytes()[1..group.len()]);
    }
    bytes
}

/// Where a test's screenshot goes: under the target folder every time; and, with
/// `FLAGPOST_UPDATE_SCREENSHOTS=1`, also over the copy the README shows.
pub fn screenshot_paths(name: &str, committed_dir: &Path) -> Vec<PathBuf> {
    let mut paths = vec![
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("screenshots")
            .join(name),
    ];
    if std::env::var_os("FLAGPOST_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        paths.push(committed_dir.join(name));
    }
    paths
}

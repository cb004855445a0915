//! Shared by the sidecar's integration tests: the real server on a real port, in-process or as the
//! real binary, and a small HTTP client. Test binaries that include it by path also declare the
//! shared `support` module (`tests/support/`) at their root.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use flagpost::config::Config;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;

pub use crate::support::config::SidecarConfig;
use crate::support::connections::wait_healthy;
use crate::support::process::receiver_beside;
use crate::support::process::stream_until_killed;
pub use crate::support::process::{Running, free_addr};

pub const TOKEN: &str = "test-token-0123456789";

/// The `flagpost-receiver` binary that goes with this test binary's `flagpost`.
pub fn receiver_binary() -> PathBuf {
    receiver_beside(Path::new(env!("CARGO_BIN_EXE_flagpost")))
}

/// Starts the receiver binary with `config` (listening on `addr`) and waits until it answers, so
/// that a test's first request to it cannot meet a port nobody listens on yet.
pub async fn serve_receiver(config: &Path, addr: SocketAddr) -> Running {
    let running = Running::serve(&receiver_binary(), config, "warn", false);
    wait_healthy(addr).await;
    running
}

/// The sidecar's `run` on a port of its own, in this process.
pub struct Sidecar {
    pub addr: SocketAddr,
    pub dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sidecar {
    pub async fn start() -> Sidecar {
        Sidecar::start_with("").await
    }

    /// Starts with the test configuration plus `extra` TOML appended.
    pub async fn start_with(extra: &str) -> Sidecar {
        Sidecar::start_in(tempfile::tempdir().unwrap(), extra).await
    }

    /// As [`Sidecar::start_with`], on the database and flag files left in `dir` (a restart).
    pub async fn start_in(dir: TempDir, extra: &str) -> Sidecar {
        let text = config_toml(dir.path(), "127.0.0.1:0".parse().unwrap(), extra);
        let config = Config::parse(&text).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            flagpost::server::run(listener, config, None, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Sidecar {
            addr,
            dir,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server and waits until the database is closed; returns the temp dir.
    pub async fn stop(mut self) -> TempDir {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap();
        self.dir
    }
}

/// The real `flagpost` binary, started with a configuration file.
pub struct Process {
    pub running: Running,
    pub addr: SocketAddr,
}

impl Process {
    pub fn start(config_path: &Path, addr: SocketAddr) -> Process {
        let log = std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into());
        let running = Running::serve(
            Path::new(env!("CARGO_BIN_EXE_flagpost")),
            config_path,
            &log,
            false,
        );
        Process { running, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn wait_ready(&self) {
        wait_healthy(self.addr).await;
    }

    pub fn kill9(&mut self) {
        self.running.kill9();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) {
        let status = self.running.terminate();
        assert!(status.success(), "flagpost exited with {status}");
    }
}

/// The test configuration: storage and flag files in `dir`, one token, and a disabled webhook on
/// the one environment (its outbox rows stay pending, so tests can count them).
pub fn test_config(dir: &Path, addr: SocketAddr) -> SidecarConfig {
    SidecarConfig::new(dir, addr)
        .flag_files(Some("20ms"), "250ms")
        .token("tests", Some("tests@example.com"), TOKEN)
        .project(1, "Default")
        .parked_webhook("parked", "http://127.0.0.1:9/never")
}

/// [`test_config`] as TOML, `extra` appended as it is.
pub fn config_toml(dir: &Path, addr: SocketAddr, extra: &str) -> String {
    test_config(dir, addr).extra(extra).toml()
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request; `Err` only when no HTTP answer came at all.
pub async fn send(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, Value), String> {
    let mut request = Request::builder().method(method).uri(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let has_content_type = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
    if body.is_some() && !has_content_type {
        request = request.header("content-type", "application/json");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let response = client().request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, value))
}

/// A request with the test token and an optional JSON body; panics when no answer comes.
pub async fn call(method: Method, url: &str, body: Option<Value>) -> (StatusCode, Value) {
    send(
        method,
        url,
        Some(TOKEN),
        body.map(|b| serde_json::to_vec(&b).unwrap()),
        &[],
    )
    .await
    .unwrap()
}

/// Polls `check` until it holds. Never a timing assertion: the deadline only turns a hang into
/// a failure with a message.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every committed event after `after`, with parsed bodies.
pub async fn events_after(base: &str, after: u64) -> Vec<(Value, Value)> {
    let mut out = Vec::new();
    let mut cursor = after;
    loop {
        let (status, page) = call(
            Method::GET,
            &format!("{base}/api/v1/events?after={cursor}&limit=1000"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let events = page["events"].as_array().unwrap().clone();
        if events.is_empty() {
            return out;
        }
        for e in events {
            cursor = e["event"]["sequence"].as_u64().unwrap();
            let body: Value = serde_json::from_str(e["body"].as_str().unwrap()).unwrap();
            out.push((e["event"].clone(), body));
        }
    }
}

pub async fn last_sequence(base: &str) -> u64 {
    let (_, page) = call(Method::GET, &format!("{base}/api/v1/events?limit=1"), None).await;
    page["last_sequence"].as_u64().unwrap()
}

/// The value of a metric line (`name{labels} value`) from `/metrics`, 0 when absent.
pub async fn metric(base: &str, line_prefix: &str) -> u64 {
    let (_, text) = send(Method::GET, &format!("{base}/metrics"), None, None, &[])
        .await
        .unwrap();
    text.as_str()
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A change a client was told is committed, with the answer that told it.
#[derive(Debug, Clone)]
pub struct Acknowledged {
    pub identifier: String,
    pub value: u64,
    pub answer: Value,
}

/// Streams identity-override changes to `feature` from `clients` concurrent clients into the real
/// binary at `addr`, and kills it with SIGKILL each time `per_round` more are acknowledged, `rounds`
/// times (`process` is the first run; the binary is restarted for each later round). Returns every
/// change acknowledged; the binary is left dead.
pub async fn stream_changes_and_kill(
    mut process: Process,
    config_path: &Path,
    feature: u64,
    clients: usize,
    rounds: usize,
    per_round: usize,
) -> Vec<Acknowledged> {
    let acknowledged: Arc<Mutex<Vec<Acknowledged>>> = Default::default();
    for round in 0..rounds {
        if round > 0 {
            process = Process::start(config_path, process.addr);
            process.wait_ready().await;
        }
        let base = process.url("");
        let send_change = move |client: usize, value: u64| {
            let base = base.clone();
            async move {
                let identifier = format!("r{round}-c{client}-{value}");
                let url = format!(
                    "{base}/api/v1/environments/1/features/{feature}/identities/{identifier}"
                );
                let body =
                    serde_json::to_vec(&serde_json::json!({"value": value, "enabled": true}))
                        .unwrap();
                match send(Method::PUT, &url, Some(TOKEN), Some(body), &[]).await {
                    Ok((StatusCode::OK, answer)) => Some(Acknowledged {
                        identifier,
                        value,
                        answer,
                    }),
                    // The daemon is gone (killed mid-request): never acknowledged, nothing owed.
                    Err(_) => None,
                    Ok((status, answer)) => panic!("unexpected {status}: {answer}"),
                }
            }
        };
        let target = (round + 1) * per_round;
        stream_until_killed(clients, target, &acknowledged, send_change, || {
            process.kill9()
        })
        .await;
    }
    let acknowledged = acknowledged.lock().unwrap();
    acknowledged.clone()
}

//! Issue 11, change streams, against the real binary: a native stream resumes across a restart
//! with `Last-Event-ID`, a client that stops reading is dropped while another keeps receiving,
//! `streams.max_streams` is enforced, a reload of an environment's keys ends its streams, and
//! 2,000 open streams cost little memory each.
//! (Flagsmith's own clients in realtime mode: `streams_sdk.rs`.)

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// One Server-Sent Event with data (comments and `retry:` alone are not events).
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

/// A stream read as it comes, over a real HTTP client.
pub struct Sse {
    pub status: u16,
    pub content_type: String,
    body: Incoming,
    buffer: Vec<u8>,
}

impl Sse {
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> Sse {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut request = http::Request::get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = tokio::time::timeout(
            Duration::from_secs(60),
            client.request(request.body(Empty::new()).unwrap()),
        )
        .await
        .expect("the stream answers in time")
        .expect("the stream's request succeeds");
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Sse {
            status: response.status().as_u16(),
            content_type,
            body: response.into_body(),
            buffer: Vec::new(),
        }
    }

    /// The next event; `Ok(None)` when the stream ended cleanly, `Err` when it broke. The
    /// deadline only turns a hang into a failure.
    pub async fn next(&mut self) -> Result<Option<Event>, String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse(&frame) {
                    return Ok(Some(event));
                }
                continue;
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .expect("an event within the deadline");
            match frame {
                None => return Ok(None),
                Some(Err(error)) => return Err(error.to_string()),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.buffer.extend_from_slice(data);
                    }
                }
            }
        }
    }

    pub async fn event(&mut self) -> Event {
        self.next()
            .await
            .expect("the stream holds")
            .expect("the stream goes on")
    }
}

fn parse(frame: &[u8]) -> Option<Event> {
    let text = std::str::from_utf8(frame).unwrap();
    let mut event = Event::default();
    let mut data = Vec::new();
    for line in text.lines() {
        match line.split_once(": ") {
            Some(("id", id)) => event.id = Some(id.to_owned()),
            Some(("event", name)) => event.event = Some(name.to_owned()),
            Some(("data", value)) => data.push(value),
            _ => {}
        }
    }
    event.data = data.join("\n");
    (!data.is_empty()).then_some(event)
}

/// The receiver binary on `addr`, environment 1 selected by `stream-key`, with `streams` as its
/// `[streams]` section.
pub struct Binary {
    pub addr: SocketAddr,
    pub running: Running,
}

impl Binary {
    pub async fn start(dir: &Path, addr: SocketAddr, streams: &str) -> Binary {
        let config = test_config(dir)
            .listen(addr)
            .intake(ANY_AGE)
            .environment(1, &["stream-key"])
            .extra(&format!("[streams]\n{streams}\n"))
            .write();
        let running = crate::crash::start_binary(&config, addr.port()).await;
        Binary { addr, running }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sets feature 1 of environment 1 to `value`, through a signed web hook.
    pub async fn change(&self, n: u64, value: Value) {
        let body = flag_event(1, 1, &Key::Default, false, true, value);
        let signed = Signed::new(&body, &format!("stream-change-{n}"), None);
        let (status, answer) =
            request("POST", &self.url("/webhook"), &signed.as_refs(), body).await;
        assert_eq!(status, 200, "{answer}");
    }

    pub async fn metrics(&self) -> String {
        let (_, text) = request("GET", &self.url("/metrics"), &[], Vec::new()).await;
        text.as_str().unwrap().to_owned()
    }

    /// Waits until `/metrics` has `line`.
    pub async fn wait_for_metric(&self, line: &str) {
        for _ in 0..600 {
            if self.metrics().await.lines().any(|l| l == line) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("/metrics never showed {line:?}:\n{}", self.metrics().await);
    }
}

/// The value of feature 1 in a flags event.
fn value_of(event: &Event) -> Value {
    let flags = event.json()["flags"].clone();
    flags
        .as_array()
        .unwrap()
        .iter()
        .find(|flag| flag["id"] == 1)
        .map(|flag| flag["value"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_stream_resumes_across_a_restart_with_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut binary = Binary::start(dir.path(), addr, "").await;
    binary.change(1, json!("a")).await;
    let mut stream = Sse::open(&binary.url("/v1/environments/1/stream"), &[]).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.content_type, "text/event-stream");
    let first = stream.event().await;
    assert_eq!(
        first.json()["full"],
        true,
        "a new client gets every flag first"
    );
    assert_eq!(value_of(&first), json!("a"));
    binary.change(2, json!("b")).await;
    let seen = stream.event().await;
    assert_eq!(value_of(&seen), json!("b"));
    assert_eq!(seen.json()["full"], false);
    let position = seen.id.clone().expect("every flags event has an id");

    // A stop ends the stream cleanly (the end of the body, not a broken connection).
    let status = binary.running.terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(stream.next().await.map(|e| e.is_none()), Ok(true));

    let binary = Binary::start(dir.path(), addr, "").await;
    let headers = [("last-event-id", position.as_str())];
    let mut resumed = Sse::open(&binary.url("/v1/environments/1/stream"), &headers).await;
    binary.change(3, json!("c")).await;
    // Nothing was missed, so nothing is sent again: the next event is the new change, numbered
    // after the one seen before the restart.
    let next = resumed.event().await;
    assert_eq!(value_of(&next), json!("c"));
    assert_eq!(next.json()["full"], false);
    let revision = |event: &Event| event.json()["revision"].as_u64().unwrap();
    assert!(
        revision(&next) > revision(&seen),
        "{:?} after {position}",
        next.id
    );

    // A client that saw "b" and comes back after "c" gets exactly what changed since.
    let mut late = Sse::open(&binary.url("/v1/environments/1/stream"), &headers).await;
    let caught_up = late.event().await;
    assert_eq!(caught_up.json()["full"], false, "{}", caught_up.data);
    assert_eq!(value_of(&caught_up), json!("c"));
    assert_eq!(caught_up.id, next.id);
    // One too old for what the restarted receiver keeps gets the whole state, once.
    let mut old = Sse::open(
        &binary.url("/v1/environments/1/stream"),
        &[("last-event-id", "0")],
    )
    .await;
    let full = old.event().await;
    assert_eq!(full.json()["full"], true);
    assert_eq!(value_of(&full), json!("c"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_from_another_cache_file_gets_the_full_state() {
    // Two receivers, as after a reset database or behind one balancer, each at revision 2 with
    // its own value.
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = Binary::start(first_dir.path(), free_addr(), "").await;
    let second = Binary::start(second_dir.path(), free_addr(), "").await;
    first.change(1, json!("a")).await;
    first.change(2, json!("b")).await;
    second.change(1, json!("x")).await;
    second.change(2, json!("y")).await;
    let mut stream = Sse::open(&first.url("/v1/environments/1/stream"), &[]).await;
    let seen = stream.event().await;
    assert_eq!(value_of(&seen), json!("b"));
    let position = seen.id.clone().unwrap();

    // The client moves to the other receiver with the first one's position: the same revision
    // there names another state, so it gets that state whole, never nothing.
    let headers = [("last-event-id", position.as_str())];
    let mut moved = Sse::open(&second.url("/v1/environments/1/stream"), &headers).await;
    let opening = moved.event().await;
    assert_eq!(opening.json()["revision"], seen.json()["revision"]);
    assert_eq!(opening.json()["full"], true, "{}", opening.data);
    assert_eq!(value_of(&opening), json!("y"));
    assert_ne!(opening.id, seen.id);
}

/// A raw connection that asks for a stream and never reads a byte of it, with a receive buffer
/// as small as the kernel allows.
async fn silent_stream(addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!("GET /v1/environments/1/stream HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_while_others_keep_receiving() {
    let dir = tempfile::tempdir().unwrap();
    let binary = Binary::start(dir.path(), free_addr(), "buffer_events = 4").await;
    binary.change(0, json!("start")).await;
    let mut reader = Sse::open(&binary.url("/v1/environments/1/stream"), &[]).await;
    reader.event().await;
    let mut silent = silent_stream(binary.addr).await;
    binary
        .wait_for_metric("flagpost_receiver_streams_open 2")
        .await;
    // Each change carries a 256 KiB value: the silent client's socket buffers and its 4 events
    // fill within a few MiB, while the reading client takes every one.
    let changes = 60;
    let big = |n: u64| json!(format!("{n:04}{}", "x".repeat(256 * 1024)));
    for n in 1..=changes {
        binary.change(n, big(n)).await;
        assert_eq!(value_of(&reader.event().await), big(n), "change {n}");
    }
    binary
        .wait_for_metric("flagpost_receiver_streams_ended_total{reason=\"too_slow\"} 1")
        .await;
    binary
        .wait_for_metric("flagpost_receiver_streams_open 1")
        .await;
    // Its connection is closed: what it has not read is all it will ever get.
    let mut sink = vec![0; 1 << 20];
    let closed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match silent.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the silent client's connection stays open");
    binary.change(changes + 1, json!("after")).await;
    assert_eq!(value_of(&reader.event().await), json!("after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_streams_is_enforced_and_a_closed_stream_frees_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let binary = Binary::start(
        dir.path(),
        free_addr(),
        "max_streams = 2\nheartbeat_secs = 1",
    )
    .await;
    let native = Sse::open(&binary.url("/v1/environments/1/stream"), &[]).await;
    let flagsmith = Sse::open(&binary.url("/sse/environments/stream-key/stream"), &[]).await;
    assert_eq!((native.status, flagsmith.status), (200, 200));
    let (status, error) = request(
        "GET",
        &binary.url("/v1/environments/1/stream"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(status, 503, "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("max_streams"),
        "{error}"
    );
    binary
        .wait_for_metric("flagpost_receiver_streams_refused_total 1")
        .await;
    // An unknown key is refused before it takes a place.
    let (status, _) = request(
        "GET",
        &binary.url("/sse/environments/nobody/stream"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(status, 401);
    drop(native);
    binary
        .wait_for_metric("flagpost_receiver_streams_ended_total{reason=\"client_gone\"} 1")
        .await;
    binary
        .wait_for_metric("flagpost_receiver_streams_open 1")
        .await;
    let again = Sse::open(&binary.url("/v1/environments/1/stream"), &[]).await;
    assert_eq!(again.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_an_environments_keys_ends_its_streams() {
    let dir = tempfile::tempdir().unwrap();
    let binary = Binary::start(dir.path(), free_addr(), "").await;
    let mut stream = Sse::open(&binary.url("/sse/environments/stream-key/stream"), &[]).await;
    assert_eq!(stream.status, 200);
    binary.change(1, json!("x")).await;
    let event = stream.event().await;
    assert_eq!(event.event.as_deref(), Some("environment_updated"));
    assert!(event.json()["updated_at"].as_f64().unwrap() > 1.7e9);
    // The key is replaced: the stream ends cleanly, and the old key no longer opens one.
    let config = std::fs::read_to_string(dir.path().join("receiver.toml")).unwrap();
    std::fs::write(
        dir.path().join("receiver.toml"),
        config.replace("\"stream-key\"", "\"new-key\""),
    )
    .unwrap();
    assert_eq!(stream.next().await.map(|e| e.is_none()), Ok(true));
    let (status, _) = request(
        "GET",
        &binary.url("/sse/environments/stream-key/stream"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(status, 401);
    binary
        .wait_for_metric("flagpost_receiver_streams_ended_total{reason=\"keys_reloaded\"} 1")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_stream_carries_what_changes_for_that_identity_only() {
    let dir = tempfile::tempdir().unwrap();
    let binary = Binary::start(dir.path(), free_addr(), "").await;
    binary.change(1, json!("default")).await;
    let traits = "%7B%22plan%22%3A%22pro%22%7D"; // {"plan":"pro"}
    let path = format!("/v1/environments/1/stream?identifier=u-1&traits={traits}");
    let mut identity = Sse::open(&binary.url(&path), &[]).await;
    let mut environment = Sse::open(&binary.url("/v1/environments/1/stream"), &[]).await;
    let first = identity.event().await;
    assert_eq!(first.json()["identifier"], "u-1");
    assert_eq!(first.json()["full"], true);
    assert_eq!(value_of(&first), json!("default"));
    environment.event().await;
    // An override for u-1 changes u-1's flags, and not the environment's.
    let body = flag_event(
        1,
        1,
        &Key::Identity("u-1".into()),
        false,
        true,
        json!("mine"),
    );
    let signed = Signed::new(&body, "identity-override", None);
    let (status, _) = request("POST", &binary.url("/webhook"), &signed.as_refs(), body).await;
    assert_eq!(status, 200);
    let changed = identity.event().await;
    assert_eq!(value_of(&changed), json!("mine"));
    assert_eq!(changed.json()["flags"][0]["reason"], "IDENTITY_OVERRIDE");
    binary.change(2, json!("next default")).await;
    let next = environment.event().await;
    assert_eq!(
        value_of(&next),
        json!("next default"),
        "no event for u-1's override"
    );
    // Traits must be a JSON object, and need an identifier.
    for bad in ["?identifier=u-1&traits=%5B1%5D", "?traits=%7B%7D"] {
        let url = binary.url(&format!("/v1/environments/1/stream{bad}"));
        let (status, error) = request("GET", &url, &[], Vec::new()).await;
        assert_eq!(status, 400, "{bad}: {error}");
    }
    let (status, _) = request(
        "GET",
        &binary.url("/v1/environments/9/stream"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(status, 404);
}

/// A field of `/proc/{pid}/{file}` in kB (`VmRSS` of `status`, `AnonHugePages` of `smaps_rollup`).
fn proc_kib(pid: u32, file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/{file}"))
}

/// Issue 11's memory target at a test's scale (the bench opens 10,000 in release): 2,000 open
/// streams take no transparent huge pages (with them, mimalloc's arena was resident in whole
/// 2 MiB pages: 20 KiB per stream in the bench instead of 12). The few the process may have
/// touched before refusing them at start stay; none are added.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_open_streams_hold_no_huge_pages_and_little_memory_each() {
    const STREAMS: usize = 2000;
    flagpost::serve::raise_open_files_limit();
    let dir = tempfile::tempdir().unwrap();
    let binary = Binary::start(dir.path(), free_addr(), "max_streams = 2100").await;
    binary.change(1, json!("before")).await;
    let pid = binary.running.id();
    let before = proc_kib(pid, "status", "VmRSS");
    let huge_before = proc_kib(pid, "smaps_rollup", "AnonHugePages");
    let mut streams = Vec::with_capacity(STREAMS);
    for n in 0..STREAMS {
        let mut stream = tokio::net::TcpStream::connect(binary.addr).await.unwrap();
        let path = match n % 2 {
            0 => "/sse/environments/stream-key/stream",
            _ => "/v1/environments/1/stream",
        };
        let request = format!("GET {path} HTTP/1.1\r\nhost: {}\r\n\r\n", binary.addr);
        stream.write_all(request.as_bytes()).await.unwrap();
        streams.push(stream);
    }
    binary
        .wait_for_metric(&format!("flagpost_receiver_streams_open {STREAMS}"))
        .await;
    // Every stream has its opening: the answers are written, not waiting to be.
    for stream in &mut streams {
        let mut opening = [0u8; 256];
        assert!(stream.read(&mut opening).await.unwrap() > 0);
    }
    let per_stream = (proc_kib(pid, "status", "VmRSS") - before) as f64 / STREAMS as f64;
    let huge = proc_kib(pid, "smaps_rollup", "AnonHugePages");
    println!(
        "{STREAMS} streams: {per_stream:.1} KiB of RSS each (debug build), {huge} kB in huge pages"
    );
    assert_eq!(huge, huge_before, "the streams took transparent huge pages");
    // 12 KiB a stream in this debug build and 11.7 in release; 20.8 with huge pages.
    assert!(per_stream < 16.0, "{per_stream:.1} KiB of RSS per stream");
}

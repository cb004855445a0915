//! Benchmarks of flagpost-receiver against a minimal hyper server on the same machine, same run.
//!
//! `cargo bench -p flagpost-receiver --bench receiver_bench -- [lookup] [intake] [memory]`
//! (all three without arguments). Needs `wrk` on the PATH for the lookup part.
//!
//! 1. lookup: `GET /api/v1/flags/` for an environment of 50 flags under `wrk`, vs. a minimal hyper
//!    server returning a body of the same size.
//! 2. intake: 32 concurrent senders (a Rust load generator here, signing every request with a
//!    distinct `webhook-id`) POSTing to the receiver, which verifies and durably commits before
//!    answering, vs. the same generator against a minimal hyper server that reads the body and
//!    answers 200.
//! 3. memory: RSS of the receiver holding 10 environments x 1,000 features and 1,000,000 identity
//!    overrides, and its start-up time from that redb file.
//!
//! The receiver runs as the real binary, the minimal server as this binary re-run with
//! `--minimal-server`, each in its own process; the load generators run here.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flagpost::signing::Secret;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;

#[path = "../../tests/support/config.rs"]
#[allow(dead_code)]
mod config;
#[path = "../../tests/support/process.rs"]
#[allow(dead_code)]
mod process;
#[path = "../../benches/support/mod.rs"]
#[allow(dead_code)]
mod support;
use config::ReceiverConfig;
use process::{Running, free_port};
use support::{CommitWatch, RECEIVER_COMMITS, Wrk};

const SECRET: &str = "bench-secret";
const SENDERS: usize = 32;
/// The two servers are measured in alternating rounds, so that a burst of other load on the
/// machine hits both rather than one.
const ROUNDS: usize = 3;
const ROUND_SECS: u64 = 5;

/// Runs `measure` against the receiver and the minimal server in alternating rounds; answers the
/// mean rate of each.
fn alternate(mut measure: impl FnMut(bool) -> f64) -> (f64, f64) {
    let (mut receiver, mut minimal) = (0.0, 0.0);
    for _ in 0..ROUNDS {
        receiver += measure(true);
        minimal += measure(false);
    }
    (receiver / ROUNDS as f64, minimal / ROUNDS as f64)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--minimal-server") {
        minimal_server(args[1].parse().unwrap(), args[2].parse().unwrap());
        return;
    }
    let all = args.is_empty();
    let wants = |part: &str| all || args.iter().any(|a| a == part);
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if wants("lookup") {
        lookup();
    }
    if wants("intake") {
        intake();
    }
    if wants("memory") {
        memory();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The smallest useful HTTP server: GET answers `body_len` bytes of JSON, POST reads the body and
/// answers a short JSON acknowledgement, as the receiver does.
fn minimal_server(port: u16, body_len: usize) {
    let mut body = vec![b' '; body_len];
    body[0] = b'[';
    body[body_len - 1] = b']';
    let body = Bytes::from(body);
    runtime().block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        support::serve_minimal(
            listener,
            move |request: hyper::Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    let answer = if request.method() == hyper::Method::POST {
                        let _ = request.into_body().collect().await;
                        Bytes::from_static(b"{\"status\":\"applied\"}")
                    } else {
                        body
                    };
                    hyper::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(answer))
                        .unwrap()
                }
            },
        )
        .await;
    });
}

fn wait_http(port: u16, path: &str) {
    for _ in 0..6000 {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing answered on port {port}");
}

fn start_minimal(body_len: usize) -> (Running, u16) {
    let port = free_port();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--minimal-server", &port.to_string(), &body_len.to_string()])
        .spawn()
        .unwrap();
    wait_http(port, "/");
    (Running { child }, port)
}

/// Starts the receiver binary with its files in `dir`; answers the process and its port.
fn start_receiver(dir: &Path, snapshot: bool) -> (Running, u16) {
    let port = free_port();
    let mut config = ReceiverConfig::new(dir)
        .listen(([127, 0, 0, 1], port).into())
        .secret(SECRET)
        .environment(1, &["bench-key"]);
    if !snapshot {
        config = config.without_snapshot();
    }
    let log = std::env::var("BENCH_RECEIVER_LOG").unwrap_or_else(|_| "warn".into());
    let binary = Path::new(env!("CARGO_BIN_EXE_flagpost-receiver"));
    let receiver = Running::serve(binary, &config.write(), &log, false);
    wait_http(port, "/healthz");
    (receiver, port)
}

fn event_body(
    env: u64,
    feature: u64,
    identifier: Option<&str>,
    value: serde_json::Value,
) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "data": {
            "changed_by": "bench",
            "new_state": {
                "enabled": true, "environment": env,
                "feature": {"created_date": "2026-01-01T00:00:00.000000Z", "default_enabled": false,
                            "description": null, "id": feature, "initial_value": null,
                            "name": format!("feature_{feature:03}"), "project": 1, "type": "STANDARD"},
                "feature_segment": null, "feature_state_value": value, "id": feature,
                "identity": identifier.map(|_| 1), "identity_identifier": identifier,
            },
            "previous_state": null,
            "timestamp": "2026-01-01T00:00:00.000000Z"
        },
        "event_type": "FLAG_UPDATED"
    }))
    .unwrap()
}

/// flagpost's event `seq` as flagpost sends it: the receiver orders by the sequence its signed
/// `webhook-id` names, so the id is flagpost's for that sequence.
fn signed_request(addr: SocketAddr, body: Vec<u8>, seq: u64) -> hyper::Request<Full<Bytes>> {
    let id = &flagpost::store::events::event_id(0xbe4c_0000_0000_0001, seq);
    let secret = Secret::new(SECRET).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    hyper::Request::post(format!("http://{addr}/webhook"))
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", &now)
        .header(
            "webhook-signature",
            secret.standard_signature(id, &now, &body),
        )
        .header("x-flagpost-sequence", seq.to_string())
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// Runs `wrk` with 32 connections for a round and answers its requests per second.
fn wrk(url: &str, headers: &[&str]) -> f64 {
    headers
        .iter()
        .fold(Wrk::new(32, ROUND_SECS), |wrk, header| wrk.header(header))
        .run(url)
}

fn lookup() {
    let dir = tempfile::tempdir().unwrap();
    let (_receiver, port) = start_receiver(dir.path(), true);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let body_len = runtime().block_on(async {
        for feature in 1..=50u64 {
            let body = event_body(
                1,
                feature,
                None,
                json!(format!("value-of-feature-{feature}")),
            );
            send_one(addr, signed_request(addr, body, feature)).await;
        }
        let request = hyper::Request::get(format!("http://{addr}/api/v1/flags/"))
            .header("host", addr.to_string())
            .header("x-environment-key", "bench-key")
            .body(Full::new(Bytes::new()))
            .unwrap();
        send_one(addr, request).await.len()
    });
    let (_minimal, minimal_port) = start_minimal(body_len);
    let (receiver_rate, minimal_rate) = alternate(|receiver| {
        if receiver {
            wrk(
                &format!("http://127.0.0.1:{port}/api/v1/flags/"),
                &["X-Environment-Key: bench-key"],
            )
        } else {
            wrk(
                &format!("http://127.0.0.1:{minimal_port}/api/v1/flags/"),
                &[],
            )
        }
    });
    println!(
        "lookup GET /api/v1/flags/ (50 flags, {body_len} bytes): receiver {receiver_rate:.0} req/s, minimal hyper {minimal_rate:.0} req/s, ratio {:.0}%",
        100.0 * receiver_rate / minimal_rate
    );
}

/// Sends one request on a fresh connection; panics unless it answers 200.
async fn send_one(addr: SocketAddr, request: hyper::Request<Full<Bytes>>) -> Bytes {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    body
}

/// 32 senders on keep-alive connections for `ROUND_SECS`; answers 2xx per second and counts
/// failures into `failed`. `next` numbers the events across rounds, so no id is sent twice.
fn drive_intake(addr: SocketAddr, next: &Arc<AtomicU64>, failed: &Arc<AtomicU64>) -> f64 {
    let ok = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    runtime().block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(ROUND_SECS);
        let mut tasks = Vec::new();
        for _ in 0..SENDERS {
            let (ok, failed, next) = (ok.clone(), failed.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(connection);
                while tokio::time::Instant::now() < deadline {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    // 50 features x 2,000 identities: a bounded cache that keeps changing.
                    let identifier = format!("user-{}", n % 2_000);
                    let body = event_body(1, n % 50 + 1, Some(&identifier), json!(n));
                    let request = signed_request(addr, body, n);
                    match sender.send_request(request).await {
                        Ok(response) => {
                            let status = response.status();
                            let _ = response.into_body().collect().await;
                            if status.is_success() {
                                ok.fetch_add(1, Ordering::Relaxed);
                            } else {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    ok.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn intake() {
    let dir = tempfile::tempdir().unwrap();
    let (_receiver, port) = start_receiver(dir.path(), true);
    let (_minimal, minimal_port) = start_minimal(2);
    let next = Arc::new(AtomicU64::new(1_000));
    let receiver_failed = Arc::new(AtomicU64::new(0));
    let minimal_failed = Arc::new(AtomicU64::new(0));
    let commits = CommitWatch::start(([127, 0, 0, 1], port).into(), RECEIVER_COMMITS);
    let (receiver_rate, minimal_rate) = alternate(|receiver| {
        if receiver {
            drive_intake(([127, 0, 0, 1], port).into(), &next, &receiver_failed)
        } else {
            drive_intake(
                ([127, 0, 0, 1], minimal_port).into(),
                &next,
                &minimal_failed,
            )
        }
    });
    let receiver_failed = receiver_failed.load(Ordering::Relaxed);
    let minimal_failed = minimal_failed.load(Ordering::Relaxed);
    println!(
        "intake, {SENDERS} senders, signed, durable: receiver {receiver_rate:.0} webhooks/s ({receiver_failed} failed), minimal hyper {minimal_rate:.0} req/s ({minimal_failed} failed), ratio {:.0}%; receiver {}",
        100.0 * receiver_rate / minimal_rate,
        commits.note(Some(SENDERS))
    );
}

/// flagpost's document of environment `env` (Flagsmith's format): 1,000 features, each with 100
/// identity overrides of identities of their own.
fn flagpost_document(env: u64) -> serde_json::Value {
    let feature =
        |id: u64| json!({"id": id, "name": format!("feature_{id:04}"), "type": "STANDARD"});
    let state = |id: u64, enabled: bool, value: serde_json::Value| {
        json!({"django_id": null, "enabled": enabled, "feature": feature(id),
            "feature_segment": null, "feature_state_value": value,
            "featurestate_uuid": format!("00000000-0000-8000-8000-{id:012}"),
            "multivariate_feature_state_values": []})
    };
    let identities: Vec<_> = (1..=1_000u64)
        .flat_map(|id| (0..100u64).map(move |i| (id, i)))
        .map(|(id, i)| {
            json!({"identifier": format!("user-{}", id * 100 + i),
                "identity_features": [state(id, i % 2 == 0, json!(i))]})
        })
        .collect();
    json!({
        "api_key": format!("client-{env}"), "id": env, "name": format!("env-{env}"),
        "feature_states": (1..=1_000u64).map(|id| state(id, true, json!(format!("v{id}")))).collect::<Vec<_>>(),
        "identity_overrides": identities,
        "project": {"id": 1, "name": "bench", "hide_disabled_flags": false, "segments": [],
            "organisation": {"id": 1, "name": "", "feature_analytics": false,
                "persist_trait_data": true, "stop_serving_flags": false}},
        "updated_at": "2026-01-01T00:00:00Z",
        "flagpost": {"last_sequence": 1, "instance": "0000000000000001"}
    })
}

fn memory() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    // Fill the file through the library's own writer: 10 documents of 1,000 features, each
    // feature with 100 identity overrides.
    runtime().block_on(async {
        let (writer, _published, thread) =
            flagpost_receiver::intake::writer::start(&dir.path().join("receiver.redb"), 16 << 20)
                .unwrap();
        for env in 1..=10u64 {
            let raw = Bytes::from(serde_json::to_vec(&flagpost_document(env)).unwrap());
            let document =
                flagpost_receiver::documents::UpstreamDocument::parse(raw, env, 0, 0).unwrap();
            writer
                .load_flagpost_document(flagpost_receiver::documents::FlagpostDocument {
                    document: Arc::new(document),
                    last_sequence: 1,
                    sender: 1,
                })
                .await
                .unwrap();
        }
        drop(writer);
        drop(_published);
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
    });
    let file_mib = std::fs::metadata(dir.path().join("receiver.redb"))
        .unwrap()
        .len() as f64
        / 1048576.0;
    println!(
        "memory: wrote 10 x 1,000 features, 1,000,000 identity overrides in {:.1} s ({file_mib:.0} MiB redb file)",
        started.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    // No snapshot here: the measure is the cache itself.
    let (receiver, port) = start_receiver(dir.path(), false);
    let startup = start.elapsed();
    wait_http(port, "/v1/environments/10/identities/user-100099/flags");
    let rss = support::memory_kib(receiver.id(), "VmRSS");
    println!(
        "memory: start-up to /healthz {:.2} s; RSS {:.0} MiB with 10 x 1,000 features and 1,000,000 identity overrides",
        startup.as_secs_f64(),
        rss as f64 / 1024.0
    );
}

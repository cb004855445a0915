//! Issue 9's targets: the receiver answering from environment documents fetched from an upstream
//! Flagsmith, against a minimal hyper server returning the same body, in the same run.
//!
//! `cargo bench -p flagpost-receiver --bench documents_bench -- [identities] [flags] [document]
//! [memory] [freshness] [ofrep]` (all without arguments). Needs `wrk` on the PATH.
//!
//! 1. identities: `POST /api/v1/identities/` with 4 traits, on a generated document of 50
//!    features, 20 segments of 3-5 conditions and 2 multivariate features.
//! 2. flags: `GET /api/v1/flags/` on the same document.
//! 3. document: `GET /api/v1/environment-document/` of a 1,000-feature document.
//! 4. memory: RSS with 10 environments x 1,000 features x 100 segments and 1,000,000 identity
//!    overrides (10,000 identities x 10 features per environment).
//! 5. freshness: at 100 changes/s (`FLAGPOST_BENCH_CHANGES`, default 1,000), each change a new
//!    document upstream and a signed `FLAG_UPDATED` web hook: from the web hook's acknowledgement
//!    to the first lookup showing it, and from the web hook to the first lookup showing the
//!    refreshed document (a value only the document carries), p50 / p99.
//! 6. ofrep (issue 11): `POST /ofrep/v1/evaluate/flags`, the bulk evaluation of the same 50 flags
//!    for a context with 4 traits.
//!
//! `documents/ofrep_callgrind.sh` counts the instructions per OFREP answer instead (with
//! `--write-document FILE`, this binary writes the document it serves).
//!
//! The receiver is the real binary; the upstream Flagsmith a minimal server in this process,
//! serving generated documents by server key; the comparison server this binary re-run with
//! `--minimal-server PORT FILE`, answering the file's bytes to every request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flagpost::signing::Secret;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

#[path = "../../tests/support/config.rs"]
#[allow(dead_code)]
mod config;
#[path = "documents/generate.rs"]
mod generate;
#[path = "../../tests/support/process.rs"]
#[allow(dead_code)]
mod process;
#[path = "../../benches/support/mod.rs"]
#[allow(dead_code)]
mod support;
use config::ReceiverConfig;
use generate::{Shape, client_key, server_key};
use process::{Running, free_port};
use support::{Wrk, ms, percentile};

const SECRET: &str = "bench-secret";
const ROUNDS: usize = 3;
const ROUND_SECS: u64 = 5;

/// Issue 9's identity benchmark document.
const SMALL: Shape = Shape {
    features: 50,
    multivariate: 2,
    segments: 20,
    identities: 0,
    overrides_per_identity: 0,
};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--minimal-server") {
        minimal_server(args[1].parse().unwrap(), Path::new(&args[2]));
        return;
    }
    // For `documents/ofrep_callgrind.sh`: the identity and OFREP parts' document, as a file.
    if args.first().map(String::as_str) == Some("--write-document") {
        std::fs::write(&args[1], generate::document(1, &SMALL, 1)).unwrap();
        return;
    }
    support::require_wrk();
    let all = args.is_empty();
    let wants = |part: &str| all || args.iter().any(|a| a == part);
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if wants("identities") || wants("flags") {
        identities_and_flags(wants("identities"), wants("flags"));
    }
    if wants("document") {
        document();
    }
    if wants("memory") {
        memory();
    }
    if wants("freshness") {
        freshness();
    }
    if wants("ofrep") {
        ofrep();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The comparison server: every request (its body read) gets the bytes of `file`.
fn minimal_server(port: u16, file: &Path) {
    let body = Bytes::from(std::fs::read(file).unwrap());
    runtime().block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        support::serve_minimal(
            listener,
            move |request: hyper::Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    let _ = request.into_body().collect().await;
                    hyper::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(body))
                        .unwrap()
                }
            },
        )
        .await;
    });
}

/// The minimal server answering `body`, as its own process; its port.
fn start_minimal(dir: &Path, body: &[u8]) -> (Running, u16) {
    let file = dir.join("minimal-body.json");
    std::fs::write(&file, body).unwrap();
    let port = free_port();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--minimal-server")
        .arg(port.to_string())
        .arg(&file)
        .spawn()
        .unwrap();
    let running = Running { child };
    wait_until(|| support::http_get(([127, 0, 0, 1], port).into(), "/").is_some());
    (running, port)
}

fn wait_until(mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !ready() {
        assert!(Instant::now() < deadline, "not ready within 10 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The upstream Flagsmith: documents by server key, replaceable while it runs.
#[derive(Clone, Default)]
struct Upstream {
    documents: Arc<Mutex<HashMap<String, Bytes>>>,
}

impl Upstream {
    fn start(&self) -> SocketAddr {
        let documents = self.documents.clone();
        support::serve_minimal_on_thread(
            ([127, 0, 0, 1], 0).into(),
            move |request: hyper::Request<hyper::body::Incoming>| {
                let key = request
                    .headers()
                    .get("x-environment-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let document = documents.lock().unwrap().get(&key).cloned();
                async move {
                    let (status, body) = match document {
                        Some(body) => (200, body),
                        None => (403, Bytes::from_static(b"{\"detail\": \"Invalid\"}")),
                    };
                    hyper::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Full::new(body))
                        .unwrap()
                }
            },
        )
    }

    /// Environment 1's document at version `n`, unless a later one is served already (changes
    /// are made concurrently).
    fn serve_newer(&self, n: u64) {
        let mut documents = self.documents.lock().unwrap();
        let newer = documents
            .get(&server_key(1))
            .is_none_or(|current| flag_number_in_document(current) < n);
        if newer {
            documents.insert(server_key(1), generate::document(1, &SMALL, n).into());
        }
    }

    fn serve(&self, env: u64, document: Vec<u8>) {
        let mut documents = self.documents.lock().unwrap();
        documents.insert(server_key(env), document.into());
    }
}

/// The receiver binary holding environments `1..=envs` from `upstream`; answers once `/readyz`
/// says every document is in.
fn start_receiver(dir: &Path, upstream: SocketAddr, envs: u64) -> (Running, u16) {
    let port = free_port();
    let mut environments = String::new();
    for env in 1..=envs {
        environments.push_str(&format!(
            "[[environments]]\nid = {env}\nkeys = [\"{}\"]\nserver_keys = [\"{}\"]\n\
             [environments.upstream]\nurl = \"http://{upstream}\"\nserver_key = {{ value = \"{}\" }}\n",
            client_key(env),
            server_key(env),
            server_key(env),
        ));
    }
    let config = ReceiverConfig::new(dir)
        .listen(([127, 0, 0, 1], port).into())
        .secret(SECRET)
        .without_snapshot()
        .extra(&environments)
        .write();
    let log = std::env::var("BENCH_RECEIVER_LOG").unwrap_or_else(|_| "warn".into());
    let binary = Path::new(env!("CARGO_BIN_EXE_flagpost-receiver"));
    let receiver = Running::serve(binary, &config, &log, false);
    wait_until(|| support::http_get(([127, 0, 0, 1], port).into(), "/readyz").is_some());
    (receiver, port)
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One request; answers status and body.
async fn send(
    client: &HttpClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Bytes) {
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// The receiver's answer to a request, which the minimal server will then return as it is.
fn answer_of(port: u16, method: &str, path: &str, key: &str, body: &[u8]) -> Vec<u8> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let headers = [
        ("x-environment-key", key),
        ("content-type", "application/json"),
    ];
    let (status, answer) =
        runtime().block_on(send(&client(), method, &url, &headers, body.to_vec()));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    answer.to_vec()
}

/// Receiver and minimal server under the same wrk runs, alternating rounds; prints the row with
/// the target ratio (issue 9) and whether this run met it.
fn compare(what: &str, receiver_port: u16, minimal_port: u16, path: &str, wrk: &Wrk, target: f64) {
    let (mut receiver, mut minimal) = (0.0, 0.0);
    for _ in 0..ROUNDS {
        receiver += wrk.run(&format!("http://127.0.0.1:{receiver_port}{path}"));
        minimal += wrk.run(&format!("http://127.0.0.1:{minimal_port}{path}"));
    }
    let (receiver, minimal) = (receiver / ROUNDS as f64, minimal / ROUNDS as f64);
    let ratio = 100.0 * receiver / minimal;
    let verdict = if ratio >= target { "met" } else { "MISSED" };
    println!(
        "{what}: receiver {receiver:.0} req/s, minimal hyper {minimal:.0} req/s, \
         ratio {ratio:.0}% (target >= {target:.0}%: {verdict})"
    );
}

fn identities_and_flags(identities: bool, flags: bool) {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::default();
    upstream.serve(1, generate::document(1, &SMALL, 1));
    let (_receiver, port) = start_receiver(dir.path(), upstream.start(), 1);
    let key = client_key(1);
    let key_header = format!("X-Environment-Key: {key}");
    if identities {
        let body =
            serde_json::to_vec(&json!({"identifier": "user-7", "traits": generate::traits()}))
                .unwrap();
        let answer = answer_of(port, "POST", "/api/v1/identities/", &key, &body);
        let (_minimal, minimal_port) = start_minimal(dir.path(), &answer);
        let script = support::post_script(dir.path(), &body);
        let wrk = Wrk::new(32, ROUND_SECS).script(&script).header(&key_header);
        let what = format!(
            "POST /api/v1/identities/, 4 traits, 50 features, 20 segments, 2 multivariate ({} bytes)",
            answer.len()
        );
        compare(&what, port, minimal_port, "/api/v1/identities/", &wrk, 40.0);
    }
    if flags {
        let answer = answer_of(port, "GET", "/api/v1/flags/", &key, b"");
        let (_minimal, minimal_port) = start_minimal(dir.path(), &answer);
        let wrk = Wrk::new(32, ROUND_SECS).header(&key_header);
        let what = format!("GET /api/v1/flags/, 50 flags ({} bytes)", answer.len());
        compare(&what, port, minimal_port, "/api/v1/flags/", &wrk, 80.0);
    }
}

/// OFREP's bulk evaluation: the identities part's identity and traits, as an OpenFeature context.
fn ofrep() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::default();
    upstream.serve(1, generate::document(1, &SMALL, 1));
    let (_receiver, port) = start_receiver(dir.path(), upstream.start(), 1);
    let key = client_key(1);
    let mut context = serde_json::Map::new();
    context.insert("targetingKey".into(), json!("user-7"));
    for t in generate::traits().as_array().unwrap() {
        let name = t["trait_key"].as_str().unwrap().to_owned();
        context.insert(name, t["trait_value"].clone());
    }
    let body = serde_json::to_vec(&json!({ "context": context })).unwrap();
    let path = "/ofrep/v1/evaluate/flags";
    let answer = answer_of(port, "POST", path, &key, &body);
    let (_minimal, minimal_port) = start_minimal(dir.path(), &answer);
    let script = support::post_script(dir.path(), &body);
    let wrk = Wrk::new(32, ROUND_SECS)
        .script(&script)
        .header(&format!("X-API-Key: {key}"));
    let what = format!(
        "POST {path}, 4 traits, 50 flags, 20 segments, 2 multivariate ({} bytes)",
        answer.len()
    );
    compare(&what, port, minimal_port, path, &wrk, 40.0);
}

fn document() {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape {
        features: 1_000,
        ..SMALL
    };
    let upstream = Upstream::default();
    upstream.serve(1, generate::document(1, &shape, 1));
    let (_receiver, port) = start_receiver(dir.path(), upstream.start(), 1);
    let key = server_key(1);
    let answer = answer_of(port, "GET", "/api/v1/environment-document/", &key, b"");
    let (_minimal, minimal_port) = start_minimal(dir.path(), &answer);
    let wrk = Wrk::new(32, ROUND_SECS).header(&format!("X-Environment-Key: {key}"));
    let what = format!(
        "GET /api/v1/environment-document/, 1,000 features ({} bytes)",
        answer.len()
    );
    compare(
        &what,
        port,
        minimal_port,
        "/api/v1/environment-document/",
        &wrk,
        80.0,
    );
}

fn memory() {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape {
        features: 1_000,
        multivariate: 2,
        segments: 100,
        identities: 10_000,
        overrides_per_identity: 10,
    };
    let upstream = Upstream::default();
    let mut bytes = 0;
    for env in 1..=10 {
        let document = generate::document(env, &shape, 1);
        bytes += document.len();
        upstream.serve(env, document);
    }
    let started = Instant::now();
    let (receiver, port) = start_receiver(dir.path(), upstream.start(), 10);
    let ready = started.elapsed();
    let rss = support::memory_kib(receiver.id(), "VmRSS") / 1024;
    println!(
        "memory: 10 environments x 1,000 features x 100 segments + 1,000,000 identity overrides \
         ({} MiB of documents): ready in {:.1} s, RSS {rss} MiB, peak {} MiB",
        bytes >> 20,
        ready.as_secs_f64(),
        support::peak_rss_mib(receiver.id())
    );
    // Each environment prepared for evaluation (built on its first request) and answering.
    let body = json!({"identifier": "user-17", "traits": generate::traits()}).to_string();
    for env in 1..=10 {
        let key = client_key(env);
        answer_of(port, "POST", "/api/v1/identities/", &key, body.as_bytes());
    }
    let rss = support::memory_kib(receiver.id(), "VmRSS") / 1024;
    println!("memory: after an identity answer from each environment, RSS {rss} MiB");
}

/// A Flagsmith `FLAG_UPDATED` of feature 1's environment default to `value`, signed as Flagsmith
/// signs (`X-Flagsmith-Signature` only).
fn flag_updated(value: u64) -> (Vec<u8>, String) {
    let now = time::OffsetDateTime::now_utc();
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    let body = serde_json::to_vec(&json!({
        "data": {"changed_by": "bench", "timestamp": now.format(&format).unwrap(),
                 "new_state": {"enabled": true, "environment": {"id": 1, "name": "bench-1"},
                               "feature": {"id": 1, "name": "feature_0001", "type": "MULTIVARIATE",
                                           "created_date": "2026-12-01T00:00:00.000000Z",
                                           "default_enabled": true, "description": null,
                                           "initial_value": null, "project": {"id": 1, "name": "bench"}},
                               "feature_segment": null, "feature_state_value": value,
                               "id": 10_000_001, "identity": null, "identity_identifier": null,
                               "multivariate_feature_state_values": []}},
        "event_type": "FLAG_UPDATED",
    }))
    .unwrap();
    let signature = Secret::new(SECRET).unwrap().flagsmith_signature(&body);
    (body, signature)
}

/// Feature `name`'s value in a `/api/v1/flags/` answer, as a number.
fn flag_number(flags: &[u8], name: &str) -> u64 {
    let flags: Value = serde_json::from_slice(flags).unwrap_or(Value::Null);
    flags
        .as_array()
        .and_then(|all| all.iter().find(|f| f["feature"]["name"] == name))
        .and_then(|flag| flag["feature_state_value"].as_u64())
        .unwrap_or(0)
}

/// Change `n`: the new document upstream, then its web hook; polls lookups until both show.
async fn one_change(
    client: HttpClient,
    upstream: Upstream,
    port: u16,
    n: u64,
) -> (Duration, Duration) {
    upstream.serve_newer(n);
    let (body, signature) = flag_updated(n);
    let webhook = format!("http://127.0.0.1:{port}/webhook");
    let headers = [
        ("content-type", "application/json"),
        ("x-flagsmith-signature", signature.as_str()),
    ];
    let sent = Instant::now();
    let (status, answer) = send(&client, "POST", &webhook, &headers, body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let acknowledged = Instant::now();
    let flags = format!("http://127.0.0.1:{port}/api/v1/flags/");
    let key = client_key(1);
    let lookup = [("x-environment-key", key.as_str())];
    let (mut changed, mut refreshed) = (None, None);
    while refreshed.is_none() {
        let (_, answer) = send(&client, "GET", &flags, &lookup, Vec::new()).await;
        if changed.is_none() && flag_number(&answer, "feature_0001") >= n {
            changed = Some(acknowledged.elapsed());
        }
        if flag_number(&answer, "feature_0002") >= n {
            refreshed = Some(sent.elapsed());
            changed.get_or_insert(acknowledged.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (changed.unwrap(), refreshed.unwrap())
}

/// The version of a generated document (its feature 2's value).
fn flag_number_in_document(document: &[u8]) -> u64 {
    let document: Value = serde_json::from_slice(document).unwrap();
    document["feature_states"][1]["feature_state_value"]
        .as_u64()
        .unwrap_or(0)
}

fn freshness() {
    let changes = support::env_number("FLAGPOST_BENCH_CHANGES", 1_000);
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::default();
    upstream.serve(1, generate::document(1, &SMALL, 1));
    let (_receiver, port) = start_receiver(dir.path(), upstream.start(), 1);
    let (mut changed, mut refreshed): (Vec<Duration>, Vec<Duration>) = runtime().block_on(async {
        let client = client();
        let start = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..changes)
            .map(|i| {
                let (client, upstream) = (client.clone(), upstream.clone());
                tokio::spawn(async move {
                    tokio::time::sleep_until(start + Duration::from_millis(10 * i)).await;
                    one_change(client, upstream, port, i + 2).await
                })
            })
            .collect();
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.unwrap());
        }
        times.into_iter().unzip()
    });
    changed.sort();
    refreshed.sort();
    println!(
        "freshness at 100 changes/s, {changes} changes: web hook acknowledged to changed lookup \
         p50 {} / p99 {}; web hook sent to refreshed document p50 {} / p99 {}",
        ms(percentile(&changed, 0.5)),
        ms(percentile(&changed, 0.99)),
        ms(percentile(&refreshed, 0.5)),
        ms(percentile(&refreshed, 0.99)),
    );
}

//! The change path, measured: durable changes through the HTTP API against this machine's HTTP
//! ceiling, acknowledgement latency at a fixed rate, flag-file apply rate, memory, and file size.
//!
//! Run with `cargo bench --bench change_path` (needs `wrk`: `apt-get install wrk`). Every figure is
//! printed as a Markdown table row for the README. `FLAGPOST_BENCH_SECONDS` sets each wrk run's
//! length (default 10). The store holds 100 segments with rules and a multivariate feature with
//! allocations on every override before anything is measured (issue 10's model).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[path = "../tests/support/config.rs"]
#[allow(dead_code)]
mod config;
#[path = "../tests/support/process.rs"]
#[allow(dead_code)]
mod process;
#[allow(dead_code)]
mod support;
use config::SidecarConfig;
use process::{Running, free_addr};
use support::{CommitWatch, SIDECAR_COMMITS, Wrk, row};

const TOKEN: &str = "bench-token-0123456789";
/// The wrk script of every change run (shared with `callgrind/change_path.sh`), which sends `TOKEN`.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/change_path.lua");

fn main() {
    let seconds = support::env_number("FLAGPOST_BENCH_SECONDS", 10);
    support::require_wrk();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    println!("| measurement | result |\n| --- | --- |");

    // The ceiling: a minimal hyper server that answers 200, under the same wrk script.
    let ceiling_addr = runtime.block_on(start_minimal_server());
    let script = PathBuf::from(SCRIPT);
    let ceiling = wrk(ceiling_addr, 64, seconds, &script);
    row(
        "HTTP ceiling: minimal hyper server, wrk, 64 connections",
        format!("{ceiling:.0} req/s"),
    );

    // flagpost, the real binary, on its own port and file.
    let mut daemon = Daemon::start(work.path());
    runtime.block_on(daemon.prepare());
    let commits = daemon.watch_commits();
    let durable = wrk(daemon.addr, 64, seconds, &script);
    row(
        "flagpost durable changes, wrk, 64 connections",
        format!(
            "{durable:.0} changes/s ({:.0}% of the ceiling; {})",
            100.0 * durable / ceiling,
            commits.note(Some(64))
        ),
    );
    row(
        "flagpost peak RSS after the 64-connection run",
        format!("{} MiB", daemon.peak_rss_mib()),
    );
    let commits = daemon.watch_commits();
    let single = wrk(daemon.addr, 1, seconds, &script);
    row(
        "flagpost durable changes, 1 connection",
        format!("{single:.0} changes/s ({})", commits.note(Some(1))),
    );
    // The runs above leave a few hundred MB to write back; an fsync queued behind that writeback
    // measures the disk's backlog, not flagpost.
    Command::new("sync").status().expect("run sync");
    let commits = daemon.watch_commits();
    let (p50, p99) = runtime.block_on(latency_at_rate(daemon.addr, 1000, seconds));
    row(
        "acknowledgement latency at 1,000 changes/s (p50 / p99)",
        format!(
            "{:.2} ms / {:.2} ms ({})",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            commits.note(None)
        ),
    );
    let commits = daemon.watch_commits();
    let (changes, elapsed) = runtime.block_on(daemon.apply_big_flag_file(100, 1000));
    row(
        "flag file of 100,000 changes (100 features x 1,000 identity overrides), applied in one transaction",
        format!(
            "{:.1} s, {:.0} changes/s ({})",
            elapsed.as_secs_f64(),
            changes as f64 / elapsed.as_secs_f64(),
            commits.note(None)
        ),
    );
    row(
        "flagpost peak RSS at the end",
        format!("{} MiB", daemon.peak_rss_mib()),
    );
    daemon.stop();

    let (events, bytes) = runtime.block_on(file_size_after_events(work.path(), 1_000_000));
    row(
        "redb file after 1,000,000 events (500,000 changes, 1 endpoint's outbox rows pending)",
        format!("{} MiB ({events} events)", bytes >> 20),
    );
}

/// wrk with the change script; returns requests per second.
fn wrk(addr: SocketAddr, connections: usize, seconds: u64, script: &Path) -> f64 {
    Wrk::new(connections, seconds)
        .script(script)
        .run(&format!("http://{addr}/"))
}

/// The ceiling: answers `{}` to everything, on this bench's runtime.
async fn start_minimal_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(support::serve_minimal(
        listener,
        |request: Request<hyper::body::Incoming>| async move {
            let _ = request.into_body().collect().await;
            Response::new(Full::new(Bytes::from_static(b"{}")))
        },
    ));
    addr
}

struct Daemon {
    process: Running,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Daemon {
    fn start(work: &Path) -> Daemon {
        let dir = work.join("daemon");
        let addr = free_addr();
        let config = SidecarConfig::new(&dir, addr)
            .flag_files(None, "3600s")
            .token("bench", None, TOKEN)
            .api_key("k")
            .parked_webhook("parked", "http://127.0.0.1:9/")
            .write();
        let binary = Path::new(env!("CARGO_BIN_EXE_flagpost"));
        let process = Running::serve(binary, &config, "warn", false);
        Daemon { process, addr, dir }
    }

    /// Reads the writer's commit latency now, to describe the phase that follows.
    fn watch_commits(&self) -> CommitWatch {
        CommitWatch::start(self.addr, SIDECAR_COMMITS)
    }

    /// Waits for the daemon and creates feature 1, which the wrk script overrides, then
    /// [`Daemon::add_segments_and_options`].
    async fn prepare(&self) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        for _ in 0..200 {
            let request = Request::post(format!("http://{}/api/v1/features", self.addr))
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(
                    br#"{"project":1,"name":"bench"}"#,
                )))
                .unwrap();
            if let Ok(response) = client.request(request).await {
                assert!(response.status().is_success(), "{}", response.status());
                return self.add_segments_and_options(&client).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("flagpost did not start");
    }

    /// The store as issue 10 leaves it: feature 1 multivariate (3 options), and 100 segments
    /// with nested rules, each overriding feature 1 with allocations of its own.
    async fn add_segments_and_options(&self, client: &Client<HttpConnector, Full<Bytes>>) {
        let send = |method: &'static str, path: String, body: serde_json::Value| {
            let request = Request::builder()
                .method(method)
                .uri(format!("http://{}{path}", self.addr))
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap();
            let response = client.request(request);
            async move {
                let response = response.await.unwrap();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                assert!(status.is_success(), "{method} {path}: {status}");
                serde_json::from_slice::<serde_json::Value>(&body).unwrap()
            }
        };
        let mut options = Vec::new();
        for value in ["a", "b", "c"] {
            let body = serde_json::json!({"value": value, "default_percentage_allocation": 30});
            let path = "/api/v1/features/1/multivariate-options".to_owned();
            let answer = send("POST", path, body).await;
            options.push(answer["multivariate_option"]["id"].clone());
        }
        for n in 0..100 {
            let rules = serde_json::json!([{"type": "ALL", "conditions": [], "rules": [
                {"type": "ANY", "rules": [], "conditions": [
                    {"property": "plan", "operator": "EQUAL", "value": format!("plan-{n}")},
                    {"property": "sessions", "operator": "GREATER_THAN", "value": "10"}]},
                {"type": "NONE", "rules": [], "conditions": [
                    {"operator": "PERCENTAGE_SPLIT", "value": "50"}]}]}]);
            let body =
                serde_json::json!({"project": 1, "name": format!("segment-{n}"), "rules": rules});
            let segment = send("POST", "/api/v1/segments".to_owned(), body).await;
            let id = &segment["segment"]["id"];
            let allocations: Vec<_> = options
                .iter()
                .map(|o| serde_json::json!({"multivariate_feature_option": o, "percentage_allocation": 20}))
                .collect();
            let body = serde_json::json!({"enabled": true, "value": n, "priority": n,
                "multivariate_feature_state_values": allocations});
            let path = format!("/api/v1/environments/1/features/1/segments/{id}");
            send("PUT", path, body).await;
        }
    }

    fn peak_rss_mib(&self) -> u64 {
        support::peak_rss_mib(self.process.id())
    }

    /// Writes a flag file with `features` x `identities` overrides and times it until applied.
    async fn apply_big_flag_file(&self, features: usize, identities: usize) -> (usize, Duration) {
        let mut text = String::new();
        for f in 0..features {
            text.push_str(&format!(
                "[features.file_feature_{f}]\nenabled = true\nvalue = {f}\n"
            ));
            for i in 0..identities {
                text.push_str(&format!(
                    "[features.file_feature_{f}.identities.user-{i}]\nenabled = true\nvalue = {i}\n"
                ));
            }
        }
        let last_before = self.last_sequence().await;
        let started = Instant::now();
        let tmp = self.dir.join("flags/.Development.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.dir.join("flags/Development.toml")).unwrap();
        // The whole file commits in one transaction, so the sequence jumps once.
        let expected = last_before + 2 * (features * identities + features) as u64;
        while self.last_sequence().await < expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (features * identities, started.elapsed())
    }

    async fn last_sequence(&self) -> u64 {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = Request::get(format!("http://{}/api/v1/events?limit=1", self.addr))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let body = client
            .request(request)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
        let page: serde_json::Value = serde_json::from_slice(&body.to_bytes()).unwrap();
        page["last_sequence"].as_u64().unwrap()
    }

    fn stop(&mut self) {
        self.process.terminate();
    }
}

/// Sends `rate` changes per second for `seconds`, open loop (a request is sent on schedule
/// whether or not earlier ones were answered), and returns p50 and p99 of the time to the answer.
async fn latency_at_rate(addr: SocketAddr, rate: u64, seconds: u64) -> (Duration, Duration) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..rate * seconds {
        ticker.tick().await;
        let client = client.clone();
        let latencies = latencies.clone();
        tasks.spawn(async move {
            let request = Request::put(format!(
                "http://{addr}/api/v1/environments/1/features/1/identities/latency-{n}"
            ))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"enabled":true,"value":"x"}"#,
            )))
            .unwrap();
            let started = Instant::now();
            let response = client.request(request).await.unwrap();
            assert!(response.status().is_success());
            let _ = response.into_body().collect().await;
            latencies.lock().unwrap().push(started.elapsed());
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (at(0.50), at(0.99))
}

/// Drives the store directly (no HTTP) until it holds `events` events, and returns the file size.
async fn file_size_after_events(work: &Path, events: u64) -> (u64, u64) {
    use flagpost::changes::{Author, Changes, NewFeature, Owner, StateKey, StateUpdate};
    use flagpost::config::Config;
    use flagpost::store::{Store, StoreOptions};

    let path = work.join("size.redb");
    let config = Arc::new(
        Config::parse(
            r#"
[[environments]]
id = 1
name = "Development"
api_key = "k"
project = 1
[[environments.webhooks]]
name = "parked"
url = "http://127.0.0.1:9/"
enabled = false
"#,
        )
        .unwrap(),
    );
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    let author = Author::system("bench");
    let setup = (config.clone(), author.clone());
    store
        .write(move |tables| {
            let (config, author) = &setup;
            let now = time::OffsetDateTime::now_utc();
            let new = NewFeature {
                project: 1,
                name: "sized".into(),
                feature_type: "STANDARD".into(),
                description: None,
                initial_value: None,
                default_enabled: false,
            };
            Changes::new(tables, config, author, now).create_feature(&new, Owner::Api)
        })
        .await
        .unwrap();
    let per_job = 5_000u64;
    let mut written = 2;
    let mut batch = 0u64;
    while written < events {
        let (config, author) = (config.clone(), author.clone());
        let n = per_job.min((events - written) / 2);
        let first = batch * per_job;
        written += store
            .write(move |tables| {
                let now = time::OffsetDateTime::now_utc();
                let mut changes = Changes::new(tables, &config, &author, now);
                for i in first..first + n {
                    let update = StateUpdate {
                        enabled: Some(true),
                        value: Some(Some(flagpost::wire::FlagValue::Integer(i as i64))),
                        ..StateUpdate::default()
                    };
                    changes.set_state(
                        1,
                        1,
                        &StateKey::Identity(format!("user-{i}")),
                        &update,
                        Owner::Api,
                    )?;
                }
                Ok(changes.into_events().len() as u64)
            })
            .await
            .unwrap();
        batch += 1;
    }
    store.shutdown().await;
    drop(store);
    (written, std::fs::metadata(&path).unwrap().len())
}

//! Change streams at scale: many concurrent SSE streams on one receiver.
//!
//! `cargo bench -p flagpost-receiver --bench streams_bench`
//!
//! The receiver is the real binary. This process opens `FLAGPOST_BENCH_STREAMS` streams (default
//! 10,000; half Flagsmith's realtime `/sse/environments/{key}/stream`, half the native
//! `/v1/environments/{env}/stream`), each its own TCP connection read by its own task, then makes
//! `FLAGPOST_BENCH_ROUNDS` changes (default 100), one at a time, each a signed web hook. For each
//! change it measures from the web hook's acknowledgement to the moment the last stream has its
//! event, and reports the p50 and p99 of those, with the receiver's RSS with every stream open and
//! its CPU time per change (less sensitive than the latencies to other load on the machine).
//! Both processes raise their open-files limit (the receiver does so itself).
//! `FLAGPOST_BENCH_RECEIVER=<path>` runs that receiver binary instead of this build's.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flagpost::signing::Secret;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

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

const SECRET: &str = "bench-secret";
const KEY: &str = "bench-key";
/// What marks an event in either protocol's frames.
const EVENT: &[u8] = b"event: ";

/// Where the streams stand: how many still lack the current round's event, and when the last
/// one got it.
struct Progress {
    remaining: AtomicUsize,
    round: AtomicUsize,
    last_seen: Mutex<Option<Instant>>,
    done: Notify,
}

impl Progress {
    /// A stream has its `count`th event (the first is the state on opening, round 0).
    fn seen(&self, count: usize) {
        if count != self.round.load(Ordering::Acquire) + 1 {
            return;
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.last_seen.lock().unwrap() = Some(Instant::now());
            self.done.notify_one();
        }
    }

    fn start_round(&self, round: usize, streams: usize) {
        *self.last_seen.lock().unwrap() = None;
        self.remaining.store(streams, Ordering::Release);
        self.round.store(round, Ordering::Release);
    }
}

/// Opens one stream and counts its events for as long as the receiver runs.
async fn stream(addr: SocketAddr, path: String, progress: Arc<Progress>) {
    let mut socket = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect a stream");
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = vec![0u8; 4096];
    // The end of the previous read, so that a marker split across two reads is counted once.
    let mut carry: Vec<u8> = Vec::new();
    let mut count = 0;
    loop {
        let n = match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        carry.extend_from_slice(&buffer[..n]);
        let found = carry.windows(EVENT.len()).filter(|w| *w == EVENT).count();
        for _ in 0..found {
            count += 1;
            progress.seen(count);
        }
        let keep = carry.len().min(EVENT.len() - 1);
        carry.drain(..carry.len() - keep);
    }
}

fn start_receiver(dir: &Path, streams: usize) -> (Running, SocketAddr) {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = ReceiverConfig::new(dir)
        .listen(addr)
        .secret(SECRET)
        .without_snapshot()
        .environment(1, &[KEY])
        .extra(&format!(
            "[server]\nmax_connections = {}\n[streams]\nmax_streams = {}\n",
            streams + 1000,
            streams + 100
        ));
    // `FLAGPOST_BENCH_RECEIVER` runs another build of the receiver (a release binary driven
    // from a quicker debug build of this bench, say).
    let binary = std::env::var_os("FLAGPOST_BENCH_RECEIVER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_flagpost-receiver").into());
    let running = Running::serve(&binary, &config.write(), "warn", false);
    support::wait_for_ok(addr, "/healthz");
    (running, addr)
}

/// Sets the bench's feature to `value` through a signed web hook; answers when acknowledged.
async fn change(client: &Client<HttpConnector, Full<Bytes>>, addr: SocketAddr, round: usize) {
    let body = serde_json::to_vec(&json!({
        "data": {
            "changed_by": "bench", "timestamp": "2026-01-01T00:00:00.000000Z",
            "previous_state": null,
            "new_state": {
                "enabled": true, "environment": 1, "feature_segment": null, "id": 1,
                "feature": {"id": 1, "name": "streamed", "type": "STANDARD", "project": 1},
                "feature_state_value": format!("round {round}"),
                "identity": null, "identity_identifier": null,
            },
        },
        "event_type": "FLAG_UPDATED",
    }))
    .unwrap();
    let id = format!("bench-round-{round}");
    let now = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    let signature = Secret::new(SECRET)
        .unwrap()
        .standard_signature(&id, &now, &body);
    let request = hyper::Request::post(format!("http://{addr}/webhook"))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", now)
        .header("webhook-signature", signature)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = client
        .request(request)
        .await
        .expect("the web hook is answered");
    let status = response.status();
    let _ = response.into_body().collect().await;
    assert!(status.is_success(), "web hook answered {status}");
}

fn open_streams(
    runtime: &tokio::runtime::Runtime,
    addr: SocketAddr,
    streams: usize,
    progress: &Arc<Progress>,
) {
    progress.start_round(0, streams);
    for n in 0..streams {
        let path = if n % 2 == 0 {
            format!("/sse/environments/{KEY}/stream")
        } else {
            "/v1/environments/1/stream".to_owned()
        };
        runtime.spawn(stream(addr, path, progress.clone()));
        if n % 500 == 499 {
            // Lets the receiver accept them in steps rather than overflow its listen backlog.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(300), progress.done.notified())
            .await
            .expect("every stream opened within 5 minutes")
    });
}

fn main() {
    let streams = support::env_number("FLAGPOST_BENCH_STREAMS", 10_000) as usize;
    let rounds = support::env_number("FLAGPOST_BENCH_ROUNDS", 100) as usize;
    let limit = flagpost::serve::raise_open_files_limit();
    println!(
        "machine: {} cores; this process's open-files limit {limit:?}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let dir = tempfile::tempdir().unwrap();
    let (receiver, addr) = start_receiver(dir.path(), streams);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let _guard = runtime.enter();
    runtime.block_on(change(&client, addr, 0));
    let idle_kib = support::memory_kib(receiver.id(), "VmRSS");
    let progress = Arc::new(Progress {
        remaining: AtomicUsize::new(streams),
        round: AtomicUsize::new(0),
        last_seen: Mutex::new(None),
        done: Notify::new(),
    });
    let opening = Instant::now();
    open_streams(&runtime, addr, streams, &progress);
    let opened_in = opening.elapsed();
    let open_kib = support::memory_kib(receiver.id(), "VmRSS");
    let (idle_rss, open_rss) = (idle_kib / 1024, open_kib / 1024);

    let cpu_before = support::cpu_time(receiver.id());
    let mut latencies = run_rounds(&runtime, &client, addr, rounds, streams, &progress);
    latencies.sort();
    // The 20 ms pauses between rounds are idle for the receiver (heartbeats aside).
    let cpu_per_change =
        (support::cpu_time(receiver.id()) - cpu_before).as_millis() as f64 / rounds as f64;
    let peak = support::peak_rss_mib(receiver.id());
    let now_rss = support::memory_kib(receiver.id(), "VmRSS") / 1024;
    support::row(
        "streams open (half Flagsmith realtime, half native)",
        format!("{streams}, opened in {opened_in:.2?}"),
    );
    support::row(
        "receiver RSS: before streams / all open / after the rounds (peak)",
        format!("{idle_rss} MiB / {open_rss} MiB / {now_rss} MiB ({peak} MiB)"),
    );
    support::row(
        "receiver RSS per open stream",
        format!(
            "{:.1} KiB",
            open_kib.saturating_sub(idle_kib) as f64 / streams as f64
        ),
    );
    support::row(
        &format!(
            "web hook acknowledged to the last stream's event, {rounds} changes, p50 / p99 / max"
        ),
        format!(
            "{} / {} / {}",
            support::ms(support::percentile(&latencies, 0.50)),
            support::ms(support::percentile(&latencies, 0.99)),
            support::ms(*latencies.last().unwrap())
        ),
    );
    support::row(
        "receiver CPU time per change (user + system, all streams)",
        format!("{cpu_per_change:.1} ms"),
    );
    drop(receiver);
}

/// `rounds` changes one at a time, each waited for until every stream has its event: how long
/// after each web hook's acknowledgement the last stream saw it.
fn run_rounds(
    runtime: &tokio::runtime::Runtime,
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    rounds: usize,
    streams: usize,
    progress: &Progress,
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        progress.start_round(round, streams);
        runtime.block_on(async {
            change(client, addr, round).await;
            let acknowledged = Instant::now();
            tokio::time::timeout(Duration::from_secs(120), progress.done.notified())
                .await
                .unwrap_or_else(|_| panic!("round {round}: not every stream had its event"));
            let last = progress
                .last_seen
                .lock()
                .unwrap()
                .expect("set before notified");
            latencies.push(last.saturating_duration_since(acknowledged));
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    latencies
}

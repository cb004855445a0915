//! End to end, measured: a change through flagpost's API until the receiver's lookup shows it,
//! one change at a time. Both real release binaries run on 127.0.0.1, flagpost delivering signed
//! webhooks to the receiver (which also bootstraps its document from flagpost, as deployed).
//!
//! Run with `cargo bench --bench end_to_end` (it builds the receiver's release binary first, in
//! `target/end-to-end`). `FLAGPOST_BENCH_CHANGES` sets the number of changes timed (default
//! 1,000). Each change is a `PUT` of the flag's state; the clock starts before the `PUT` is sent
//! and stops when a lookup of the flag, polled in a tight loop on a keep-alive connection, first
//! answers the new value. Figures print as Markdown table rows, with each writer's median
//! durable-commit latency over the same changes from its `/metrics`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[path = "../tests/support/config.rs"]
#[allow(dead_code)]
mod config;
#[path = "../tests/support/process.rs"]
#[allow(dead_code)]
mod process;
#[allow(dead_code)]
mod support;
use config::{ReceiverConfig, SidecarConfig};
use process::{Running, build_receiver, free_addr};
use support::{CommitWatch, RECEIVER_COMMITS, SIDECAR_COMMITS, ms, percentile, row};

const TOKEN: &str = "bench-token-0123456789";
/// The environment's server-side key in flagpost: the receiver reads its document with it.
const SERVER_KEY: &str = "ser.e2e-server-key";
const SECRET: &str = "whsec_YmVuY2ggZW5kIHRvIGVuZCBzaGFyZWQgc2VjcmV0";
/// Changes made before timing starts: connections, caches and the first document are warm.
const WARM_UP: u64 = 20;

fn main() {
    let changes = support::env_number("FLAGPOST_BENCH_CHANGES", 1000);
    let receiver_binary = build_receiver(true);
    let work = tempfile::tempdir().unwrap();
    let (sidecar, receiver) = (free_addr(), free_addr());
    let sidecar_config = SidecarConfig::new(work.path(), sidecar)
        .flag_files(None, "3600s")
        .token("bench", None, TOKEN)
        .server_key(SERVER_KEY)
        .webhook("receiver", &format!("http://{receiver}/webhook"), SECRET)
        .write();
    let receiver_config = ReceiverConfig::new(work.path())
        .listen(receiver)
        .secret(SECRET)
        .environment(1, &["dev-key"])
        .flagpost_server_key(1, SERVER_KEY)
        .bootstrap(&format!("http://{sidecar}"), TOKEN, 1)
        .write();
    let binary = Path::new(env!("CARGO_BIN_EXE_flagpost"));
    let _sidecar = Running::serve(binary, &sidecar_config, "warn", false);
    let _receiver = Running::serve(&receiver_binary, &receiver_config, "warn", false);
    support::wait_for_ok(sidecar, "/healthz");
    support::wait_for_ok(receiver, "/readyz");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let run = runtime.block_on(async {
        let mut api = Connection::open(sidecar).await;
        let mut lookup = Connection::open(receiver).await;
        let (status, created) = api
            .request(
                Method::POST,
                "/api/v1/features",
                Some(json!({"project": 1, "name": "e2e", "initial_value": 0})),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        for value in 1..=WARM_UP {
            change_and_wait(&mut api, &mut lookup, value).await;
        }
        let commits = (
            CommitWatch::start(sidecar, SIDECAR_COMMITS),
            CommitWatch::start(receiver, RECEIVER_COMMITS),
        );
        let mut run = Run::default();
        for value in WARM_UP + 1..=WARM_UP + changes {
            let (acknowledged, seen) = change_and_wait(&mut api, &mut lookup, value).await;
            run.acknowledged.push(acknowledged);
            run.seen.push(seen);
        }
        run.notes = (commits.0.note(None), commits.1.note(None));
        run
    });
    run.report();
}

/// What one timed run saw, per change.
#[derive(Default)]
struct Run {
    /// From sending the `PUT` to flagpost's answer (its durable commit).
    acknowledged: Vec<Duration>,
    /// From sending the `PUT` to the first lookup that shows the new value.
    seen: Vec<Duration>,
    /// Each writer's commits over the run: flagpost's, the receiver's.
    notes: (String, String),
}

impl Run {
    fn report(mut self) {
        self.seen.sort();
        self.acknowledged.sort();
        println!("| measurement | result |\n| --- | --- |");
        row(
            "end to end: a change through flagpost's API to the changed receiver lookup, one at a time (p50 / p99 / max)",
            format!(
                "{} / {} / {} ({} changes; flagpost {}; receiver {})",
                ms(percentile(&self.seen, 0.5)),
                ms(percentile(&self.seen, 0.99)),
                ms(*self.seen.last().unwrap()),
                self.seen.len(),
                self.notes.0,
                self.notes.1
            ),
        );
        row(
            "of which flagpost's acknowledgement of the change (p50 / p99)",
            format!(
                "{} / {}",
                ms(percentile(&self.acknowledged, 0.5)),
                ms(percentile(&self.acknowledged, 0.99))
            ),
        );
    }
}

/// Sets the flag to `value` through flagpost's API and polls the receiver until it shows it;
/// answers the time to the acknowledgement and the time until the receiver showed the value.
async fn change_and_wait(
    api: &mut Connection,
    lookup: &mut Connection,
    value: u64,
) -> (Duration, Duration) {
    let started = Instant::now();
    let (status, answer) = api
        .request(
            Method::PUT,
            "/api/v1/environments/1/features/e2e/state",
            Some(json!({"enabled": true, "value": value})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let acknowledged = started.elapsed();
    loop {
        let (status, flag) = lookup
            .request(Method::GET, "/v1/environments/1/flags/e2e", None)
            .await;
        if status == 200 && flag["value"] == value {
            return (acknowledged, started.elapsed());
        }
        // Only turns a lost change into a failure with a message; nothing is timed against it.
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the receiver never showed value {value}: {status} {flag}"
        );
    }
}

/// One keep-alive HTTP/1 connection, opened again if the server closed it.
struct Connection {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Connection {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Connection { addr, sender }
    }

    /// Sends one request with the bench's token; answers the status and the JSON body.
    async fn request(&mut self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        if self.sender.ready().await.is_err() {
            *self = Connection::open(self.addr).await;
        }
        let body = body.map_or_else(Vec::new, |b| serde_json::to_vec(&b).unwrap());
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }
}

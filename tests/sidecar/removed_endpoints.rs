//! Issue 8, item 4 (second half): an endpoint removed from the configuration keeps its pending
//! deliveries, paused, for `delivery.removed_endpoint_grace`. Back within it (same name), its
//! lane sends them in order; after it, or when an operator drops them, they are dead-lettered as
//! "endpoint removed" and can be replayed. The real binary, a real sink, real reloads.

use std::path::{Path, PathBuf};
use std::process::Command;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::{Process, TOKEN, call, free_addr, metric, test_config, wait_until};
use crate::support::sink::{Answer, Sink};

/// The binary with a configuration that can be rewritten: `leaving` is the endpoint that goes.
struct Setup {
    dir: TempDir,
    path: PathBuf,
    addr: std::net::SocketAddr,
    grace: &'static str,
    process: Process,
}

impl Setup {
    async fn start(grace: &'static str, leaving: Option<(&str, bool)>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let path = dir.path().join("flagpost.toml");
        std::fs::write(&path, config(dir.path(), addr, grace, leaving)).unwrap();
        let process = Process::start(&path, addr);
        process.wait_ready().await;
        Setup {
            dir,
            path,
            addr,
            grace,
            process,
        }
    }

    fn url(&self, path: &str) -> String {
        self.process.url(path)
    }

    /// Rewrites the file (as a rename-save) and waits until the reload applied.
    async fn reconfigure(&self, leaving: Option<(&str, bool)>) {
        let base = self.url("");
        let applied = "flagpost_config_reloads_total{result=\"applied\"}";
        let before = metric(&base, applied).await;
        let tmp = self.dir.path().join(".flagpost.toml.tmp");
        std::fs::write(
            &tmp,
            config(self.dir.path(), self.addr, self.grace, leaving),
        )
        .unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
        wait_until("the reload applied", || async {
            metric(&base, applied).await > before
        })
        .await;
    }

    async fn change(&self, name: &str) {
        let body = json!({"project": 1, "name": name});
        let (status, answer) = call(Method::POST, &self.url("/api/v1/features"), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        call(method, &self.url(&format!("/api/v1/admin{path}")), body).await
    }

    async fn pending(&self) -> Vec<u64> {
        let (status, body) = self
            .admin(Method::GET, "/deliveries/pending?endpoint=leaving", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        sequences(&body["deliveries"])
    }

    async fn dead_letters(&self) -> Vec<Value> {
        let (status, body) = self
            .admin(Method::GET, "/dead-letters?endpoint=leaving", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["dead_letters"].as_array().unwrap().clone()
    }
}

/// The test configuration, with `leaving` (its URL, and whether it is enabled) or without it.
/// `leaving` is ordered (one request at a time), so that the order it receives is the order its
/// lane sends in.
fn config(
    dir: &Path,
    addr: std::net::SocketAddr,
    grace: &str,
    leaving: Option<(&str, bool)>,
) -> String {
    let leaving = leaving.map_or(String::new(), |(url, enabled)| {
        format!(
            "[[environments.webhooks]]\nname = \"leaving\"\nurl = {url:?}\nenabled = {enabled}\n\
             ordered = true\nsecrets = [{{ value = \"leaving-secret-0123\" }}]\n"
        )
    });
    test_config(dir, addr)
        .extra(&format!(
            "{leaving}[reload]\ndebounce = \"20ms\"\npoll_every = \"200ms\"\n\
             [delivery]\nremoved_endpoint_grace = \"{grace}\"\nretry_schedule = [\"50ms\"]\n"
        ))
        .toml()
}

fn sequences(list: &Value) -> Vec<u64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|row| row["sequence"].as_u64().unwrap())
        .collect()
}

fn received_sequences(sink: &Sink) -> Vec<u64> {
    sink.received()
        .iter()
        .map(|r| r.header("x-flagpost-sequence").unwrap().parse().unwrap())
        .collect()
}

/// Three deliveries for `leaving` wait (it is disabled), then it is removed.
async fn three_pending_then_removed(setup: &Setup) -> Vec<u64> {
    for name in ["one", "two", "three"] {
        setup.change(name).await;
    }
    let pending = setup.pending().await;
    assert_eq!(pending.len(), 3, "{pending:?}");
    setup.reconfigure(None).await;
    pending
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_back_within_the_grace_resumes_its_deliveries_in_order() {
    let sink = Sink::start(Vec::new(), Answer::Status(200)).await;
    let url = sink.url("/hook");
    let mut setup = Setup::start("1h", Some((&url, false))).await;
    let pending = three_pending_then_removed(&setup).await;

    // Removed: the deliveries stay pending and nothing is dead-lettered, also after a restart
    // (which finds rows of an endpoint that is not configured) and a change made meanwhile.
    setup.change("while_removed").await;
    assert_eq!(setup.pending().await, pending);
    setup.process.terminate();
    setup.process = Process::start(&setup.path, setup.addr);
    setup.process.wait_ready().await;
    assert_eq!(setup.pending().await, pending);
    assert!(setup.dead_letters().await.is_empty());
    assert!(sink.received().is_empty());

    // Back, enabled: exactly the waiting deliveries, in sequence order.
    setup.reconfigure(Some((&url, true))).await;
    sink.wait_until("the three waiting deliveries", |r| r.len() >= 3)
        .await;
    wait_until("nothing pending", || async {
        setup.pending().await.is_empty()
    })
    .await;
    assert_eq!(received_sequences(&sink), pending);
    assert!(setup.dead_letters().await.is_empty());
    setup.process.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_grace_they_are_dead_lettered_as_endpoint_removed_and_replayable() {
    let sink = Sink::start(Vec::new(), Answer::Status(200)).await;
    let url = sink.url("/hook");
    let mut setup = Setup::start("300ms", Some((&url, false))).await;
    let pending = three_pending_then_removed(&setup).await;
    wait_until("three dead letters", || async {
        setup.dead_letters().await.len() == 3
    })
    .await;
    let letters = setup.dead_letters().await;
    assert!(
        letters.iter().all(|l| l["reason"] == "endpoint removed"),
        "{letters:?}"
    );
    assert_eq!(sequences(&Value::Array(letters)), pending);
    assert!(setup.pending().await.is_empty());

    setup.reconfigure(Some((&url, true))).await;
    let (status, body) = setup
        .admin(
            Method::POST,
            "/dead-letters/replay",
            Some(json!({"endpoint": "leaving"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["replayed"], 3);
    sink.wait_until("the replayed deliveries", |r| r.len() >= 3)
        .await;
    let mut received = received_sequences(&sink);
    received.sort_unstable();
    assert_eq!(received, pending);
    setup.process.terminate();
}

fn cli(setup: &Setup, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_flagpost"))
        .args(["deliveries", "--url", &setup.url(""), "--token", TOKEN])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_drops_them_before_the_grace_ends() {
    let sink = Sink::start(Vec::new(), Answer::Status(200)).await;
    let url = sink.url("/hook");
    let mut setup = Setup::start("1h", Some((&url, false))).await;
    let pending = three_pending_then_removed(&setup).await;

    // Only a removed endpoint's deliveries can be dropped.
    let (status, body) = setup
        .admin(
            Method::POST,
            "/deliveries/drop-removed",
            Some(json!({"endpoint": "parked"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = setup
        .admin(
            Method::POST,
            "/deliveries/drop-removed",
            Some(json!({"endpoint": "never-configured"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(setup.pending().await, pending);

    let (ok, text) = cli(&setup, &["drop-removed", "--endpoint", "leaving"]);
    assert!(ok, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer, json!({"endpoint": "leaving", "dead_lettered": 3}));
    assert!(setup.pending().await.is_empty());
    let letters = setup.dead_letters().await;
    assert!(
        letters.iter().all(|l| l["reason"] == "endpoint removed"),
        "{letters:?}"
    );
    assert_eq!(sequences(&Value::Array(letters)), pending);
    let (ok, text) = cli(&setup, &["drop-removed", "--endpoint", "leaving"]);
    assert!(!ok, "dropped twice: {text}");
    setup.process.terminate();
}

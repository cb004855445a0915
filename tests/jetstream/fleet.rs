//! The processes of a JetStream test and what they are checked with: flagpost with one JetStream
//! endpoint, receivers each with its own durable consumer, a stream of identity-override changes
//! (one identity per client, values counting up), and a watcher that fails the test if a
//! receiver ever shows an older value than it showed before.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Process, TOKEN, call, free_addr, receiver_binary, send, wait_until};
use crate::support::config::{ReceiverConfig, SidecarConfig};
use crate::support::connections::wait_healthy;
use crate::support::process::Running;

pub const SECRET: &str = "whsec_amV0c3RyZWFtIHRlc3RzIHNoYXJlZCBzZWNyZXQ=";
pub const SUBJECT: &str = "flagpost.Development";
pub const STREAM: &str = "FLAGS";

/// Short retries and backoff, many of them: an outage of the tests' length never dead-letters.
const DELIVERY: &str = "[delivery]\nrequest_timeout = \"2s\"\nlane_failures_before_backoff = 2\n\
     lane_backoff_initial = \"100ms\"\nlane_backoff_max = \"1s\"\nshutdown_deadline = \"1s\"\n\
     retry_schedule = [\"100ms\", \"200ms\", \"400ms\", \"800ms\", \
     \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \
     \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \
     \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \
     \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \
     \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\"]\n";

fn servers_toml(servers: &[String]) -> String {
    let quoted: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "servers = [{}], connect_timeout = \"1s\"",
        quoted.join(", ")
    )
}

/// flagpost with a JetStream endpoint publishing to `servers`, in `dir`.
pub struct Flagpost {
    pub process: Process,
    config: PathBuf,
}

impl Flagpost {
    pub async fn start(dir: &Path, servers: &[String], replicas: usize) -> Flagpost {
        let addr = free_addr();
        let endpoint = format!(
            "name = \"fleet\"\nsecrets = [{{ value = {SECRET:?} }}]\n\
             [environments.webhooks.jetstream]\nsubject = {SUBJECT:?}\n\
             connection = {{ {} }}\nstream = {{ name = {STREAM:?}, replicas = {replicas} }}\n",
            servers_toml(servers)
        );
        let config = SidecarConfig::new(dir, addr)
            .token("tests", Some("tests@example.com"), TOKEN)
            .project(1, "Default")
            .raw_webhook(&endpoint)
            .extra(DELIVERY)
            .write();
        let process = Process::start(&config, addr);
        process.wait_ready().await;
        Flagpost { process, config }
    }

    pub fn url(&self, path: &str) -> String {
        self.process.url(path)
    }

    pub async fn restart(&mut self) {
        self.process = Process::start(&self.config, self.process.addr);
        self.process.wait_ready().await;
    }

    /// Creates the feature whose identity overrides the tests change; answers its id.
    pub async fn create_feature(&self) -> u64 {
        let (status, body) = call(
            Method::POST,
            &self.url("/api/v1/features"),
            Some(json!({"project": 1, "name": "stream"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["feature"]["id"].as_u64().unwrap()
    }

    /// The identity overrides of feature "stream" as flagpost holds them: the truth the
    /// receivers must end at.
    pub async fn overrides(&self) -> BTreeMap<String, u64> {
        let (status, doc) = call(
            Method::GET,
            &self.url("/api/v1/environments/1/document"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{doc}");
        overrides_of(&doc["features"][0])
    }
}

fn overrides_of(feature: &Value) -> BTreeMap<String, u64> {
    feature["identity_overrides"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| Some((o["identifier"].as_str()?.to_owned(), o["value"].as_u64()?)))
        .collect()
}

/// A receiver consuming the stream with its own durable consumer, in a folder of its own.
pub struct Receiver {
    pub addr: SocketAddr,
    config: PathBuf,
    running: Option<Running>,
}

impl Receiver {
    pub async fn start(dir: &Path, durable: &str, servers: &[String]) -> Receiver {
        let dir = dir.join(durable);
        std::fs::create_dir_all(&dir).unwrap();
        let addr = free_addr();
        let config = ReceiverConfig::new(&dir)
            .listen(addr)
            .without_snapshot()
            .secret(SECRET)
            .intake("require_standard_signature = true\n")
            .environment(1, &["dev-key"])
            .extra(&format!(
                "[jetstream]\nstream = {STREAM:?}\ndurable = {durable:?}\nbatch = 64\n\
                 connection = {{ {} }}\n",
                servers_toml(servers)
            ))
            .write();
        let mut receiver = Receiver {
            addr,
            config,
            running: None,
        };
        receiver.restart().await;
        receiver
    }

    pub async fn restart(&mut self) {
        let log = std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into());
        self.running = Some(Running::serve(
            &receiver_binary(),
            &self.config,
            &log,
            false,
        ));
        wait_healthy(self.addr).await;
    }

    pub fn kill9(&mut self) {
        if let Some(mut running) = self.running.take() {
            running.kill9();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The identity overrides of feature "stream" the receiver serves; `None` while it does not
    /// answer (down, or the feature not there yet).
    pub async fn overrides(&self) -> Option<BTreeMap<String, u64>> {
        match send(
            Method::GET,
            &self.url("/v1/environments/1/flags/stream"),
            None,
            None,
            &[],
        )
        .await
        {
            Ok((StatusCode::OK, flag)) => Some(overrides_of(&flag)),
            _ => None,
        }
    }

    /// Waits until the receiver serves exactly `expected`.
    pub async fn wait_for(&self, expected: &BTreeMap<String, u64>) {
        wait_until(
            "the receiver holds every change flagpost committed",
            || async { self.overrides().await.as_ref() == Some(expected) },
        )
        .await;
    }

    /// `flagpost_receiver_jetstream_messages_total{outcome=...}`.
    pub async fn messages(&self, outcome: &str) -> u64 {
        let prefix = format!("flagpost_receiver_jetstream_messages_total{{outcome=\"{outcome}\"}}");
        crate::common::metric(&self.url(""), &prefix).await
    }
}

/// Writes identity overrides of `feature` from `clients` clients (client `c` writes identity
/// `c{c}`, values 1, 2, 3...) until stopped; remembers the last value acknowledged per identity.
pub struct ChangeStream {
    stop: Arc<AtomicBool>,
    pub acknowledged: Arc<Mutex<BTreeMap<String, u64>>>,
    count: Arc<Mutex<usize>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ChangeStream {
    pub fn start(base: String, feature: u64, clients: usize) -> ChangeStream {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged: Arc<Mutex<BTreeMap<String, u64>>> = Default::default();
        let count = Arc::new(Mutex::new(0));
        let base = Arc::new(Mutex::new(base));
        let tasks = (0..clients)
            .map(|client| {
                let (stop, acknowledged, count) =
                    (stop.clone(), acknowledged.clone(), count.clone());
                let base = base.clone();
                tokio::spawn(async move {
                    let identifier = format!("c{client}");
                    let mut value = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        let url = format!(
                            "{}/api/v1/environments/1/features/{feature}/identities/{identifier}",
                            base.lock().unwrap()
                        );
                        let body =
                            serde_json::to_vec(&json!({"value": value, "enabled": true})).unwrap();
                        match send(Method::PUT, &url, Some(TOKEN), Some(body), &[]).await {
                            Ok((StatusCode::OK, _)) => {
                                acknowledged
                                    .lock()
                                    .unwrap()
                                    .insert(identifier.clone(), value);
                                *count.lock().unwrap() += 1;
                                value += 1;
                            }
                            // flagpost is down (killed): nothing acknowledged, try again later
                            // with a greater value, as a client would.
                            _ => {
                                value += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        ChangeStream {
            stop,
            acknowledged,
            count,
            tasks,
        }
    }

    pub fn count(&self) -> usize {
        *self.count.lock().unwrap()
    }

    /// Waits until `n` changes in all were acknowledged.
    pub async fn wait_for_count(&self, n: usize) {
        wait_until(&format!("{n} changes are acknowledged"), || async {
            self.count() >= n
        })
        .await;
    }

    pub async fn stop(self) -> BTreeMap<String, u64> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        self.acknowledged.lock().unwrap().clone()
    }
}

/// Polls receivers' overrides while changes stream, and fails if any value ever goes down.
pub struct BackwardsWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<usize>,
}

impl BackwardsWatch {
    pub fn start(receivers: Vec<SocketAddr>) -> BackwardsWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); receivers.len()];
            let mut looks = 0;
            while !stopping.load(Ordering::Relaxed) {
                for (n, addr) in receivers.iter().enumerate() {
                    let url = format!("http://{addr}/v1/environments/1/flags/stream");
                    let Ok((StatusCode::OK, flag)) = send(Method::GET, &url, None, None, &[]).await
                    else {
                        continue;
                    };
                    looks += 1;
                    for (identity, value) in overrides_of(&flag) {
                        let before = seen[n].insert(identity.clone(), value).unwrap_or(0);
                        assert!(
                            value >= before,
                            "receiver {n} went backwards on {identity}: {before} then {value}"
                        );
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            looks
        });
        BackwardsWatch { stop, task }
    }

    /// Stops watching; answers how many looks it took (so a test can tell it looked at all).
    pub async fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// Every acknowledged change is in flagpost's final state: a value at least the acknowledged one
/// (a change in flight when flagpost was killed may have committed without its answer).
pub fn assert_acknowledged_kept(
    acknowledged: &BTreeMap<String, u64>,
    held: &BTreeMap<String, u64>,
) {
    assert!(!acknowledged.is_empty());
    for (identity, value) in acknowledged {
        let kept = held.get(identity).copied().unwrap_or(0);
        assert!(
            kept >= *value,
            "{identity}: acknowledged {value}, flagpost holds {kept}"
        );
    }
}

//! Starting a receiver, talking HTTP to it, and building signed web hooks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use flagpost::reload::LoadedFile;
use flagpost::signing::Secret;
use flagpost_receiver::config::Config;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[path = "../../../tests/support/config.rs"]
#[allow(dead_code)]
mod config;
#[path = "../../../tests/support/connections.rs"]
#[allow(dead_code)]
pub mod connections;
#[path = "../../../tests/support/process.rs"]
#[allow(dead_code)]
mod process;
#[path = "../../../tests/support/webdriver.rs"]
#[allow(dead_code)]
pub mod webdriver;
pub use config::ReceiverConfig;
pub use process::{Running, free_addr, free_port, stream_until_killed};

/// The shared conformance vectors, read where they lie.
pub const CONFORMANCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/conformance");

/// The secret every test signs its own web hooks with.
pub const TEST_SECRET: &str = "receiver-test-secret";

/// Secrets of the conformance vectors and of the real Flagsmith captures, plus the test secret:
/// several at once, as in a rotation.
pub const SECRETS: [&str; 4] = [
    "s3cr3t-with-ünïcode",
    "whsec_ZmxhZ3Bvc3QgY29uZm9ybWFuY2Uga2V5IDMyYnl0ZXM=",
    "interop-secret-123",
    TEST_SECRET,
];

/// The test configuration for a receiver whose files live in `dir`, with every secret of
/// [`SECRETS`].
pub fn test_config(dir: &Path) -> ReceiverConfig {
    SECRETS
        .iter()
        .fold(ReceiverConfig::new(dir), |config, secret| {
            config.secret(secret)
        })
        .snapshot_debounce_ms(10)
}

/// [`test_config`] as TOML: `intake` goes into `[intake]` after the secrets; `rest` follows
/// (further tables).
pub fn config_toml(dir: &Path, intake: &str, rest: &str) -> String {
    test_config(dir).intake(intake).extra(rest).toml()
}

/// The conformance timestamps are fixed, so most tests accept any age; the stale test does not.
pub const ANY_AGE: &str = "timestamp_tolerance_secs = 4000000000";

pub fn read(path: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(path.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

pub fn read_json(path: impl AsRef<Path>) -> Value {
    serde_json::from_slice(&read(path)).unwrap()
}

/// A receiver started with the library's `run` on a port chosen by the system.
pub struct Receiver {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Receiver {
    pub async fn start(dir: &Path, toml: &str) -> Receiver {
        Receiver::start_watching(dir, toml, None).await
    }

    pub async fn start_watching(dir: &Path, toml: &str, config_path: Option<PathBuf>) -> Receiver {
        let config = Config::parse(toml, "test").expect("test configuration is valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        // The watched file holds `toml`: it is the text the configuration was loaded from.
        let config_file = config_path.map(|path| LoadedFile {
            path,
            text: toml.as_bytes().to_vec(),
        });
        let task = tokio::spawn(async move {
            flagpost_receiver::run(listener, config, config_file, async {
                let _ = stopped.await;
            })
            .await
            .expect("receiver runs");
        });
        Receiver {
            addr,
            dir: dir.to_path_buf(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server and waits until the database is closed.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(60), self.task.take().unwrap())
            .await
            .expect("receiver stops")
            .unwrap();
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        request("GET", &self.url(path), headers, Vec::new()).await
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
        request("POST", &self.url(path), headers, body.to_vec()).await
    }

    /// The native listing of an environment, or `Value::Null` when it is not in the cache.
    /// The snapshot file, once it exists and shows `env` as `check` wants it.
    pub async fn snapshot_when(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let path = self.dir.join("snapshot.json");
        for _ in 0..600 {
            if let Ok(bytes) = std::fs::read(&path)
                && let Ok(snapshot) = serde_json::from_slice::<Value>(&bytes)
                && check(&snapshot)
            {
                return snapshot;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the snapshot never showed {what}");
    }

    /// Waits until `/metrics` has the line `line`; the deadline only turns a hang into a failure.
    pub async fn wait_for_metric_line(&self, line: &str) {
        for _ in 0..600 {
            let (_, text) = self.get("/metrics", &[]).await;
            if text
                .as_str()
                .is_some_and(|text| text.lines().any(|l| l == line))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("/metrics never showed {line:?}");
    }

    pub async fn env_flags(&self, env: u64) -> Value {
        let (status, body) = self
            .get(&format!("/v1/environments/{env}/flags"), &[])
            .await;
        match status {
            200 => body["flags"].clone(),
            404 => Value::Null,
            other => panic!("environment lookup answered {other}: {body}"),
        }
    }

    pub async fn identity_flags(&self, env: u64, identifier: &str) -> Value {
        let (status, body) = self
            .get(
                &format!("/v1/environments/{env}/identities/{identifier}/flags"),
                &[],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["flags"].clone()
    }
}

/// One HTTP/1.1 request over a fresh connection; answers status and JSON body (or the text as a
/// JSON string when it is not JSON).
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Value) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut builder = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(60),
        client.request(builder.body(Full::new(Bytes::from(body))).unwrap()),
    )
    .await
    .expect("request answered in time")
    .expect("request succeeds");
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

/// The flagpost database the tests' sequenced web hooks come from.
pub const TEST_DATABASE: u64 = 0x7e57_da7a_ba5e_0001;

/// Headers of a web hook signed with [`TEST_SECRET`] (Standard Webhooks), with flagpost's sequence.
pub struct Signed {
    pub headers: Vec<(String, String)>,
}

impl Signed {
    /// With `seq`, the request is flagpost's event `seq` of [`TEST_DATABASE`]: its `webhook-id` is
    /// that event's id (`webhook_id` is not used), as the order a receiver believes is the one
    /// its signed id names. Without, `webhook_id` names the request.
    pub fn new(body: &[u8], webhook_id: &str, seq: Option<u64>) -> Signed {
        match seq {
            Some(seq) => Signed::from_database(body, TEST_DATABASE, seq),
            None => Signed::with_id(body, webhook_id, None),
        }
    }

    /// flagpost's event `seq` of database `database`, as flagpost sends it.
    pub fn from_database(body: &[u8], database: u64, seq: u64) -> Signed {
        let id = flagpost::store::events::event_id(database, seq);
        Signed::with_id(body, &id, Some(seq))
    }

    /// Signed with `webhook_id` as it is, and `x-flagpost-sequence: seq` when given.
    pub fn with_id(body: &[u8], webhook_id: &str, seq: Option<u64>) -> Signed {
        let secret = Secret::new(TEST_SECRET).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
        let mut headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("webhook-id".to_owned(), webhook_id.to_owned()),
            ("webhook-timestamp".to_owned(), now.clone()),
            (
                "webhook-signature".to_owned(),
                secret.standard_signature(webhook_id, &now, body),
            ),
        ];
        if let Some(seq) = seq {
            headers.push(("x-flagpost-sequence".to_owned(), seq.to_string()));
        }
        Signed { headers }
    }

    pub fn as_refs(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect()
    }
}

/// Which key of a feature a test event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Default,
    Identity(String),
    Segment(u64),
}

/// A flagpost-style web hook body (the seed's shape).
pub fn flag_event(
    env: u64,
    feature: u64,
    key: &Key,
    deleted: bool,
    enabled: bool,
    value: Value,
) -> Vec<u8> {
    let (identity, identifier, segment) = match key {
        Key::Default => (Value::Null, Value::Null, Value::Null),
        Key::Identity(id) => (Value::from(1), Value::from(id.as_str()), Value::Null),
        Key::Segment(id) => (
            Value::Null,
            Value::Null,
            serde_json::json!({"priority": 0, "segment": {"description": null, "id": id, "name": format!("segment-{id}")}}),
        ),
    };
    let state = serde_json::json!({
        "enabled": enabled,
        "environment": env,
        "feature": {"created_date": "2026-01-01T00:00:00.000000Z", "default_enabled": false,
                    "description": null, "id": feature, "initial_value": null,
                    "name": format!("feature_{feature}"), "project": 1, "type": "STANDARD"},
        "feature_segment": segment,
        "feature_state_value": value,
        "id": 1,
        "identity": identity,
        "identity_identifier": identifier,
    });
    let (event_type, new_state, previous_state) = if deleted {
        ("FLAG_DELETED", Value::Null, state)
    } else {
        ("FLAG_UPDATED", state, Value::Null)
    };
    serde_json::to_vec(&serde_json::json!({
        "data": {"changed_by": "test", "new_state": new_state, "previous_state": previous_state,
                 "timestamp": "2026-01-01T00:00:00.000000Z"},
        "event_type": event_type,
    }))
    .unwrap()
}

/// The value of one series on a metrics page (`name{labels}` exactly), 0 when it is not there.
/// Every family shows its known series at zero from start, so a test asks for a count, never
/// only for the series' presence.
pub fn series_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

//! The real binary, killed with SIGKILL while changes stream in and deliveries go out.

use std::sync::Arc;

use serde_json::Value;

use crate::sequences;
use crate::support::sink::{Answer, Sink};

#[path = "../sidecar/common.rs"]
#[allow(dead_code)]
mod sidecar;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_stream_of_changes_delivers_every_acknowledged_event_with_stable_ids() {
    use hyper::{Method, StatusCode};
    use serde_json::json;
    use sidecar::{Process, call, config_toml, free_addr};
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    const CLIENTS: usize = 8;
    const ACKS_PER_ROUND: usize = 120;

    let sink = Sink::start(Vec::new(), Answer::Status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let config_path = dir.path().join("flagpost.toml");
    let extra = format!(
        r#"
[[environments.webhooks]]
name = "sink"
url = "{}"
secrets = [{{ value = "kill-test-secret" }}]
[delivery]
retry_schedule = ["50ms", "50ms", "50ms", "50ms", "50ms"]
jitter = "none"
"#,
        sink.url("/hook")
    );
    std::fs::write(&config_path, config_toml(dir.path(), addr, &extra)).unwrap();

    let process = Process::start(&config_path, addr);
    process.wait_ready().await;
    let (status, body) = call(
        Method::POST,
        &process.url("/api/v1/features"),
        Some(json!({"project": 1, "name": "stream"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let feature = body["feature"]["id"].as_u64().unwrap();

    // Every acknowledged event that the sink subscribes to: sequence -> event id.
    let acked: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
    let record = |acked: &Mutex<BTreeMap<u64, String>>, answer: &Value| {
        for event in answer["events"].as_array().unwrap() {
            if event["event_type"] != "AUDIT_LOG_CREATED" {
                acked.lock().unwrap().insert(
                    event["sequence"].as_u64().unwrap(),
                    event["id"].as_str().unwrap().to_owned(),
                );
            }
        }
    };
    record(&acked, &body);

    for acknowledged in
        sidecar::stream_changes_and_kill(process, &config_path, feature, CLIENTS, 3, ACKS_PER_ROUND)
            .await
    {
        record(&acked, &acknowledged.answer);
    }

    // Restarted once more: delivery resumes from the outbox.
    let mut process = Process::start(&config_path, addr);
    process.wait_ready().await;
    let acked = acked.lock().unwrap().clone();
    let received = sink
        .wait_until("every acknowledged event at the sink", |received| {
            let seen: BTreeSet<u64> = sequences(received).into_iter().collect();
            acked.keys().all(|s| seen.contains(s))
        })
        .await;
    let mut ids: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for r in &received {
        let sequence: u64 = r.header("x-flagpost-sequence").unwrap().parse().unwrap();
        ids.entry(sequence)
            .or_default()
            .insert(r.header("webhook-id").unwrap().to_owned());
    }
    for (sequence, id) in &acked {
        let seen = &ids[sequence];
        assert_eq!(seen.len(), 1, "event {sequence} arrived with ids {seen:?}");
        assert!(
            seen.contains(id),
            "event {sequence}: {seen:?}, acknowledged as {id}"
        );
    }
    // Duplicates are allowed (at-least-once) and carry the same id, checked above for all.
    process.terminate();
}

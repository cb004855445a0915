//! flagpost's own segment events reach the real `flagpost-receiver`, which knows only Flagsmith's
//! event types: it acknowledges them (2xx, so they are delivered, never retried or dead-lettered).

use std::path::{Path, PathBuf};

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::common::{Process, call, free_addr, test_config, wait_until};
use crate::support::config::ReceiverConfig;
use crate::support::process::{Running, build_receiver};

const SECRET: &str = "whsec_c2VnbWVudCBldmVudHMgZm9yIHRoZSByZWNlaXZlcg==";

/// The receiver binary, built beside flagpost's by `cargo test --workspace`; built on demand when
/// the test runs alone.
fn receiver_binary() -> PathBuf {
    let beside = Path::new(env!("CARGO_BIN_EXE_flagpost")).with_file_name("flagpost-receiver");
    if beside.exists() {
        return beside;
    }
    build_receiver(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_knows_only_flagsmith_types_acknowledges_segment_events() {
    let dir = tempfile::tempdir().unwrap();
    let (sidecar, receiver) = (free_addr(), free_addr());
    let sidecar_config = test_config(dir.path(), sidecar)
        .webhook("receiver", &format!("http://{receiver}/webhook"), SECRET)
        .write();
    let receiver_config = ReceiverConfig::new(dir.path())
        .listen(receiver)
        .without_snapshot()
        .secret(SECRET)
        .environment(1, &["dev-key"])
        .write();
    let process = Process::start(&sidecar_config, sidecar);
    let _receiver = Running::serve(&receiver_binary(), &receiver_config, "warn", false);
    process.wait_ready().await;

    let rules = json!([{"type": "ALL", "rules": [], "conditions": [
        {"operator": "EQUAL", "property": "plan", "value": "beta"}]}]);
    let (status, created) = call(
        Method::POST,
        &process.url("/api/v1/segments"),
        Some(json!({"project": 1, "name": "beta", "rules": rules})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let event = &created["events"][0];
    assert_eq!(event["event_type"], "SEGMENT_UPDATED");
    let sequence = event["sequence"].as_u64().unwrap();

    let attempts = process.url(&format!(
        "/api/v1/admin/attempts?sequence={sequence}&endpoint=receiver"
    ));
    wait_until("the segment event is delivered to the receiver", || async {
        let (_, answer) = call(Method::GET, &attempts, None).await;
        answer["attempts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["result"] == "delivered"))
    })
    .await;
    let (_, answer) = call(Method::GET, &attempts, None).await;
    assert_eq!(answer["attempts"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(answer["attempts"][0]["status"], 200, "{answer}");
    let (_, dead) = call(
        Method::GET,
        &process.url("/api/v1/admin/dead-letters?endpoint=receiver"),
        None,
    )
    .await;
    assert_eq!(dead["dead_letters"], json!([]), "{dead}");
}

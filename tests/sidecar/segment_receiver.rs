//! flagpost's own segment events reach the real `flagpost-receiver`, which knows only Flagsmith's
//! event types: it acknowledges them (2xx, so they are delivered, never retried or dead-lettered).

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::common::{Process, call, free_addr, send, serve_receiver, test_config, wait_until};
use crate::support::config::ReceiverConfig;

const SECRET: &str = "whsec_c2VnbWVudCBldmVudHMgZm9yIHRoZSByZWNlaXZlcg==";

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
    let _receiver = serve_receiver(&receiver_config, receiver).await;
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

/// A segment's rules reach a receiver fed by flagpost through `SEGMENT_UPDATED` and
/// `SEGMENT_DELETED` alone: the receiver loaded its document once, at start, and polls nothing;
/// each segment event makes it read the document again, so its answers follow the rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_events_update_a_receivers_document_without_polling() {
    const SERVER_KEY: &str = "ser.segment-events-key";
    let dir = tempfile::tempdir().unwrap();
    let (sidecar, receiver) = (free_addr(), free_addr());
    let sidecar_config = test_config(dir.path(), sidecar)
        .server_key(SERVER_KEY)
        .webhook("receiver", &format!("http://{receiver}/webhook"), SECRET)
        .write();
    let receiver_config = ReceiverConfig::new(dir.path())
        .listen(receiver)
        .without_snapshot()
        .secret(SECRET)
        .environment(1, &["dev-key"])
        .flagpost_server_key(1, SERVER_KEY)
        .bootstrap(&format!("http://{sidecar}"), crate::common::TOKEN, 1)
        .write();
    let process = Process::start(&sidecar_config, sidecar);
    process.wait_ready().await;
    let _receiver = serve_receiver(&receiver_config, receiver).await;
    let banner =
        json!({"project": 1, "name": "banner", "initial_value": "all", "default_enabled": true});
    let (status, answer) = call(Method::POST, &process.url("/api/v1/features"), Some(banner)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let rules = |plan: &str| {
        json!([{"type": "ALL", "rules": [], "conditions": [
            {"operator": "EQUAL", "property": "plan", "value": plan}]}])
    };
    let body = json!({"project": 1, "name": "beta", "rules": rules("beta")});
    let (status, created) = call(Method::POST, &process.url("/api/v1/segments"), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let segment = created["segment"]["id"].as_u64().unwrap();
    let path = format!("/api/v1/environments/1/features/banner/segments/{segment}");
    let body = json!({"enabled": true, "value": "beta only", "priority": 0});
    let (status, answer) = call(Method::PUT, &process.url(&path), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let banner_for = |plan: &'static str| async move {
        let body =
            json!({"identifier": "u-1", "traits": [{"trait_key": "plan", "trait_value": plan}]});
        let url = format!("http://{receiver}/api/v1/identities/");
        let headers = [
            ("x-environment-key", "dev-key"),
            ("content-type", "application/json"),
        ];
        let answer = send(
            Method::POST,
            &url,
            None,
            Some(body.to_string().into_bytes()),
            &headers,
        )
        .await;
        let (_, answer) = answer.unwrap();
        let flags = answer["flags"].as_array().cloned().unwrap_or_default();
        flags
            .iter()
            .find(|f| f["feature"]["name"] == "banner")
            .map(|f| f["feature_state_value"].clone())
    };
    wait_until(
        "the segment and its override reach the receiver",
        || async { banner_for("beta").await == Some(json!("beta only")) },
    )
    .await;
    assert_eq!(banner_for("pro").await, Some(json!("all")));

    // New rules: only SEGMENT_UPDATED says so.
    let body = json!({"rules": rules("pro")});
    let url = process.url(&format!("/api/v1/segments/{segment}"));
    let (status, answer) = call(Method::PATCH, &url, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    wait_until("the new rules reach the receiver", || async {
        banner_for("pro").await == Some(json!("beta only"))
    })
    .await;
    assert_eq!(banner_for("beta").await, Some(json!("all")));

    // Deleted: its override goes with it.
    let (status, answer) = call(Method::DELETE, &url, None).await;
    assert!(status.is_success(), "{answer}");
    wait_until("the deletion reaches the receiver", || async {
        banner_for("pro").await == Some(json!("all"))
    })
    .await;
}

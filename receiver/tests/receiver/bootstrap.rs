//! Bootstrap from a real HTTP server on 127.0.0.1 serving flagpost's environment document
//! (`GET /api/v1/environment-document/`: Flagsmith's format plus flagpost's ordering).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// What the document server answers, and the requests it saw.
#[derive(Default)]
struct DocumentServer {
    /// `None`: answer 503 (flagpost not reachable yet).
    document: Option<Value>,
    requests: Vec<String>,
}

/// The receiver's server-side key of environment 1 in flagpost.
const SERVER_KEY: &str = "ser.bootstrap-key";

/// Serves `GET /api/v1/environment-document/` to [`SERVER_KEY`] over plain HTTP/1.1, one request per
/// connection.
async fn serve_documents(state: Arc<Mutex<DocumentServer>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let state = state.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let (status, body) = {
                    let mut state = state.lock().unwrap();
                    state.requests.push(head.clone());
                    match &state.document {
                        Some(doc)
                            if head.starts_with("GET /api/v1/environment-document/ ")
                                && head
                                    .to_lowercase()
                                    .contains(&format!("x-environment-key: {SERVER_KEY}")) =>
                        {
                            ("200 OK", doc.to_string())
                        }
                        Some(_) => ("404 Not Found", "{}".to_owned()),
                        None => ("503 Service Unavailable", "{}".to_owned()),
                    }
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

/// flagpost's environment document, in the format flagpost serves it: `dark_mode` (id 7) at
/// `default_value`, overridden for `user-42` and for segment 9 (`beta`, with no rules); read
/// from the database the tests' events come from.
fn document(last_sequence: u64, default_value: &str, identity_value: &str) -> Value {
    let state = |enabled: bool, value: &str, segment: bool| {
        json!({
            "django_id": null, "enabled": enabled,
            "feature": {"id": 7, "name": "dark_mode", "type": "STANDARD"},
            "feature_segment": if segment { json!({"priority": 0}) } else { Value::Null },
            "feature_state_value": value,
            "featurestate_uuid": "00000000-0000-8000-8000-000000000007",
            "multivariate_feature_state_values": []
        })
    };
    json!({
        "api_key": "key-1", "id": 1, "name": "Development",
        "feature_states": [state(true, default_value, false)],
        "identity_overrides": [{"identifier": "user-42",
            "identity_features": [state(false, identity_value, false)]}],
        "project": {"id": 1, "name": "Shop", "hide_disabled_flags": false,
            "organisation": {"id": 1, "name": "", "feature_analytics": false,
                "persist_trait_data": true, "stop_serving_flags": false},
            "segments": [{"id": 9, "name": "beta", "rules": [],
                "feature_states": [state(true, "seg", true)]}]},
        "updated_at": "2026-01-01T00:00:00Z",
        "flagpost": {"last_sequence": last_sequence, "instance": format!("{TEST_DATABASE:016x}")}
    })
}

async fn wait_ready(receiver: &Receiver) {
    for _ in 0..600 {
        if receiver.get("/readyz", &[]).await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never ready");
}

async fn post_event(receiver: &Receiver, feature: u64, key: Key, value: &str, seq: u64) -> Value {
    let body = flag_event(1, feature, &key, false, true, json!(value));
    let signed = Signed::new(&body, &format!("evt-{seq}-{value}"), Some(seq));
    let (status, answer) = receiver.post("/webhook", &signed.as_refs(), &body).await;
    assert_eq!(status, 200, "{answer}");
    answer["status"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_load_at_start_and_on_demand_without_regressing_newer_changes() {
    let state = Arc::new(Mutex::new(DocumentServer::default()));
    let url = serve_documents(state.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let rest = format!(
        "[[environments]]\nid = 1\nkeys = [\"key-1\"]\nflagpost_server_key = {{ value = \"{SERVER_KEY}\" }}\n[bootstrap]\nflagpost_url = \"{url}\"\ntoken = {{ value = \"doc-token\" }}\nretry_secs = 1\n"
    );
    let receiver = Receiver::start(dir.path(), &config_toml(dir.path(), "", &rest)).await;

    // flagpost answers 503: not ready, and it keeps trying.
    let (status, body) = receiver.get("/readyz", &[]).await;
    assert_eq!((status, body["waiting_for"].clone()), (503, json!([1])));
    for _ in 0..600 {
        if !state.lock().unwrap().requests.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(receiver.get("/readyz", &[]).await.0, 503);

    state.lock().unwrap().document = Some(document(100, "v2", "x"));
    wait_ready(&receiver).await;
    let request = state
        .lock()
        .unwrap()
        .requests
        .last()
        .unwrap()
        .to_lowercase();
    assert!(
        request.contains("authorization: bearer doc-token"),
        "{request}"
    );

    let flags = receiver.env_flags(1).await;
    assert_eq!(
        (flags[0]["name"].clone(), flags[0]["value"].clone()),
        (json!("dark_mode"), json!("v2"))
    );
    assert_eq!(flags[0]["segment_overrides"][0]["value"], "seg");
    assert_eq!(receiver.identity_flags(1, "user-42").await[0]["value"], "x");

    // Webhooks on top: older than the document ignored, newer applied. A feature the document
    // does not list was deleted by then (or never existed): its events it covers are ignored too
    // (flagpost never reuses a feature id, so none comes after the deletion).
    assert_eq!(
        post_event(&receiver, 7, Key::Default, "old", 90).await,
        "superseded"
    );
    assert_eq!(
        post_event(&receiver, 3, Key::Default, "back", 95).await,
        "superseded"
    );
    assert_eq!(
        post_event(&receiver, 7, Key::Identity("user-42".into()), "newer", 160).await,
        "applied"
    );

    // A reload on demand at sequence 150: it replaces what it covers, keeps what is newer.
    state.lock().unwrap().document = Some(document(150, "v3", "from-document"));
    let (status, answer) = receiver
        .post("/admin/environments/1/bootstrap", &[], b"")
        .await;
    assert_eq!(
        (status, answer["last_sequence"].clone()),
        (200, json!(150)),
        "{answer}"
    );
    assert_eq!(receiver.env_flags(1).await[0]["value"], "v3");
    assert_eq!(
        receiver.identity_flags(1, "user-42").await[0]["value"],
        "newer"
    );

    // The SDK API serves the environment by its key.
    let (status, flags) = receiver
        .get("/api/v1/flags/", &[("x-environment-key", "key-1")])
        .await;
    assert_eq!(
        (status, flags[0]["feature_state_value"].clone()),
        (200, json!("v3"))
    );
    let (status, _) = receiver
        .get("/api/v1/flags/", &[("x-environment-key", "nope")])
        .await;
    assert_eq!(status, 401);

    // Flagpost unreachable: the on-demand reload says so and changes nothing.
    state.lock().unwrap().document = None;
    let (status, answer) = receiver
        .post("/admin/environments/1/bootstrap", &[], b"")
        .await;
    assert_eq!(status, 502, "{answer}");
    assert_eq!(receiver.env_flags(1).await[0]["value"], "v3");
    let (_, metrics) = receiver.get("/metrics", &[]).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("flagpost_receiver_environment_data_age_seconds{environment=\"1\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains("doc-token"));
    receiver.stop().await;
}

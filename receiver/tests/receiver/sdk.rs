//! The official Flagsmith Python SDK reads flags from the receiver as its `api_url`.

use serde_json::{Value, json};

use crate::common::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/flagsmith_sdk_check.py");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flagsmith_python_sdk_reads_environment_and_identity_flags() {
    let python = crate::test_deps::python();

    let dir = tempfile::tempdir().unwrap();
    let rest = "[[environments]]\nid = 3\nkeys = [\"sdk-env-key\"]\n";
    let receiver = Receiver::start(dir.path(), &config_toml(dir.path(), "", rest)).await;
    let events = [
        (1, Key::Default, true, json!("blue"), 1),
        (2, Key::Default, false, json!(7), 2),
        (1, Key::Identity("user-42".into()), false, json!("red"), 3),
        (2, Key::Segment(5), true, json!(8), 4),
    ];
    for (feature, key, enabled, value, seq) in events {
        let body = flag_event(3, feature, &key, false, enabled, value);
        let signed = Signed::new(&body, &format!("evt-{seq}"), Some(seq));
        assert_eq!(
            receiver.post("/webhook", &signed.as_refs(), &body).await.0,
            200
        );
    }

    // The same through GET, as other SDKs call it.
    let key = [("x-environment-key", "sdk-env-key")];
    let (status, identity) = receiver
        .get("/api/v1/identities/?identifier=user-42", &key)
        .await;
    assert_eq!(status, 200, "{identity}");
    assert_eq!(identity["identifier"], "user-42");
    assert_eq!(identity["flags"][0]["feature"]["name"], "feature_1");
    assert_eq!(identity["flags"][0]["feature_state_value"], "red");
    let (status, _) = receiver.get("/api/v1/identities/", &key).await;
    assert_eq!(status, 400, "an identifier is required");

    let api_url = receiver.url("/api/v1/");
    let output = tokio::task::spawn_blocking(move || {
        let mut python = python;
        python
            .args([SCRIPT, &api_url, "sdk-env-key", "user-42"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "SDK script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        seen,
        json!({
            "environment": {"feature_1": [true, "blue"], "feature_2": [false, 7]},
            // The identity override decides feature_1; feature_2's segment override cannot apply
            // without segment rules, so the default stands.
            "identity": {"feature_1": [false, "red"], "feature_2": [false, 7]},
        })
    );
    receiver.stop().await;
}

/// Issue 8, item 8: `POST /api/v1/identities/` takes only its documented JSON object (an array
/// would be read by field position), and only as `application/json`, as other routes do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_take_only_a_json_object_sent_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let rest = "[[environments]]\nid = 3\nkeys = [\"sdk-env-key\"]\n";
    let receiver = Receiver::start(dir.path(), &config_toml(dir.path(), "", rest)).await;
    let json_type = [
        ("x-environment-key", "sdk-env-key"),
        ("content-type", "application/json"),
    ];
    for body in [&br#"["user-42", []]"#[..], b"[]", b"\"user-42\"", b"null"] {
        let (status, answer) = receiver.post("/api/v1/identities/", &json_type, body).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("JSON object"),
            "{answer}"
        );
    }
    let good = br#"{"identifier": "user-42", "traits": []}"#;
    let (status, answer) = receiver.post("/api/v1/identities/", &json_type, good).await;
    assert_eq!(status, 200, "{answer}");
    let plain = [
        ("x-environment-key", "sdk-env-key"),
        ("content-type", "text/plain"),
    ];
    let (status, answer) = receiver.post("/api/v1/identities/", &plain, good).await;
    assert_eq!(status, 415, "{answer}");
    receiver.stop().await;
}

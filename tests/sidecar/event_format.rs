//! The events flagpost writes, compared field for field with the bodies in
//! `../shared/conformance/`: the same keys at every level, the same JSON types.

use std::collections::BTreeSet;
use std::path::PathBuf;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Sidecar, call, events_after};

fn conformance(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/conformance")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

/// Asserts that `ours` has exactly the keys of `reference`, recursively where both are objects,
/// and that each value has the same JSON type where the reference's is not null.
fn assert_same_shape(ours: &Value, reference: &Value, at: &str) {
    match (ours, reference) {
        (Value::Object(o), Value::Object(r)) => {
            assert_eq!(keys(ours), keys(reference), "keys differ at {at}: {ours}");
            for (key, value) in r {
                assert_same_shape(&o[key], value, &format!("{at}.{key}"));
            }
        }
        (_, Value::Null) => {}
        (o, r) => assert_eq!(
            std::mem::discriminant(o),
            std::mem::discriminant(r),
            "type differs at {at}: ours {o}, reference {r}"
        ),
    }
}

fn timestamp_is_flagsmith_format(ts: &str) {
    // %Y-%m-%dT%H:%M:%S.%fZ: microseconds, UTC.
    assert_eq!(ts.len(), 27, "{ts}");
    assert!(
        ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.',
        "{ts}"
    );
}

#[tokio::test]
async fn events_match_the_seed_and_the_conformance_bodies() {
    let sidecar = Sidecar::start().await;
    let base = sidecar.url("");
    let seed = conformance("flag_updated_seed.json");
    let seed_state = &seed["data"]["new_state"];

    let (status, created) = call(
        Method::POST,
        &sidecar.url("/api/v1/features"),
        Some(json!({"project": 1, "name": "feature_name", "initial_value": "red"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["feature"]["id"].as_u64().unwrap();
    let after_create = created["events"][1]["sequence"].as_u64().unwrap();

    // Every kind of change, one after the other.
    let steps: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::PATCH,
            format!("/api/v1/features/{id}"),
            Some(json!({"initial_value": "blue"})),
        ),
        (
            Method::PUT,
            format!("/api/v1/environments/1/features/{id}/state"),
            Some(json!({"enabled": true})),
        ),
        (
            Method::PUT,
            format!("/api/v1/environments/1/features/{id}/identities/user-42"),
            Some(json!({"value": 42})),
        ),
        (
            Method::PUT,
            format!("/api/v1/environments/1/features/{id}/segments/9"),
            Some(json!({"segment_name": "beta", "priority": 1, "value": true})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/environments/1/features/{id}/identities/user-42"),
            None,
        ),
        (Method::DELETE, format!("/api/v1/features/{id}"), None),
    ];
    for (method, path, body) in steps {
        let (status, answer) = call(method, &sidecar.url(&path), body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
    }

    let events = events_after(&base, 0).await;
    let mut seen = BTreeSet::new();
    for (meta, body) in &events {
        let event_type = body["event_type"].as_str().unwrap();
        assert_eq!(meta["event_type"], event_type);
        assert_eq!(keys(body), keys(&seed), "envelope keys");
        let data = &body["data"];
        // Everything flagpost writes reads back as a web hook.
        flagpost::wire::parse_incoming(&serde_json::to_vec(body).unwrap()).unwrap();
        match event_type {
            "AUDIT_LOG_CREATED" => {
                assert_same_shape(
                    data,
                    &conformance("audit_log_created.json")["data"],
                    "audit",
                );
                timestamp_is_flagsmith_format(data["created_date"].as_str().unwrap());
                assert_eq!(data["author"]["email"], "tests@example.com");
                seen.insert("audit");
            }
            "FLAG_UPDATED" | "FLAG_DELETED" => {
                assert_eq!(keys(data), keys(&seed["data"]), "data keys");
                assert_eq!(data["changed_by"], "tests");
                timestamp_is_flagsmith_format(data["timestamp"].as_str().unwrap());
                for which in ["new_state", "previous_state"] {
                    let state = &data[which];
                    if state.is_null() {
                        continue;
                    }
                    // Overrides fill in what the seed leaves null; compare those with
                    // Flagsmith's own override bodies.
                    let mut expected = seed_state.clone();
                    if !state["feature_segment"].is_null() {
                        expected["feature_segment"] = conformance(
                            "segment_override_flagsmith.json",
                        )["data"]["new_state"]["feature_segment"]
                            .clone();
                        seen.insert("segment");
                    }
                    if !state["identity"].is_null() {
                        expected["identity"] = json!(1);
                        expected["identity_identifier"] = json!("user-42");
                        seen.insert("identity");
                    }
                    assert_same_shape(state, &expected, which);
                    assert!(
                        state["environment"].is_u64(),
                        "environment is an integer as in the seed"
                    );
                }
                if event_type == "FLAG_DELETED" {
                    assert!(data["new_state"].is_null());
                    assert!(data["previous_state"].is_object());
                    seen.insert("deleted");
                } else if meta["sequence"].as_u64().unwrap() < after_create {
                    assert!(
                        data["previous_state"].is_null(),
                        "creation has no previous state"
                    );
                    seen.insert("created");
                }
            }
            other => panic!("unexpected event type {other}"),
        }
    }
    assert_eq!(
        seen,
        BTreeSet::from(["audit", "created", "deleted", "identity", "segment"])
    );

    // The feature update is the seed's own example: same state, initial_value red -> blue.
    let (_, update) = events
        .iter()
        .find(|(m, b)| {
            m["sequence"].as_u64().unwrap() > after_create && b["event_type"] == "FLAG_UPDATED"
        })
        .unwrap();
    assert_eq!(
        update["data"]["previous_state"]["feature"]["initial_value"],
        "red"
    );
    assert_eq!(
        update["data"]["new_state"]["feature"]["initial_value"],
        "blue"
    );
    sidecar.stop().await;
}

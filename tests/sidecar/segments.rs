//! Segments with rules and multivariate options through the change API: their events, their
//! refusals (422, nothing changed), and events compared key for key with Flagsmith's recorded
//! web hooks.

use std::collections::BTreeSet;
use std::path::PathBuf;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Sidecar, call, events_after, last_sequence};
use crate::multivariate::add_option;

/// Nested rules using every operator Flagsmith's engine evaluates.
fn every_operator_rules() -> Value {
    json!([{
        "type": "ALL",
        "conditions": [],
        "rules": [
            {"type": "ANY", "rules": [], "conditions": [
                {"operator": "EQUAL", "property": "plan", "value": "pro"},
                {"operator": "NOT_EQUAL", "property": "plan", "value": "free"},
                {"operator": "CONTAINS", "property": "email", "value": "@example"},
                {"operator": "NOT_CONTAINS", "property": "email", "value": "spam"},
                {"operator": "REGEX", "property": "email", "value": ".*@example\\.com$"},
                {"operator": "IN", "property": "country", "value": "DE,FR"}
            ]},
            {"type": "ALL", "rules": [], "conditions": [
                {"operator": "GREATER_THAN", "property": "sessions", "value": 10},
                {"operator": "GREATER_THAN_INCLUSIVE", "property": "app", "value": "2.1.0:semver"},
                {"operator": "LESS_THAN", "property": "app", "value": "3.0.0:semver"},
                {"operator": "LESS_THAN_INCLUSIVE", "property": "age", "value": "65"},
                {"operator": "MODULO", "property": "user_no", "value": "2|0"},
                {"operator": "IS_SET", "property": "plan"},
                {"operator": "IS_NOT_SET", "property": "banned"}
            ]},
            {"type": "NONE", "rules": [], "conditions": [
                {"operator": "PERCENTAGE_SPLIT", "value": "30"}
            ]}
        ]
    }])
}

pub(crate) async fn create_segment(sidecar: &Sidecar, name: &str, rules: Value) -> Value {
    let (status, body) = call(
        Method::POST,
        &sidecar.url("/api/v1/segments"),
        Some(json!({"project": 1, "name": name, "rules": rules})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["segment"].clone()
}

pub(crate) async fn create_feature(sidecar: &Sidecar, name: &str) -> u64 {
    let (status, body) = call(
        Method::POST,
        &sidecar.url("/api/v1/features"),
        Some(json!({"project": 1, "name": name, "initial_value": "control", "default_enabled": true})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["feature"]["id"].as_u64().unwrap()
}

pub(crate) fn types(events: &[(Value, Value)]) -> Vec<String> {
    events
        .iter()
        .map(|(_, body)| body["event_type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn segments_are_created_changed_and_deleted_with_their_events() {
    let sidecar = Sidecar::start().await;
    let base = sidecar.url("");
    let segment = create_segment(&sidecar, "beta", every_operator_rules()).await;
    let id = segment["id"].as_u64().unwrap();
    assert_eq!(segment["rules"], every_operator_rules_as_text());
    let (status, read) = call(
        Method::GET,
        &sidecar.url(&format!("/api/v1/segments/{id}")),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["segment"], segment);

    let before = last_sequence(&base).await;
    let rules = json!([{"type": "ALL", "rules": [], "conditions": [
        {"operator": "EQUAL", "property": "plan", "value": "enterprise"}]}]);
    let (status, body) = call(
        Method::PATCH,
        &sidecar.url(&format!("/api/v1/segments/{id}")),
        Some(json!({"rules": rules})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = events_after(&base, before).await;
    assert_eq!(types(&events), ["SEGMENT_UPDATED", "AUDIT_LOG_CREATED"]);
    let data = &events[0].1["data"];
    assert_eq!(data["segment"]["rules"], rules);
    assert_eq!(data["segment"]["name"], "beta");
    assert_eq!(data["environment"], 1);
    // Receivers that know only Flagsmith's types read it and leave it unapplied.
    let parsed = flagpost::wire::parse_incoming(&serde_json::to_vec(&events[0].1).unwrap());
    assert!(matches!(
        parsed,
        Ok(flagpost::wire::IncomingEvent::NotApplied(_))
    ));

    // An override for the segment takes its name.
    let feature = create_feature(&sidecar, "checkout").await;
    let (status, body) = call(
        Method::PUT,
        &sidecar.url(&format!(
            "/api/v1/environments/1/features/{feature}/segments/{id}"
        )),
        Some(json!({"enabled": true, "value": "new", "priority": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = events_after(&base, last_sequence(&base).await - 2).await;
    assert_eq!(
        events[0].1["data"]["new_state"]["feature_segment"]["segment"]["name"],
        "beta"
    );

    // Renaming the segment renames its override, with a FLAG_UPDATED.
    let before = last_sequence(&base).await;
    let (status, body) = call(
        Method::PATCH,
        &sidecar.url(&format!("/api/v1/segments/{id}")),
        Some(json!({"name": "beta_2"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = events_after(&base, before).await;
    assert_eq!(
        types(&events),
        ["FLAG_UPDATED", "SEGMENT_UPDATED", "AUDIT_LOG_CREATED"]
    );
    let renamed = &events[0].1["data"];
    assert_eq!(
        renamed["previous_state"]["feature_segment"]["segment"]["name"],
        "beta"
    );
    assert_eq!(
        renamed["new_state"]["feature_segment"]["segment"]["name"],
        "beta_2"
    );

    // Deleting the segment removes its override, with a FLAG_DELETED, then SEGMENT_DELETED.
    let before = last_sequence(&base).await;
    let (status, body) = call(
        Method::DELETE,
        &sidecar.url(&format!("/api/v1/segments/{id}")),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = events_after(&base, before).await;
    assert_eq!(
        types(&events),
        ["FLAG_DELETED", "SEGMENT_DELETED", "AUDIT_LOG_CREATED"]
    );
    let removed = &events[0].1["data"]["previous_state"];
    assert_eq!(removed["feature_segment"]["segment"]["id"], id);
    let (_, document) = call(
        Method::GET,
        &sidecar.url("/api/v1/environments/1/document"),
        None,
    )
    .await;
    let checkout = document["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"]["id"] == feature)
        .unwrap();
    assert_eq!(checkout["segment_overrides"], json!([]));
    let (status, _) = call(
        Method::GET,
        &sidecar.url(&format!("/api/v1/segments/{id}")),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    sidecar.stop().await;
}

/// The rules as stored: condition values are text, as in Flagsmith.
fn every_operator_rules_as_text() -> Value {
    let mut rules = every_operator_rules();
    rules[0]["rules"][1]["conditions"][0]["value"] = json!("10");
    for condition in rules[0]["rules"][1]["conditions"].as_array_mut().unwrap() {
        if condition.get("value").is_none() {
            condition["value"] = Value::Null;
        }
    }
    rules[0]["rules"][2]["conditions"][0]["property"] = Value::Null;
    for rule in rules[0]["rules"].as_array_mut().unwrap() {
        for condition in rule["conditions"].as_array_mut().unwrap() {
            if condition.get("property").is_none() {
                condition["property"] = Value::Null;
            }
        }
    }
    rules
}

pub(crate) fn condition_rules(operator: &str, property: Option<&str>, value: Value) -> Value {
    json!([{"type": "ALL", "rules": [], "conditions": [
        {"operator": operator, "property": property, "value": value}]}])
}

/// Bad rules, each with what the refusal must say.
fn bad_rules() -> Vec<(Value, &'static str)> {
    vec![
        (
            condition_rules("REGEX", Some("email"), json!("([a-z")),
            "does not compile",
        ),
        (
            condition_rules("MODULO", Some("n"), json!("2")),
            "divisor|remainder",
        ),
        (
            condition_rules("MODULO", Some("n"), json!("0|1")),
            "divisor|remainder",
        ),
        (
            condition_rules("PERCENTAGE_SPLIT", None, json!("100.5")),
            "0 to 100",
        ),
        (
            condition_rules("PERCENTAGE_SPLIT", None, json!("-1")),
            "0 to 100",
        ),
        (
            condition_rules("LIKE", Some("plan"), json!("pro")),
            "operator \"LIKE\" is unknown",
        ),
        (
            condition_rules("EQUAL", Some("app"), json!("1.x:semver")),
            "semantic version",
        ),
        (
            condition_rules("EQUAL", None, json!("pro")),
            "needs a property",
        ),
        (
            json!([{"type": "SOME", "rules": [], "conditions": []}]),
            "is not ALL, ANY or NONE",
        ),
    ]
}

async fn segments_list(sidecar: &Sidecar) -> Value {
    let (status, body) = call(
        Method::GET,
        &sidecar.url("/api/v1/segments?project=1"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    body
}

#[tokio::test]
async fn bad_segments_are_refused_on_every_route_with_the_state_unchanged() {
    let sidecar = Sidecar::start().await;
    let base = sidecar.url("");
    let good = create_segment(&sidecar, "kept", every_operator_rules()).await;
    let id = good["id"].as_u64().unwrap();
    let sequence = last_sequence(&base).await;
    let listed = segments_list(&sidecar).await;
    for (rules, expected) in bad_rules() {
        let (status, body) = call(
            Method::POST,
            &sidecar.url("/api/v1/segments"),
            Some(json!({"project": 1, "name": "bad", "rules": rules})),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{rules}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(expected), "{error} should say {expected}");
        assert!(error.contains("rules[0]"), "{error} names where");
        let (status, body) = call(
            Method::PATCH,
            &sidecar.url(&format!("/api/v1/segments/{id}")),
            Some(json!({"rules": rules})),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{rules}: {body}");
    }
    // A duplicate name, an unknown project, a blank name.
    for (body, status) in [
        (json!({"project": 1, "name": "kept"}), StatusCode::CONFLICT),
        (json!({"project": 99, "name": "x"}), StatusCode::NOT_FOUND),
        (
            json!({"project": 1, "name": " "}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (got, answer) = call(Method::POST, &sidecar.url("/api/v1/segments"), Some(body)).await;
        assert_eq!(got, status, "{answer}");
    }
    assert_eq!(last_sequence(&base).await, sequence, "no event was written");
    assert_eq!(segments_list(&sidecar).await, listed, "no segment changed");
    sidecar.stop().await;
}

fn recorded_step(step: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/conformance/flagsmith-v2.265.0-live/steps")
        .join(format!("{step}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// The `new_state` of the first `FLAG_UPDATED` Flagsmith sent in a recorded step, with the state
/// `id` the seed has (and flagpost keeps) where Flagsmith v2.265.0 leaves it out.
fn recorded_new_state(step: &str) -> Value {
    let mut state = recorded_step(step)["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| &w["json"])
        .find(|body| body["event_type"] == "FLAG_UPDATED")
        .unwrap()["data"]["new_state"]
        .clone();
    state["id"] = json!(1);
    state
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

/// The same keys at every level, and the same JSON type where Flagsmith's value is not null.
/// `environment` and `feature.project` are integers, as in the seed flagpost writes, where
/// Flagsmith today sends objects (receivers read both).
fn assert_same_keys(ours: &Value, flagsmith: &Value, at: &str) {
    match (ours, flagsmith) {
        (Value::Object(o), Value::Object(f)) => {
            assert_eq!(keys(ours), keys(flagsmith), "keys differ at {at}: {ours}");
            for (key, value) in f {
                assert_same_keys(&o[key], value, &format!("{at}.{key}"));
            }
        }
        (Value::Array(o), Value::Array(f)) => {
            assert_eq!(o.len(), f.len(), "lengths differ at {at}");
            for (i, (o, f)) in o.iter().zip(f).enumerate() {
                assert_same_keys(o, f, &format!("{at}[{i}]"));
            }
        }
        (Value::Number(_), Value::Object(_))
            if at.ends_with(".environment") || at.ends_with(".project") => {}
        (_, Value::Null) => {}
        (o, f) => assert_eq!(
            std::mem::discriminant(o),
            std::mem::discriminant(f),
            "type differs at {at}: ours {o}, Flagsmith's {f}"
        ),
    }
}

#[tokio::test]
async fn flag_updated_carries_multivariate_values_and_feature_segment_as_flagsmith_sends_them() {
    let sidecar = Sidecar::start().await;
    let base = sidecar.url("");
    // Step 17: qa's layout, two options allocated 100 / 50 on the environment default.
    let feature = create_feature(&sidecar, "layout").await;
    let (_, grid) = add_option(&sidecar, feature, "grid", 50.0).await;
    let (_, cards) = add_option(&sidecar, feature, "cards", 50.0).await;
    let before = last_sequence(&base).await;
    let (status, body) = call(
        Method::PUT,
        &sidecar.url(&format!("/api/v1/environments/1/features/{feature}/state")),
        Some(json!({"multivariate_feature_state_values": [
            {"multivariate_feature_option": grid["multivariate_option"]["id"], "percentage_allocation": 100},
            {"multivariate_feature_option": cards["multivariate_option"]["id"], "percentage_allocation": 0}
        ]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ours = &events_after(&base, before).await[0].1["data"]["new_state"];
    assert_same_keys(ours, &recorded_new_state("017"), "new_state");

    // Step 26: a segment override of a multivariate feature, no allocations of its own.
    let segment = create_segment(
        &sidecar,
        "rollout_half",
        condition_rules("PERCENTAGE_SPLIT", None, json!("50")),
    )
    .await;
    let before = last_sequence(&base).await;
    let (status, body) = call(
        Method::PUT,
        &sidecar.url(&format!(
            "/api/v1/environments/1/features/{feature}/segments/{}",
            segment["id"]
        )),
        Some(json!({"enabled": true, "value": "segment-flow"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ours = &events_after(&base, before).await[0].1["data"]["new_state"];
    assert_same_keys(ours, &recorded_new_state("026"), "new_state");
    assert_eq!(ours["feature_segment"]["segment"]["name"], "rollout_half");
    sidecar.stop().await;
}

//! Issue 10: Flagsmith's Python SDK in local evaluation mode against flagpost decides each of
//! Flagsmith's operators (all 14, and semver values) as Flagsmith's rules say, and splits 30/70:
//! in that proportion over many identities, and for every one of them exactly as Flagsmith's
//! engine hashes (its own hash function, from the engine crate, decides the expectation).

use flagsmith_flag_engine::utils::hashing::get_hashed_percentage_for_object_ids;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Sidecar, call};
use crate::envdoc::{CLIENT_KEY, production, run_sdk};

/// One segment per operator: its condition, traits that match it, traits that do not.
fn operators() -> Vec<(&'static str, Value, Value, Value)> {
    let condition = |property: &str, operator: &str, value: &str| json!({"property": property, "operator": operator, "value": value});
    vec![
        (
            "EQUAL",
            condition("plan", "EQUAL", "pro"),
            json!({"plan": "pro"}),
            json!({"plan": "free"}),
        ),
        (
            "NOT_EQUAL",
            condition("plan", "NOT_EQUAL", "free"),
            json!({"plan": "pro"}),
            json!({"plan": "free"}),
        ),
        (
            "GREATER_THAN",
            condition("sessions", "GREATER_THAN", "10"),
            json!({"sessions": 11}),
            json!({"sessions": 10}),
        ),
        (
            "GREATER_THAN_INCLUSIVE",
            condition("sessions", "GREATER_THAN_INCLUSIVE", "10"),
            json!({"sessions": 10}),
            json!({"sessions": 9}),
        ),
        (
            "LESS_THAN",
            condition("age", "LESS_THAN", "18"),
            json!({"age": 17}),
            json!({"age": 18}),
        ),
        (
            "LESS_THAN_INCLUSIVE",
            condition("age", "LESS_THAN_INCLUSIVE", "18"),
            json!({"age": 18}),
            json!({"age": 19}),
        ),
        (
            "CONTAINS",
            condition("email", "CONTAINS", "@corp"),
            json!({"email": "a@corp.test"}),
            json!({"email": "a@else.test"}),
        ),
        (
            "NOT_CONTAINS",
            condition("email", "NOT_CONTAINS", "spam"),
            json!({"email": "a@x.test"}),
            json!({"email": "spam@x.test"}),
        ),
        (
            "REGEX",
            condition("email", "REGEX", r".*@corp\.test$"),
            json!({"email": "b@corp.test"}),
            json!({"email": "b@corp.testing"}),
        ),
        (
            "MODULO",
            condition("user_no", "MODULO", "2|0"),
            json!({"user_no": 4}),
            json!({"user_no": 5}),
        ),
        (
            "IN",
            condition("country", "IN", "DE,FR"),
            json!({"country": "FR"}),
            json!({"country": "US"}),
        ),
        (
            "IS_SET",
            json!({"property": "beta", "operator": "IS_SET"}),
            json!({"beta": true}),
            json!({}),
        ),
        (
            "IS_NOT_SET",
            json!({"property": "banned", "operator": "IS_NOT_SET"}),
            json!({}),
            json!({"banned": true}),
        ),
        (
            "SEMVER_GTE",
            condition("app", "GREATER_THAN_INCLUSIVE", "2.1.0:semver"),
            json!({"app": "2.1.0"}),
            json!({"app": "2.0.9"}),
        ),
        (
            "SEMVER_LT",
            condition("app", "LESS_THAN", "3.0.0:semver"),
            json!({"app": "2.9.9"}),
            json!({"app": "3.0.0"}),
        ),
        (
            "PERCENTAGE_SPLIT",
            json!({"operator": "PERCENTAGE_SPLIT", "value": "100"}),
            json!({}),
            json!(null),
        ),
    ]
}

/// A feature `name` (default `out`) overridden to `in` for a new segment with `rules`; answers
/// the segment's id.
async fn segment_feature(sidecar: &Sidecar, name: &str, rules: Value) -> u64 {
    let body = json!({"project": 1, "name": name, "initial_value": "out", "default_enabled": true});
    let (status, answer) = call(Method::POST, &sidecar.url("/api/v1/features"), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let body = json!({"project": 1, "name": name, "rules": rules});
    let (status, answer) = call(Method::POST, &sidecar.url("/api/v1/segments"), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let segment = answer["segment"]["id"].as_u64().unwrap();
    let path = format!("/api/v1/environments/Production/features/{name}/segments/{segment}");
    let body = json!({"enabled": true, "value": "in", "priority": 0});
    let (status, answer) = call(Method::PUT, &sidecar.url(&path), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    segment
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_decides_every_operator_and_a_30_70_split_as_flagsmith_does() {
    let sidecar = Sidecar::start_with(&production()).await;
    let mut identities = Vec::new();
    let mut expected = Vec::new();
    for (name, condition, matching, other) in operators() {
        let rules = json!([{"type": "ALL", "rules": [], "conditions": [condition]}]);
        segment_feature(&sidecar, name, rules).await;
        for (traits, value) in [(matching, "in"), (other, "out")] {
            if traits.is_null() {
                continue;
            }
            let identifier = format!("{name}-{value}");
            identities.push(json!({"identifier": identifier, "traits": traits}));
            expected.push((identifier, name, value));
        }
    }
    // 30/70: a split inside a NONE of an ANY, so the rule nesting is Flagsmith's too.
    let rules = json!([{"type": "ALL", "conditions": [], "rules": [
        {"type": "ANY", "rules": [], "conditions": [
            {"operator": "PERCENTAGE_SPLIT", "value": "30"}]},
        {"type": "NONE", "rules": [], "conditions": [
            {"property": "opted_out", "operator": "EQUAL", "value": "yes"}]},
    ]}]);
    let split = segment_feature(&sidecar, "thirty", rules).await.to_string();
    let splits = 1000;
    for n in 0..splits {
        identities.push(json!({"identifier": format!("split-{n}"), "traits": {}}));
    }

    let seen = run_sdk(&sidecar, json!(identities)).await;
    for (identifier, feature, value) in &expected {
        assert_eq!(
            seen["identities"][identifier][feature],
            json!([true, value]),
            "{identifier}: {}",
            seen["identities"][identifier]
        );
    }
    let mut inside = 0;
    for n in 0..splits {
        let identifier = format!("split-{n}");
        // Flagsmith's engine: in the segment when the hash of (segment, identity key) <= 30.
        let key = format!("{CLIENT_KEY}_{identifier}");
        let hashed = get_hashed_percentage_for_object_ids(vec![&split, &key], 1);
        let flagsmith = if f64::from(hashed) <= 30.0 {
            "in"
        } else {
            "out"
        };
        let answered = &seen["identities"][&identifier]["thirty"];
        assert_eq!(answered, &json!([true, flagsmith]), "{identifier}");
        inside += usize::from(flagsmith == "in");
    }
    // Deterministic (the hash is fixed): about 30% of 1,000, well within 3 standard deviations.
    assert!(
        (250..=350).contains(&inside),
        "{inside} of {splits} in the 30% split"
    );
    sidecar.stop().await;
}

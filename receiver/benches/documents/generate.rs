//! Generated environment documents in Flagsmith's local-evaluation format (the shape of
//! `shared/conformance/flagsmith-v2.265.0-live`'s documents), sized as issue 9's targets say.

use serde_json::{Value, json};

/// What a generated document holds.
#[derive(Clone, Copy)]
pub struct Shape {
    pub features: u64,
    /// Of the features, the first `multivariate` have two options (30% and 25%).
    pub multivariate: u64,
    /// Each with 3 to 5 conditions over the traits of [`traits`], and one segment override.
    pub segments: u64,
    /// Identities with overrides, each overriding `overrides_per_identity` features.
    pub identities: u64,
    pub overrides_per_identity: u64,
}

/// The client key of environment `env`.
pub fn client_key(env: u64) -> String {
    format!("BenchClientKey{env:04}")
}

/// The server key of environment `env`.
pub fn server_key(env: u64) -> String {
    format!("ser.BenchServerKey{env:04}")
}

/// A UUID-shaped string, unique per `(kind, n)`.
fn uuid(kind: u64, n: u64) -> String {
    format!("{kind:08x}-0000-4000-8000-{n:012x}")
}

fn feature_state(django_id: u64, feature: u64, shape: &Shape, value: Value) -> Value {
    let kind = if feature <= shape.multivariate {
        "MULTIVARIATE"
    } else {
        "STANDARD"
    };
    json!({
        "django_id": django_id, "enabled": !feature.is_multiple_of(3),
        "feature": {"id": feature, "name": format!("feature_{feature:04}"), "type": kind},
        "feature_segment": null, "feature_state_value": value,
        "featurestate_uuid": uuid(1, django_id), "multivariate_feature_state_values": [],
    })
}

/// The environment default of `feature`; `version` is the value of features 1 and 2, so that a
/// reader can tell which version of the document it holds (the freshness part changes feature 1
/// by web hook and watches feature 2, which only a document changes).
fn default_state(env: u64, feature: u64, shape: &Shape, version: u64) -> Value {
    let value = if feature <= 2 {
        json!(version)
    } else {
        json!(format!("value-{feature}"))
    };
    let mut state = feature_state(env * 10_000_000 + feature, feature, shape, value);
    if feature <= shape.multivariate {
        state["multivariate_feature_state_values"] = json!([
            {"id": feature * 2, "multivariate_feature_option": {"id": feature * 2, "key": null, "value": "option-a"},
             "mv_fs_value_uuid": uuid(2, feature * 2), "percentage_allocation": 30.0},
            {"id": feature * 2 + 1, "multivariate_feature_option": {"id": feature * 2 + 1, "key": null, "value": "option-b"},
             "mv_fs_value_uuid": uuid(2, feature * 2 + 1), "percentage_allocation": 25.0},
        ]);
    }
    state
}

/// Condition `n` of a segment: the operators and trait types of Flagsmith's own segments.
fn condition(n: u64) -> Value {
    let (operator, property, value) = match n % 5 {
        0 => ("EQUAL", "plan", "pro".to_owned()),
        1 => ("GREATER_THAN", "sessions", (n % 20).to_string()),
        2 => ("CONTAINS", "email", "@corp.test".to_owned()),
        3 => ("IN", "country", "DE,FR,IT,ES".to_owned()),
        _ => ("LESS_THAN_INCLUSIVE", "age", (20 + n % 30).to_string()),
    };
    json!({"operator": operator, "property_": property, "value": value})
}

fn segment(env: u64, id: u64, shape: &Shape) -> Value {
    let conditions: Vec<Value> = (0..3 + id % 3).map(|n| condition(id + n)).collect();
    let (any, all) = conditions.split_at(conditions.len() / 2);
    let feature = id % shape.features + 1;
    let mut state = feature_state(
        env * 10_000_000 + 1_000_000 + id,
        feature,
        shape,
        json!(format!("segment-{id}")),
    );
    state["feature_segment"] = json!({"priority": id});
    json!({
        "id": id, "name": format!("segment_{id}"), "feature_states": [state],
        "rules": [{"type": "ALL", "conditions": [], "rules": [
            {"type": "ANY", "conditions": any, "rules": []},
            {"type": "ALL", "conditions": all, "rules": []},
        ]}],
    })
}

fn identity_override(env: u64, identity: u64, shape: &Shape) -> Value {
    let key = client_key(env);
    let identifier = format!("user-{identity}");
    let features: Vec<Value> = (0..shape.overrides_per_identity)
        .map(|n| {
            let feature = (identity + n) % shape.features + 1;
            let django_id = env * 10_000_000 + 2_000_000 + identity * 100 + n;
            feature_state(django_id, feature, shape, json!(identity as i64))
        })
        .collect();
    json!({
        "composite_key": format!("{key}_{identifier}"), "created_date": "2026-12-01T00:00:00.000000+00:00",
        "dashboard_alias": null, "django_id": identity, "environment_api_key": key,
        "identifier": identifier, "identity_features": features, "identity_traits": [],
        "identity_uuid": uuid(3, identity),
    })
}

/// Environment `env`'s document at `version` (an increasing number, also its `updated_at`).
pub fn document(env: u64, shape: &Shape, version: u64) -> Vec<u8> {
    let updated_at = time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(version as i64);
    let document = json!({
        "allow_client_traits": true, "api_key": client_key(env),
        "feature_states": (1..=shape.features).map(|f| default_state(env, f, shape, version)).collect::<Vec<_>>(),
        "hide_disabled_flags": null, "hide_sensitive_data": false, "id": env,
        "identity_overrides": (1..=shape.identities).map(|i| identity_override(env, i, shape)).collect::<Vec<_>>(),
        "name": format!("bench-{env}"),
        "project": {"enable_realtime_updates": false, "hide_disabled_flags": false, "id": 1, "name": "bench",
                    "organisation": {"feature_analytics": false, "id": 1, "name": "bench",
                                     "persist_trait_data": true, "stop_serving_flags": false},
                    "segments": (1..=shape.segments).map(|s| segment(env, s, shape)).collect::<Vec<_>>(),
                    "server_key_only_feature_ids": []},
        "updated_at": updated_at.format(&time::format_description::well_known::Rfc3339).unwrap(),
        "use_identity_composite_key_for_hashing": true, "use_identity_overrides_in_local_eval": true,
    });
    serde_json::to_vec(&document).unwrap()
}

/// The 4 traits each identity request sends: a string, an integer, a string matched by
/// CONTAINS, and a string matched by IN.
pub fn traits() -> Value {
    json!([
        {"trait_key": "plan", "trait_value": "pro"},
        {"trait_key": "sessions", "trait_value": 12},
        {"trait_key": "email", "trait_value": "someone@corp.test"},
        {"trait_key": "country", "trait_value": "FR"},
    ])
}

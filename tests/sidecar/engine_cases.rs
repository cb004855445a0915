//! Issue 10: a sample of Flagsmith's engine suite (`conformance/flagsmith-engine-test-data`)
//! expressed as flagpost changes through the change API, end to end: the real flagpost binary
//! -> signed web hooks and its environment document -> the real receiver binary ->
//! `POST /api/v1/identities/`, which must answer each case's expected flags.
//!
//! Each case gets a project and an environment of its own. Its features, multivariate options
//! and weights, segments (rules as the case writes them) and segment overrides are created
//! through the API. A case with no features says which segments match: a `probe` feature,
//! overridden by each segment with the segment's name, turns that into a flag.
//!
//! Flagsmith hashes splits and multivariate buckets by ids flagpost numbers differently (the
//! segment's id, the feature state's id) and by the identity's key, which flagpost's document
//! makes `<client key>_<identifier>` where the case has Flagsmith's. So where a case hashes, the
//! identity asked about is one whose buckets under flagpost's ids are the case identity's under
//! Flagsmith's, found with the engine's own hash function; an identity is only renamed where
//! the case's rules cannot tell the new name from the old one.

use std::path::PathBuf;

use flagsmith_flag_engine::utils::hashing::get_hashed_percentage_for_object_ids;
use hyper::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::common::{
    Process, TOKEN, call, free_addr, send, serve_receiver, test_config, wait_until,
};
use crate::support::config::ReceiverConfig;

const SECRET: &str = "whsec_ZW5naW5lIGNhc2VzIGVuZCB0byBlbmQ=";

/// Chosen to cover every operator the suite uses (semver included), nested ALL/ANY/NONE rules,
/// percentage splits, multivariate weights and priorities, segment overrides and their
/// priorities, and conditions on the context (`$.identity.*`, `$.environment.name`). flagpost's
/// environment names are unique, so at most one case per environment name its rules test.
const CASES: &[&str] = &[
    "test_any_rule_with_nested_all_groups__one_group_matches__should_match.jsonc",
    "test_none_rule_with_nested_all_groups__match__should_exclude.jsonc",
    "test_equal_string__should_match.jsonc",
    "test_equal_integer__should_match.jsonc",
    "test_equal_boolean_true__should_match.jsonc",
    "test_equal_float__should_match.jsonc",
    "test_equal_string_to_string__should_not_match.jsonc",
    "test_not_equal_string__should_match.jsonc",
    "test_not_equal_string__should_not_match.jsonc",
    "test_greater_than_integer__should_match.jsonc",
    "test_greater_than_float__equal__should_not_match.jsonc",
    "test_greater_than_inclusive_integer__equal__should_match.jsonc",
    "test_less_than_float__should_match.jsonc",
    "test_less_than_inclusive_integer__should_not_match.jsonc",
    "test_less_than_inclusive_integer_equal__should_match.jsonc",
    "test_in_condition_numeric_comma_separated__should_match.jsonc",
    "test_in_condition_partial_comma_separated__should_not_match.jsonc",
    "test_in_condition_json_array_format__should_match.jsonc",
    "test_regex_any_digit__should_match.jsonc",
    "test_regex_case_lowercase__should_not_match.jsonc",
    "test_modulo_condition_satisfied__should_match.jsonc",
    "test_modulo_condition_not_satisfied__should_not_match.jsonc",
    "test_semver_greater_than_condition_satisfied__should_match.jsonc",
    "test_semver_less_than_older_version__should_not_match.jsonc",
    "test_semver_equal_condition_satisfied__should_match.jsonc",
    "test_percentage_split__explicit_identity_key__should_match.jsonc",
    "test_percentage_split__no_identity_key__should_match.jsonc",
    "test_context_value_jsonpath_non_existent__should_not_match.jsonc",
    "test_context_value_jsonpath_pointing_to_object__is_not_set__should_match.jsonc",
    "test_jsonpath_like_trait__should_match.jsonc",
    "test_multivariate__option_a_stronger_priority__expected_flags.jsonc",
    "test_multivariate__explicit_identity_key__expected_allocation.jsonc",
    "test_feature_override_with_metadata__match__metadata_in_result.jsonc",
    "test_identity_in_two_segments__segment_two__segment_three.json",
    "test_in_condition_json_literal__should_match.jsonc",
    "test_regex_condition_lowercase__should_match.jsonc",
    "test_semver_not_equal_different_version__should_match.jsonc",
    "test_greater_than_inclusive_float__should_match.jsonc",
];

fn read_case(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/conformance/flagsmith-engine-test-data/test_cases")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let json: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect();
    let mut case: Value =
        serde_json::from_str(&json.join("\n")).unwrap_or_else(|e| panic!("{name}: {e}"));
    // A case may leave out what it has none of.
    for part in ["features", "segments"] {
        if !case["context"][part].is_object() {
            case["context"][part] = json!({});
        }
    }
    case
}

/// Whether the case's rules name the environment: its environment then has the case's name,
/// where flagpost can name one so. ("Test Environment" it cannot, a space names no flag file:
/// the one case here naming it, `identity_in_two_segments`, also requires there an identifier
/// list its identity is not in, so the name decides nothing.)
fn names_environment(case: &Value) -> bool {
    let name = case["context"]["environment"]["name"]
        .as_str()
        .unwrap_or_default();
    let valid = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    valid
        && case["context"]["segments"]
            .to_string()
            .contains("$.environment.name")
}

/// The receiver's and flagpost's keys of case `i`'s environment (id `100 + i`).
fn client_key(i: usize) -> String {
    format!("client-{i}")
}

fn server_key(i: usize) -> String {
    format!("ser.engine-case-{i}")
}

/// flagpost's configuration for every case: a project and an environment each, its web hooks
/// delivered in order to the receiver.
fn flagpost_extra(cases: &[Value], receiver: &str) -> String {
    let mut text = String::new();
    for (i, case) in cases.iter().enumerate() {
        let id = 100 + i;
        let name = if names_environment(case) {
            case["context"]["environment"]["name"]
                .as_str()
                .unwrap()
                .to_owned()
        } else {
            format!("case-{i}")
        };
        text.push_str(&format!(
            "[[projects]]\nid = {id}\nname = \"project-{i}\"\n\
             [[environments]]\nid = {id}\nname = {name:?}\napi_key = {:?}\nproject = {id}\n\
             server_keys = [{{ value = {:?} }}]\n\
             [[environments.webhooks]]\nname = \"receiver-{i}\"\nurl = \"{receiver}\"\n\
             secrets = [{{ value = {SECRET:?} }}]\nordered = true\n",
            client_key(i),
            server_key(i)
        ));
    }
    text
}

/// A change through flagpost's API, which must succeed; answers its body.
async fn change(flagpost: &Process, method: Method, path: &str, body: Value) -> Value {
    let (status, answer) = call(method.clone(), &flagpost.url(path), Some(body.clone())).await;
    assert!(
        status.is_success(),
        "{method} {path} {body}: {status} {answer}"
    );
    answer
}

/// The greatest sequence among `answer`'s events that make a receiver read its document again
/// (segment events, multivariate allocations), or 0.
fn document_events(answer: &Value) -> u64 {
    let events = answer["events"].as_array().into_iter().flatten();
    events
        .filter(|e| {
            e["event_type"] == "SEGMENT_UPDATED"
                || e["data"]["new_state"]["multivariate_feature_state_values"]
                    .as_array()
                    .is_some_and(|v| !v.is_empty())
        })
        .filter_map(|e| e["sequence"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Creates case `i`'s features, segments and overrides in flagpost; answers the sequence of the
/// last event that makes the receiver read the environment's document again.
async fn express(flagpost: &Process, i: usize, case: &Value) -> u64 {
    let mut reread = 0;
    let (project, env) = (100 + i, 100 + i);
    let context = &case["context"];
    let mut features: Vec<(String, Value)> = context["features"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, feature)| (name.clone(), feature.clone()))
        .collect();
    let probe = features.is_empty();
    if probe {
        features.push((
            "probe".into(),
            json!({"enabled": false, "value": "default"}),
        ));
    }
    for (name, feature) in &features {
        let created = change(
            flagpost,
            Method::POST,
            "/api/v1/features",
            json!({"project": project, "name": name}),
        )
        .await;
        let id = created["feature"]["id"].as_u64().unwrap();
        let mut variants = feature["variants"].as_array().cloned().unwrap_or_default();
        variants.sort_by(|a, b| {
            a["priority"]
                .as_f64()
                .partial_cmp(&b["priority"].as_f64())
                .unwrap()
        });
        let mut allocations = Vec::new();
        for variant in &variants {
            let path = format!("/api/v1/features/{id}/multivariate-options");
            let body = json!({"value": variant["value"], "default_percentage_allocation": 0});
            let option = change(flagpost, Method::POST, &path, body).await;
            allocations.push(json!({
                "multivariate_feature_option": option["multivariate_option"]["id"],
                "percentage_allocation": variant["weight"],
            }));
        }
        let mut state = json!({"enabled": feature["enabled"], "value": feature["value"]});
        if !allocations.is_empty() {
            state["multivariate_feature_state_values"] = json!(allocations);
        }
        let path = format!("/api/v1/environments/{env}/features/{id}/state");
        let answer = change(flagpost, Method::PUT, &path, state).await;
        if !allocations.is_empty() {
            reread = reread.max(
                answer["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["sequence"].as_u64())
                    .max()
                    .unwrap_or(0),
            );
        }
    }
    let mut segments: Vec<(&String, &Value)> =
        context["segments"].as_object().unwrap().iter().collect();
    segments.sort_by_key(|(key, _)| key.parse::<u64>().unwrap_or(u64::MAX));
    for (order, (_, segment)) in segments.into_iter().enumerate() {
        let body = json!({"project": project, "name": segment["name"], "rules": segment["rules"]});
        let created = change(flagpost, Method::POST, "/api/v1/segments", body).await;
        reread = reread.max(document_events(&created));
        let id = created["segment"]["id"].as_u64().unwrap();
        let mut overrides = segment["overrides"].as_array().cloned().unwrap_or_default();
        if probe {
            overrides.push(json!({"name": "probe", "enabled": true, "value": segment["name"]}));
        }
        for o in overrides {
            // The suite leaves some priorities out, which its engine ranks after every given one.
            let priority = o["priority"].as_i64().unwrap_or(1000 + order as i64);
            let path = format!(
                "/api/v1/environments/{env}/features/{}/segments/{id}",
                o["name"].as_str().unwrap()
            );
            let body = json!({"enabled": o["enabled"], "value": o["value"], "priority": priority});
            change(flagpost, Method::PUT, &path, body).await;
        }
    }
    reread
}

/// The flags a case expects, by name: `(enabled, value)`. For a case without features, the
/// probe's: the first segment (in override priority order) the identity matches, or the default.
fn expected_flags(case: &Value) -> Map<String, Value> {
    let result = &case["result"];
    if !case["context"]["features"].as_object().unwrap().is_empty() {
        return result["flags"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, flag)| (name.clone(), json!([flag["enabled"], flag["value"]])))
            .collect();
    }
    let matched: Vec<&str> = result["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    let mut segments: Vec<(&String, &Value)> = case["context"]["segments"]
        .as_object()
        .unwrap()
        .iter()
        .collect();
    segments.sort_by_key(|(key, _)| key.parse::<u64>().unwrap_or(u64::MAX));
    let probe = segments
        .iter()
        .map(|(_, s)| s["name"].as_str().unwrap())
        .find(|name| matched.contains(name))
        .map_or(json!([false, "default"]), |name| json!([true, name]));
    [("probe".to_owned(), probe)].into_iter().collect()
}

fn percentage(ids: [&str; 2]) -> f64 {
    f64::from(get_hashed_percentage_for_object_ids(ids.to_vec(), 1))
}

/// Where an identity key falls for every hash the case's answer depends on: each percentage
/// split on the identity key (in or out) and each multivariate feature (which variant).
fn buckets(case: &Value, document: Option<&Value>, identity_key: &str) -> Vec<usize> {
    let context = &case["context"];
    let mut out = Vec::new();
    let mut segments: Vec<(&String, &Value)> =
        context["segments"].as_object().unwrap().iter().collect();
    segments.sort_by_key(|(key, _)| key.parse::<u64>().unwrap_or(u64::MAX));
    for (key, segment) in segments {
        let id = match document {
            None => key.clone(),
            Some(doc) => doc["project"]["segments"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == segment["name"])
                .map(|s| s["id"].to_string())
                .unwrap(),
        };
        for threshold in split_thresholds(&segment["rules"]) {
            out.push(usize::from(percentage([&id, identity_key]) <= threshold));
        }
    }
    for (name, feature) in context["features"].as_object().unwrap() {
        let Some(variants) = feature["variants"].as_array() else {
            continue;
        };
        let key = match document {
            None => feature["key"].as_str().unwrap().to_owned(),
            Some(doc) => doc["feature_states"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["feature"]["name"] == name.as_str())
                .map(|s| s["django_id"].to_string())
                .unwrap(),
        };
        let mut weights: Vec<(f64, f64)> = variants
            .iter()
            .map(|v| {
                (
                    v["priority"].as_f64().unwrap_or(f64::MAX),
                    v["weight"].as_f64().unwrap(),
                )
            })
            .collect();
        weights.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        let p = percentage([&key, identity_key]);
        let mut cumulative = 0.0;
        let bucket = weights.iter().position(|(_, weight)| {
            cumulative += weight;
            p <= cumulative
        });
        out.push(bucket.unwrap_or(weights.len()));
    }
    out
}

/// The thresholds of the percentage splits on the identity key anywhere in `rules`.
fn split_thresholds(rules: &Value) -> Vec<f64> {
    let mut out = Vec::new();
    for rule in rules.as_array().into_iter().flatten() {
        for condition in rule["conditions"].as_array().into_iter().flatten() {
            let on_key = matches!(
                condition["property"].as_str(),
                None | Some("" | "$.identity.key")
            );
            if condition["operator"] == "PERCENTAGE_SPLIT" && on_key {
                out.push(condition["value"].as_str().unwrap().parse().unwrap());
            }
        }
        out.extend(split_thresholds(&rule["rules"]));
    }
    out
}

/// The identifier to ask about: the case's, or where flagpost's hashing puts it elsewhere, one
/// that lands where the case's identity lands (only where the rules cannot tell them apart).
fn identifier_for(case: &Value, document: &Value, client_key: &str) -> String {
    let identity = &case["context"]["identity"];
    let identifier = identity["identifier"].as_str().unwrap().to_owned();
    let case_key = identity["key"].as_str().map_or_else(
        || {
            format!(
                "{}_{identifier}",
                case["context"]["environment"]["key"].as_str().unwrap()
            )
        },
        str::to_owned,
    );
    let wanted = buckets(case, None, &case_key);
    let lands = |candidate: &str| {
        buckets(case, Some(document), &format!("{client_key}_{candidate}")) == wanted
    };
    if lands(&identifier) {
        return identifier;
    }
    let rules = case["context"]["segments"].to_string();
    assert!(
        !rules.contains(&identifier)
            && !rules.contains("$.identity.identifier\",\"operator\":\"REGEX"),
        "the case's rules name its identity, which flagpost's hashing puts elsewhere"
    );
    (0..100_000)
        .map(|n| format!("{identifier}-{n}"))
        .find(|candidate| lands(candidate))
        .expect("an identity that lands in the case's buckets")
}

/// What the receiver answers for the case's identity (`POST /api/v1/identities/`), or without
/// one for the environment (`GET /api/v1/flags/`): `(enabled, value)` by feature name.
async fn receiver_flags(
    receiver: &str,
    key: &str,
    identifier: Option<&str>,
    case: &Value,
) -> Map<String, Value> {
    let Some(identifier) = identifier else {
        let url = format!("http://{receiver}/api/v1/flags/");
        let (status, answer) = send(Method::GET, &url, None, None, &[("x-environment-key", key)])
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{answer}");
        return by_name(&answer);
    };
    let traits: Vec<Value> = case["context"]["identity"]["traits"]
        .as_object()
        .map(|traits| {
            traits
                .iter()
                .map(|(k, v)| json!({"trait_key": k, "trait_value": v}))
                .collect()
        })
        .unwrap_or_default();
    let body = json!({"identifier": identifier, "traits": traits});
    let url = format!("http://{receiver}/api/v1/identities/");
    let headers = [
        ("x-environment-key", key),
        ("content-type", "application/json"),
    ];
    let (status, answer) = send(
        Method::POST,
        &url,
        None,
        Some(body.to_string().into_bytes()),
        &headers,
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    by_name(&answer["flags"])
}

/// Flags as Flagsmith's SDK routes answer them: `(enabled, value)` by feature name.
fn by_name(flags: &Value) -> Map<String, Value> {
    flags
        .as_array()
        .unwrap()
        .iter()
        .map(|flag| {
            let name = flag["feature"]["name"].as_str().unwrap().to_owned();
            (name, json!([flag["enabled"], flag["feature_state_value"]]))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_of_flagsmiths_engine_suite_through_flagpost_gives_each_cases_flags() {
    assert!(CASES.len() >= 30);
    let cases: Vec<Value> = CASES.iter().map(|name| read_case(name)).collect();
    let mut named: Vec<&str> = cases
        .iter()
        .filter(|case| names_environment(case))
        .map(|case| case["context"]["environment"]["name"].as_str().unwrap())
        .collect();
    named.sort_unstable();
    named.dedup();
    assert_eq!(
        named.len(),
        cases.iter().filter(|case| names_environment(case)).count(),
        "one case per environment name"
    );
    let dir = tempfile::tempdir().unwrap();
    let (sidecar, receiver) = (free_addr(), free_addr());
    let webhook = format!("http://{receiver}/webhook");
    let sidecar_config = test_config(dir.path(), sidecar)
        .extra(&flagpost_extra(&cases, &webhook))
        .write();
    let mut receiver_config = ReceiverConfig::new(dir.path())
        .listen(receiver)
        .without_snapshot()
        .secret(SECRET)
        .bootstrap(&format!("http://{sidecar}"), TOKEN, 1);
    for i in 0..cases.len() {
        receiver_config = receiver_config
            .environment(100 + i as u64, &[&client_key(i)])
            .flagpost_server_key(100 + i as u64, &server_key(i));
    }
    let receiver_config = receiver_config.write();
    let text = std::fs::read_to_string(&sidecar_config).unwrap();
    if let Err(error) = flagpost::config::Config::parse(&text) {
        panic!("{error}");
    }
    let flagpost = Process::start(&sidecar_config, sidecar);
    flagpost.wait_ready().await;
    let _receiver = serve_receiver(&receiver_config, receiver).await;

    let mut reread = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        reread.push(express(&flagpost, i, case).await);
    }
    // Every web hook delivered (in order, per environment)...
    let pending = flagpost.url("/api/v1/admin/deliveries/pending");
    wait_until("every event is delivered to the receiver", || async {
        let (_, answer) = call(Method::GET, &pending, None).await;
        answer["endpoints"]
            .as_array()
            .is_some_and(|e| e.iter().all(|e| e["pending"] == 0))
    })
    .await;

    let mut failures = Vec::new();
    for (i, (name, case)) in CASES.iter().zip(&cases).enumerate() {
        let url = flagpost.url("/api/v1/environment-document/");
        let (status, document) = send(
            Method::GET,
            &url,
            None,
            None,
            &[("x-environment-key", &server_key(i))],
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::OK, "{document}");
        let identifier = (!case["context"]["identity"].is_null())
            .then(|| identifier_for(case, &document, &client_key(i)));
        // ...and the document its segment and multivariate events asked for, read.
        let env_flags = format!("http://{receiver}/v1/environments/{}/flags", 100 + i);
        wait_until("the receiver reads the document again", || async {
            let (_, flags) = call(Method::GET, &env_flags, None).await;
            flags["environment"]["document_sequence"]
                .as_u64()
                .unwrap_or(0)
                >= reread[i]
        })
        .await;
        let expected = expected_flags(case);
        let answered = receiver_flags(
            &receiver.to_string(),
            &client_key(i),
            identifier.as_deref(),
            case,
        )
        .await;
        if answered != expected {
            failures.push(format!(
                "{name}: expected {expected:?}, answered {answered:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

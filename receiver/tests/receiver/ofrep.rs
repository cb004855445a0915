//! Issue 11, item 3: OpenFeature's OFREP providers, installed pinned from their registries
//! (`.ci/test`), read the receiver, which holds a real Flagsmith's recorded documents (step 24 of
//! `shared/conformance/flagsmith-v2.265.0-live`: segment overrides, two multivariate splits,
//! identity overrides, disabled flags in `qa`). For the environment itself and for every recorded
//! identity with the traits it sent, every flag (and a missing one) must come out as Flagsmith
//! answered it, mapped as the README says: the value (or the caller's default for a disabled
//! value flag), and the reason (`STATIC`, `TARGETING_MATCH`, `SPLIT`, `DISABLED`).

use std::process::Command;

use serde_json::{Value, json};

use crate::common::request;
use crate::live_replay::{ENVIRONMENTS, Replay, STEPS, step, traits_sent, url};
use crate::test_deps;

/// The recorded step the providers are asked at.
const STEP: usize = 24;
const MISSING: &str = "no_such_flag";
const NODE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/ofrep.js");
const PYTHON_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/ofrep.py");

/// One evaluation a provider is asked for, and what it must answer.
#[derive(Debug)]
struct Case {
    context: Value,
    flag: String,
    default: Value,
    value: Value,
    /// The OpenFeature reason, or `ERROR` with `error`.
    reason: &'static str,
    error: Option<&'static str>,
}

/// A default of the flag's type that differs from what Flagsmith holds, so that an answer
/// equal to the default shows the default was used.
fn default_for(held: &Value, enabled: bool) -> Value {
    match held {
        Value::Null => json!(!enabled),
        Value::Bool(b) => json!(!b),
        Value::Number(n) if n.is_f64() => json!(-1.5),
        Value::Number(_) => json!(-1),
        Value::String(_) => json!("code-default"),
        other => panic!("Flagsmith holds no such value: {other}"),
    }
}

/// What OFREP must answer for `flag` as Flagsmith answered it; `environment` is the
/// environment's own flags (a multivariate flag whose value differs from the environment's was
/// split).
fn case(context: &Value, flag: &Value, environment: &Value) -> Case {
    let name = flag["feature"]["name"].as_str().unwrap();
    let enabled = flag["enabled"].as_bool().unwrap();
    let held = &flag["feature_state_value"];
    let default = default_for(held, enabled);
    let value = match (held, enabled) {
        (Value::Null, enabled) => json!(enabled),
        (held, true) => held.clone(),
        (_, false) => default.clone(),
    };
    let environment_value = environment
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"]["name"] == name)
        .map(|f| &f["feature_state_value"]);
    let reason = if !enabled {
        "DISABLED"
    } else if !flag["identity"].is_null() || !flag["feature_segment"].is_null() {
        "TARGETING_MATCH"
    } else if flag["feature"]["type"] == "MULTIVARIATE" && Some(held) != environment_value {
        "SPLIT"
    } else {
        "STATIC"
    };
    Case {
        context: context.clone(),
        flag: name.to_owned(),
        default,
        value,
        reason,
        error: None,
    }
}

fn missing(context: &Value) -> Case {
    Case {
        context: context.clone(),
        flag: MISSING.to_owned(),
        default: json!("code-default"),
        value: json!("code-default"),
        reason: "ERROR",
        error: Some("FLAG_NOT_FOUND"),
    }
}

/// Every case of `env` at the step: the environment (empty context), then each identity.
fn cases(step: &Value, env: &str) -> Vec<Case> {
    let environment = &step["flags"][env];
    let mut cases: Vec<Case> = environment
        .as_array()
        .unwrap()
        .iter()
        .map(|flag| case(&json!({}), flag, environment))
        .collect();
    cases.push(missing(&json!({})));
    for (identifier, recorded) in step["identities"][env].as_object().unwrap() {
        let mut context = traits_sent(recorded);
        context.insert("targetingKey".into(), json!(identifier));
        let context = Value::Object(context);
        for flag in recorded["answer"]["flags"].as_array().unwrap() {
            cases.push(case(&context, flag, environment));
        }
        cases.push(missing(&context));
    }
    cases
}

/// Runs a provider script on `cases`; answers its rows.
fn run(mut command: Command, args: &[&str], cases: &[Case]) -> Vec<Value> {
    let input: Vec<Value> = cases
        .iter()
        .map(|c| json!({"context": c.context, "flag": c.flag, "default": c.default}))
        .collect();
    command.args(args);
    match test_deps::run_json(command, &Value::Array(input)) {
        Value::Array(rows) => rows,
        other => panic!("{args:?} printed {other}, not a row per case"),
    }
}

/// The differences between what a provider answered and what it must.
fn differences(provider: &str, env: &str, cases: &[Case], rows: &[Value]) -> Vec<String> {
    assert_eq!(rows.len(), cases.len(), "{provider}: one row per case");
    let mut found = Vec::new();
    for (case, row) in cases.iter().zip(rows) {
        let want = json!({"value": case.value, "reason": case.reason, "errorCode": case.error});
        let got =
            json!({"value": row["value"], "reason": row["reason"], "errorCode": row["errorCode"]});
        // A success names its variant (the Python provider requires one).
        let variant_ok = case.error.is_some() || row["variant"].is_string();
        if want != got || !variant_ok {
            found.push(format!(
                "{provider} {env} {} for {}: want {want}, got {row}",
                case.flag, case.context["targetingKey"]
            ));
        }
    }
    found
}

/// Asks `provider` every case of both environments; `adjust` states what this provider
/// version does differently.
async fn providers_answer_as_flagsmith(provider: &'static str, adjust: fn(&mut Case)) {
    let command = || match provider {
        "python" => {
            test_deps::python_importing(&["openfeature", "openfeature.contrib.provider.ofrep"])
        }
        "node-web" => {
            test_deps::node_requiring(&["@openfeature/web-sdk", "@openfeature/ofrep-web-provider"])
        }
        _ => test_deps::node_requiring(&["@openfeature/server-sdk", "@openfeature/ofrep-provider"]),
    };
    let replay = Replay::start().await;
    let recorded = step(STEP);
    let served_from = replay.serve(&recorded, STEP);
    replay
        .wait_for_documents(&recorded, STEP, &Default::default(), served_from)
        .await;
    let base = url(replay.port, "");
    let mut found = Vec::new();
    let mut reasons = Vec::new();
    for (env, _, client_key, _) in ENVIRONMENTS {
        let mut cases = cases(&recorded, env);
        cases.iter_mut().for_each(adjust);
        reasons.extend(cases.iter().map(|c| c.reason));
        let (command, base, key) = (command(), base.clone(), client_key.to_owned());
        let (rows, cases) = tokio::task::spawn_blocking(move || {
            let rows = match provider {
                "python" => run(command, &[PYTHON_SCRIPT, &base, &key], &cases),
                "node-web" => run(command, &[NODE_SCRIPT, "web", &base, &key], &cases),
                _ => run(command, &[NODE_SCRIPT, "server", &base, &key], &cases),
            };
            (rows, cases)
        })
        .await
        .unwrap();
        found.extend(differences(provider, env, &cases, &rows));
    }
    // The step holds every kind of answer, so none of them is vacuous.
    for reason in ["STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "ERROR"] {
        assert!(reasons.contains(&reason), "no {reason} case at step {STEP}");
    }
    assert!(
        found.is_empty(),
        "{} differences:\n{}",
        found.len(),
        found.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_server_provider_evaluates_as_flagsmith() {
    // `@openfeature/ofrep-provider` 0.1.3 predates OFREP's code defaults (ADR-0006): for a
    // disabled value flag, which the receiver answers without a value, it reports an error and
    // gives the caller's default, the value the others give too.
    providers_answer_as_flagsmith("node-server", |case| {
        if case.reason == "DISABLED" && case.value == case.default {
            case.reason = "ERROR";
            case.error = Some("GENERAL");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_web_provider_evaluates_as_flagsmith() {
    providers_answer_as_flagsmith("node-web", |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_provider_evaluates_as_flagsmith() {
    providers_answer_as_flagsmith("python", |_| {}).await;
}

/// Plain HTTP against the routes: `ETag` and 304, the protocol's error codes and statuses, and
/// the key in each header the providers use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_answers_carry_an_etag_and_errors_carry_the_protocols_codes() {
    let replay = Replay::start().await;
    let recorded = step(STEP);
    let served_from = replay.serve(&recorded, STEP);
    replay
        .wait_for_documents(&recorded, STEP, &Default::default(), served_from)
        .await;
    let (_, _, key, _) = ENVIRONMENTS[0];
    let bulk = url(replay.port, "/ofrep/v1/evaluate/flags");
    let body = json!({"context": {"targetingKey": "u-anna", "plan": "pro"}}).to_string();
    let bearer = format!("Bearer {key}");
    let json_type = ("content-type", "application/json");
    let (status, headers, answer) = crate::cors::send(
        "POST",
        &bulk,
        &[("authorization", &bearer), json_type],
        &body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["flags"].as_array().unwrap().len(), 8, "{answer}");
    let etag = headers
        .get("etag")
        .expect("an ETag")
        .to_str()
        .unwrap()
        .to_owned();
    let again = [
        ("x-api-key", key),
        json_type,
        ("if-none-match", etag.as_str()),
    ];
    let (status, headers, _) = crate::cors::send("POST", &bulk, &again, &body).await;
    assert_eq!(status, 304);
    assert_eq!(headers.get("etag").unwrap(), etag.as_str());
    // Another context is another answer.
    let other = json!({"context": {"targetingKey": "u-ben"}}).to_string();
    let (status, headers, _) = crate::cors::send("POST", &bulk, &again, &other).await;
    assert_eq!(status, 200);
    assert_ne!(headers.get("etag").unwrap(), etag.as_str());

    let one = url(replay.port, "/ofrep/v1/evaluate/flags/banner_text");
    let key_header = [("x-environment-key", key), json_type];
    let refusals = [
        (&one, &key_header[..], "{oops", 400, Some("PARSE_ERROR")),
        (
            &one,
            &key_header[..],
            r#"{"context": []}"#,
            400,
            Some("INVALID_CONTEXT"),
        ),
        (
            &one,
            &key_header[..],
            r#"{"context": {"plan": "pro"}}"#,
            400,
            Some("TARGETING_KEY_MISSING"),
        ),
        (
            &bulk,
            &key_header[..],
            r#"{"context": {"targetingKey": 7}}"#,
            400,
            Some("INVALID_CONTEXT"),
        ),
        (&one, &[json_type][..], "{}", 401, None),
        (
            &one,
            &[("x-api-key", "no-such-key"), json_type][..],
            "{}",
            401,
            None,
        ),
    ];
    for (route, headers, body, want_status, code) in refusals {
        let (status, _, answer) = crate::cors::send("POST", route, headers, body).await;
        assert_eq!(status, want_status, "{body}: {answer}");
        if let Some(code) = code {
            assert_eq!(answer["errorCode"], code, "{body}: {answer}");
            assert!(answer["errorDetails"].is_string(), "{answer}");
        }
        if route == &one && status == 400 {
            assert_eq!(answer["key"], "banner_text", "{answer}");
        }
    }
    let missing = url(replay.port, &format!("/ofrep/v1/evaluate/flags/{MISSING}"));
    let (status, _, answer) = crate::cors::send("POST", &missing, &key_header, "{}").await;
    assert_eq!(
        (status, &answer["errorCode"]),
        (404, &json!("FLAG_NOT_FOUND")),
        "{answer}"
    );
    assert_eq!(answer["key"], MISSING);
    // The environment's own flag, with what Flagsmith says decided it.
    let (status, _, answer) = crate::cors::send("POST", &one, &key_header, "{}").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"key": "banner_text", "value": "Hello live", "reason": "STATIC", "variant": "default",
               "metadata": {"enabled": true, "featureId": 107, "flagsmithReason": "STATIC"}})
    );
    let plain = request(
        "POST",
        &one,
        &[("x-api-key", key), ("content-type", "text/plain")],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(plain.0, 415, "{}", plain.1);
    let (_, metrics) = request("GET", &url(replay.port, "/metrics"), &[], Vec::new()).await;
    let metrics = metrics.as_str().unwrap();
    for counted in [
        r#"ofrep_evaluations_total{route="bulk",result="not_modified"} 1"#,
        r#"ofrep_evaluations_total{route="bulk",result="ok"} 2"#,
        r#"ofrep_evaluations_total{route="flag",result="flag_not_found"} 1"#,
        r#"ofrep_evaluations_total{route="flag",result="targeting_key_missing"} 1"#,
        r#"ofrep_evaluations_total{route="flag",result="unauthorized"} 2"#,
    ] {
        assert!(metrics.contains(counted), "{counted} not in\n{metrics}");
    }

    // A change to the environment moves its tag: the old one gets the new answer and its tag,
    // which gets 304 in turn.
    let later = step(STEPS - 1);
    let served_from = replay.serve(&later, STEPS - 1);
    replay
        .wait_for_documents(&later, STEPS - 1, &Default::default(), served_from)
        .await;
    let (status, headers, answer) = crate::cors::send("POST", &bulk, &again, &body).await;
    assert_eq!(status, 200, "the old tag after a change: {answer}");
    let changed = headers.get("etag").unwrap().to_str().unwrap().to_owned();
    assert_ne!(changed, etag);
    let with_new = [
        ("x-api-key", key),
        json_type,
        ("if-none-match", changed.as_str()),
    ];
    let (status, _, _) = crate::cors::send("POST", &bulk, &with_new, &body).await;
    assert_eq!(status, 304);
}

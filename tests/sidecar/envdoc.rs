//! Issue 10, item 4: `GET /api/v1/environment-document/` answers Flagsmith's environment
//! document to a server-side key, and Flagsmith's Python SDK evaluates flags locally from it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use flagpost::config::Config;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

pub(crate) const SERVER_KEY: &str = "ser.prod-server-key-1";
pub(crate) const CLIENT_KEY: &str = "prod-client-key";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/flagsmith_local_eval.py");

/// A second environment, `Production` (id 2), readable with [`SERVER_KEY`].
pub(crate) fn production() -> String {
    format!(
        "[[environments]]\nid = 2\nname = \"Production\"\napi_key = \"{CLIENT_KEY}\"\nproject = 1\n\
         server_keys = [{{ value = \"{SERVER_KEY}\" }}]\n"
    )
}

async fn document(sidecar: &Sidecar, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let url = sidecar.url("/api/v1/environment-document/");
    send(Method::GET, &url, None, None, headers).await.unwrap()
}

/// Creates `banner` and `limit`, and in Production: `limit` off at 7, an identity override of
/// `banner` for `u-1`, and a segment override of `banner` for segment 5.
async fn seed(sidecar: &Sidecar) {
    for body in [
        json!({"project": 1, "name": "banner", "default_enabled": true, "initial_value": "hello"}),
        json!({"project": 1, "name": "limit", "default_enabled": true, "initial_value": 3}),
    ] {
        let (status, answer) =
            call(Method::POST, &sidecar.url("/api/v1/features"), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    let base = "/api/v1/environments/Production/features";
    for (path, body) in [
        ("limit/state", json!({"enabled": false, "value": 7})),
        (
            "banner/identities/u-1",
            json!({"enabled": true, "value": "hi u-1"}),
        ),
        (
            "banner/segments/5",
            json!({"enabled": true, "value": "beta", "segment_name": "beta", "priority": 1}),
        ),
    ] {
        let url = sidecar.url(&format!("{base}/{path}"));
        let (status, answer) = call(Method::PUT, &url, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

/// Flagsmith's own document, as recorded (step 49 of the live recording, environment `live`).
fn recorded_document() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/conformance/flagsmith-v2.265.0-live/steps/049.json");
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let step: Value = serde_json::from_slice(&text).unwrap();
    step["environment_documents"]["live"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_document_has_flagsmiths_fields_and_needs_a_server_key() {
    let sidecar = Sidecar::start_with(&production()).await;
    seed(&sidecar).await;

    for headers in [
        &[][..],
        &[("x-environment-key", CLIENT_KEY)][..],
        &[("x-environment-key", "ser.not-a-configured-key")][..],
    ] {
        let (status, body) = document(&sidecar, headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("X-Environment-Key")
        );
    }

    let (status, doc) = document(&sidecar, &[("x-environment-key", SERVER_KEY)]).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    // Field for field as Flagsmith writes them, at every level; flagpost adds `flagpost` only.
    let flagsmith = recorded_document();
    let mut expected = keys(&flagsmith);
    expected.insert("flagpost".into());
    assert_eq!(keys(&doc), expected);
    for (ours, theirs) in [
        (&doc["project"], &flagsmith["project"]),
        (
            &doc["project"]["organisation"],
            &flagsmith["project"]["organisation"],
        ),
        (&doc["feature_states"][0], &flagsmith["feature_states"][0]),
        (
            &doc["feature_states"][0]["feature"],
            &flagsmith["feature_states"][0]["feature"],
        ),
        (
            &doc["identity_overrides"][0],
            &flagsmith["identity_overrides"][0],
        ),
        (
            &doc["project"]["segments"][0],
            &flagsmith["project"]["segments"][0],
        ),
        (
            &doc["project"]["segments"][0]["feature_states"][0]["feature_segment"],
            &flagsmith["project"]["segments"][0]["feature_states"][0]["feature_segment"],
        ),
    ] {
        assert_eq!(keys(ours), keys(theirs), "{ours}");
    }

    assert_eq!(
        (doc["id"].as_u64(), &doc["name"]),
        (Some(2), &json!("Production"))
    );
    assert_eq!(doc["api_key"], CLIENT_KEY);
    let states: Vec<_> = doc["feature_states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["feature"]["name"].clone(),
                s["enabled"].clone(),
                s["feature_state_value"].clone(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (json!("banner"), json!(true), json!("hello")),
            (json!("limit"), json!(false), json!(7)),
        ]
    );
    let identity = &doc["identity_overrides"][0];
    assert_eq!(identity["composite_key"], format!("{CLIENT_KEY}_u-1"));
    assert_eq!(
        identity["identity_features"][0]["feature_state_value"],
        "hi u-1"
    );
    let segment = &doc["project"]["segments"][0];
    assert_eq!(
        (&segment["id"], &segment["name"]),
        (&json!(5), &json!("beta"))
    );
    assert_eq!(
        segment["feature_states"][0]["feature_segment"],
        json!({"priority": 1})
    );
    assert_eq!(segment["feature_states"][0]["feature_state_value"], "beta");
    let base = sidecar.url("");
    assert_eq!(doc["flagpost"]["last_sequence"], last_sequence(&base).await);

    // The old route stays.
    let (status, old) = call(
        Method::GET,
        &sidecar.url("/api/v1/environments/2/document"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{old}");
    assert_eq!(old["last_sequence"], doc["flagpost"]["last_sequence"]);
    sidecar.stop().await;
}

/// The prepared bytes stand while the environment is unchanged, whatever else commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_changes_only_when_its_environment_does() {
    let sidecar = Sidecar::start_with(&production()).await;
    seed(&sidecar).await;
    let url = sidecar.url("/api/v1/environment-document/");
    let get = |if_none_match: Option<String>| {
        let url = url.clone();
        async move { get_with_etag(&url, if_none_match.as_deref()).await }
    };
    let (status, etag, first) = get(None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(Some(etag.clone())).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    // A change in Development commits, but Production's document is what it was.
    let dev = sidecar.url("/api/v1/environments/Development/features/limit/state");
    let (status, body) = call(Method::PUT, &dev, Some(json!({"value": 99}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, again, same) = get(None).await;
    assert_eq!((status, &again), (StatusCode::OK, &etag));
    assert_eq!(same, first, "same bytes, same updated_at");

    // A change in Production is in the next answer, with a new ETag.
    let prod = sidecar.url("/api/v1/environments/Production/features/limit/state");
    let (status, body) = call(Method::PUT, &prod, Some(json!({"value": 8}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, changed, bytes) = get(Some(etag.clone())).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(changed, etag);
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["feature_states"][1]["feature_state_value"], 8);
    assert_eq!(
        doc["flagpost"]["last_sequence"],
        last_sequence(&sidecar.url("")).await
    );
    sidecar.stop().await;
}

/// Status, ETag and body bytes of the document read with [`SERVER_KEY`].
async fn get_with_etag(url: &str, if_none_match: Option<&str>) -> (StatusCode, String, Vec<u8>) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let mut request = hyper::Request::get(url).header("x-environment-key", SERVER_KEY);
    if let Some(tag) = if_none_match {
        request = request.header("if-none-match", tag);
    }
    let response = client
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, etag, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagsmiths_python_sdk_evaluates_locally_from_flagpost() {
    let sidecar = Sidecar::start_with(&production()).await;
    seed(&sidecar).await;
    let api_url = sidecar.url("/api/v1/");
    let identities = json!([
        {"identifier": "u-1", "traits": {"plan": "pro"}},
        {"identifier": "u-2", "traits": {}},
    ])
    .to_string();
    let output = tokio::task::spawn_blocking(move || {
        crate::support::test_deps::python()
            .args([SCRIPT, &api_url, SERVER_KEY, &identities])
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
    let defaults = json!({"banner": [true, "hello"], "limit": [false, 7]});
    assert_eq!(
        seen,
        json!({
            "environment": defaults,
            "identities": {
                // The identity override wins over the default.
                "u-1": {"banner": [true, "hi u-1"], "limit": [false, 7]},
                // flagpost's segments have no rules yet; Flagsmith's engine matches a segment
                // without rules to nobody, so segment 5's override reaches no one.
                "u-2": defaults,
            },
        })
    );
    sidecar.stop().await;
}

#[test]
fn server_keys_are_checked_at_load() {
    let base = "[[projects]]\nid = 1\nname = \"p\"\n";
    let env = |id: u64, keys: &str| {
        format!(
            "[[environments]]\nid = {id}\nname = \"e{id}\"\napi_key = \"k{id}\"\nproject = 1\nserver_keys = [{keys}]\n"
        )
    };
    let good = format!("{base}{}", env(1, "{ value = \"ser.0123456789\" }"));
    assert!(Config::parse(&good).is_ok());
    for (text, problem) in [
        (
            env(1, "{ value = \"0123456789abcdef\" }"),
            "starts with \"ser.\"",
        ),
        (env(1, "{ value = \"ser.x\" }"), "at least 12"),
        (
            env(1, "{ env = \"FLAGPOST_TEST_NO_SUCH_VARIABLE\" }"),
            "FLAGPOST_TEST_NO_SUCH_VARIABLE",
        ),
        (
            format!(
                "{}{}",
                env(1, "{ value = \"ser.0123456789\" }"),
                env(2, "{ value = \"ser.0123456789\" }")
            ),
            "configured twice",
        ),
    ] {
        let error = Config::parse(&format!("{base}{text}"))
            .unwrap_err()
            .to_string();
        assert!(error.contains(problem), "{error}");
        assert!(
            !error.contains("0123456789abcdef") && !error.contains("ser.0123"),
            "{error}"
        );
    }
}

/// Segments with nested rules, two segment overrides of one feature told apart by priority, and
/// a multivariate feature whose default state gives every identity an option while an identity
/// override wins over it: what Flagsmith's engine decides from flagpost's document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_applies_segment_rules_priorities_and_multivariate_options() {
    let sidecar = Sidecar::start_with(&production()).await;
    seed(&sidecar).await;
    let condition = |property: &str, operator: &str, value: &str| json!({"property": property, "operator": operator, "value": value});
    let segments = [
        (
            "pro",
            json!([{"type": "ALL", "rules": [
                {"type": "ANY", "conditions": [condition("plan", "EQUAL", "pro"), condition("plan", "EQUAL", "enterprise")]},
                {"type": "ALL", "conditions": [condition("sessions", "GREATER_THAN", "10")]},
            ]}]),
        ),
        (
            "staff",
            json!([{"type": "ANY", "rules": [
                {"type": "ANY", "conditions": [condition("email", "CONTAINS", "@corp.test")]},
            ]}]),
        ),
    ];
    let mut ids = Vec::new();
    for (name, rules) in segments {
        let body = json!({"project": 1, "name": name, "rules": rules});
        let (status, answer) =
            call(Method::POST, &sidecar.url("/api/v1/segments"), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        ids.push(answer["segment"]["id"].as_u64().unwrap());
    }
    let body =
        json!({"project": 1, "name": "layout", "initial_value": "list", "default_enabled": true});
    let (status, answer) = call(Method::POST, &sidecar.url("/api/v1/features"), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let layout = answer["feature"]["id"].as_u64().unwrap();
    let url = sidecar.url(&format!("/api/v1/features/{layout}/multivariate-options"));
    let body = json!({"value": "grid", "default_percentage_allocation": 100.0});
    let (status, answer) = call(Method::POST, &url, Some(body)).await;
    assert!(status.is_success(), "{answer}");
    let base = "/api/v1/environments/Production/features";
    for (path, body) in [
        (
            format!("banner/segments/{}", ids[0]),
            json!({"value": "pro banner", "priority": 1}),
        ),
        (
            format!("banner/segments/{}", ids[1]),
            json!({"value": "staff banner", "priority": 0}),
        ),
        ("layout/identities/u-1".to_owned(), json!({"value": "mine"})),
    ] {
        let (status, answer) = call(
            Method::PUT,
            &sidecar.url(&format!("{base}/{path}")),
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }

    let identities = json!([
        {"identifier": "u-1", "traits": {"plan": "pro", "sessions": 11}},
        {"identifier": "u-2", "traits": {"plan": "enterprise", "sessions": 3}},
        {"identifier": "u-3", "traits": {"plan": "pro", "sessions": 20, "email": "a@corp.test"}},
        {"identifier": "u-4", "traits": {"email": "b@corp.test"}},
    ]);
    let seen = run_sdk(&sidecar, identities).await;
    let banner = |value: &str| json!([true, value]);
    assert_eq!(seen["environment"]["layout"], json!([true, "list"]));
    let expected = [
        // pro: the ANY and the ALL rule hold; the identity override of layout wins over the split.
        ("u-1", banner("hi u-1"), json!([true, "mine"])),
        // Not pro (3 sessions): the default banner; layout's 100% option.
        ("u-2", banner("hello"), json!([true, "grid"])),
        // Both segments: staff has priority 0, which wins over pro's 1.
        ("u-3", banner("staff banner"), json!([true, "grid"])),
        ("u-4", banner("staff banner"), json!([true, "grid"])),
    ];
    for (identity, banner, layout) in expected {
        let flags = &seen["identities"][identity];
        assert_eq!(
            (&flags["banner"], &flags["layout"]),
            (&banner, &layout),
            "{identity}: {flags}"
        );
    }
    sidecar.stop().await;
}

pub(crate) async fn run_sdk(sidecar: &Sidecar, identities: Value) -> Value {
    let api_url = sidecar.url("/api/v1/");
    let identities = identities.to_string();
    let output = tokio::task::spawn_blocking(move || {
        crate::support::test_deps::python()
            .args([SCRIPT, &api_url, SERVER_KEY, &identities])
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
    serde_json::from_slice(&output.stdout).unwrap()
}

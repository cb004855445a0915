//! Issue 11, item 4: Flagsmith's JavaScript client (`flagsmith`, pinned, installed by
//! `.ci/test`) identifies an identity with traits and no identifier, `identify(null, traits,
//! true)`, against the receiver holding a real Flagsmith's recorded documents. The receiver names
//! it as Flagsmith does (the SHA-256 of its traits, so its splits are stable) and evaluates its
//! traits: it gets the segment overrides Flagsmith gave an identity with the same traits.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::common::request;
use crate::live_replay::{ENVIRONMENTS, Replay, step, traits_sent, url};
use crate::test_deps;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/sdk/transient_identity.js"
);
const STEP: usize = 24;

/// `{name: [enabled, value]}` of a list of Flagsmith flags.
fn table(flags: &Value) -> Map<String, Value> {
    flags
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = f["feature"]["name"].as_str().unwrap().to_owned();
            (name, json!([f["enabled"], f["feature_state_value"]]))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flagsmith_js_client_identifies_traits_without_an_identifier() {
    let node = test_deps::node_requiring(&["flagsmith/isomorphic"]);
    let replay = Replay::start().await;
    let recorded = step(STEP);
    let served_from = replay.serve(&recorded, STEP);
    replay
        .wait_for_documents(&recorded, STEP, &Default::default(), served_from)
        .await;
    let (_, _, key, _) = ENVIRONMENTS[0];
    let anna = &recorded["identities"]["live"]["u-anna"];
    let traits = traits_sent(anna);

    let api = url(replay.port, "/api/v1/");
    let input = Value::Object(traits.clone());
    let seen = tokio::task::spawn_blocking(move || {
        let mut node = node;
        node.args([SCRIPT, &api, key]);
        test_deps::run_json(node, &input)
    })
    .await
    .unwrap();

    // What the client sent, asked directly: named as Flagsmith names it.
    let sent: Vec<Value> = traits
        .iter()
        .map(|(k, v)| json!({"trait_key": k, "trait_value": v}))
        .collect();
    let body = json!({"identifier": null, "transient": true, "traits": sent}).to_string();
    let headers = [
        ("x-environment-key", key),
        ("content-type", "application/json"),
    ];
    let identities = url(replay.port, "/api/v1/identities/");
    let (status, answer) = request("POST", &identities, &headers, body.clone().into_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    let text = "age34app_version2.4.1countryDEemailanna@corp.testplanproreferral_codeREF1\
                score80sessions25user_num1verifiedTrue";
    assert_eq!(answer["identifier"], hex::encode(Sha256::digest(text)));
    assert!(
        answer["traits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["transient"] == true)
    );
    let (_, again) = request("POST", &identities, &headers, body.into_bytes()).await;
    assert_eq!(
        again, answer,
        "the same traits, the same identity and buckets"
    );
    assert_eq!(
        seen["flags"],
        Value::Object(table(&answer["flags"])),
        "the client's flags"
    );

    // The traits decided the segment overrides, as for u-anna, who sent the same traits;
    // flags that u-anna's own overrides or buckets decided are hers alone.
    let hers = table(&anna["answer"]["flags"]);
    let mut by_segment = 0;
    for flag in anna["answer"]["flags"].as_array().unwrap() {
        if !flag["feature_segment"].is_null() {
            let name = flag["feature"]["name"].as_str().unwrap();
            assert_eq!(seen["flags"][name], hers[name], "{name}");
            by_segment += 1;
        }
    }
    assert!(
        by_segment > 0,
        "u-anna has segment overrides at step {STEP}"
    );
}

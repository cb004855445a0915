//! Issue 9: Flagsmith's own server-side SDKs, the official Python SDK and `flagsmith-nodejs`
//! (pinned, installed by `.ci/test`), in local evaluation mode against the receiver (server key,
//! `api_url` = the receiver, which holds the recorded documents of a real Flagsmith) give the same
//! flags, for the same identities and traits, as in remote mode, and as Flagsmith gave.

use std::collections::HashMap;
use std::process::Command;

use serde_json::{Map, Value, json};

use crate::live_replay::{ENVIRONMENTS, Replay, step, traits_sent, url};
use crate::test_deps;

const PYTHON_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/local_evaluation.py");
const NODE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/local_evaluation.js");

/// Recorded steps the SDKs are asked at: segment, multivariate and identity overrides in force
/// (24), and the end state (hidden disabled flags gone, a re-created feature, qa's sensitive data
/// hidden until 48; 49).
const STEPS_ASKED: [usize; 2] = [24, 49];

/// `{feature_name: [enabled, value]}` of a list of Flagsmith flags.
fn table(flags: &Value) -> Value {
    let mut table = Map::new();
    for flag in flags.as_array().unwrap() {
        let name = flag["feature"]["name"].as_str().unwrap().to_owned();
        table.insert(name, json!([flag["enabled"], flag["feature_state_value"]]));
    }
    Value::Object(table)
}

/// What Flagsmith answered at the step, in the scripts' shape, and the identities with their
/// traits as the scripts take them.
fn recorded(step: &Value, env: &str) -> (Value, Value) {
    let mut identities = Map::new();
    let mut traits = Map::new();
    for (identifier, recorded) in step["identities"][env].as_object().unwrap() {
        identities.insert(identifier.clone(), table(&recorded["answer"]["flags"]));
        let sent = traits_sent(recorded);
        traits.insert(identifier.clone(), Value::Object(sent));
    }
    let answers = json!({"environment": table(&step["flags"][env]), "identities": identities});
    (answers, Value::Object(traits))
}

/// Runs an SDK script with the identities on its standard input; answers its JSON.
fn run_script(mut command: Command, script: &str, args: [&str; 3], traits: &Value) -> Value {
    command.arg(script).args(args);
    test_deps::run_json(command, traits)
}

async fn sdks_answer_as_flagsmith(sdk: &'static str) {
    let replay = Replay::start().await;
    let api_url = url(replay.port, "/api/v1/");
    for n in STEPS_ASKED {
        let recorded_step = step(n);
        let served_from = replay.serve(&recorded_step, n);
        replay
            .wait_for_documents(&recorded_step, n, &HashMap::new(), served_from)
            .await;
        for (env, _, client_key, server_key) in ENVIRONMENTS {
            let (want, traits) = recorded(&recorded_step, env);
            let args = [
                api_url.clone(),
                client_key.to_owned(),
                server_key.to_owned(),
            ];
            let answers = tokio::task::spawn_blocking(move || {
                let args = [args[0].as_str(), args[1].as_str(), args[2].as_str()];
                match sdk {
                    "python" => run_script(test_deps::python(), PYTHON_SCRIPT, args, &traits),
                    _ => run_script(test_deps::node(), NODE_SCRIPT, args, &traits),
                }
            })
            .await
            .unwrap();
            assert_eq!(
                answers["local"], answers["remote"],
                "{sdk} SDK, step {n} {env}: local evaluation differs from remote"
            );
            assert_eq!(
                answers["local"], want,
                "{sdk} SDK, step {n} {env}: local evaluation differs from Flagsmith's answers"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_evaluates_locally_as_remotely() {
    sdks_answer_as_flagsmith("python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagsmith_nodejs_evaluates_locally_as_remotely() {
    sdks_answer_as_flagsmith("node").await;
}

//! Issue 11: Flagsmith's own clients in realtime mode, pointed at the receiver, see a change soon
//! after the web hook that brings it is acknowledged: the JS client (`flagsmith`, `realtime:
//! true`, remote evaluation with the client key) and the Python SDK (`enable_realtime_updates`,
//! local evaluation with the server key, which refetches the environment document when an event's
//! `updated_at` is newer than the one it holds). Neither polls: only the stream makes them
//! refetch. The receiver holds a recorded Flagsmith document from a stand-in upstream, which
//! serves the next document once the change is made, as Flagsmith would.
//!
//! The delay is printed, and asserted only against a generous deadline (the machine is shared).

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::common::*;
use crate::test_deps;
use crate::upstream::{Answer, ENVS, document, receiver_at_step, step};

const NODE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/realtime.js");
const PYTHON_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/realtime.py");

/// The recorded step the receiver starts at, and the feature the test changes in "live".
const STEP: usize = 49;
const FEATURE_ID: u64 = 107;
const FEATURE: &str = "banner_text";
const NEW_VALUE: &str = "changed in realtime";

/// The recorded "live" document with the feature's value changed and `updated_at` moved to now,
/// as Flagsmith's next document would be.
fn next_document() -> Bytes {
    let mut doc: Value = serde_json::from_slice(&document(&step(STEP), "live")).unwrap();
    for state in doc["feature_states"].as_array_mut().unwrap() {
        if state["feature"]["id"] == FEATURE_ID {
            state["feature_state_value"] = json!(NEW_VALUE);
        }
    }
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    doc["updated_at"] = json!(now);
    Bytes::from(serde_json::to_vec(&doc).unwrap())
}

/// Flagsmith's `FLAG_UPDATED` for the feature's environment default in "live" (id 44).
fn webhook() -> Vec<u8> {
    let (_, env, _, _) = ENVS[0];
    let body = flag_event(
        env,
        FEATURE_ID,
        &Key::Default,
        false,
        true,
        json!(NEW_VALUE),
    );
    let mut body: Value = serde_json::from_slice(&body).unwrap();
    body["data"]["new_state"]["feature"]["name"] = json!(FEATURE);
    serde_json::to_vec(&body).unwrap()
}

/// The script's output lines, each with when it was read.
type Lines = mpsc::UnboundedReceiver<(String, Instant)>;

async fn next_line(lines: &mut Lines, what: &str) -> (String, Instant) {
    tokio::time::timeout(Duration::from_secs(120), lines.recv())
        .await
        .unwrap_or_else(|_| panic!("the SDK script never printed {what}"))
        .unwrap_or_else(|| panic!("the SDK script ended before {what}"))
}

/// A running script, killed when dropped.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(mut command: std::process::Command) -> (Script, Lines) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the SDK script");
    let stdout = child.stdout.take().unwrap();
    let (send, lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if send.send((line, Instant::now())).is_err() {
                return;
            }
        }
    });
    (Script(child), lines)
}

async fn a_realtime_client_sees_the_change(sdk: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, stand_in) = receiver_at_step(dir.path(), STEP, 10).await;
    let (_, _, client_key, server_key) = ENVS[0];
    let api_url = receiver.url("/api/v1/");
    let realtime_url = receiver.url("/");
    let expected = serde_json::to_string(NEW_VALUE).unwrap();
    let mut command = match sdk {
        "js" => test_deps::node_with("flagsmith,eventsource"),
        _ => test_deps::python(),
    };
    let (script, key) = match sdk {
        "js" => (NODE_SCRIPT, client_key),
        _ => (PYTHON_SCRIPT, server_key),
    };
    command.args([script, &api_url, &realtime_url, key, FEATURE, &expected]);
    let (script, mut lines) = spawn(command);
    let (ready, _) = next_line(&mut lines, "ready").await;
    assert_eq!(ready, "ready \"Hello live\"");
    // Give the client a moment to open its stream; if it opens later, the stream's first event
    // tells it the environment changed, so this only keeps the measurement honest.
    receiver
        .wait_for_metric_line("flagpost_receiver_streams_open 1")
        .await;

    stand_in.answer(server_key, Answer::Document(next_document()));
    let body = webhook();
    let signed = Signed::new(&body, "realtime-change", None);
    let (status, answer) = receiver.post("/webhook", &signed.as_refs(), &body).await;
    let acknowledged = Instant::now();
    assert_eq!(status, 200, "{answer}");
    // Neither client polls in realtime mode: the change can only reach it through the stream.
    // How soon is printed for the README, never asserted (a shared machine decides that).
    let (changed, seen) = next_line(&mut lines, "the change").await;
    let delay = seen.duration_since(acknowledged);
    println!("{sdk} realtime client: change seen {delay:?} after the web hook's acknowledgement");
    assert_eq!(changed, format!("changed {expected}"));
    drop(script);
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagsmiths_js_client_in_realtime_mode_sees_a_change_after_the_webhook() {
    a_realtime_client_sees_the_change("js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_with_realtime_updates_sees_a_change_after_the_webhook() {
    a_realtime_client_sees_the_change("python").await;
}

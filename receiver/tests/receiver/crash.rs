//! The real binary stopped hard (kill -9 in the middle of a stream of web hooks) and softly
//! (SIGTERM): after a restart, every acknowledged event is in the cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::common::*;

/// Starts the binary and waits until it answers /healthz.
pub async fn start_binary(config: &Path, port: u16) -> Running {
    let binary = Path::new(env!("CARGO_BIN_EXE_flagpost-receiver"));
    let mut running = Running::serve(binary, config, "warn", true);
    let url = format!("http://127.0.0.1:{port}/healthz");
    for _ in 0..600 {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        if let Ok(Ok(response)) =
            tokio::time::timeout(Duration::from_secs(5), client.get(url.parse().unwrap())).await
            && response.status() == 200
        {
            return running;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.kill9();
    panic!("the receiver did not answer /healthz within a minute");
}

/// A configuration file in `dir` for the binary, on a free port.
fn write_binary_config(dir: &Path) -> (PathBuf, u16) {
    let port = free_port();
    let config = test_config(dir)
        .listen(([127, 0, 0, 1], port).into())
        .write();
    (config, port)
}

/// Sender `sender`'s `n`th web hook: a distinct identity override; answers its sequence and
/// value once acknowledged, `None` once the receiver is gone.
async fn send_override(port: u16, sender: usize, n: u64) -> Option<(u64, String)> {
    let seq = sender as u64 * 1_000_000 + n + 1;
    let value = format!("value-{seq}");
    let body = flag_event(
        1,
        1,
        &Key::Identity(format!("user-{seq}")),
        false,
        true,
        json!(value),
    );
    let signed = Signed::new(&body, &format!("evt-{seq}"), Some(seq));
    let url = format!("http://127.0.0.1:{port}/webhook");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut request = http::Request::post(url);
    for (name, value) in &signed.as_refs() {
        request = request.header(*name, *value);
    }
    let sent = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(
            request
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap(),
        ),
    )
    .await;
    match sent {
        Ok(Ok(response)) if response.status() == 200 => Some((seq, value)),
        // The receiver is gone: this sender's stream ends.
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (config, port) = write_binary_config(dir.path());
    let mut child = start_binary(&config, port).await;
    let default = flag_event(1, 1, &Key::Default, false, true, json!("default"));
    // Unsequenced: sender 0's first override is flagpost's event 1.
    let signed = Signed::new(&default, "evt-default", None);
    let (status, answer) = request(
        "POST",
        &format!("http://127.0.0.1:{port}/webhook"),
        &signed.as_refs(),
        default,
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    // Eight senders, each a stream of distinct identity overrides; remember what was acknowledged.
    // Kill once a good number of events has been acknowledged, while the senders keep sending.
    let acknowledged: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let send = move |sender, n| send_override(port, sender, n);
    stream_until_killed(8, 300, &acknowledged, send, || child.kill9()).await;
    let acknowledged: BTreeMap<u64, String> =
        acknowledged.lock().unwrap().iter().cloned().collect();
    assert!(
        acknowledged.len() >= 300,
        "only {} acknowledged before the kill",
        acknowledged.len()
    );

    let mut child = start_binary(&config, port).await;
    let (status, flag) = request(
        "GET",
        &format!("http://127.0.0.1:{port}/v1/environments/1/flags/1"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200, "{flag}");
    let stored: BTreeMap<String, serde_json::Value> = flag["identity_overrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["identifier"].as_str().unwrap().to_owned(),
                o["value"].clone(),
            )
        })
        .collect();
    for (seq, value) in &acknowledged {
        assert_eq!(
            stored.get(&format!("user-{seq}")),
            Some(&json!(value)),
            "acknowledged event {seq} was lost"
        );
    }
    child.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_a_restart_keeps_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (config, port) = write_binary_config(dir.path());
    let base = format!("http://127.0.0.1:{port}");

    let mut child = start_binary(&config, port).await;
    let (status, _) = request("GET", &format!("{base}/readyz"), &[], Vec::new()).await;
    assert_eq!(
        status, 200,
        "without bootstrap the receiver is ready at once"
    );
    let body = flag_event(2, 4, &Key::Default, false, true, json!("kept"));
    let signed = Signed::new(&body, "evt-term", Some(1));
    let (status, _) = request("POST", &format!("{base}/webhook"), &signed.as_refs(), body).await;
    assert_eq!(status, 200);

    let exit = child.terminate();
    assert!(
        exit.success(),
        "SIGTERM ends the receiver cleanly: {exit:?}"
    );
    let snapshot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("snapshot.json")).unwrap()).unwrap();
    assert_eq!(
        snapshot["environments"][0]["flags"][0]["value"], "kept",
        "the snapshot is complete at exit"
    );

    let mut child = start_binary(&config, port).await;
    let (status, flags) = request(
        "GET",
        &format!("{base}/v1/environments/2/flags"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200, "{flags}");
    assert_eq!(flags["flags"][0]["value"], "kept");
    child.kill9();
}

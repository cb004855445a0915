//! The real binary stopped hard (kill -9 in the middle of a stream of web hooks) and softly
//! (SIGTERM): after a restart, every acknowledged event is in the cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary and waits until it answers /healthz.
pub async fn start_binary(config: &Path, port: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flagpost-receiver"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the receiver binary starts");
    let url = format!("http://127.0.0.1:{port}/healthz");
    for _ in 0..600 {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        if let Ok(Ok(response)) =
            tokio::time::timeout(Duration::from_secs(5), client.get(url.parse().unwrap())).await
            && response.status() == 200
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the receiver did not answer /healthz within a minute");
}

/// A configuration file in `dir` for the binary, on a free port.
fn write_binary_config(dir: &Path) -> (PathBuf, u16) {
    let port = free_port();
    let config = dir.join("receiver.toml");
    let toml = format!(
        "listen = \"127.0.0.1:{port}\"\n{}",
        config_toml(dir, "", "")
    );
    std::fs::write(&config, toml).unwrap();
    (config, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (config, port) = write_binary_config(dir.path());
    let mut child = start_binary(&config, port).await;
    let default = flag_event(1, 1, &Key::Default, false, true, json!("default"));
    let signed = Signed::new(&default, "evt-default", Some(1));
    let (status, answer) = request(
        "POST",
        &format!("http://127.0.0.1:{port}/webhook"),
        &signed.as_refs(),
        default,
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    // Eight senders, each a stream of distinct identity overrides; remember what was acknowledged.
    let acknowledged: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
    let mut senders = Vec::new();
    for sender in 0..8u64 {
        let acknowledged = acknowledged.clone();
        senders.push(tokio::spawn(async move {
            for n in 0.. {
                let seq = sender * 1_000_000 + n + 1;
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
                let headers = signed.as_refs();
                let url = format!("http://127.0.0.1:{port}/webhook");
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http::<http_body_util::Full<bytes::Bytes>>();
                let mut request = http::Request::post(url);
                for (name, value) in &headers {
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
                    Ok(Ok(response)) if response.status() == 200 => {
                        acknowledged.lock().unwrap().insert(seq, value);
                    }
                    // The receiver is gone: this sender's stream ends.
                    _ => return,
                }
            }
        }));
    }
    // Kill once a good number of events has been acknowledged, while the senders keep sending.
    for _ in 0..6000 {
        if acknowledged.lock().unwrap().len() >= 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    for sender in senders {
        tokio::time::timeout(Duration::from_secs(60), sender)
            .await
            .expect("senders stop")
            .unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
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
    child.kill().unwrap();
    child.wait().unwrap();
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

    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let exit = child.wait().unwrap();
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
    child.kill().unwrap();
    child.wait().unwrap();
}

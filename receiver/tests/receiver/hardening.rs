//! Issue 8's receiver items: a timestamp that does not parse, lenient signature forms, duplicate
//! JSON keys, and colour codes in captured logs. Each refusal is a 400 or 401 with its reason and
//! metric, and leaves the cache as it was.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::common::*;

/// The real binary with stderr to a file logs plain text: colour only on a terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_captured_in_a_file_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = test_config(dir.path())
        .listen(([127, 0, 0, 1], port).into())
        .write();
    let log = dir.path().join("stderr.log");
    let child = Command::new(Path::new(env!("CARGO_BIN_EXE_flagpost-receiver")))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut running = Running { child };
    wait_for_health(port).await;
    // A refused request: something for the receiver to log besides starting.
    let body = flag_event(5, 1, &Key::Default, false, true, json!("logged"));
    let url = format!("http://127.0.0.1:{port}/webhook");
    let headers = [("content-type", "application/json")];
    assert_eq!(request("POST", &url, &headers, body).await.0, 401);
    assert!(running.terminate().success());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("INFO"), "something was logged:\n{logged}");
    assert!(!logged.contains("\x1b["), "no colour codes:\n{logged:?}");
}

/// Waits until the receiver on `port` answers `/healthz`.
async fn wait_for_health(port: u16) {
    let url = format!("http://127.0.0.1:{port}/healthz");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    for _ in 0..600 {
        let probe = client.get(url.parse().unwrap());
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(5), probe).await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the receiver did not answer /healthz within a minute");
}

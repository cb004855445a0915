//! Issue 8's receiver items: a timestamp that does not parse, lenient signature forms, duplicate
//! JSON keys, and colour codes in captured logs. Each refusal is a 400 or 401 with its reason and
//! metric, and leaves the cache as it was.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use flagpost::signing::Secret;
use serde_json::{Value, json};

use crate::common::*;

/// `body` with its `data.timestamp` replaced by `timestamp`.
fn stamped(body: &[u8], timestamp: &str) -> Vec<u8> {
    let text = String::from_utf8(body.to_vec()).unwrap();
    let replaced = text.replace(
        "\"timestamp\":\"2026-01-01T00:00:00.000000Z\"",
        &format!("\"timestamp\":{}", json!(timestamp)),
    );
    assert_ne!(replaced, text, "the test body has the usual timestamp");
    replaced.into_bytes()
}

/// Posts `body` with `headers` and asserts a refusal with `status`, counted as `reason`, that left
/// environment 5 as `before`.
async fn assert_refused(
    receiver: &Receiver,
    name: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    (status, reason): (u16, &str),
    before: &Value,
) {
    let (got, answer) = receiver.post("/webhook", headers, body).await;
    assert_eq!(got, status, "{name}: {answer}");
    assert!(answer["error"].as_str().is_some(), "{name}: {answer}");
    assert_eq!(&receiver.env_flags(5).await, before, "{name}: unchanged");
    let (_, metrics) = receiver.get("/metrics", &[]).await;
    let counted = format!("flagpost_receiver_webhooks_refused_total{{reason=\"{reason}\"}}");
    assert!(
        series_value(metrics.as_str().unwrap(), &counted) >= 1.0,
        "{name}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_that_does_not_parse_is_refused_and_an_empty_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), &config_toml(dir.path(), "", "")).await;
    let future = stamped(
        &flag_event(5, 1, &Key::Default, false, true, json!("2099")),
        "2099-01-01T00:00:00.000000Z",
    );
    let signed = Signed::new(&future, "evt-2099", None);
    assert_eq!(
        receiver
            .post("/webhook", &signed.as_refs(), &future)
            .await
            .0,
        200
    );
    let before = receiver.env_flags(5).await;
    assert_eq!(before[0]["value"], "2099");

    let change = flag_event(5, 1, &Key::Default, false, false, json!("undated"));
    let garbled = stamped(&change, "not a date");
    let signed = Signed::new(&garbled, "evt-garbled", None);
    let refused = (400, "malformed");
    assert_refused(
        &receiver,
        "not a date",
        &signed.as_refs(),
        &garbled,
        refused,
        &before,
    )
    .await;

    // The empty string Flagsmith may send keeps its rule: ordered by arrival, so it applies.
    let empty = stamped(&change, "");
    let signed = Signed::new(&empty, "evt-empty", None);
    let (status, answer) = receiver.post("/webhook", &signed.as_refs(), &empty).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("applied")));
    assert_eq!(receiver.env_flags(5).await[0]["value"], "undated");
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_documented_flagsmith_signature_form_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), &config_toml(dir.path(), "", "")).await;
    let before = receiver.env_flags(5).await;
    let body = flag_event(5, 1, &Key::Default, false, true, json!("signed"));
    let signature = Secret::new(TEST_SECRET).unwrap().flagsmith_signature(&body);
    let upper = signature.to_uppercase();
    // Spaces around a header value are not part of it in HTTP (RFC 9110, 5.5): hyper strips them
    // before the receiver sees the value, so padding is tested on `verify_flagsmith` itself.
    let trailing = format!("{signature}\t00");
    for (name, value) in [("upper case", &upper), ("trailing bytes", &trailing)] {
        let headers = [
            ("content-type", "application/json"),
            ("x-flagsmith-signature", value.as_str()),
        ];
        let refused = (401, "bad_signature");
        assert_refused(&receiver, name, &headers, &body, refused, &before).await;
    }
    let headers = [
        ("content-type", "application/json"),
        ("x-flagsmith-signature", signature.as_str()),
    ];
    assert_eq!(receiver.post("/webhook", &headers, &body).await.0, 200);
    assert_eq!(receiver.env_flags(5).await[0]["value"], "signed");
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_body_with_a_duplicate_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), &config_toml(dir.path(), "", "")).await;
    let good = flag_event(5, 1, &Key::Default, false, true, json!("kept"));
    let signed = Signed::new(&good, "evt-good", Some(1));
    assert_eq!(
        receiver.post("/webhook", &signed.as_refs(), &good).await.0,
        200
    );
    let before = receiver.env_flags(5).await;

    let change =
        String::from_utf8(flag_event(5, 1, &Key::Default, false, true, json!("x"))).unwrap();
    let nested = change.replace("\"enabled\":true", "\"enabled\":true,\"enabled\":false");
    let top = change.replacen('{', "{\"extra\":1,\"extra\":2,", 1);
    for (name, body) in [("nested known key", nested), ("top-level unknown key", top)] {
        let body = body.into_bytes();
        let signed = Signed::new(&body, &format!("evt-{name}"), Some(2));
        let refused = (400, "malformed");
        assert_refused(&receiver, name, &signed.as_refs(), &body, refused, &before).await;
    }
    receiver.stop().await;
}

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

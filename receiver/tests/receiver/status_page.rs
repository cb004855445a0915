//! The status page in headless Chromium (issue 12, item 1): with `status_token` set, the page
//! asks for it, then shows the environment a signed web hook changed, with its data age, and the
//! web hooks refused, by reason.

use std::path::Path;

use tokio::io::AsyncWriteExt;

use crate::common::webdriver::{Browser, screenshot_paths};
use crate::common::{Key, Receiver, Signed, flag_event, test_config};

const STATUS_TOKEN: &str = "status-token-0123456789";

fn screenshots_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/screenshots"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_data_age_and_refused_web_hooks_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path())
        .environment(1, &["env-key-1"])
        .environment(2, &["env-key-2"])
        .toml();
    let toml = format!("status_token = {{ value = {STATUS_TOKEN:?} }}\n{config}");
    let receiver = Receiver::start(dir.path(), &toml).await;

    // The data needs the token once one is set.
    assert_eq!(receiver.get("/admin/status", &[]).await.0, 401);
    let bearer = format!("Bearer {STATUS_TOKEN}");
    let (status, data) = receiver
        .get("/admin/status", &[("authorization", &bearer)])
        .await;
    assert_eq!(status, 200, "{data}");

    let body = flag_event(1, 7, &Key::Default, false, true, serde_json::json!("on"));
    let signed = Signed::new(&body, "unused", Some(1));
    let (status, answer) = receiver.post("/webhook", &signed.as_refs(), &body).await;
    assert_eq!(status, 200, "{answer}");
    // The same hook with a changed body: its signature no longer matches.
    let mut tampered = body.clone();
    let at = tampered.iter().position(|b| *b == b'7').unwrap();
    tampered[at] = b'8';
    let (status, _) = receiver
        .post("/webhook", &signed.as_refs(), &tampered)
        .await;
    assert_eq!(status, 401);
    let unsigned = [("content-type", "application/json")];
    let (status, _) = receiver.post("/webhook", &unsigned, &body).await;
    assert_eq!(status, 401);

    let browser = Browser::start().await;
    browser.goto(&receiver.url("/status")).await;
    browser
        .wait_for_text("#status-line", "A token is needed")
        .await;
    browser.type_into("#token", STATUS_TOKEN).await;
    browser.click("#use-token").await;
    // Environment 1 took a change: it has a data age and is fresh; 2 has no data yet.
    browser
        .wait_for(
            "#environments tr[data-environment=\"1\"] td[data-field=\"data-age\"] .badge.fresh",
        )
        .await;
    let waiting = browser
        .text("#environments tr[data-environment=\"2\"] td[data-field=\"data-age\"]")
        .await;
    assert_eq!(waiting, "no data yet");
    browser
        .wait_for("#webhooks tr[data-result=\"accepted\"][data-outcome=\"applied\"]")
        .await;
    browser
        .wait_for("#webhooks tr[data-result=\"refused\"][data-outcome=\"bad_signature\"]")
        .await;
    browser
        .wait_for("#webhooks tr[data-result=\"refused\"][data-outcome=\"missing_signature\"]")
        .await;
    let refused = browser
        .text("#webhook-counts [data-refused=\"bad_signature\"]")
        .await;
    assert_eq!(refused, "refused, bad signature: 1");
    let accepted = browser.text("#webhooks tr[data-outcome=\"applied\"]").await;
    assert!(accepted.contains("feature_7"), "{accepted}");
    browser.wait_for_text("#open-streams", "0").await;
    // A native change stream, held open: the page counts it.
    let mut stream = tokio::net::TcpStream::connect(receiver.addr).await.unwrap();
    stream
        .write_all(b"GET /v1/environments/1/stream HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    browser.wait_for_text("#open-streams", "1").await;
    drop(stream);
    for path in screenshot_paths("receiver-status.png", screenshots_dir()) {
        browser.screenshot(&path).await;
    }
    drop(browser);
    receiver.stop().await;
}

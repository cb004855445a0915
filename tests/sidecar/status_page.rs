//! The status page in headless Chromium (issue 12, item 1): the real binary, a real sink that
//! fails until a delivery is dead-lettered, the page opened with the operator's token, the dead
//! letter seen and replayed from the page once the sink works, and its delivery seen on the page
//! and at the sink.

use std::path::Path;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Process, TOKEN, call, free_addr, send, test_config};
use crate::support::sink::{Answer, Sink};
use crate::support::webdriver::{Browser, screenshot_paths};

/// A token whose name is markup: the page must show it as text (it is `changed_by`).
const MARKUP_TOKEN: &str = "markup-token-0123456789";
const MARKUP_NAME: &str = "<b id=\"injected\">ops</b>";

fn screenshots_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/screenshots"))
}

async fn create_feature(base: &str, name: &str, token: &str) -> Value {
    let body = json!({"project": 1, "name": name, "initial_value": "on", "default_enabled": true});
    let (status, answer) = send(
        Method::POST,
        &format!("{base}/api/v1/features"),
        Some(token),
        Some(serde_json::to_vec(&body).unwrap()),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_dead_letter_and_replays_it_in_chromium() {
    let failing = Sink::start(Vec::new(), Answer::Status(500)).await;
    let working = Sink::start(Vec::new(), Answer::Status(204)).await;
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    // Two attempts, then a dead letter; one failure pauses the lane, so it shows backing off.
    let config = test_config(dir.path(), addr)
        .token(MARKUP_NAME, None, MARKUP_TOKEN)
        .webhook("app", &failing.url("/hook"), "app-secret-0123456789")
        .webhook("search", &working.url("/hook"), "search-secret-0123456789")
        .extra(
            "[delivery]\nretry_schedule = [\"50ms\"]\njitter = \"none\"\n\
             lane_failures_before_backoff = 1\nlane_backoff_initial = \"1s\"\n",
        )
        .write();
    let flagpost = Process::start(&config, addr);
    flagpost.wait_ready().await;
    let base = flagpost.url("");

    // The data behind the page is the admin API's, and needs a token like every admin route.
    let (status, _) = send(
        Method::GET,
        &flagpost.url("/api/v1/admin/endpoints"),
        None,
        None,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let created = create_feature(&base, "new_checkout", MARKUP_TOKEN).await;
    let sequence = created["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "FLAG_UPDATED")
        .and_then(|e| e["sequence"].as_u64())
        .expect("a FLAG_UPDATED event");

    let browser = Browser::start().await;
    browser.goto(&flagpost.url("/status")).await;
    // Without a token the page asks for one; a wrong one is refused.
    browser
        .wait_for_text("#status-line", "A token is needed")
        .await;
    browser.type_into("#token", "not-the-token").await;
    browser.click("#use-token").await;
    browser.wait_for_text("#status-line", "Token refused").await;

    browser.type_into("#token", TOKEN).await;
    browser.click("#use-token").await;
    let dead_letter =
        format!("#dead-letters tr[data-endpoint=\"app\"][data-sequence=\"{sequence}\"]");
    browser.wait_for(&dead_letter).await;
    browser
        .wait_for("#endpoints tr[data-endpoint=\"app\"][data-state=\"backing_off\"]")
        .await;
    browser
        .wait_for("#endpoints tr[data-endpoint=\"search\"][data-state=\"healthy\"]")
        .await;
    browser
        .wait_for("#endpoints tr[data-endpoint=\"parked\"][data-state=\"disabled\"]")
        .await;
    browser
        .wait_for(&format!("#attempts tr[data-endpoint=\"app\"][data-result=\"dead_lettered\"][data-sequence=\"{sequence}\"]"))
        .await;
    browser
        .wait_for(&format!("#events tr[data-sequence=\"{sequence}\"]"))
        .await;
    // The token's name is shown as it is, never read as markup.
    let events = browser.text("#events").await;
    assert!(events.contains(MARKUP_NAME), "{events}");
    assert_eq!(
        browser
            .script("return document.querySelectorAll('#injected').length")
            .await,
        0
    );
    // The token is kept for this tab only, never put in the address.
    let href = browser.script("return location.href").await;
    assert!(!href.as_str().unwrap().contains(TOKEN), "{href}");
    for path in screenshot_paths("flagpost-status.png", screenshots_dir()) {
        browser.screenshot(&path).await;
    }

    failing.set_answer(Answer::Status(200));
    browser.click(&format!("{dead_letter} button.replay")).await;
    browser
        .wait_for(&format!("#attempts tr[data-endpoint=\"app\"][data-result=\"delivered\"][data-sequence=\"{sequence}\"]"))
        .await;
    browser.wait_for_none(&dead_letter).await;
    browser
        .wait_for("#endpoints tr[data-endpoint=\"app\"][data-state=\"healthy\"]")
        .await;
    let message = browser.text("#message").await;
    assert!(
        message.contains(&format!("Replayed event {sequence} to app")),
        "{message}"
    );

    // The sink took it: the same event id, answered 200.
    let event_id = created["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["sequence"] == sequence)
        .and_then(|e| e["id"].as_str())
        .unwrap()
        .to_owned();
    let received = failing
        .wait_until("the replayed delivery", |received| {
            received.iter().any(|r| r.answered == Some(200))
        })
        .await;
    let delivered: Vec<_> = received
        .iter()
        .filter(|r| r.answered == Some(200))
        .collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].header("webhook-id"), Some(event_id.as_str()));
    let (_, letters) = call(
        Method::GET,
        &flagpost.url("/api/v1/admin/dead-letters"),
        None,
    )
    .await;
    assert_eq!(letters["dead_letters"], json!([]));
}

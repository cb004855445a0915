//! Issue 10, item 5: an environment fed by a `[[relay]]` source with an `upstream` serves the
//! document fetched from that Flagsmith (here a stand-in: a real HTTP server on 127.0.0.1),
//! fetched again after each relayed web hook, and keeps the last good one when the upstream
//! answers badly.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

const SERVER_KEY: &str = "ser.relayed-reader-1";
const UPSTREAM_KEY: &str = "ser.upstream-flagsmith-key";
const RELAY_SECRET: &str = "relay-secret-0123456789";

/// What the stand-in Flagsmith answers, and what it was asked.
#[derive(Default)]
struct Upstream {
    answer: Mutex<(u16, Vec<u8>)>,
    requests: AtomicUsize,
    keys_seen: Mutex<Vec<String>>,
}

async fn serve_document(
    State(upstream): State<Arc<Upstream>>,
    headers: HeaderMap,
) -> (AxumStatus, Vec<u8>) {
    let key = headers
        .get("x-environment-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    upstream.keys_seen.lock().unwrap().push(key.to_owned());
    let (status, body) = upstream.answer.lock().unwrap().clone();
    // Counted last: once the count moves, this answer is on its way.
    upstream.requests.fetch_add(1, Ordering::SeqCst);
    (AxumStatus::from_u16(status).unwrap(), body)
}

async fn start_upstream() -> (Arc<Upstream>, String) {
    let upstream = Arc::new(Upstream::default());
    let app = axum::Router::new()
        .route(
            "/api/v1/environment-document/",
            axum::routing::get(serve_document),
        )
        .with_state(upstream.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (upstream, url)
}

/// Flagsmith's recorded document of environment `live` after step `step`.
fn recorded(step: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../shared/conformance/flagsmith-v2.265.0-live/steps/{step}.json"
    ));
    let step: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    step["environment_documents"]["live"].clone()
}

fn config(upstream_url: &str) -> String {
    format!(
        "[[environments]]\nid = 2\nname = \"Relayed\"\napi_key = \"relayed-client-key\"\nproject = 1\n\
         server_keys = [{{ value = \"{SERVER_KEY}\" }}]\n\
         [[relay]]\nname = \"flagsmith\"\nenvironment = 2\nsecret = {{ value = \"{RELAY_SECRET}\" }}\n\
         upstream = {{ url = \"{upstream_url}\", server_key = {{ value = \"{UPSTREAM_KEY}\" }}, poll_every = \"1h\" }}\n"
    )
}

async fn served(sidecar: &Sidecar) -> (StatusCode, Value) {
    let url = sidecar.url("/api/v1/environment-document/");
    send(
        Method::GET,
        &url,
        None,
        None,
        &[("x-environment-key", SERVER_KEY)],
    )
    .await
    .unwrap()
}

/// The served document without flagpost's field, and that field.
fn split(mut document: Value) -> (Value, Value) {
    let ordering = document
        .as_object_mut()
        .unwrap()
        .remove("flagpost")
        .unwrap();
    (document, ordering)
}

/// Relays a web hook (an audit-log body, which is never ordered away) numbered `n`, and returns
/// the sequence of the event it became.
async fn relay_web_hook(sidecar: &Sidecar, n: u32) -> u64 {
    let body =
        json!({"event_type": "AUDIT_LOG_CREATED", "data": {"id": n, "log": format!("change {n}")}});
    let body = serde_json::to_vec(&body).unwrap();
    let secret = flagpost::signing::Secret::new(RELAY_SECRET).unwrap();
    let signature = secret.flagsmith_signature(&body);
    let url = sidecar.url("/api/v1/relay/flagsmith");
    let headers = [("x-flagsmith-signature", signature.as_str())];
    let (status, answer) = send(Method::POST, &url, None, Some(body), &headers)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    answer["events"][0]["sequence"].as_u64().unwrap()
}

async fn wait_for_requests(upstream: &Upstream, count: usize) {
    wait_until(&format!("the upstream was asked {count} times"), || async {
        upstream.requests.load(Ordering::SeqCst) >= count
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_environment_serves_its_upstream_document_and_keeps_the_last_good_one() {
    let (upstream, upstream_url) = start_upstream().await;
    let (older, first, newer) = (recorded("010"), recorded("040"), recorded("049"));
    *upstream.answer.lock().unwrap() = (200, serde_json::to_vec(&first).unwrap());
    let sidecar = Sidecar::start_with(&config(&upstream_url)).await;

    // Fetched at start, with the upstream key, and served with flagpost's ordering field.
    wait_until("the first upstream document is served", || async {
        served(&sidecar).await.0 == StatusCode::OK
    })
    .await;
    let (document, _) = split(served(&sidecar).await.1);
    assert_eq!(document, first);
    assert_eq!(upstream.keys_seen.lock().unwrap()[0], UPSTREAM_KEY);

    // Each bad answer, fetched after a relayed web hook, leaves the last good document. The good
    // one is then answered again and fetched after a second web hook: fetches of a source run
    // one after another, so once the second is asked for, the bad answer has been dealt with.
    let bad_answers = [
        (500, b"{\"detail\": \"server error\"}".to_vec()),
        (
            200,
            b"{\"detail\": \"Invalid or missing Environment Key\"}".to_vec(),
        ),
        (200, serde_json::to_vec(&first).unwrap()[..100].to_vec()),
        (200, b"[]".to_vec()),
        // A document older than the one kept.
        (200, serde_json::to_vec(&older).unwrap()),
    ];
    let mut n = 0;
    for bad in bad_answers {
        let asked = upstream.requests.load(Ordering::SeqCst);
        *upstream.answer.lock().unwrap() = bad.clone();
        n += 1;
        relay_web_hook(&sidecar, n).await;
        wait_for_requests(&upstream, asked + 1).await;
        *upstream.answer.lock().unwrap() = (200, serde_json::to_vec(&first).unwrap());
        n += 1;
        relay_web_hook(&sidecar, n).await;
        wait_for_requests(&upstream, asked + 2).await;
        let (status, document) = served(&sidecar).await;
        assert_eq!(status, StatusCode::OK, "{document}");
        assert_eq!(
            split(document).0,
            first,
            "after {}",
            String::from_utf8_lossy(&bad.1)
        );
    }

    // A change upstream reaches the served document after the web hook that announced it, stamped
    // at or after that web hook's event, so receivers apply every later event after it.
    *upstream.answer.lock().unwrap() = (200, serde_json::to_vec(&newer).unwrap());
    let sequence = relay_web_hook(&sidecar, 100).await;
    wait_until("the newer upstream document is served", || async {
        split(served(&sidecar).await.1).0 == newer
    })
    .await;
    let (_, ordering) = split(served(&sidecar).await.1);
    assert!(
        ordering["last_sequence"].as_u64().unwrap() >= sequence,
        "{ordering}"
    );
    assert_eq!(ordering["instance"].as_str().unwrap().len(), 16);
    // Only the reader's key opens it.
    let url = sidecar.url("/api/v1/environment-document/");
    let (status, _) = send(
        Method::GET,
        &url,
        None,
        None,
        &[("x-environment-key", UPSTREAM_KEY)],
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Stored through the store: after a restart with the upstream down, it is still served.
    let dir = sidecar.stop().await;
    drop(upstream);
    let sidecar = restart(dir, "http://127.0.0.1:9/api/v1/").await;
    let (status, document) = served(&sidecar).await;
    assert_eq!(status, StatusCode::OK, "{document}");
    assert_eq!(split(document).0, newer);
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_first_good_fetch_the_document_is_unavailable() {
    let (upstream, upstream_url) = start_upstream().await;
    *upstream.answer.lock().unwrap() = (403, b"{\"detail\": \"no\"}".to_vec());
    let sidecar = Sidecar::start_with(&config(&upstream_url)).await;
    wait_for_requests(&upstream, 1).await;
    let (status, body) = served(&sidecar).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("upstream"),
        "{body}"
    );
    sidecar.stop().await;
}

/// A sidecar on the database left in `dir`, its upstream at `upstream_url`.
async fn restart(dir: tempfile::TempDir, upstream_url: &str) -> Sidecar {
    Sidecar::start_in(dir, &config(upstream_url)).await
}

//! An upstream Flagsmith as a source: a stand-in Flagsmith on 127.0.0.1 serves the documents that a
//! real Flagsmith v2.265.0 returned (`flagsmith-v2.265.0-live`), and the receiver's answers are
//! compared with the ones Flagsmith gave for the same state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

pub const LIVE: &str = "flagsmith-v2.265.0-live";
pub const ENVS: [(&str, u64, &str, &str); 2] = [
    (
        "live",
        44,
        "FsConfLiveClientKey001",
        "ser.FsConfLiveServerKey001",
    ),
    (
        "qa",
        45,
        "FsConfQaClientKey00002",
        "ser.FsConfQaServerKey00002",
    ),
];

/// What the stand-in answers for one server key.
#[derive(Clone)]
pub enum Answer {
    Document(Bytes),
    Status(u16, Bytes),
    /// Never answers (a fetch must time out).
    Hang,
}

/// A stand-in upstream Flagsmith: `GET /api/v1/environment-document/` by server key.
#[derive(Clone, Default)]
pub struct StandIn {
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    pub analytics: Arc<Mutex<Vec<Bytes>>>,
    /// Document requests taken, by server key.
    pub hits: Arc<Mutex<HashMap<String, u64>>>,
}

impl StandIn {
    pub async fn start() -> (StandIn, String) {
        let stand_in = StandIn::default();
        let router = axum::Router::new()
            .route(
                "/api/v1/environment-document/",
                axum::routing::get(serve_document),
            )
            .route(
                "/api/v1/analytics/flags/",
                axum::routing::post(take_analytics),
            )
            .with_state(stand_in.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (stand_in, url)
    }

    pub fn answer(&self, server_key: &str, answer: Answer) {
        self.answers
            .lock()
            .unwrap()
            .insert(server_key.to_owned(), answer);
    }
}

async fn serve_document(State(stand_in): State<StandIn>, headers: HeaderMap) -> impl IntoResponse {
    let key = headers
        .get("x-environment-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    *stand_in
        .hits
        .lock()
        .unwrap()
        .entry(key.to_owned())
        .or_default() += 1;
    let answer = stand_in.answers.lock().unwrap().get(key).cloned();
    match answer {
        Some(Answer::Document(bytes)) => (StatusCode::OK, bytes),
        Some(Answer::Status(status, bytes)) => (StatusCode::from_u16(status).unwrap(), bytes),
        Some(Answer::Hang) => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        None => (StatusCode::FORBIDDEN, Bytes::from_static(b"{}")),
    }
}

async fn take_analytics(State(stand_in): State<StandIn>, body: Bytes) -> StatusCode {
    stand_in.analytics.lock().unwrap().push(body);
    StatusCode::OK
}

pub fn step(n: usize) -> Value {
    read_json(format!("{CONFORMANCE}/{LIVE}/steps/{n:03}.json"))
}

/// A step's document for `env`, as bytes.
pub fn document(step: &Value, env: &str) -> Bytes {
    Bytes::from(serde_json::to_vec(&step["environment_documents"][env]).unwrap())
}

/// `[[environments]]` for both recorded environments, fetched from `url`.
pub fn environments_toml(url: &str, timeout_secs: u64) -> String {
    ENVS.iter()
        .map(|(_, id, client, server)| {
            format!(
                "[[environments]]\nid = {id}\nkeys = [\"{client}\"]\nserver_keys = [\"{server}\"]\n\
                 [environments.upstream]\nurl = \"{url}\"\nserver_key = {{ value = \"{server}\" }}\n\
                 poll_interval_secs = 60\ntimeout_secs = {timeout_secs}\n"
            )
        })
        .collect()
}

/// Makes every upstream environment fetch again (an audit-log web hook names no environment).
pub async fn trigger_fetch(receiver: &Receiver, n: u64) {
    let body = read(format!("{CONFORMANCE}/audit_log_created.json"));
    let signed = Signed::new(&body, &format!("audit-{n}"), None);
    let (status, answer) = receiver.post("/webhook", &signed.as_refs(), &body).await;
    assert_eq!(status, 200, "{answer}");
}

/// Waits until the receiver holds both environments' documents of `recorded` (a step).
pub async fn wait_for_step(receiver: &Receiver, recorded: &Value) {
    for (env, _, _, server) in ENVS {
        wait_for_document(receiver, server, &document(recorded, env)).await;
    }
}

/// Waits until the receiver holds `expected` as `server_key`'s environment document.
pub async fn wait_for_document(receiver: &Receiver, server_key: &str, expected: &Bytes) {
    let expected: Value = serde_json::from_slice(expected).unwrap();
    for _ in 0..600 {
        let (status, held) = receiver
            .get(
                "/api/v1/environment-document/",
                &[("x-environment-key", server_key)],
            )
            .await;
        if status == 200 && held == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the receiver never held the expected document for {server_key}");
}

/// The fields of a flag that say what it resolves to, and which state and identity decided.
fn essentials(flags: &Value) -> Vec<Value> {
    let mut flags: Vec<Value> = flags
        .as_array()
        .unwrap()
        .iter()
        .map(|flag| {
            json!({
                "name": flag["feature"]["name"], "enabled": flag["enabled"],
                "value": flag["feature_state_value"], "variant": flag.get("variant"),
                "id": flag["id"], "identity": flag["identity"],
            })
        })
        .collect();
    flags.sort_by_key(|flag| flag["name"].as_str().unwrap().to_owned());
    flags
}

/// Compares the receiver's `/flags/` and identity answers with Flagsmith's recorded ones.
pub async fn compare_step(receiver: &Receiver, recorded: &Value, n: usize) -> Vec<String> {
    let mut differences = Vec::new();
    for (env, _, client, _) in ENVS {
        let key = [("x-environment-key", client)];
        let (_, flags) = receiver.get("/api/v1/flags/", &key).await;
        if essentials(&flags) != essentials(&recorded["flags"][env]) {
            differences.push(format!("{env} /flags/"));
        }
        // With `use_identity_overrides_in_local_eval` off (qa, steps 36-44) the document carries
        // no identity overrides: those of the last document that did stay in force (36-40). The
        // override created at step 41 only a web hook carries: the live replay sends those.
        let document = &recorded["environment_documents"][env];
        if document["use_identity_overrides_in_local_eval"] == false && n >= 41 {
            continue;
        }
        for (identifier, identity) in recorded["identities"][env].as_object().unwrap() {
            let body =
                json!({"identifier": identifier, "traits": identity["traits_sent"]}).to_string();
            let headers = [
                ("x-environment-key", client),
                ("content-type", "application/json"),
            ];
            let (status, answer) = receiver
                .post("/api/v1/identities/", &headers, body.as_bytes())
                .await;
            assert_eq!(status, 200, "{answer}");
            let (found, wanted) = (
                essentials(&answer["flags"]),
                essentials(&identity["answer"]["flags"]),
            );
            if found != wanted {
                differences.push(format!(
                    "{env} {identifier}: found {found:?}, Flagsmith answered {wanted:?}"
                ));
            }
        }
    }
    differences
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recorded_step_answers_as_flagsmith_from_its_documents() {
    let (stand_in, url) = StandIn::start().await;
    let first = step(0);
    for (env, _, _, server) in ENVS {
        stand_in.answer(server, Answer::Document(document(&first, env)));
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(dir.path(), "", &environments_toml(&url, 10));
    let receiver = Receiver::start(dir.path(), &toml).await;
    let mut differences = Vec::new();
    for n in 0..50 {
        let recorded = step(n);
        for (env, _, _, server) in ENVS {
            stand_in.answer(server, Answer::Document(document(&recorded, env)));
        }
        trigger_fetch(&receiver, n as u64).await;
        wait_for_step(&receiver, &recorded).await;
        differences.extend(
            compare_step(&receiver, &recorded, n)
                .await
                .into_iter()
                .map(|d| format!("step {n:03}: {d}")),
        );
    }
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
    receiver.stop().await;
}

/// `/readyz`'s view of `env`'s fetches.
async fn fetch_status(receiver: &Receiver, env: u64) -> Value {
    let (_, ready) = receiver.get("/readyz", &[]).await;
    ready["documents"][env.to_string()].clone()
}

async fn metrics_text(receiver: &Receiver) -> String {
    let (_, text) = receiver.get("/metrics", &[]).await;
    text.as_str().unwrap_or_default().to_owned()
}

/// The receiver's value of `feature` in `/api/v1/flags/` for the live environment.
async fn live_value(receiver: &Receiver, feature: &str) -> Value {
    let (_, flags) = receiver
        .get("/api/v1/flags/", &[("x-environment-key", ENVS[0].2)])
        .await;
    flags
        .as_array()
        .unwrap()
        .iter()
        .find(|flag| flag["feature"]["name"] == feature)
        .map(|flag| flag["feature_state_value"].clone())
        .unwrap_or(Value::Null)
}

/// Starts a receiver on both recorded environments, holding step `n`'s documents.
pub async fn receiver_at_step(
    dir: &std::path::Path,
    n: usize,
    timeout_secs: u64,
) -> (Receiver, StandIn) {
    let (stand_in, url) = StandIn::start().await;
    let recorded = step(n);
    for (env, _, _, server) in ENVS {
        stand_in.answer(server, Answer::Document(document(&recorded, env)));
    }
    let toml = config_toml(dir, ANY_AGE, &environments_toml(&url, timeout_secs));
    let receiver = Receiver::start(dir, &toml).await;
    wait_for_step(&receiver, &recorded).await;
    (receiver, stand_in)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upstream_answers_are_refused_counted_and_the_last_good_document_stays() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, stand_in) = receiver_at_step(dir.path(), 20, 1).await;
    let (_, _, _, server) = ENVS[0];
    let good = document(&step(20), "live");
    let before = live_value(&receiver, "banner_text").await;
    let cases = [
        (
            "invalid",
            Answer::Status(200, Bytes::from_static(b"<html>busy</html>")),
        ),
        (
            "invalid",
            Answer::Status(200, Bytes::from_static(br#"{"id": 44}"#)),
        ),
        (
            "unauthorized",
            Answer::Status(401, Bytes::from_static(b"{}")),
        ),
        ("bad_status", Answer::Status(500, Bytes::from_static(b"{}"))),
        (
            "other_environment",
            Answer::Document(document(&step(20), "qa")),
        ),
        ("timeout", Answer::Hang),
        (
            "too_large",
            Answer::Document(Bytes::from(vec![b' '; 50 * 1024 * 1024])),
        ),
    ];
    for (n, (label, answer)) in cases.into_iter().enumerate() {
        stand_in.answer(server, answer);
        let failures = fetch_status(&receiver, 44).await["failures_in_a_row"]
            .as_u64()
            .unwrap();
        trigger_fetch(&receiver, 100 + n as u64).await;
        let series = format!(
            "flagpost_receiver_upstream_fetches_total{{environment=\"44\",result=\"{label}\"}}"
        );
        for _ in 0..600 {
            let status = fetch_status(&receiver, 44).await;
            if status["failures_in_a_row"].as_u64().unwrap() > failures
                && series_value(&metrics_text(&receiver).await, &series) >= 1.0
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            series_value(&metrics_text(&receiver).await, &series) >= 1.0,
            "{label} not counted"
        );
        let status = fetch_status(&receiver, 44).await;
        assert!(status["last_error"].is_string(), "{status}");
        // The last good document stays, and so do the answers.
        wait_for_document(&receiver, server, &good).await;
        assert_eq!(
            live_value(&receiver, "banner_text").await,
            before,
            "{label}"
        );
        let (status, ready) = receiver.get("/readyz", &[]).await;
        assert_eq!(
            status, 200,
            "a held document keeps the receiver ready: {ready}"
        );
    }
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_changes_a_lookup_at_once_and_the_next_document_supersedes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, stand_in) = receiver_at_step(dir.path(), 20, 10).await;
    let (_, _, _, server) = ENVS[0];
    // The upstream fails for a while: the web hook alone answers meanwhile.
    stand_in.answer(server, Answer::Status(500, Bytes::from_static(b"{}")));
    let body = flag_event(
        44,
        107,
        &Key::Default,
        false,
        true,
        json!("from a web hook"),
    );
    let signed = Signed::new(&body, "banner-1", None);
    let (status, answer) = receiver.post("/webhook", &signed.as_refs(), &body).await;
    assert_eq!((status, answer["status"].clone()), (200, json!("applied")));
    assert_eq!(
        live_value(&receiver, "banner_text").await,
        json!("from a web hook"),
        "the lookup changes as soon as the web hook is acknowledged"
    );
    // The next document was fetched after the web hook: it holds the truth and replaces it.
    let next = step(21);
    stand_in.answer(server, Answer::Document(document(&next, "live")));
    trigger_fetch(&receiver, 1).await;
    wait_for_document(&receiver, server, &document(&next, "live")).await;
    let recorded = next["flags"]["live"]
        .as_array()
        .unwrap()
        .iter()
        .find(|flag| flag["feature"]["name"] == "banner_text")
        .unwrap()["feature_state_value"]
        .clone();
    assert_eq!(live_value(&receiver, "banner_text").await, recorded);
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_refresh_keeps_the_last_committed_document() {
    let dir = tempfile::tempdir().unwrap();
    let (stand_in, url) = StandIn::start().await;
    let (_, _, client, server) = ENVS[0];
    let committed = document(&step(30), "live");
    stand_in.answer(server, Answer::Document(committed.clone()));
    stand_in.answer(ENVS[1].3, Answer::Document(document(&step(30), "qa")));
    let port = free_port();
    let config = test_config(dir.path())
        .listen(([127, 0, 0, 1], port).into())
        .intake(ANY_AGE)
        .extra(&environments_toml(&url, 600))
        .write();
    let binary = crate::crash::start_binary(&config, port).await;
    let at = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let document_of = |bytes: &Bytes| serde_json::from_slice::<Value>(bytes).unwrap();
    let held = || async {
        request(
            "GET",
            &at("/api/v1/environment-document/"),
            &[("x-environment-key", server)],
            Vec::new(),
        )
        .await
    };
    for _ in 0..600 {
        if held().await == (200, document_of(&committed)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(held().await, (200, document_of(&committed)));
    // A refresh hangs in the middle of its answer; the process dies under it.
    stand_in.answer(server, Answer::Hang);
    let body = read(format!("{CONFORMANCE}/audit_log_created.json"));
    let signed = Signed::new(&body, "audit-kill", None);
    let (status, _) = request("POST", &at("/webhook"), &signed.as_refs(), body).await;
    assert_eq!(status, 200);
    let mut binary = binary;
    binary.kill9();

    // Restarted with the upstream down, it answers from the document it had committed.
    stand_in.answer(server, Answer::Status(500, Bytes::from_static(b"{}")));
    let mut restarted = crate::crash::start_binary(&config, port).await;
    assert_eq!(held().await, (200, document_of(&committed)));
    let (status, ready) = request("GET", &at("/readyz"), &[], Vec::new()).await;
    assert_eq!(status, 200, "{ready}");
    let (status, flags) = request(
        "GET",
        &at("/api/v1/flags/"),
        &[("x-environment-key", client)],
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        flags.as_array().map(Vec::len),
        step(30)["flags"]["live"].as_array().map(Vec::len)
    );
    restarted.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_identity_route_takes_traits_and_says_what_decided_each_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, _stand_in) = receiver_at_step(dir.path(), 33, 10).await;
    let recorded = &step(33)["identities"]["live"]["u-anna"];
    let traits = crate::live_replay::traits_sent(recorded);
    let body = json!({ "traits": traits }).to_string();
    let (status, answer) = receiver
        .post(
            "/v1/environments/44/identities/u-anna/flags",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let mut sources = Vec::new();
    for flag in recorded["answer"]["flags"].as_array().unwrap() {
        let name = &flag["feature"]["name"];
        let ours = answer["flags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| &f["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {answer}"));
        assert_eq!(ours["value"], flag["feature_state_value"], "{name}");
        assert_eq!(ours["enabled"], flag["enabled"], "{name}");
        let expected = if !flag["identity"].is_null() {
            "identity"
        } else if !flag["feature_segment"].is_null() {
            "segment"
        } else {
            ours["source"].as_str().unwrap()
        };
        assert_eq!(ours["source"], expected, "{name}: {ours}");
        if expected == "segment" {
            assert!(ours["segment"].is_string(), "{ours}");
        }
        sources.push(expected.to_owned());
    }
    for source in ["identity", "segment"] {
        assert!(
            sources.iter().any(|s| s == source),
            "no {source} in {sources:?}"
        );
    }
    // Without traits, the same identity is in no segment.
    let (_, bare) = receiver
        .get("/v1/environments/44/identities/u-anna/flags", &[])
        .await;
    assert!(
        bare["flags"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["source"] != "segment"),
        "{bare}"
    );
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_and_the_native_listing_carry_the_documents() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, _stand_in) = receiver_at_step(dir.path(), 33, 10).await;
    let recorded = step(33);
    let expected = recorded["environment_documents"]["live"].clone();
    // Both environments' documents: a snapshot written between the two fetches holds one.
    let snapshot = receiver
        .snapshot_when("the live document and qa's", |s| {
            s["documents"].as_array().is_some_and(|docs| {
                docs.len() == 2 && docs.iter().any(|d| d["document"] == expected)
            })
        })
        .await;
    assert_eq!(snapshot["documents"].as_array().unwrap().len(), 2);
    // The native listing is the document's: every feature, with its segment overrides.
    let flags = receiver.env_flags(44).await;
    for flag in recorded["flags"]["live"].as_array().unwrap() {
        let ours = flags
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == flag["feature"]["id"])
            .unwrap_or_else(|| panic!("{} missing from {flags}", flag["feature"]["name"]));
        assert_eq!(ours["value"], flag["feature_state_value"]);
        assert_eq!(ours["enabled"], flag["enabled"]);
    }
    let banner = flags
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "banner_text")
        .unwrap();
    assert!(
        !banner["segment_overrides"].as_array().unwrap().is_empty(),
        "{banner}"
    );
    let environment = snapshot["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["environment"]["id"] == 44)
        .unwrap();
    let with_identities = environment["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "banner_text")
        .unwrap();
    assert!(
        with_identities["identity_overrides"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["identifier"] == "u-anna"),
        "{with_identities}"
    );
    receiver.stop().await;
}

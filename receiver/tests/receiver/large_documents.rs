//! A document with many identity overrides (large enough that the receiver holds its bytes
//! compressed): served as Flagsmith sent it, its overrides evaluated, and both again after a
//! kill -9 restart from the redb file alone.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::common::*;
use crate::upstream::Answer;
use crate::upstream::{ENVS, StandIn, document, environments_toml, step};

/// Identities added to the recorded document: past a MiB of JSON.
const BULK_IDENTITIES: u64 = 6_000;

/// Step 30's live document with [`BULK_IDENTITIES`] more identities, each overriding
/// `banner_text` (feature 107) with a value of its own.
fn bulk_document() -> Bytes {
    let mut doc: Value = serde_json::from_slice(&document(&step(30), "live")).unwrap();
    let overrides = doc["identity_overrides"].as_array_mut().unwrap();
    for n in 0..BULK_IDENTITIES {
        overrides.push(json!({
            "composite_key": format!("FsConfLiveClientKey001_bulk-{n}"),
            "created_date": "2026-12-02T02:22:05.873283+00:00", "dashboard_alias": null,
            "django_id": 100_000 + n, "environment_api_key": "FsConfLiveClientKey001",
            "identifier": format!("bulk-{n}"),
            "identity_features": [{"django_id": 200_000 + n, "enabled": true,
                "feature": {"id": 107, "name": "banner_text", "type": "STANDARD"},
                "feature_segment": null, "feature_state_value": format!("bulk banner {n}"),
                "featurestate_uuid": format!("00000000-0000-4000-8000-{n:012}"),
                "multivariate_feature_state_values": []}],
            "identity_traits": [], "identity_uuid": format!("00000000-0000-4000-9000-{n:012}"),
        }));
    }
    let bytes = serde_json::to_vec(&doc).unwrap();
    assert!(bytes.len() > 1 << 20, "{} bytes", bytes.len());
    Bytes::from(bytes)
}

/// `banner_text`'s value for `identifier`, as the SDK route answers it.
async fn banner_for(port: u16, identifier: &str) -> Value {
    let body = json!({"identifier": identifier, "traits": []}).to_string();
    let (status, answer) = request(
        "POST",
        &format!("http://127.0.0.1:{port}/api/v1/identities/"),
        &[
            ("x-environment-key", ENVS[0].2),
            ("content-type", "application/json"),
        ],
        body.into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let flags = answer["flags"].as_array().unwrap();
    let banner = flags.iter().find(|f| f["feature"]["name"] == "banner_text");
    banner.unwrap()["feature_state_value"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_document_is_served_as_sent_and_evaluated_also_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (stand_in, url) = StandIn::start().await;
    let bulk = bulk_document();
    let server = ENVS[0].3;
    stand_in.answer(server, Answer::Document(bulk.clone()));
    stand_in.answer(ENVS[1].3, Answer::Document(document(&step(30), "qa")));
    let port = free_port();
    let config = test_config(dir.path())
        .listen(([127, 0, 0, 1], port).into())
        .intake(ANY_AGE)
        .extra(&environments_toml(&url, 600))
        .write();
    let expected: Value = serde_json::from_slice(&bulk).unwrap();
    let held = || async {
        request(
            "GET",
            &format!("http://127.0.0.1:{port}/api/v1/environment-document/"),
            &[("x-environment-key", server)],
            Vec::new(),
        )
        .await
    };
    let mut binary = crate::crash::start_binary(&config, port).await;
    for _ in 0..600 {
        if held().await == (200, expected.clone()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(held().await, (200, expected.clone()));
    assert_eq!(
        banner_for(port, "bulk-4321").await,
        json!("bulk banner 4321")
    );
    assert_eq!(banner_for(port, "u-anna").await, json!("Anna banner"));
    binary.kill9();

    // Restarted with the upstream down: everything comes from the redb file.
    stand_in.answer(server, Answer::Status(500, Bytes::from_static(b"{}")));
    let mut restarted = crate::crash::start_binary(&config, port).await;
    assert_eq!(held().await, (200, expected));
    assert_eq!(banner_for(port, "bulk-17").await, json!("bulk banner 17"));
    assert_eq!(banner_for(port, "u-anna").await, json!("Anna banner"));
    restarted.kill9();
}

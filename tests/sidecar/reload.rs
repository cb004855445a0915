//! Configuration reload: a valid edit applies live, an invalid one keeps the last good
//! configuration, and a setting that needs a restart is reported, not half-applied.

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::common::{Process, config_toml, free_addr, metric, send, wait_until};

#[tokio::test]
async fn valid_edits_apply_live_and_invalid_ones_keep_the_last_good_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let path = dir.path().join("flagpost.toml");
    std::fs::write(&path, config_toml(dir.path(), addr, "")).unwrap();
    let process = Process::start(&path, addr);
    process.wait_ready().await;
    let base = process.url("");
    let create = |name: &str| serde_json::to_vec(&json!({"project": 1, "name": name})).unwrap();

    // A second environment appears live (as a rename-save, the way editors write).
    let second =
        "[[environments]]\nid = 2\nname = \"Staging\"\napi_key = \"staging-key\"\nproject = 1\n";
    let tmp = dir.path().join(".flagpost.toml.tmp");
    std::fs::write(&tmp, config_toml(dir.path(), addr, second)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    wait_until("the new environment is served", || async {
        let (status, _) = send(
            Method::GET,
            &format!("{base}/api/v1/environments/Staging/document"),
            Some(crate::common::TOKEN),
            None,
            &[],
        )
        .await
        .unwrap();
        status == StatusCode::OK
    })
    .await;

    // An invalid file is refused; the last good configuration stays (Staging still served).
    std::fs::write(&path, "listen = 42\n").unwrap();
    wait_until("the invalid file is counted", || async {
        metric(&base, "flagpost_config_reloads_total{result=\"invalid\"}").await >= 1
    })
    .await;
    let (status, body) = send(
        Method::POST,
        &format!("{base}/api/v1/features"),
        Some(crate::common::TOKEN),
        Some(create("after_invalid")),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = send(
        Method::GET,
        &format!("{base}/api/v1/environments/Staging/document"),
        Some(crate::common::TOKEN),
        None,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);

    // A new listen address cannot apply live: reported, and the rest still applies.
    let moved =
        config_toml(dir.path(), free_addr(), "").replace("name = \"tests\"", "name = \"renamed\"");
    std::fs::write(&path, moved).unwrap();
    wait_until("the restart-only change is reported", || async {
        metric(
            &base,
            "flagpost_config_reloads_total{result=\"needs_restart\"}",
        )
        .await
            >= 1
    })
    .await;
    let (status, body) = send(
        Method::POST,
        &format!("{base}/api/v1/features"),
        Some(crate::common::TOKEN),
        Some(create("still_here")),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        status,
        StatusCode::CREATED,
        "still served on the old address: {body}"
    );
    assert_eq!(body["events"].as_array().unwrap().len(), 2);
}

/// Issue 8, item 4: a file truncated while running (`: > flagpost.toml`, as editors and sync tools
/// do before writing) is refused and counted; the last good configuration, tokens included, stays.
#[tokio::test]
async fn an_emptied_file_is_refused_and_the_last_good_configuration_stays() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let path = dir.path().join("flagpost.toml");
    std::fs::write(&path, config_toml(dir.path(), addr, "")).unwrap();
    let process = Process::start(&path, addr);
    process.wait_ready().await;
    let base = process.url("");

    std::fs::write(&path, " \n\t\n").unwrap();
    wait_until("the emptied file is counted as invalid", || async {
        metric(&base, "flagpost_config_reloads_total{result=\"invalid\"}").await >= 1
    })
    .await;
    let body = serde_json::to_vec(&json!({"project": 1, "name": "after_empty"})).unwrap();
    let (status, body) = send(
        Method::POST,
        &format!("{base}/api/v1/features"),
        Some(crate::common::TOKEN),
        Some(body),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::CREATED, "the token still works: {body}");
    assert_eq!(
        metric(&base, "flagpost_config_reloads_total{result=\"applied\"}").await,
        0
    );
}

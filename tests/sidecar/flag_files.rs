//! Flag files as editors, deploy tools and Kubernetes write them: each way of saving gives
//! exactly the events of what changed, and bad or missing files change nothing.

use std::path::Path;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Sidecar, call, events_after, last_sequence, metric, wait_until};

const V1: &str = "[features.banner]\nenabled = true\nvalue = 1\n";
const V2: &str = "[features.banner]\nenabled = true\nvalue = 2\n";

async fn outcomes(sidecar: &Sidecar, outcome: &str) -> u64 {
    metric(
        &sidecar.url(""),
        &format!("flagpost_flag_files_total{{outcome=\"{outcome}\"}}"),
    )
    .await
}

/// Waits until the watcher has reported `outcome` more than `before` times.
async fn wait_for(sidecar: &Sidecar, outcome: &str, before: u64) {
    wait_until(&format!("a flag file is {outcome}"), || async {
        outcomes(sidecar, outcome).await > before
    })
    .await;
}

fn rename_save(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn summary(events: &[(Value, Value)]) -> Vec<String> {
    events
        .iter()
        .map(|(_, body)| {
            let data = &body["data"];
            match body["event_type"].as_str().unwrap() {
                "AUDIT_LOG_CREATED" => "audit".to_owned(),
                t => format!("{t} {}", data["new_state"]["feature_state_value"]),
            }
        })
        .collect()
}

#[tokio::test]
async fn every_way_of_saving_gives_exactly_the_events_of_the_change() {
    let sidecar = Sidecar::start().await;
    let base = sidecar.url("");
    let file = sidecar.dir.path().join("flags/Development.toml");

    // An in-place write creates the feature.
    let applied = outcomes(&sidecar, "applied").await;
    std::fs::write(&file, V1).unwrap();
    wait_for(&sidecar, "applied", applied).await;
    let events = events_after(&base, 0).await;
    assert_eq!(summary(&events), ["FLAG_UPDATED 1", "audit"]);
    assert_eq!(
        events[0].1["data"]["changed_by"],
        file.display().to_string()
    );

    // A rename-save (vim, most editors) changes the value.
    let seq = last_sequence(&base).await;
    let applied = outcomes(&sidecar, "applied").await;
    rename_save(&file, V2);
    wait_for(&sidecar, "applied", applied).await;
    let events = events_after(&base, seq).await;
    assert_eq!(summary(&events), ["FLAG_UPDATED 2", "audit"]);
    assert_eq!(
        events[0].1["data"]["previous_state"]["feature_state_value"],
        1
    );

    // Re-saving the same content, byte for byte or with only a comment added, emits nothing.
    let seq = last_sequence(&base).await;
    rename_save(&file, V2);
    let applied = outcomes(&sidecar, "applied").await;
    rename_save(&file, &format!("# reviewed\n{V2}"));
    wait_for(&sidecar, "applied", applied).await;
    assert_eq!(last_sequence(&base).await, seq);

    // The API cannot change what a file owns.
    let (status, body) = call(
        Method::PUT,
        &sidecar.url("/api/v1/environments/1/features/banner/state"),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    sidecar.stop().await;
}

#[tokio::test]
async fn a_kubernetes_symlink_swap_is_seen() {
    let sidecar = Sidecar::start().await;
    let base = sidecar.url("");
    let flags = sidecar.dir.path().join("flags");
    // The layout a ConfigMap volume has: versioned folders, `..data` pointing at the current one,
    // and the visible file a link through `..data`.
    for (version, text) in [("..v1", V1), ("..v2", V2)] {
        std::fs::create_dir(flags.join(version)).unwrap();
        std::fs::write(flags.join(version).join("Development.toml"), text).unwrap();
    }
    let applied = outcomes(&sidecar, "applied").await;
    std::os::unix::fs::symlink("..v1", flags.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/Development.toml", flags.join("Development.toml")).unwrap();
    wait_for(&sidecar, "applied", applied).await;
    let seq = last_sequence(&base).await;

    let applied = outcomes(&sidecar, "applied").await;
    std::os::unix::fs::symlink("..v2", flags.join("..data_tmp")).unwrap();
    std::fs::rename(flags.join("..data_tmp"), flags.join("..data")).unwrap();
    wait_for(&sidecar, "applied", applied).await;
    assert_eq!(
        summary(&events_after(&base, seq).await),
        ["FLAG_UPDATED 2", "audit"]
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn invalid_deleted_and_emptied_files_change_nothing() {
    let sidecar = Sidecar::start().await;
    let base = sidecar.url("");
    let file = sidecar.dir.path().join("flags/Development.toml");
    let applied = outcomes(&sidecar, "applied").await;
    std::fs::write(&file, V1).unwrap();
    wait_for(&sidecar, "applied", applied).await;
    let seq = last_sequence(&base).await;
    let (_, before) = call(
        Method::GET,
        &sidecar.url("/api/v1/environments/1/document"),
        None,
    )
    .await;

    // Invalid: a typo'd field, then a value of a type flags cannot hold.
    for bad in [
        "[features.banner]\nenabled = true\nvalu = 2\n",
        "[features.banner]\nvalue = 2021-01-01\n",
        "[features.banner\n",
    ] {
        let invalid = outcomes(&sidecar, "invalid").await;
        rename_save(&file, bad);
        wait_for(&sidecar, "invalid", invalid).await;
        assert_eq!(
            last_sequence(&base).await,
            seq,
            "an invalid file emitted events: {bad}"
        );
    }
    assert!(
        metric(
            &base,
            "flagpost_refused_total{source=\"file\",reason=\"invalid\"}"
        )
        .await
            >= 3
    );

    // Emptied, then deleted: nothing is deleted.
    let ignored = outcomes(&sidecar, "ignored").await;
    rename_save(&file, "# nothing here yet\n");
    wait_for(&sidecar, "ignored", ignored).await;
    let ignored = outcomes(&sidecar, "ignored").await;
    std::fs::remove_file(&file).unwrap();
    wait_for(&sidecar, "ignored", ignored).await;
    assert_eq!(last_sequence(&base).await, seq);
    let (_, after) = call(
        Method::GET,
        &sidecar.url("/api/v1/environments/1/document"),
        None,
    )
    .await;
    assert_eq!(after, before);

    // A file that drops a feature it declared deletes it.
    let applied = outcomes(&sidecar, "applied").await;
    std::fs::write(&file, "[features.other]\nenabled = false\n").unwrap();
    wait_for(&sidecar, "applied", applied).await;
    let kinds: Vec<String> = events_after(&base, seq)
        .await
        .iter()
        .map(|(_, b)| {
            format!(
                "{} {}",
                b["event_type"].as_str().unwrap(),
                b["data"]["previous_state"]["feature"]["name"]
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "FLAG_UPDATED null",
            "AUDIT_LOG_CREATED null",
            "FLAG_DELETED \"banner\"",
            "AUDIT_LOG_CREATED null"
        ]
    );
    sidecar.stop().await;
}

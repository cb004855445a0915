//! Segment files (`<project>.segments.toml`) and multivariate options in flag files: applied,
//! owned by the files, and bad ones refused with nothing changed.

use std::process::Command;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Sidecar, call, config_toml, free_addr, last_sequence, metric, wait_until};

const SEGMENTS: &str = r#"
[segments.beta]
description = "early access"

[[segments.beta.rules]]
type = "ALL"

[[segments.beta.rules.conditions]]
property = "plan"
operator = "EQUAL"
value = "beta"

[[segments.beta.rules.rules]]
type = "ANY"
conditions = [
  { property = "app", operator = "GREATER_THAN_INCLUSIVE", value = "2.1.0:semver" },
  { operator = "PERCENTAGE_SPLIT", value = "30" },
]
"#;

const FLAGS: &str = r#"
[features.layout]
enabled = true
value = "list"

[[features.layout.options]]
value = "grid"
allocation = 30

[[features.layout.options]]
value = "cards"
allocation = 70

[[features.layout.segments]]
name = "beta"
enabled = true
value = "beta-layout"
"#;

async fn outcomes(sidecar: &Sidecar, outcome: &str) -> u64 {
    metric(
        &sidecar.url(""),
        &format!("flagpost_flag_files_total{{outcome=\"{outcome}\"}}"),
    )
    .await
}

/// Writes `text` to `name` in the flag directory and waits until a pass reports `outcome` for it.
async fn write_and_wait(sidecar: &Sidecar, name: &str, text: &str, outcome: &str) {
    let before = outcomes(sidecar, outcome).await;
    std::fs::write(sidecar.dir.path().join("flags").join(name), text).unwrap();
    wait_until(&format!("{name} is {outcome}"), || async {
        outcomes(sidecar, outcome).await > before
    })
    .await;
}

async fn segments(sidecar: &Sidecar) -> Value {
    call(
        Method::GET,
        &sidecar.url("/api/v1/segments?project=1"),
        None,
    )
    .await
    .1
}

async fn layout(sidecar: &Sidecar) -> Value {
    let (_, document) = call(
        Method::GET,
        &sidecar.url("/api/v1/environments/1/document"),
        None,
    )
    .await;
    document["features"][0].clone()
}

#[tokio::test]
async fn segment_files_define_segments_that_flag_files_override_and_the_files_own() {
    let sidecar = Sidecar::start().await;
    let base = sidecar.url("");
    write_and_wait(&sidecar, "Default.segments.toml", SEGMENTS, "applied").await;
    let listed = segments(&sidecar).await;
    let beta = &listed["segments"][0];
    assert_eq!(beta["name"], "beta");
    assert_eq!(beta["owner"], "files");
    assert_eq!(
        beta["rules"][0]["rules"][0]["conditions"][1]["operator"],
        "PERCENTAGE_SPLIT"
    );
    let id = beta["id"].as_u64().unwrap();

    write_and_wait(&sidecar, "Development.toml", FLAGS, "applied").await;
    let feature = layout(&sidecar).await;
    assert_eq!(feature["segment_overrides"][0]["segment"]["id"], id);
    let (_, options) = call(
        Method::GET,
        &sidecar.url(&format!(
            "/api/v1/features/{}/multivariate-options",
            feature["feature"]["id"]
        )),
        None,
    )
    .await;
    let values: Vec<Value> = options["multivariate_options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["value"].clone())
        .collect();
    assert_eq!(values, [json!("grid"), json!("cards")]);

    // The API cannot change what the files own.
    let (status, body) = call(
        Method::PATCH,
        &sidecar.url(&format!("/api/v1/segments/{id}")),
        Some(json!({"description": "mine"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Bad rules or allocations in either file: refused, nothing changed.
    let sequence = last_sequence(&base).await;
    let (before_segments, before_layout) = (segments(&sidecar).await, layout(&sidecar).await);
    let bad_segments = [
        SEGMENTS.replace("\"EQUAL\"", "\"LIKE\""),
        SEGMENTS.replace("value = \"30\"", "value = \"130\""),
        SEGMENTS.replace("2.1.0:semver", "2.1:semver"),
        SEGMENTS.replace(
            "value = \"beta\"",
            "value = \"beta\"\n\n[[segments.beta.rules.conditions]]\nproperty = \"n\"\noperator = \"REGEX\"\nvalue = \"[\"",
        ),
    ];
    for bad in &bad_segments {
        write_and_wait(&sidecar, "Default.segments.toml", bad, "invalid").await;
    }
    let bad_flags = [
        FLAGS.replace("allocation = 70", "allocation = 71"),
        FLAGS.replace("allocation = 30", "allocation = -1"),
        FLAGS.replace("name = \"beta\"", "name = \"gamma\""),
    ];
    for (i, bad) in bad_flags.iter().enumerate() {
        // The last one is valid as a file but names no segment: the store refuses it.
        let outcome = if i == 2 { "not_applied" } else { "invalid" };
        write_and_wait(&sidecar, "Development.toml", bad, outcome).await;
    }
    assert_eq!(last_sequence(&base).await, sequence, "no event was written");
    assert_eq!(segments(&sidecar).await, before_segments);
    assert_eq!(layout(&sidecar).await, before_layout);
    sidecar.stop().await;
}

#[test]
fn check_reports_bad_segment_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flagpost.toml");
    std::fs::write(&path, config_toml(dir.path(), free_addr(), "")).unwrap();
    std::fs::write(dir.path().join("flags/Default.segments.toml"), SEGMENTS).unwrap();
    std::fs::write(dir.path().join("flags/Development.toml"), FLAGS).unwrap();
    let check = || {
        let output = Command::new(env!("CARGO_BIN_EXE_flagpost"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout);
        (output.status.success(), text)
    };
    let (ok, text) = check();
    assert!(ok, "{text}");

    let bad = SEGMENTS.replace("\"EQUAL\"", "\"LIKE\"");
    std::fs::write(dir.path().join("flags/Default.segments.toml"), bad).unwrap();
    std::fs::write(dir.path().join("flags/Nowhere.segments.toml"), SEGMENTS).unwrap();
    let (ok, text) = check();
    assert!(!ok);
    assert!(
        text.contains("Default.segments.toml:2: segment beta: segment rules[0].conditions[0]"),
        "{text}"
    );
    assert!(text.contains("no project named \"Nowhere\""), "{text}");
}

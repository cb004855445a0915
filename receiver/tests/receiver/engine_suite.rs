//! Flagsmith's engine suite (`shared/conformance/flagsmith-engine-test-data`): every case through
//! the evaluation that answers `POST /api/v1/identities/` (a prepared environment, evaluated for
//! one identity).

use std::collections::HashMap;
use std::path::PathBuf;

use flagpost_receiver::evaluation::{IdentityInput, PreparedEnvironment};

fn cases_dir() -> PathBuf {
    PathBuf::from(crate::common::CONFORMANCE).join("flagsmith-engine-test-data/test_cases")
}

/// A case file may hold `//` comment lines (JSON with comments); the rest is JSON.
fn read_case(path: &PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    let json: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The suite's `DEFAULT` is what the engine crate calls `STATIC` when no segment targets the
/// feature; both mean "the environment default decided".
fn same_reason(expected: &str, found: &str) -> bool {
    expected == found || (expected == "DEFAULT" && found == "STATIC")
}

fn check_case(path: &PathBuf) -> Result<(), String> {
    let case = read_case(path);
    let mut context = case["context"].clone();
    let identity = context.as_object_mut().unwrap().remove("identity");
    let prepared = PreparedEnvironment::from_context(
        serde_json::from_value(context).map_err(|e| format!("context: {e}"))?,
    );
    let identity = identity
        .filter(|v| !v.is_null())
        .map(|identity| IdentityInput {
            identifier: identity["identifier"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            key: identity["key"].as_str().map(str::to_owned),
            traits: serde_json::from_value(identity["traits"].clone()).unwrap_or_default(),
        });
    let evaluation = prepared.evaluate(identity.as_ref(), &[]);
    let expected = case["result"]["flags"].as_object().unwrap();
    if evaluation.flags.len() != expected.len() {
        return Err(format!(
            "{} flags, expected {}",
            evaluation.flags.len(),
            expected.len()
        ));
    }
    for flag in &evaluation.flags {
        let want = &expected[&flag.name];
        let found = serde_json::json!({
            "enabled": flag.enabled, "value": flag.value, "variant": flag.variant,
        });
        let wanted = serde_json::json!({
            "enabled": want["enabled"], "value": want["value"], "variant": want["variant"],
        });
        if found != wanted || !same_reason(want["reason"].as_str().unwrap(), &flag.reason) {
            return Err(format!(
                "{}: found {found} ({}), expected {wanted} ({})",
                flag.name, flag.reason, want["reason"]
            ));
        }
    }
    let mut segments = evaluation.segments.clone();
    segments.sort();
    let mut want: Vec<String> = case["result"]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    want.sort();
    if segments != want {
        return Err(format!("segments {segments:?}, expected {want:?}"));
    }
    Ok(())
}

#[test]
fn every_case_of_flagsmiths_engine_suite_gives_the_expected_flags() {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "json" || ext == "jsonc")
        })
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 199, "the suite has 199 cases");
    let failures: HashMap<String, String> = paths
        .iter()
        .filter_map(|path| {
            check_case(path)
                .err()
                .map(|e| (path.file_name().unwrap().to_string_lossy().into_owned(), e))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
}

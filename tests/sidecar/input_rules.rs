//! What a change may say: integers within 64 bits (issue 8, item 12), feature names that survive
//! URLs and routes, and Flagsmith's feature types (item 14). Each refused with 422 by the API
//! with nothing changed, and each refused in a flag file.

use std::process::Command;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Sidecar, TOKEN, call, config_toml, free_addr, last_sequence, send};

/// Sends `body` as written: `json!` cannot hold the integers these tests need.
async fn send_raw(
    sidecar: &Sidecar,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, Value) {
    send(
        method,
        &sidecar.url(path),
        Some(TOKEN),
        Some(body.as_bytes().to_vec()),
        &[],
    )
    .await
    .unwrap()
}

async fn document(sidecar: &Sidecar) -> Value {
    call(
        Method::GET,
        &sidecar.url("/api/v1/environments/1/document"),
        None,
    )
    .await
    .1
}

#[tokio::test]
async fn integers_outside_64_bits_are_refused_with_422() {
    let sidecar = Sidecar::start().await;
    let (status, body) = call(
        Method::POST,
        &sidecar.url("/api/v1/features"),
        Some(json!({"project": 1, "name": "limit"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let patch = format!("/api/v1/features/{}", body["feature"]["id"]);
    let before = document(&sidecar).await;
    let sequence = last_sequence(&sidecar.url("")).await;
    let state = "/api/v1/environments/1/features/limit/state";
    let segment = "/api/v1/environments/1/features/limit/segments/7";
    for wide in [
        "18446744073709551615",
        "12345678901234567890123",
        "-9223372036854775809",
    ] {
        let cases = [
            (Method::PUT, state, format!(r#"{{"value": {wide}}}"#)),
            (Method::PUT, segment, format!(r#"{{"priority": {wide}}}"#)),
            (Method::PUT, segment, format!(r#"{{"value": [{wide}]}}"#)),
            (
                Method::POST,
                "/api/v1/features",
                format!(r#"{{"project": 1, "name": "wide", "initial_value": {wide}}}"#),
            ),
            (
                Method::POST,
                "/api/v1/features",
                format!(r#"{{"project": {wide}, "name": "wide"}}"#),
            ),
            (
                Method::PATCH,
                patch.as_str(),
                format!(r#"{{"initial_value": {wide}}}"#),
            ),
        ];
        for (method, path, body) in cases {
            let (status, answer) = send_raw(&sidecar, method.clone(), path, &body).await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{method} {path} {body}: {answer}"
            );
            let error = answer["error"].as_str().unwrap();
            assert!(error.contains(wide) && error.contains("range"), "{error}");
        }
    }
    assert_eq!(document(&sidecar).await, before);
    assert_eq!(last_sequence(&sidecar.url("")).await, sequence);

    // The bounds themselves are taken and kept exactly, as are strings of digits and floats.
    for (body, stored) in [
        (
            r#"{"value": 9223372036854775807}"#,
            json!(9223372036854775807_i64),
        ),
        (
            r#"{"value": -9223372036854775808}"#,
            json!(-9223372036854775808_i64),
        ),
        (
            r#"{"value": "18446744073709551615"}"#,
            json!("18446744073709551615"),
        ),
        (r#"{"value": 1.5e300}"#, json!(1.5e300)),
    ] {
        let (status, answer) = send_raw(&sidecar, Method::PUT, state, body).await;
        assert_eq!(status, StatusCode::OK, "{body}: {answer}");
        assert_eq!(document(&sidecar).await["features"][0]["value"], stored);
    }
    sidecar.stop().await;
}

#[tokio::test]
async fn feature_names_and_types_follow_the_documented_rule() {
    let sidecar = Sidecar::start().await;
    let sequence = last_sequence(&sidecar.url("")).await;
    let script = format!("<script>{}</script>", "x".repeat(30_000));
    let long = "n".repeat(151);
    let refused = [
        json!({"project": 1, "name": "."}),
        json!({"project": 1, "name": ".."}),
        json!({"project": 1, "name": "123"}),
        json!({"project": 1, "name": ""}),
        json!({"project": 1, "name": long}),
        json!({"project": 1, "name": "a/b"}),
        json!({"project": 1, "name": "a%2Fb"}),
        json!({"project": 1, "name": "caf\u{e9}"}),
        json!({"project": 1, "name": "ok", "type": script}),
        json!({"project": 1, "name": "ok", "type": "standard"}),
        json!({"project": 1, "name": "ok", "type": "CONFIG"}),
    ];
    for body in refused {
        let (status, answer) = call(
            Method::POST,
            &sidecar.url("/api/v1/features"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains("name") || error.contains("type"), "{error}");
        assert!(error.len() < 300, "the error repeats the input: {error}");
    }
    assert_eq!(last_sequence(&sidecar.url("")).await, sequence);

    let mut id = 0;
    for (name, feature_type) in [("v1.2", "STANDARD"), ("1st-try_b", "MULTIVARIATE")] {
        let body = json!({"project": 1, "name": name, "type": feature_type});
        let (status, answer) =
            call(Method::POST, &sidecar.url("/api/v1/features"), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["feature"]["type"], feature_type, "{answer}");
        id = answer["feature"]["id"].as_u64().unwrap();
    }
    let sequence = last_sequence(&sidecar.url("")).await;
    let (status, answer) = call(
        Method::PATCH,
        &sidecar.url(&format!("/api/v1/features/{id}")),
        Some(json!({"type": "FLAG"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(last_sequence(&sidecar.url("")).await, sequence);
    sidecar.stop().await;
}

/// `flagpost check` reads flag files exactly as the watcher does, and says why it refuses one.
#[test]
fn flag_files_refuse_wide_integers_bad_names_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flagpost.toml");
    std::fs::write(&config, config_toml(dir.path(), free_addr(), "")).unwrap();
    let flags = dir.path().join("flags/Development.toml");
    let cases = [
        (
            "[features.f]\nvalue = 18446744073709551615\n",
            "18446744073709551615",
        ),
        (
            "[features.f]\nvalue = 12345678901234567890123\n",
            "12345678901234567890123",
        ),
        (
            "[features.f]\n[features.f.identities.u]\nvalue = 18446744073709551615\n",
            "18446744073709551615",
        ),
        (
            "[[features.f.segments]]\nid = 18446744073709551615\nname = \"s\"\n",
            "18446744073709551615",
        ),
        ("[features.\"123\"]\nenabled = true\n", "only digits"),
        ("[features.\"..\"]\nenabled = true\n", "only dots"),
        (
            "[features.f]\ntype = \"<script>\"\n",
            "type must be STANDARD or MULTIVARIATE",
        ),
    ];
    for (text, reason) in cases {
        std::fs::write(&flags, text).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_flagpost"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout);
        assert!(!output.status.success(), "{text} was taken: {said}");
        assert!(said.contains("Development.toml:"), "{said}");
        assert!(said.contains(reason), "{text}: {said}");
    }
    std::fs::write(
        &flags,
        "[features.f]\nvalue = 9223372036854775807\ntype = \"MULTIVARIATE\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_flagpost"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

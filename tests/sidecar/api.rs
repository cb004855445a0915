//! The change API: writes answer with their events, Idempotency-Key, and bad input on every route
//! refused with the right status and nothing changed.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Sidecar, TOKEN, call, last_sequence, send};

async fn document(sidecar: &Sidecar) -> Value {
    let (status, doc) = call(
        Method::GET,
        &sidecar.url("/api/v1/environments/1/document"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    doc
}

async fn create_feature(sidecar: &Sidecar, name: &str) -> u64 {
    let (status, body) = call(
        Method::POST,
        &sidecar.url("/api/v1/features"),
        Some(json!({"project": 1, "name": name, "initial_value": "blue"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["feature"]["id"].as_u64().unwrap()
}

#[tokio::test]
async fn every_write_answers_with_the_events_it_committed() {
    let sidecar = Sidecar::start().await;
    let (status, body) = call(
        Method::POST,
        &sidecar.url("/api/v1/features"),
        Some(
            json!({"project": 1, "name": "checkout", "default_enabled": true, "initial_value": 3}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let types: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["FLAG_UPDATED", "AUDIT_LOG_CREATED"]);
    let sequences: Vec<u64> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert!(sequences[0] < sequences[1]);

    let url = sidecar.url("/api/v1/environments/Development/features/checkout/identities/user-42");
    let (status, body) = call(Method::PUT, &url, Some(json!({"value": "x"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["changed"], true);
    assert_eq!(body["events"].as_array().unwrap().len(), 2);

    // The same state again changes nothing and emits nothing.
    let before = last_sequence(&sidecar.url("")).await;
    let (status, body) = call(Method::PUT, &url, Some(json!({"value": "x"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["changed"], false);
    assert_eq!(body["events"], json!([]));
    assert_eq!(last_sequence(&sidecar.url("")).await, before);

    let doc = document(&sidecar).await;
    assert_eq!(doc["last_sequence"], before);
    let feature = &doc["features"][0];
    assert_eq!(feature["enabled"], true);
    assert_eq!(feature["value"], 3);
    assert_eq!(
        feature["identity_overrides"],
        json!([{"identifier": "user-42", "enabled": true, "value": "x"}])
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_answers_a_retry_without_a_second_change() {
    let sidecar = Sidecar::start().await;
    let body = serde_json::to_vec(&json!({"project": 1, "name": "retried"})).unwrap();
    let url = sidecar.url("/api/v1/features");
    let headers = [("idempotency-key", "create-retried-1")];
    let first = send(
        Method::POST,
        &url,
        Some(TOKEN),
        Some(body.clone()),
        &headers,
    )
    .await
    .unwrap();
    let sequence = last_sequence(&sidecar.url("")).await;
    let second = send(Method::POST, &url, Some(TOKEN), Some(body), &headers)
        .await
        .unwrap();
    assert_eq!(first.0, StatusCode::CREATED);
    assert_eq!(first, second);
    assert_eq!(last_sequence(&sidecar.url("")).await, sequence);

    // The same key with another request is refused.
    let other = serde_json::to_vec(&json!({"project": 1, "name": "other"})).unwrap();
    let (status, body) = send(Method::POST, &url, Some(TOKEN), Some(other), &headers)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(last_sequence(&sidecar.url("")).await, sequence);
    sidecar.stop().await;
}

/// Each bad request gets its status and a JSON error, and the store is exactly as before.
#[tokio::test]
async fn bad_input_on_every_route_is_refused_and_changes_nothing() {
    let sidecar = Sidecar::start().await;
    let feature = create_feature(&sidecar, "stable").await;
    let url = |path: &str| sidecar.url(path);
    let big = json!({"project": 1, "name": "x".repeat(70_000)});
    let state_url = format!("/api/v1/environments/1/features/{feature}/state");
    let identity_url = format!("/api/v1/environments/1/features/{feature}/identities/u1");
    let segment_url = format!("/api/v1/environments/1/features/{feature}/segments/7");
    let feature_url = format!("/api/v1/features/{feature}");

    let cases: Vec<(Method, String, Option<Value>, StatusCode)> = vec![
        // Wrong types and unknown fields.
        (
            Method::POST,
            url("/api/v1/features"),
            Some(json!({"project": "one", "name": "a"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            url("/api/v1/features"),
            Some(json!({"project": 1, "name": "a", "colour": 1})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            url("/api/v1/features"),
            Some(json!({"project": 1, "name": "has space"})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            url("/api/v1/features"),
            Some(json!({"project": 1, "name": "a", "initial_value": {"x": 1}})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            url("/api/v1/features"),
            Some(json!({"project": 1, "name": "stable"})),
            StatusCode::CONFLICT,
        ),
        (
            Method::POST,
            url("/api/v1/features"),
            Some(json!({"project": 99, "name": "a"})),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::PATCH,
            url(&feature_url),
            Some(json!({"default_enabled": "yes"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PATCH,
            url("/api/v1/features/9999"),
            Some(json!({"description": "d"})),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::PATCH,
            url("/api/v1/features/not-a-number"),
            Some(json!({})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::DELETE,
            url("/api/v1/features/9999"),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::PUT,
            url(&state_url),
            Some(json!({"enabled": "true"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            url(&state_url),
            Some(json!({"enabled": true, "priority": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::PUT,
            url(&format!("/api/v1/environments/1/features/{feature}/state")
                .replace("/1/", "/Nowhere/")),
            Some(json!({"enabled": true})),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::PUT,
            url("/api/v1/environments/1/features/9999/state"),
            Some(json!({"enabled": true})),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::PUT,
            url("/api/v1/environments/1/features/no_such_feature/state"),
            Some(json!({"enabled": true})),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::PUT,
            url(&identity_url),
            Some(json!({"value": [1, 2]})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::DELETE,
            url(&identity_url),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::PUT,
            url(&segment_url.replace("/7", "/seven")),
            Some(json!({"enabled": true})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            url(&segment_url),
            Some(json!({"priority": "high"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::DELETE,
            url(&segment_url),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            url("/api/v1/environments/Nowhere/document"),
            None,
            StatusCode::NOT_FOUND,
        ),
        // Oversized body.
        (
            Method::POST,
            url("/api/v1/features"),
            Some(big),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];

    let before = document(&sidecar).await;
    for (method, target, body, expected) in cases {
        let (status, answer) = call(method.clone(), &target, body).await;
        assert_eq!(status, expected, "{method} {target}: {answer}");
        assert!(
            answer["error"].is_string(),
            "{method} {target}: no JSON error in {answer}"
        );
    }

    // Missing, wrong and malformed tokens on reads and writes.
    let create = Some(serde_json::to_vec(&json!({"project": 1, "name": "sneaky"})).unwrap());
    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        for (method, target, body) in [
            (Method::POST, url("/api/v1/features"), create.clone()),
            (Method::GET, url("/api/v1/environments/1/document"), None),
            (Method::DELETE, url(&feature_url), None),
        ] {
            let (status, answer) = send(method, &target, token, body, &[]).await.unwrap();
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{target} with {token:?}: {answer}"
            );
        }
    }

    // Not JSON at all, and the wrong content type.
    let (status, _) = send(
        Method::POST,
        &url("/api/v1/features"),
        Some(TOKEN),
        Some(b"{not json".to_vec()),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = send(
        Method::POST,
        &url("/api/v1/features"),
        Some(TOKEN),
        Some(b"project=1".to_vec()),
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    assert_eq!(
        document(&sidecar).await,
        before,
        "a refused request changed the store"
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn overrides_can_be_removed_and_features_deleted() {
    let sidecar = Sidecar::start().await;
    let feature = create_feature(&sidecar, "temporary").await;
    let segment = sidecar.url(&format!(
        "/api/v1/environments/1/features/{feature}/segments/9"
    ));
    let (status, body) = call(
        Method::PUT,
        &segment,
        Some(json!({"segment_name": "beta", "priority": 2, "enabled": true, "value": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let doc = document(&sidecar).await;
    assert_eq!(
        doc["features"][0]["segment_overrides"],
        json!([{"segment": {"id": 9, "name": "beta"}, "priority": 2, "enabled": true, "value": true}])
    );
    let (status, body) = call(Method::DELETE, &segment, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"][0]["event_type"], "FLAG_DELETED");
    let (status, body) = call(
        Method::DELETE,
        &sidecar.url(&format!("/api/v1/features/{feature}")),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let doc = document(&sidecar).await;
    assert_eq!(doc["features"], json!([]));
    assert_eq!(doc["deleted_feature_ids"], json!([feature]));
    // The name is free again, under a new id: ids are never reused.
    let again = create_feature(&sidecar, "temporary").await;
    assert!(again > feature);
    sidecar.stop().await;
}

/// Issue 8, item 8: serde would read a JSON array into a body struct by field position; every
/// documented body is an object, so anything else is refused with 400 and nothing changes.
#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_refused_on_every_route() {
    let sidecar = Sidecar::start().await;
    let feature = create_feature(&sidecar, "stable").await;
    let before = document(&sidecar).await;
    let sequence = last_sequence(&sidecar.url("")).await;
    let routes = [
        (Method::POST, "/api/v1/features".to_owned()),
        (Method::PATCH, format!("/api/v1/features/{feature}")),
        (
            Method::PUT,
            format!("/api/v1/environments/1/features/{feature}/state"),
        ),
        (
            Method::PUT,
            format!("/api/v1/environments/1/features/{feature}/identities/u1"),
        ),
        (
            Method::PUT,
            format!("/api/v1/environments/1/features/{feature}/segments/7"),
        ),
        // The delivery admin routes read their bodies by the same rule.
        (Method::POST, "/api/v1/admin/dead-letters/replay".to_owned()),
        (
            Method::POST,
            "/api/v1/admin/deliveries/drop-removed".to_owned(),
        ),
    ];
    let bodies = [
        json!([false, "positional"]),
        json!([1, "positional_name"]),
        json!([]),
        json!("a string"),
        json!(7),
        json!(null),
    ];
    for (method, path) in &routes {
        for body in &bodies {
            let (status, answer) =
                call(method.clone(), &sidecar.url(path), Some(body.clone())).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{method} {path} {body}: {answer}"
            );
            assert!(
                answer["error"].as_str().unwrap().contains("JSON object"),
                "{answer}"
            );
        }
    }
    assert_eq!(document(&sidecar).await, before);
    assert_eq!(last_sequence(&sidecar.url("")).await, sequence);
}

/// Issue 8, item 13: every error is `{"error": "..."}`, including those no handler makes: a query
/// or replay body axum cannot read, a method a route does not take (405), a path with no route.
#[tokio::test]
async fn every_error_is_a_json_object_with_an_error() {
    let sidecar = Sidecar::start().await;
    let replay = Some(serde_json::to_vec(&json!({"endpoint": 5})).unwrap());
    let cases = [
        (Method::GET, "/api/v1/admin/attempts?sequence=abc", None),
        (Method::GET, "/api/v1/events?after=abc", None),
        (Method::POST, "/api/v1/admin/dead-letters/replay", replay),
        (Method::DELETE, "/api/v1/events", None),
        (Method::PUT, "/api/v1/features", None),
        (Method::GET, "/api/v1/admin/nowhere", None),
        (Method::GET, "/no/such/path", None),
    ];
    for (method, path, body) in cases {
        let (status, answer) = send(method.clone(), &sidecar.url(path), Some(TOKEN), body, &[])
            .await
            .unwrap();
        assert!(status.is_client_error(), "{method} {path}: {status}");
        let message = answer["error"].as_str();
        assert!(
            message.is_some_and(|m| !m.is_empty()),
            "{method} {path}: {status} {answer}"
        );
    }
}

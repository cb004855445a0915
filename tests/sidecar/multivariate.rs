//! Multivariate options and allocations through the change API: set on every kind of state,
//! reported in `FLAG_UPDATED`, and bad ones refused with nothing changed.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Sidecar, call, events_after, last_sequence};
use crate::segments::{condition_rules, create_feature, create_segment, types};

pub(crate) async fn add_option(
    sidecar: &Sidecar,
    feature: u64,
    value: &str,
    default: f64,
) -> (StatusCode, Value) {
    call(
        Method::POST,
        &sidecar.url(&format!("/api/v1/features/{feature}/multivariate-options")),
        Some(json!({"value": value, "default_percentage_allocation": default})),
    )
    .await
}

async fn document_feature(sidecar: &Sidecar, feature: u64) -> Value {
    let (_, document) = call(
        Method::GET,
        &sidecar.url("/api/v1/environments/1/document"),
        None,
    )
    .await;
    document["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"]["id"] == feature)
        .unwrap()
        .clone()
}

#[tokio::test]
async fn multivariate_options_and_allocations_are_set_and_bad_ones_refused() {
    let sidecar = Sidecar::start().await;
    let base = sidecar.url("");
    let feature = create_feature(&sidecar, "layout").await;
    let (status, grid) = add_option(&sidecar, feature, "grid", 50.0).await;
    assert_eq!(status, StatusCode::CREATED, "{grid}");
    let grid = grid["multivariate_option"]["id"].as_u64().unwrap();
    let before = last_sequence(&base).await;
    let (status, cards) = add_option(&sidecar, feature, "cards", 50.0).await;
    assert_eq!(status, StatusCode::CREATED, "{cards}");
    let cards = cards["multivariate_option"]["id"].as_u64().unwrap();
    let events = events_after(&base, before).await;
    assert_eq!(types(&events), ["FLAG_UPDATED", "AUDIT_LOG_CREATED"]);
    let state = &events[0].1["data"]["new_state"];
    assert_eq!(state["feature"]["type"], "MULTIVARIATE");
    let values = state["multivariate_feature_state_values"]
        .as_array()
        .unwrap();
    assert_eq!(values.len(), 2);
    assert_eq!(
        values[1]["multivariate_feature_option"],
        json!({"id": cards, "value": "cards"})
    );
    assert_eq!(values[1]["percentage_allocation"], json!(50.0));

    // Allocations on the environment default and on an identity override.
    let default_url = sidecar.url(&format!("/api/v1/environments/1/features/{feature}/state"));
    let allocations = json!([
        {"multivariate_feature_option": grid, "percentage_allocation": 100},
        {"multivariate_feature_option": cards, "percentage_allocation": 0}
    ]);
    let (status, body) = call(
        Method::PUT,
        &default_url,
        Some(json!({"multivariate_feature_state_values": allocations})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let identity_url = sidecar.url(&format!(
        "/api/v1/environments/1/features/{feature}/identities/user-1"
    ));
    let (status, body) = call(
        Method::PUT,
        &identity_url,
        Some(json!({"multivariate_feature_state_values": [
            {"multivariate_feature_option": cards, "percentage_allocation": 30}]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = events_after(&base, last_sequence(&base).await - 2).await;
    assert_eq!(
        events[0].1["data"]["new_state"]["multivariate_feature_state_values"][0]["percentage_allocation"],
        json!(30.0)
    );

    // Refused, and nothing changed: sums over 100, unknown options, duplicates, out of range.
    let unchanged = document_feature(&sidecar, feature).await;
    let bad = [
        (
            json!([{"multivariate_feature_option": grid, "percentage_allocation": 60},
                {"multivariate_feature_option": cards, "percentage_allocation": 41}]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!([{"multivariate_feature_option": 9999, "percentage_allocation": 10}]),
            StatusCode::NOT_FOUND,
        ),
        (
            json!([{"multivariate_feature_option": grid, "percentage_allocation": 10},
                {"multivariate_feature_option": grid, "percentage_allocation": 10}]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!([{"multivariate_feature_option": grid, "percentage_allocation": 101}]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!([{"multivariate_feature_option": grid, "percentage_allocation": -1}]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    let segment = create_segment(
        &sidecar,
        "testers",
        condition_rules("IS_SET", Some("tester"), Value::Null),
    )
    .await;
    let segment_url = sidecar.url(&format!(
        "/api/v1/environments/1/features/{feature}/segments/{}",
        segment["id"]
    ));
    let sequence = last_sequence(&base).await;
    for (allocations, expected) in bad {
        for url in [&default_url, &identity_url, &segment_url] {
            let (status, body) = call(
                Method::PUT,
                url,
                Some(json!({"enabled": false, "multivariate_feature_state_values": allocations})),
            )
            .await;
            assert_eq!(status, expected, "{allocations}: {body}");
        }
    }
    // Options whose default allocations would pass 100, or out of range.
    for default in [1.0, 150.0, -5.0] {
        let (status, body) = add_option(&sidecar, feature, "more", default).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    assert_eq!(last_sequence(&base).await, sequence, "no event was written");
    assert_eq!(document_feature(&sidecar, feature).await, unchanged);

    // A new value for an option is reported for each state that allocates it, the value as it
    // was and as it is; a bad default allocation is refused.
    let option_url = sidecar.url(&format!(
        "/api/v1/features/{feature}/multivariate-options/{cards}"
    ));
    let before = last_sequence(&base).await;
    let (status, body) = call(Method::PATCH, &option_url, Some(json!({"value": "tiles"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = events_after(&base, before).await;
    assert_eq!(
        types(&events),
        ["FLAG_UPDATED", "FLAG_UPDATED", "AUDIT_LOG_CREATED"]
    );
    let data = &events[0].1["data"];
    let shown = |state: &str| {
        data[state]["multivariate_feature_state_values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["multivariate_feature_option"]["id"] == cards)
            .unwrap()["multivariate_feature_option"]["value"]
            .clone()
    };
    assert_eq!(
        (shown("previous_state"), shown("new_state")),
        (json!("cards"), json!("tiles"))
    );
    let sequence = last_sequence(&base).await;
    for bad in [
        json!({"default_percentage_allocation": 51}),
        json!({"default_percentage_allocation": -1}),
    ] {
        let (status, body) = call(Method::PATCH, &option_url, Some(bad)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    assert_eq!(last_sequence(&base).await, sequence);

    // Removing an option takes its allocations out of every state that has one.
    let before = last_sequence(&base).await;
    let (status, body) = call(
        Method::DELETE,
        &sidecar.url(&format!(
            "/api/v1/features/{feature}/multivariate-options/{cards}"
        )),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = events_after(&base, before).await;
    assert_eq!(
        types(&events),
        ["FLAG_UPDATED", "FLAG_UPDATED", "AUDIT_LOG_CREATED"]
    );
    assert_eq!(
        events[1].1["data"]["new_state"]["multivariate_feature_state_values"],
        json!([])
    );
    sidecar.stop().await;
}

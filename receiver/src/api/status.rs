//! Health, readiness, metrics, and the admin route that reloads an environment's document.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

use crate::api::{AppState, json_response, json_value};
use crate::clock::now_unix;
use crate::error::ApiError;

pub(crate) async fn bootstrap_environment(
    State(shared): AppState,
    Path(env): Path<u64>,
) -> Result<Response, ApiError> {
    let last_sequence = shared.load_environment(env).await?;
    Ok(json_value(
        &serde_json::json!({ "environment": env, "last_sequence": last_sequence }),
    ))
}

pub(crate) async fn healthz(State(shared): AppState) -> Response {
    if shared.writer.is_alive() {
        json_value(&serde_json::json!({ "status": "ok" }))
    } else {
        let body = serde_json::json!({ "status": "storage writer stopped" });
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::to_vec(&body).expect("serialises"),
        )
    }
}

pub(crate) async fn readyz(State(shared): AppState) -> Response {
    let live = shared.live.load();
    let mut waiting = if live.bootstrap.is_some() {
        shared.environments_waiting()
    } else {
        Vec::new()
    };
    // An environment with an upstream waits for its first document.
    let cache = shared.cache.load();
    let now = now_unix();
    let fetches = shared.upstreams.status();
    let mut documents = serde_json::Map::new();
    for env in live.upstreams.keys() {
        let held = cache.env(*env).and_then(|env| env.upstream.clone());
        if held.is_none() && !waiting.contains(env) {
            waiting.push(*env);
        }
        let fetch = fetches.get(env).cloned().unwrap_or_default();
        documents.insert(
            env.to_string(),
            serde_json::json!({
                "fetched_at": held.as_ref().map(|doc| doc.fetched_at),
                "age_seconds": held.as_ref().map(|doc| now.saturating_sub(doc.fetched_at)),
                "updated_at": held.as_ref().and_then(|doc| doc.parsed.updated_at.clone()),
                "fetches": fetch.fetched,
                "failures_in_a_row": fetch.failures_in_a_row,
                "last_error": fetch.last_error,
            }),
        );
    }
    waiting.sort_unstable();
    let status = if waiting.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "ready": waiting.is_empty(),
        "waiting_for": waiting,
        "documents": documents,
    });
    json_response(status, serde_json::to_vec(&body).expect("serialises"))
}

pub(crate) async fn metrics(State(shared): AppState) -> Response {
    let text = shared.metrics.render(&shared.cache.load(), now_unix());
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

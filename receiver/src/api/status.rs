//! Health, readiness, metrics, and the admin route that reloads an environment's document.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use flagpost::metrics::exposition::Format;
use http::{HeaderMap, HeaderValue, StatusCode, header};

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

/// Ready once every configured environment is loaded, the JetStream intake (if any) has caught
/// up once, and while the writer commits. A writer that
/// cannot commit (a full disk, a damaged file) is reported here, not on `/healthz`: it recovers by
/// itself once space is freed, lookups keep answering from memory meanwhile, and a restart (what
/// a failing liveness probe brings) would free no space.
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
    let failure = shared.writer.commit_failure();
    // A JetStream intake is ready once it has read its consumer to the end of the stream since
    // start; a connection lost after that is reported, and the cache keeps answering.
    let jetstream = shared.jetstream.as_ref().map(|status| {
        serde_json::json!({
            "connected": status.connected(),
            "caught_up": status.caught_up(),
            "consumer_lag": status.lag(),
            "last_error": status.last_error(),
        })
    });
    let caught_up = shared.jetstream.as_ref().is_none_or(|s| s.caught_up());
    let ready = waiting.is_empty() && failure.is_none() && caught_up;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = serde_json::json!({
        "ready": ready,
        "waiting_for": waiting,
        "documents": documents,
    });
    if let Some(jetstream) = jetstream {
        body["jetstream"] = jetstream;
    }
    if let Some(failure) = failure {
        body["error"] = format!("the storage cannot commit: {failure}").into();
    }
    json_response(status, serde_json::to_vec(&body).expect("serialises"))
}

/// The metrics page, in the format the scrape's `Accept` asks for (Prometheus' text format by
/// default, OpenMetrics when preferred: [`flagpost::metrics::exposition`]).
pub(crate) async fn metrics(State(shared): AppState, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let text = shared
        .metrics
        .render(&shared.cache.load(), now_unix(), format);
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response
}

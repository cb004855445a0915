//! `POST /api/v1/relay/{source}`: web hooks from an upstream Flagsmith, verified by
//! `X-Flagsmith-Signature` and stored byte for byte as events of the source's environment.
//!
//! This lets flagpost be the durable, retrying, public-facing receiver for a Flagsmith that
//! retries only a few times and will not call private addresses, and fan its events out to
//! private receivers. Nothing here touches flagpost's own flag state.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use time::OffsetDateTime;

use super::AppState;
use super::error::ApiError;
use super::request::PathParams;
use crate::changes::{Author, Outbox};
use crate::signing::{FLAGSMITH_SIGNATURE_HEADER, verify_flagsmith};
use crate::wire::EventType;

/// What a relayed body must be: an envelope with an event type and data.
#[derive(serde::Deserialize)]
struct Envelope {
    event_type: EventType,
    #[serde(rename = "data")]
    _data: serde::de::IgnoredAny,
}

pub async fn relay(
    State(state): State<AppState>,
    PathParams(source): PathParams<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let result = accept(&state, &source, &headers, body).await;
    if let Err(error) = &result {
        state.metrics.refused("relay", error.reason());
    }
    result
}

async fn accept(
    state: &AppState,
    source: &str,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let config = state.config.load_full();
    let source = config
        .relay_sources
        .get(source)
        .ok_or_else(|| ApiError::NotFound(format!("relay source {source:?} is not configured")))?
        .clone();
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(config.max_body_bytes),
        _ => ApiError::BadRequest(e.body_text()),
    })?;
    let signature = headers
        .get(FLAGSMITH_SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized("missing X-Flagsmith-Signature"))?;
    verify_flagsmith(std::slice::from_ref(&source.secret), &body, signature)
        .map_err(|_| ApiError::Unauthorized("X-Flagsmith-Signature does not match"))?;
    let envelope: Envelope = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a Flagsmith web hook: {e}")))?;

    let author = Author::system(format!("relay:{}", source.name));
    let environment = source.environment;
    let events = state
        .store
        .write(move |tables| {
            let mut outbox = Outbox::new(&config, &author, OffsetDateTime::now_utc());
            outbox.push(
                tables,
                envelope.event_type.clone(),
                Some(environment),
                &body,
            )?;
            Ok(outbox.into_written())
        })
        .await?;
    state.metrics.change_committed("relay", &events);
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "events": events })),
    )
        .into_response())
}

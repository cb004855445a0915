//! `POST /api/v1/relay/{source}`: web hooks from an upstream Flagsmith, verified by
//! `X-Flagsmith-Signature` and stored byte for byte as events of the source's environment.
//!
//! This lets flagpost be the durable, retrying, public-facing receiver for a Flagsmith that
//! retries only a few times and will not call private addresses, and fan its events out to
//! private receivers. Nothing here touches flagpost's own flag state.
//!
//! A relayed event gets flagpost's next sequence, which receivers order by, so a body sent again
//! (a Flagsmith retry after a timeout, or a captured request) must not be stored again: the same
//! bytes from the same source answer `"status": "duplicate"` with the event they became, and a
//! body older than what was relayed for its key answers `"status": "superseded"` and is not
//! relayed ([`crate::changes::relay`]). Both are 200: the sender has nothing to retry.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use time::OffsetDateTime;

use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use super::request::PathParams;
use crate::changes::relay::{RelayVerdict, RelayedChange};
use crate::changes::{Author, CommittedEvent, Outbox};
use crate::config::Config;
use crate::error::WriteError;
use crate::metrics::ChangeSource;
use crate::signing::{FLAGSMITH_SIGNATURE_HEADER, verify_flagsmith};
use crate::store::{Tables, relayed};
use crate::wire::{EventType, IncomingEvent, parse_incoming};

/// What a relayed body must be: an envelope with an event type and data.
#[derive(serde::Deserialize)]
struct Envelope {
    event_type: EventType,
    #[serde(rename = "data")]
    _data: serde::de::IgnoredAny,
}

pub async fn relay(
    State(state): State<Arc<AppState>>,
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

/// What became of a relayed body, as the answer says it (`status`).
enum Relayed {
    /// Stored as these events (202).
    Stored(Vec<CommittedEvent>),
    /// The same bytes were relayed before: these were their events (200).
    Duplicate(Vec<CommittedEvent>),
    /// Older than what was relayed for its key: acknowledged, not relayed (200).
    Superseded,
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
    let sha256: [u8; 32] = Sha256::digest(&body).into();
    // A flag event is read as receivers read it (a timestamp that does not parse is refused
    // here, not by every receiver after delivery), for the key and timestamp it is ordered by.
    let ordered = match parse_incoming(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a Flagsmith web hook: {e}")))?
    {
        IncomingEvent::Flag(event) => Some(RelayedChange::of(&event, sha256)),
        IncomingEvent::NotApplied(_) => None,
    };

    let upstream = source.upstream.is_some().then(|| source.name.clone());
    let request = RelayRequest {
        author: Author::system(format!("relay:{}", source.name)),
        source: source.name,
        environment: source.environment,
        event_type: envelope.event_type,
        body,
        sha256,
        ordered,
    };
    let relayed = state
        .store
        .write(move |tables| store_relayed(tables, &config, &request))
        .await?;
    // The upstream document now holds this change: fetch it (coalesced, after the commit so
    // that the document is stamped with a sequence at or after this event's).
    if let (Some(source), Relayed::Stored(_)) = (upstream, &relayed) {
        state.upstream.wake(&source);
    }
    Ok(answer(state, relayed))
}

/// A verified relayed body, and what its order depends on.
struct RelayRequest {
    author: Author,
    source: String,
    environment: u64,
    event_type: EventType,
    body: Bytes,
    sha256: [u8; 32],
    /// `None` for a body that is not a flag event: nothing to order by.
    ordered: Option<RelayedChange>,
}

/// In the writer's transaction: answers a body relayed before with the event it became, leaves
/// out a late one, and stores any other as the next event, remembering it and its key's history.
fn store_relayed(
    tables: &mut Tables,
    config: &Config,
    request: &RelayRequest,
) -> Result<Relayed, WriteError> {
    let source = request.source.as_str();
    if let Some((id, sequence)) = relayed::relayed_event(tables, source, &request.sha256)? {
        let event_type = request.event_type.as_str().to_owned();
        let event = CommittedEvent {
            id,
            sequence,
            event_type,
        };
        return Ok(Relayed::Duplicate(vec![event]));
    }
    let verdict = match &request.ordered {
        None => RelayVerdict::Relay(None),
        Some(change) => change.judge(relayed::key_history(tables, source, &change.key)?.as_ref()),
    };
    let history = match verdict {
        RelayVerdict::Superseded => return Ok(Relayed::Superseded),
        RelayVerdict::Duplicate => return Ok(Relayed::Duplicate(Vec::new())),
        RelayVerdict::Relay(history) => history,
    };
    let now = OffsetDateTime::now_utc();
    let mut outbox = Outbox::new(config, &request.author, now);
    let event_type = request.event_type.clone();
    outbox.push(tables, event_type, Some(request.environment), &request.body)?;
    let events = outbox.into_written();
    let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as u64;
    let sequence = events.last().map_or(0, |event| event.sequence);
    let retention_ms = u64::try_from(config.idempotency_retention.as_millis()).unwrap_or(u64::MAX);
    let forget_before = now_ms.saturating_sub(retention_ms);
    relayed::remember_body(
        tables,
        source,
        &request.sha256,
        sequence,
        now_ms,
        forget_before,
    )?;
    if let (Some(change), Some(history)) = (&request.ordered, history) {
        relayed::keep_key_history(tables, source, &change.key, &history)?;
    }
    Ok(Relayed::Stored(events))
}

fn answer(state: &AppState, relayed: Relayed) -> Response {
    let (status, outcome, events) = match relayed {
        Relayed::Stored(events) => {
            state.metrics.change_committed(ChangeSource::Relay, &events);
            (StatusCode::ACCEPTED, "relayed", events)
        }
        Relayed::Duplicate(events) => (StatusCode::OK, "duplicate", events),
        Relayed::Superseded => (StatusCode::OK, "superseded", Vec::new()),
    };
    let body = json!({ "status": outcome, "events": events });
    (status, axum::Json(body)).into_response()
}

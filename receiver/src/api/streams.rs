//! The change streams' routes, as Server-Sent Events (`text/event-stream`):
//!
//! - `GET /sse/environments/{environment key}/stream`: Flagsmith's realtime protocol, for the
//!   SDKs' realtime mode with their realtime URL pointed at the receiver;
//! - `GET /v1/environments/{env}/stream[?identifier=&traits=]`: the native stream, the flags that
//!   changed (for one identity with its traits when `identifier` is given), resumable with
//!   `Last-Event-ID`.
//!
//! Each stream's body is a [`Feed`]: it takes the hub's notices itself when hyper asks for more
//! (see [`crate::streams::feed`]). A client that stops reading falls `streams.buffer_events`
//! notices behind and is dropped (its connection closed) and counted; nothing waits for it,
//! and nothing grows.

use std::collections::HashMap;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use flagpost::serve::CloseConnection;
use flagsmith_flag_engine::types::FlagsmithValue;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::Deserialize;

use crate::api::AppState;
use crate::app::Shared;
use crate::error::{ApiError, LookupError};
use crate::streams::events::{Audience, Position, full_frame, revision_in, with_retry};
use crate::streams::feed::{Feed, Kind};
use crate::streams::{StreamSlot, Subscription};

/// `x-flagsmith-document-updated-at`, which Flagsmith's JS client compares with realtime events.
pub const UPDATED_AT_HEADER: HeaderName =
    HeaderName::from_static("x-flagsmith-document-updated-at");

/// A place among `streams.max_streams`, or 503.
fn open_slot(shared: &Shared) -> Result<StreamSlot, ApiError> {
    let max = shared.live.load().streams.max_streams;
    shared
        .streams
        .try_open(max)
        .ok_or_else(|| LookupError::StreamsFull(max).into())
}

/// The stream's response: `subscription`'s frames, as Server-Sent Events.
fn start(env: u64, kind: Kind, subscription: Subscription, slot: StreamSlot) -> Response {
    let mut response = Response::new(Body::new(Feed::new(env, kind, subscription, slot)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx and its kin buffer answers unless told not to.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    *response.status_mut() = StatusCode::OK;
    response
}

/// `GET /sse/environments/{key}/stream`: the key is one of the environment's `keys` (the
/// client-side key, which Flagsmith's SDKs put in the URL) or `server_keys`.
pub(crate) async fn flagsmith_stream(
    State(shared): AppState,
    Path(key): Path<String>,
    close: Option<Extension<CloseConnection>>,
) -> Result<Response, ApiError> {
    let live = shared.live.load_full();
    let env = live
        .environment_keys
        .get(&key)
        .copied()
        .ok_or(LookupError::UnknownEnvironmentKey)?;
    let slot = open_slot(&shared)?;
    let close = close.map(|Extension(close)| close);
    let subscription = shared.streams.subscribe_flagsmith(env, &live, close);
    Ok(start(env, Kind::Flagsmith, subscription, slot))
}

/// `?identifier=ID&traits={"plan":"pro"}` (traits as a JSON object, URL-encoded).
#[derive(Deserialize)]
pub(crate) struct StreamQuery {
    identifier: Option<String>,
    traits: Option<String>,
}

/// The revision `Last-Event-ID` names, as EventSource sends it on reconnecting; one that names
/// no revision of this file asks for the full state.
fn last_event_id(headers: &HeaderMap, file_id: u64) -> Option<u64> {
    let value = headers.get("last-event-id")?.to_str().ok()?;
    revision_in(value, file_id)
}

fn audience(query: StreamQuery) -> Result<Option<Audience>, LookupError> {
    let traits: HashMap<String, FlagsmithValue> = match &query.traits {
        None => HashMap::new(),
        Some(text) => serde_json::from_str(text)
            .map_err(|error| LookupError::BadRequest(format!("traits: {error}")))?,
    };
    match query.identifier.filter(|id| !id.is_empty()) {
        Some(identifier) => Ok(Some(Audience::identity(identifier, traits))),
        None if query.traits.is_some() => Err(LookupError::BadRequest(
            "traits: given without an identifier".into(),
        )),
        None => Ok(None),
    }
}

/// `GET /v1/environments/{env}/stream`: a configured environment, or one the cache holds.
pub(crate) async fn native_stream(
    State(shared): AppState,
    Path(env): Path<u64>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    close: Option<Extension<CloseConnection>>,
) -> Result<Response, ApiError> {
    let audience = audience(query)?;
    let live = shared.live.load_full();
    let cache = shared.cache.load_full();
    if !live.environments.contains(&env) && cache.env(env).is_none() {
        return Err(LookupError::UnknownEnvironment(env).into());
    }
    let slot = open_slot(&shared)?;
    let last_event_id = last_event_id(&headers, shared.file_id);
    let close = close.map(|Extension(close)| close);
    let Some(audience) = audience else {
        let subscription = shared
            .streams
            .subscribe_native(env, last_event_id, &live, close);
        return Ok(start(env, Kind::Environment, subscription, slot));
    };
    let mut subscription = shared.streams.subscribe_identity(env, &live, close);
    // The identity's flags in the subscription's cache, which is at or past its revision: the
    // notices up to the cache's revision are then skipped.
    let cache = subscription.cache.clone();
    let held = cache.env(env).map(|env| env.as_ref());
    let last = audience.evaluate(held);
    let at = Position {
        file_id: shared.file_id,
        env,
        revision: held.map_or(0, |env| env.revision),
        updated_at_micros: held.map_or(0, |env| env.updated_at_micros),
    };
    // An identity's stream resumes only from the current position: its past is not kept.
    if last_event_id != Some(at.revision) {
        let identifier = audience.identity.as_ref().map(|i| i.identifier.as_str());
        subscription.opening = with_retry(&full_frame(at, identifier, &last));
    }
    subscription.revision = subscription.revision.max(at.revision);
    let kind = Kind::Identity { audience, last };
    Ok(start(env, kind, subscription, slot))
}

/// Sets [`UPDATED_AT_HEADER`] from the environment's `updated_at`, as Flagsmith does on its flag
/// answers: the JS client in realtime mode then refetches only for a newer event.
pub fn set_updated_at(response: &mut Response, updated_at_micros: i64) {
    if updated_at_micros == 0 {
        return;
    }
    let text = crate::streams::events::Seconds::new(updated_at_micros);
    if let Ok(value) = HeaderValue::from_str(text.as_str()) {
        response.headers_mut().insert(UPDATED_AT_HEADER, value);
    }
}

//! The change streams' routes, as Server-Sent Events (`text/event-stream`):
//!
//! - `GET /sse/environments/{environment key}/stream`: Flagsmith's realtime protocol, for the
//!   SDKs' realtime mode with their realtime URL pointed at the receiver;
//! - `GET /v1/environments/{env}/stream[?identifier=&traits=]`: the native stream, the flags that
//!   changed (for one identity with its traits when `identifier` is given), resumable with
//!   `Last-Event-ID`.
//!
//! Each stream is a task that moves the hub's notices ([`crate::streams`]) into a buffer of
//! `streams.buffer_events` frames that the response body drains. A client that lets the buffer
//! fill is dropped (its connection closed) and counted; nothing waits for it, and nothing grows.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use flagpost::serve::CloseConnection;
use flagsmith_flag_engine::types::FlagsmithValue;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body::Frame;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, watch};

use crate::api::AppState;
use crate::app::Shared;
use crate::error::{ApiError, LookupError};
use crate::streams::events::{Audience, FlagTable, Position, diff, full_frame, native_frame};
use crate::streams::{EndReason, Notice, StreamSlot, Subscription};

/// `x-flagsmith-document-updated-at`, which Flagsmith's JS client compares with realtime events.
pub const UPDATED_AT_HEADER: &str = "x-flagsmith-document-updated-at";

/// The response body of one stream: the frames its task hands over. Holding the slot, it gives
/// it back when hyper drops it, however the stream ended.
struct StreamBody {
    frames: mpsc::Receiver<Bytes>,
    _slot: StreamSlot,
}

impl http_body::Body for StreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.frames
            .poll_recv(cx)
            .map(|frame| frame.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// What a stream sends besides the hub's shared frames.
enum Kind {
    Flagsmith,
    /// The environment's own flags: the hub renders them once for every such stream.
    Environment,
    /// One identity: evaluated by this stream's task on each change.
    Identity {
        audience: Audience,
        last: FlagTable,
    },
}

struct StreamTask {
    shared: Arc<Shared>,
    env: u64,
    kind: Kind,
    revision: u64,
    notices: broadcast::Receiver<Notice>,
    stopping: watch::Receiver<bool>,
    frames: mpsc::Sender<Bytes>,
    close: Option<CloseConnection>,
}

impl StreamTask {
    async fn run(mut self) {
        let reason = loop {
            let notice = tokio::select! {
                () = self.frames.closed() => break EndReason::ClientGone,
                _ = self.stopping.wait_for(|stopping| *stopping) => break EndReason::Shutdown,
                notice = self.notices.recv() => notice,
            };
            let frame = match notice {
                Ok(Notice::Changed(changed)) if changed.revision > self.revision => {
                    self.revision = changed.revision;
                    match &self.kind {
                        Kind::Flagsmith => Some(changed.flagsmith.clone()),
                        Kind::Environment => changed.native.clone(),
                        Kind::Identity { .. } => self.identity_changes(),
                    }
                }
                Ok(Notice::Changed(_)) => None,
                Ok(Notice::Heartbeat) => {
                    Some(Bytes::from_static(crate::streams::events::HEARTBEAT))
                }
                Ok(Notice::End(reason)) => break reason,
                Err(broadcast::error::RecvError::Lagged(_)) => break EndReason::TooSlow,
                Err(broadcast::error::RecvError::Closed) => break EndReason::Shutdown,
            };
            let Some(frame) = frame else { continue };
            match self.frames.try_send(frame) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => break EndReason::TooSlow,
                Err(mpsc::error::TrySendError::Closed(_)) => break EndReason::ClientGone,
            }
        };
        self.shared.streams.ended(reason);
        if reason == EndReason::TooSlow {
            // hyper waits on a socket the client does not read, and would never end the body.
            if let Some(close) = &self.close {
                close.close();
            }
            tracing::info!(
                env = self.env,
                "a change stream's client stopped reading: dropped"
            );
        }
    }

    /// The identity's flags that differ from what it was last sent, from the published cache.
    fn identity_changes(&mut self) -> Option<Bytes> {
        let Kind::Identity { audience, last } = &mut self.kind else {
            return None;
        };
        let cache = self.shared.cache.load();
        let env = cache.env(self.env)?;
        let flags = audience.evaluate(Some(env));
        let (changed, deleted) = diff(last, &flags);
        *last = flags;
        if changed.is_empty() && deleted.is_empty() {
            return None;
        }
        let at = Position {
            env: self.env,
            revision: env.revision,
            updated_at_micros: env.updated_at_micros,
        };
        let identifier = audience.identity.as_ref().map(|i| i.identifier.as_str());
        Some(native_frame(at, identifier, false, &changed, &deleted))
    }
}

/// A place among `streams.max_streams`, or 503.
fn open_slot(shared: &Shared) -> Result<StreamSlot, ApiError> {
    let max = shared.live.load().streams.max_streams;
    shared
        .streams
        .try_open(max)
        .ok_or_else(|| LookupError::StreamsFull(max).into())
}

/// Starts the stream's task and answers its response.
fn start(
    shared: Arc<Shared>,
    env: u64,
    kind: Kind,
    subscription: Subscription,
    slot: StreamSlot,
    close: Option<Extension<CloseConnection>>,
) -> Response {
    let buffer = shared.live.load().streams.buffer_events;
    let (frames, receiver) = mpsc::channel(buffer + subscription.opening.len());
    for frame in subscription.opening {
        let _ = frames.try_send(frame);
    }
    let task = StreamTask {
        shared,
        env,
        kind,
        revision: subscription.revision,
        notices: subscription.notices,
        stopping: subscription.stopping,
        frames,
        close: close.map(|Extension(close)| close),
    };
    tokio::spawn(task.run());
    let mut response = Response::new(Body::new(StreamBody {
        frames: receiver,
        _slot: slot,
    }));
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
    let subscription = shared.streams.subscribe_flagsmith(env, &live);
    Ok(start(
        shared.clone(),
        env,
        Kind::Flagsmith,
        subscription,
        slot,
        close,
    ))
}

/// `?identifier=ID&traits={"plan":"pro"}` (traits as a JSON object, URL-encoded).
#[derive(Deserialize)]
pub(crate) struct StreamQuery {
    identifier: Option<String>,
    traits: Option<String>,
}

/// `Last-Event-ID`, as EventSource sends it on reconnecting; one that is not a revision asks
/// for the full state.
fn last_event_id(headers: &HeaderMap) -> Option<Option<u64>> {
    let value = headers.get("last-event-id")?;
    Some(value.to_str().ok().and_then(|id| id.trim().parse().ok()))
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
    let last_event_id = last_event_id(&headers);
    let Some(audience) = audience else {
        let subscription = shared
            .streams
            .subscribe_native(env, last_event_id.flatten(), &live);
        return Ok(start(
            shared.clone(),
            env,
            Kind::Environment,
            subscription,
            slot,
            close,
        ));
    };
    let mut subscription = shared.streams.subscribe_identity(env, &live);
    // The identity's flags in the subscription's cache, which is at or past its revision: the
    // notices up to the cache's revision are then skipped.
    let cache = subscription.cache.clone();
    let held = cache.env(env).map(|env| env.as_ref());
    let last = audience.evaluate(held);
    let at = Position {
        env,
        revision: held.map_or(0, |env| env.revision),
        updated_at_micros: held.map_or(0, |env| env.updated_at_micros),
    };
    // An identity's stream resumes only from the current position: its past is not kept.
    if last_event_id.flatten() != Some(at.revision) {
        let identifier = audience.identity.as_ref().map(|i| i.identifier.as_str());
        subscription.opening.push(full_frame(at, identifier, &last));
    }
    subscription.revision = subscription.revision.max(at.revision);
    let kind = Kind::Identity { audience, last };
    Ok(start(shared.clone(), env, kind, subscription, slot, close))
}

/// Sets [`UPDATED_AT_HEADER`] from the environment's `updated_at`, as Flagsmith does on its flag
/// answers: the JS client in realtime mode then refetches only for a newer event.
pub fn set_updated_at(response: &mut Response, updated_at_micros: i64) {
    if updated_at_micros == 0 {
        return;
    }
    let text = crate::streams::events::seconds(updated_at_micros);
    if let Ok(value) = HeaderValue::from_str(&text) {
        response.headers_mut().insert(UPDATED_AT_HEADER, value);
    }
}

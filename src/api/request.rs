//! What every write request goes through: the caller's token, a JSON body within the size limit,
//! and the commit with its `Idempotency-Key`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::AppState;
use super::error::ApiError;
use crate::changes::{Author, Changes, CommittedEvent};
use crate::config::ApiToken;
use crate::error::WriteError;
use crate::metrics::ChangeSource;
use crate::store::Tables;
use crate::store::idempotency::{self, StoredAnswer};

/// The caller, authenticated by `Authorization: Bearer <token>`; its token's name is the author.
#[derive(Debug, Clone)]
pub struct Caller {
    pub author: Author,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        authenticate(&parts.headers, &state.config.load())
            .map(|author| Caller { author })
            .map_err(|message| {
                state.metrics.refused("api", "unauthorized");
                ApiError::Unauthorized(message)
            })
    }
}

/// The author of a request bearing `Authorization: Bearer <token>` with a configured token; the
/// error says what is wrong without repeating what was presented. The change API and the admin
/// API both admit callers through this.
pub fn authenticate(
    headers: &axum::http::HeaderMap,
    config: &crate::config::Config,
) -> Result<Author, &'static str> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or("missing Authorization: Bearer <token>")?;
    // One digest of what was presented, compared with every token's in constant time: neither
    // the comparison nor which token matched shows in the time taken.
    let digest = ApiToken::digest_of(presented.trim());
    let token = config
        .tokens
        .iter()
        .fold(None, |found, t| match t.matches_digest(&digest) {
            true => Some(t),
            false => found,
        })
        .ok_or("token not recognised")?;
    Ok(Author {
        id: token.id,
        name: token.name.clone(),
        email: token.email.clone(),
    })
}

/// A JSON body, parsed strictly (unknown fields refused), with the request's fingerprint for
/// `Idempotency-Key` and the key itself.
pub struct JsonBody<T> {
    pub value: T,
    pub request: RequestIdentity,
}

/// A request's `Idempotency-Key`, if it sent one.
#[derive(Debug, Clone)]
pub struct RequestIdentity {
    pub idempotency: Option<Idempotency>,
}

/// The key, and what makes two requests under it "the same": method, path and body.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: String,
}

impl RequestIdentity {
    fn of(parts: &Parts, body: &[u8]) -> Result<RequestIdentity, ApiError> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            // No key, nothing to compare: the body is not hashed.
            return Ok(RequestIdentity { idempotency: None });
        };
        let key = value
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 255)
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
                )
            })?;
        let mut hash = Sha256::new();
        hash.update(parts.method.as_str());
        hash.update(b" ");
        hash.update(parts.uri.path());
        hash.update(b"\n");
        hash.update(body);
        Ok(RequestIdentity {
            idempotency: Some(Idempotency {
                key: key.to_owned(),
                fingerprint: hex::encode(hash.finalize()),
            }),
        })
    }
}

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let result = parse_body(parts, body, state).await;
        if let Err(error) = &result {
            state.metrics.refused("api", error.reason());
        }
        result
    }
}

async fn parse_body<T: DeserializeOwned>(
    parts: Parts,
    body: axum::body::Body,
    state: &AppState,
) -> Result<JsonBody<T>, ApiError> {
    let bytes = read_json_bytes(&parts, body, state.config.load().max_body_bytes).await?;
    let value = decode_object(&bytes)?;
    let request = RequestIdentity::of(&parts, &bytes)?;
    Ok(JsonBody { value, request })
}

/// The body of a request that says it is `application/json`, within `limit` bytes.
async fn read_json_bytes(
    parts: &Parts,
    body: axum::body::Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
    if is_json != Some(true) {
        return Err(ApiError::UnsupportedMediaType);
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(limit))
}

/// Decodes a body that must be a JSON object into `T`.
fn decode_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde reads a JSON array into a struct by field position (`[false, "x"]` as a state
    // update); every documented body is an object, so anything else is refused here, for every route.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".to_owned(),
        ));
    }
    // serde_json would read an integer wider than 64 bits as a float, losing digits.
    if let Some(integer) = crate::wire::first_integer_out_of_range(bytes) {
        return Err(ApiError::Write(WriteError::Invalid(format!(
            "integer {integer} is outside the range taken ({})",
            crate::wire::INTEGER_RANGE
        ))));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// A small JSON object body for routes outside the change API (the delivery admin routes), read
/// by the same rules as [`JsonBody`] but with no `Idempotency-Key`.
pub struct ObjectBody<T>(pub T);

/// The most an [`ObjectBody`] may be: its bodies are a few fields.
const OBJECT_BODY_LIMIT: usize = 64 * 1024;

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ObjectBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = read_json_bytes(&parts, body, OBJECT_BODY_LIMIT).await?;
        decode_object(&bytes).map(ObjectBody)
    }
}

/// The identity of a request that has no body (DELETE).
pub struct BodilessRequest(pub RequestIdentity);

impl FromRequestParts<Arc<AppState>> for BodilessRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<AppState>) -> Result<Self, ApiError> {
        RequestIdentity::of(parts, b"").map(BodilessRequest)
    }
}

/// What a change's job hands back from the writer.
enum Answer {
    /// Built in the writer, because it had to be kept for an `Idempotency-Key`, or was kept.
    Built(u16, Value, Vec<CommittedEvent>),
    /// Left for the handler to build, off the writer thread.
    Parts(Map<String, Value>, Vec<CommittedEvent>),
}

/// The answer to a change: the object the change returned, plus the events it committed.
fn answer_body(mut body: Map<String, Value>, events: &[CommittedEvent]) -> Value {
    body.insert("events".into(), json!(events));
    Value::Object(body)
}

/// [`answer_body`] written straight to JSON, byte for byte the same (keys in order, as a JSON
/// object holds them), without first building a tree of the events: every change answers one.
struct AnswerBody<'a> {
    body: &'a Map<String, Value>,
    events: &'a [CommittedEvent],
}

impl Serialize for AnswerBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let events: Vec<SortedEvent<'_>> = self.events.iter().map(SortedEvent).collect();
        let mut map = serializer.serialize_map(Some(self.body.len() + 1))?;
        let mut written = false;
        for (key, value) in self.body {
            if !written && key.as_str() >= "events" {
                map.serialize_entry("events", &events)?;
                written = true;
            }
            // `answer_body` replaces a key "events" of the change's own.
            if key != "events" {
                map.serialize_entry(key, value)?;
            }
        }
        if !written {
            map.serialize_entry("events", &events)?;
        }
        map.end()
    }
}

/// A committed event with its keys in the order a JSON object of it holds them.
struct SortedEvent<'a>(&'a CommittedEvent);

impl Serialize for SortedEvent<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("event_type", &self.0.event_type)?;
        map.serialize_entry("id", &self.0.id)?;
        map.serialize_entry("sequence", &self.0.sequence)?;
        map.end()
    }
}

/// Applies a change in the writer's next batch and answers once it is durable: `status` and the
/// object `change` returns, plus `events`, the events committed. With an `Idempotency-Key` the
/// answer is stored in the same transaction, and a retry of the same request gets it again without
/// a second change.
pub async fn commit<F>(
    state: &AppState,
    caller: Caller,
    request: RequestIdentity,
    status: StatusCode,
    mut change: F,
) -> Result<Response, ApiError>
where
    F: FnMut(&mut Changes<Tables>) -> Result<Map<String, Value>, WriteError> + Send + 'static,
{
    let config = state.config.load_full();
    let author = caller.author;
    let result = state
        .store
        .write(move |tables| {
            let Some(idempotency) = request.idempotency.as_ref() else {
                let now = OffsetDateTime::now_utc();
                let mut changes = Changes::new(tables, &config, &author, now);
                let body = change(&mut changes)?;
                return Ok(Answer::Parts(body, changes.into_events()));
            };
            if let Some(stored) = idempotency::lookup(tables, &author.name, &idempotency.key)? {
                if stored.fingerprint != idempotency.fingerprint {
                    return Err(WriteError::IdempotencyConflict);
                }
                return Ok(Answer::Built(stored.status, stored.body, Vec::new()));
            }
            let now = OffsetDateTime::now_utc();
            let mut changes = Changes::new(tables, &config, &author, now);
            let body = change(&mut changes)?;
            let events = changes.into_events();
            let answer = StoredAnswer {
                fingerprint: idempotency.fingerprint.clone(),
                status: status.as_u16(),
                body: answer_body(body, &events),
                at_ms: (now.unix_timestamp_nanos() / 1_000_000) as u64,
            };
            idempotency::keep(tables, &author.name, &idempotency.key, &answer)?;
            Ok(Answer::Built(answer.status, answer.body, events))
        })
        .await;
    let (status, response, events) = match result {
        Ok(Answer::Built(status, body, events)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            (status, axum::Json(body).into_response(), events)
        }
        Ok(Answer::Parts(body, events)) => {
            let answer = AnswerBody {
                body: &body,
                events: &events,
            };
            (status, axum::Json(answer).into_response(), events)
        }
        Err(error) => {
            let error = ApiError::from(error);
            state.metrics.refused("api", error.reason());
            return Err(error);
        }
    };
    if !events.is_empty() {
        state.metrics.change_committed(ChangeSource::Api, &events);
    }
    Ok((status, response).into_response())
}

/// Removes stored idempotency answers older than `retention_ms`.
pub async fn prune_idempotency(state: &AppState, retention_ms: u64) -> Result<usize, ApiError> {
    let now_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64;
    let cutoff = now_ms.saturating_sub(retention_ms);
    let pruned = state
        .store
        .write(move |tables| Ok(idempotency::prune(tables, cutoff)?))
        .await?;
    Ok(pruned)
}

/// `axum::extract::Path` with its rejections as JSON [`ApiError`]s.
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Arc<AppState>> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathParams(p.0))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// `axum::extract::Query` with its rejections as JSON [`ApiError`]s.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Arc<AppState>> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// `?project=N` on a list route: that project, or every configured project without it.
#[derive(Deserialize)]
pub struct ProjectFilter {
    project: Option<u64>,
}

impl ProjectFilter {
    pub fn projects(&self, state: &AppState) -> Vec<u64> {
        match self.project {
            Some(project) => vec![project],
            None => state.config.load().projects.keys().copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer written directly is byte for byte the one built as a JSON tree.
    #[test]
    fn answers_are_written_as_their_json_tree_would_be() {
        let events = [
            CommittedEvent {
                id: "evt_0000000000000001_000000000007".into(),
                sequence: 7,
                event_type: "FLAG_UPDATED".into(),
            },
            CommittedEvent {
                id: "evt_0000000000000001_000000000008".into(),
                sequence: 8,
                event_type: "AUDIT_LOG_CREATED".into(),
            },
        ];
        for body in [
            json!({}),
            json!({"changed": true}),
            json!({"a": 1, "events": "replaced", "z": [1, "two"]}),
            json!({"id": 3, "name": "n\"ame", "feature": {"x": null}}),
        ] {
            let Value::Object(body) = body else {
                unreachable!()
            };
            for events in [&events[..0], &events[..]] {
                let direct = serde_json::to_string(&AnswerBody {
                    body: &body,
                    events,
                })
                .unwrap();
                let tree = serde_json::to_string(&answer_body(body.clone(), events)).unwrap();
                assert_eq!(direct, tree);
            }
        }
    }
}

//! The OpenFeature Remote Evaluation Protocol (OFREP, `open-feature/protocol`'s
//! `service/openapi.yaml`), so that every OpenFeature OFREP provider reads the receiver:
//!
//! - `POST /ofrep/v1/evaluate/flags/{key}`: one flag, for server-side providers;
//! - `POST /ofrep/v1/evaluate/flags`: every flag, for client-side providers, with an `ETag`
//!   ([`etag`]: of the environment's revision and the context) and `If-None-Match` answered 304
//!   before anything is evaluated.
//!
//! Both evaluate the environment with the same compiled evaluation as `/api/v1/identities/`, and
//! write the answer from its borrowed outcomes ([`render`]); how a Flagsmith flag maps onto
//! OFREP's value, reason and variant is in [`answer`]. The environment is
//! chosen by its key, sent as the providers are configured to: `Authorization: Bearer KEY`,
//! `X-API-Key` or Flagsmith's `X-Environment-Key`; client and server keys are both accepted.

pub mod answer;
pub mod etag;
pub mod render;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode, header};

use crate::api::{AppState, json_response};
use crate::app::Shared;
use crate::error::{ApiError, LookupError, OfrepError};
use answer::read_request;

/// `POST /ofrep/v1/evaluate/flags/{key}`.
pub(crate) async fn evaluate_flag(
    State(shared): AppState,
    Path(key): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let answer = one_flag(&shared, key, request).await;
    shared.metrics.ofrep("flag", result_label(&answer));
    answer
}

/// `POST /ofrep/v1/evaluate/flags`.
pub(crate) async fn evaluate_flags(
    State(shared): AppState,
    request: Request,
) -> Result<Response, ApiError> {
    let answer = every_flag(&shared, request).await;
    shared.metrics.ofrep("bulk", result_label(&answer));
    answer
}

/// The metric's `result`: `ok`, `not_modified`, `unauthorized`, or the protocol's error code.
fn result_label(answer: &Result<Response, ApiError>) -> &'static str {
    match answer {
        Ok(response) if response.status() == StatusCode::NOT_MODIFIED => "not_modified",
        Ok(_) => "ok",
        Err(ApiError::Ofrep { error, .. }) => error.label(),
        Err(_) => "unauthorized",
    }
}

async fn one_flag(shared: &Shared, key: String, request: Request) -> Result<Response, ApiError> {
    let refused = |error| ApiError::Ofrep {
        key: Some(key.clone()),
        error,
    };
    let (env, body) = read(shared, request).await.map_err(|e| e.for_flag(&key))?;
    let identity = read_request(&body).map_err(refused)?;
    let cache = shared.cache.load();
    let answer = cache
        .env(env)
        .and_then(|env| render::flag_answer(env, identity.as_ref(), &key))
        .ok_or_else(|| refused(OfrepError::FlagNotFound(key.clone())))?;
    Ok(json_response(StatusCode::OK, answer))
}

async fn every_flag(shared: &Shared, request: Request) -> Result<Response, ApiError> {
    let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
    let (env_id, body) = read(shared, request).await?;
    let refused = |error| ApiError::Ofrep { key: None, error };
    let identity = read_request(&body).map_err(refused)?;
    let cache = shared.cache.load();
    let env = cache.env(env_id).map(|env| &**env);
    // Answered from the tag alone: a client that holds the answer costs no evaluation.
    let etag = etag::bulk_etag(shared.file_id, env_id, env, identity.as_ref());
    if if_none_match.is_some_and(|tags| etag::matches(&tags, &etag)) {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response.headers_mut().insert(header::ETAG, etag);
        return Ok(response);
    }
    let body = match env {
        Some(env) => render::bulk_answer(env, identity.as_ref()),
        None => Bytes::from_static(b"{\"flags\":[]}"),
    };
    let mut response = json_response(StatusCode::OK, body);
    response.headers_mut().insert(header::ETAG, etag);
    Ok(response)
}

/// Why a request was refused before its context was read.
enum Refused {
    Lookup(LookupError),
    Ofrep(OfrepError),
}

impl Refused {
    fn for_flag(self, key: &str) -> ApiError {
        match self {
            Refused::Lookup(error) => error.into(),
            Refused::Ofrep(error) => ApiError::Ofrep {
                key: Some(key.to_owned()),
                error,
            },
        }
    }
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Lookup(error) => error.into(),
            Refused::Ofrep(error) => ApiError::Ofrep { key: None, error },
        }
    }
}

/// The environment the request's key selects, and its body (JSON, within the body limit).
async fn read(shared: &Shared, request: Request) -> Result<(u64, Bytes), Refused> {
    let env = environment(shared, request.headers()).map_err(Refused::Lookup)?;
    crate::intake::request::check_content_type(request.headers())
        .map_err(|_| Refused::Ofrep(OfrepError::UnsupportedMediaType))?;
    let limit = shared.live.load().max_body_bytes;
    let body = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|error| Refused::Ofrep(OfrepError::Parse(format!("body: {error}"))))?;
    Ok((env, body))
}

fn environment(shared: &Shared, headers: &HeaderMap) -> Result<u64, LookupError> {
    let key = api_key(headers).ok_or(LookupError::MissingApiKey)?;
    shared
        .live
        .load()
        .environment_keys
        .get(key)
        .copied()
        .ok_or(LookupError::UnknownApiKey)
}

/// The key as an OFREP provider sends it: a bearer token, `X-API-Key` (OFREP's two schemes), or
/// Flagsmith's own `X-Environment-Key`.
fn api_key(headers: &HeaderMap) -> Option<&str> {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let bearer = text(header::AUTHORIZATION.as_str()).and_then(|value| {
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    bearer
        .or_else(|| text("x-api-key"))
        .or_else(|| text("x-environment-key"))
        .filter(|key| !key.is_empty())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn the_key_comes_from_any_header_a_provider_uses() {
        let with = |name: &'static str, value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static(value));
            api_key(&headers).map(str::to_owned)
        };
        assert_eq!(with("authorization", "Bearer k1").as_deref(), Some("k1"));
        assert_eq!(with("authorization", "bearer  k1 ").as_deref(), Some("k1"));
        assert_eq!(with("authorization", "Basic k1"), None);
        assert_eq!(with("x-api-key", "k2").as_deref(), Some("k2"));
        assert_eq!(with("x-environment-key", "k3").as_deref(), Some("k3"));
        assert_eq!(with("x-api-key", ""), None);
    }
}

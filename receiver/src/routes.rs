//! The HTTP transport: routes and thin handlers over intake, lookups, the SDK API and admin.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;

use crate::app::Shared;
use crate::error::ApiError;
use crate::intake::{self, IntakeError};
use crate::lookup::{self, LookupError};
use crate::now_unix;
use crate::sdk;

/// Paths the lookup, admin and health routes use; the webhook path must not start with one.
pub const RESERVED_PREFIXES: &[&str] = &[
    "/v1/", "/api/", "/admin/", "/healthz", "/readyz", "/metrics",
];

const ENVIRONMENT_KEY_HEADER: &str = "x-environment-key";

type AppState = State<Arc<Shared>>;

pub fn router(shared: Arc<Shared>, webhook_path: &str) -> Router {
    Router::new()
        .route(webhook_path, post(take_webhook))
        .route("/v1/environments/{env}/flags", get(environment_flags))
        .route("/v1/environments/{env}/flags/{feature}", get(one_flag))
        .route(
            "/v1/environments/{env}/identities/{identifier}/flags",
            get(identity_flags),
        )
        .route("/api/v1/flags/", get(sdk_flags))
        .route("/api/v1/flags", get(sdk_flags))
        .route(
            "/api/v1/identities/",
            get(sdk_identity_get).post(sdk_identity_post),
        )
        .route(
            "/api/v1/identities",
            get(sdk_identity_get).post(sdk_identity_post),
        )
        .route(
            "/admin/environments/{env}/bootstrap",
            post(bootstrap_environment),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn json_value<T: serde::Serialize>(value: &T) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_vec(value).expect("responses serialise"),
    )
}

async fn take_webhook(State(shared): AppState, request: Request) -> Response {
    match intake_request(&shared, request).await {
        Ok(outcome) => {
            shared.metrics.accepted(outcome.as_str());
            json_response(StatusCode::OK, Bytes::from_static(outcome.response_body()))
        }
        Err(error) => {
            if let ApiError::Intake(intake) = &error {
                shared.metrics.refused(intake.reason());
            }
            error.into_response()
        }
    }
}

async fn intake_request(
    shared: &Shared,
    request: Request,
) -> Result<crate::writer::IntakeOutcome, ApiError> {
    let (parts, body) = request.into_parts();
    intake::check_content_type(&parts.headers)?;
    let live = shared.live.load_full();
    let limit = live.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(IntakeError::TooLarge { limit }.into());
    }
    let body = Limited::new(body, limit).collect().await.map_err(|error| {
        if error.is::<http_body_util::LengthLimitError>() {
            IntakeError::TooLarge { limit }
        } else {
            IntakeError::Body(error.to_string())
        }
    })?;
    let body = body.to_bytes();
    let verified = intake::verify(&parts.headers, &body, &live, now_unix())?;
    let accepted = intake::read(&parts.headers, &body, verified)?;
    Ok(shared
        .writer
        .intake(accepted.request_id, accepted.change)
        .await?)
}

async fn environment_flags(
    State(shared): AppState,
    Path(env): Path<u64>,
) -> Result<Response, ApiError> {
    let cache = shared.cache.load();
    Ok(json_value(&lookup::all_flags(&cache, env)?))
}

async fn one_flag(
    State(shared): AppState,
    Path((env, feature)): Path<(u64, String)>,
) -> Result<Response, ApiError> {
    let cache = shared.cache.load();
    Ok(json_value(&lookup::one_flag(&cache, env, &feature)?))
}

async fn identity_flags(
    State(shared): AppState,
    Path((env, identifier)): Path<(u64, String)>,
) -> Result<Response, ApiError> {
    let cache = shared.cache.load();
    Ok(json_value(&lookup::identity_flags(
        &cache,
        env,
        &identifier,
    )?))
}

/// The environment an SDK request is for, from its `X-Environment-Key`.
fn sdk_environment(shared: &Shared, headers: &HeaderMap) -> Result<u64, LookupError> {
    let key = headers
        .get(ENVIRONMENT_KEY_HEADER)
        .and_then(|value| value.to_str().ok())
        .ok_or(LookupError::MissingEnvironmentKey)?;
    shared
        .live
        .load()
        .environment_keys
        .get(key)
        .copied()
        .ok_or(LookupError::UnknownEnvironmentKey)
}

/// Takes the request whole (not a `HeaderMap`, which the extractor would clone): this is the
/// hottest route.
async fn sdk_flags(State(shared): AppState, request: Request) -> Result<Response, ApiError> {
    let env = sdk_environment(&shared, request.headers())?;
    let cache = shared.cache.load();
    let body = match cache.env(env) {
        Some(env_cache) => sdk::environment_flags(env, env_cache),
        // Configured but no data yet: no flags, as for an empty environment.
        None => Bytes::from_static(b"[]"),
    };
    Ok(json_response(StatusCode::OK, body))
}

#[derive(Deserialize)]
struct IdentityQuery {
    identifier: Option<String>,
}

async fn sdk_identity_get(
    State(shared): AppState,
    headers: HeaderMap,
    Query(query): Query<IdentityQuery>,
) -> Result<Response, ApiError> {
    let env = sdk_environment(&shared, &headers)?;
    let identifier = query
        .identifier
        .filter(|identifier| !identifier.is_empty())
        .ok_or(LookupError::MissingIdentifier)?;
    let cache = shared.cache.load();
    let body = sdk::identity_flags(env, cache.env(env).map(|e| e.as_ref()), &identifier, &[]);
    Ok(json_response(StatusCode::OK, body))
}

async fn sdk_identity_post(
    State(shared): AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let env = sdk_environment(&shared, &headers)?;
    let request: sdk::IdentityRequest = serde_json::from_slice(&body)
        .map_err(|error| LookupError::BadRequest(error.to_string()))?;
    if request.identifier.is_empty() {
        return Err(LookupError::MissingIdentifier.into());
    }
    let cache = shared.cache.load();
    let body = sdk::identity_flags(
        env,
        cache.env(env).map(|e| e.as_ref()),
        &request.identifier,
        &request.traits,
    );
    Ok(json_response(StatusCode::OK, body))
}

async fn bootstrap_environment(
    State(shared): AppState,
    Path(env): Path<u64>,
) -> Result<Response, ApiError> {
    let last_sequence = shared.load_environment(env).await?;
    Ok(json_value(
        &serde_json::json!({ "environment": env, "last_sequence": last_sequence }),
    ))
}

async fn healthz(State(shared): AppState) -> Response {
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

async fn readyz(State(shared): AppState) -> Response {
    let waiting = if shared.live.load().bootstrap.is_some() {
        shared.environments_waiting()
    } else {
        Vec::new()
    };
    let status = if waiting.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ready": waiting.is_empty(), "waiting_for": waiting });
    json_response(status, serde_json::to_vec(&body).expect("serialises"))
}

async fn metrics(State(shared): AppState) -> Response {
    let text = shared.metrics.render(&shared.cache.load(), now_unix());
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

//! The Flagsmith-SDK-compatible API: the shapes of Flagsmith's `GET /api/v1/flags/` and
//! `GET`/`POST /api/v1/identities/`, so that an official SDK can use the receiver as its `api_url`
//! for remote evaluation.
//!
//! The SDKs read, per flag, `enabled`, `feature_state_value` and `feature.{id,name}`; the rest of
//! Flagsmith's feature-state object is filled from the cache so that other readers find the fields
//! they expect. Identities resolve to the identity override, else the environment default: the
//! receiver has no segment rules, so it cannot tell whether an identity is in a segment, and
//! segment overrides never apply here (see the README).

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::response::Response;
use flagpost::wire::FlagValue;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::api::{AppState, json_response};
use crate::app::Shared;
use crate::documents::{EnvCache, FeatureEntry, FlagState};
use crate::error::{ApiError, LookupError};

const ENVIRONMENT_KEY_HEADER: &str = "x-environment-key";

#[derive(Serialize)]
struct SdkFeature<'a> {
    id: u64,
    name: &'a str,
    #[serde(rename = "type")]
    feature_type: &'a str,
    description: &'a Option<String>,
    initial_value: &'a Option<FlagValue>,
    default_enabled: bool,
    created_date: &'a Option<String>,
}

#[derive(Serialize)]
struct SdkFlag<'a> {
    feature: SdkFeature<'a>,
    enabled: bool,
    feature_state_value: &'a Option<FlagValue>,
    environment: u64,
    identity: Option<()>,
    feature_segment: Option<()>,
}

fn sdk_flag<'a>(env: u64, entry: &'a FeatureEntry, id: u64, state: &'a FlagState) -> SdkFlag<'a> {
    let meta = &entry.meta;
    SdkFlag {
        feature: SdkFeature {
            id,
            name: &meta.name,
            feature_type: meta.feature_type.as_deref().unwrap_or("STANDARD"),
            description: &meta.description,
            initial_value: &meta.initial_value,
            default_enabled: meta.default_enabled.unwrap_or(false),
            created_date: &meta.created_date,
        },
        enabled: state.enabled,
        feature_state_value: &state.value,
        environment: env,
        identity: None,
        feature_segment: None,
    }
}

/// Flags of the environment resolved for `identifier` (or the defaults when `None`), by feature id.
fn flags<'a>(env_id: u64, env: &'a EnvCache, identifier: Option<&str>) -> Vec<SdkFlag<'a>> {
    let mut flags: Vec<_> = env
        .live_features()
        .filter_map(|(id, entry)| {
            let state = identifier
                .and_then(|identifier| entry.identity_state(identifier))
                .or_else(|| entry.default_state())?;
            Some(sdk_flag(env_id, entry, id, state))
        })
        .collect();
    flags.sort_by_key(|flag| flag.feature.id);
    flags
}

/// The body of `GET /api/v1/flags/`, rendered once per change of the environment.
pub fn environment_flags(env_id: u64, env: &EnvCache) -> Bytes {
    env.rendered(|env| {
        Bytes::from(serde_json::to_vec(&flags(env_id, env, None)).expect("flags serialise"))
    })
}

/// `POST /api/v1/identities/` as the SDKs send it.
#[derive(Debug, Deserialize)]
pub struct IdentityRequest {
    pub identifier: String,
    #[serde(default)]
    pub traits: Vec<Trait>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trait {
    pub trait_key: String,
    #[serde(default)]
    pub trait_value: serde_json::Value,
}

#[derive(Serialize)]
struct IdentityResponse<'a> {
    identifier: &'a str,
    flags: Vec<SdkFlag<'a>>,
    /// Echoed as sent: the receiver stores no traits.
    traits: &'a [Trait],
}

/// The body of `GET`/`POST /api/v1/identities/`; an environment with no data yet gives no flags.
pub fn identity_flags(
    env_id: u64,
    env: Option<&EnvCache>,
    identifier: &str,
    traits: &[Trait],
) -> Vec<u8> {
    let response = IdentityResponse {
        identifier,
        flags: env
            .map(|env| flags(env_id, env, Some(identifier)))
            .unwrap_or_default(),
        traits,
    };
    serde_json::to_vec(&response).expect("identity response serialises")
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
pub(crate) async fn flags_route(
    State(shared): AppState,
    request: Request,
) -> Result<Response, ApiError> {
    let env = sdk_environment(&shared, request.headers())?;
    let cache = shared.cache.load();
    let body = match cache.env(env) {
        Some(env_cache) => environment_flags(env, env_cache),
        // Configured but no data yet: no flags, as for an empty environment.
        None => Bytes::from_static(b"[]"),
    };
    Ok(json_response(StatusCode::OK, body))
}

#[derive(Deserialize)]
pub(crate) struct IdentityQuery {
    identifier: Option<String>,
}

pub(crate) async fn identity_get(
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
    let body = identity_flags(env, cache.env(env).map(|e| e.as_ref()), &identifier, &[]);
    Ok(json_response(StatusCode::OK, body))
}

pub(crate) async fn identity_post(
    State(shared): AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    crate::intake::request::check_content_type(&headers)?;
    let env = sdk_environment(&shared, &headers)?;
    // serde reads a JSON array into a struct by field position; the documented body is an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(LookupError::BadRequest("must be a JSON object".to_owned()).into());
    }
    let request: IdentityRequest = serde_json::from_slice(&body)
        .map_err(|error| LookupError::BadRequest(error.to_string()))?;
    if request.identifier.is_empty() {
        return Err(LookupError::MissingIdentifier.into());
    }
    let cache = shared.cache.load();
    let body = identity_flags(
        env,
        cache.env(env).map(|e| e.as_ref()),
        &request.identifier,
        &request.traits,
    );
    Ok(json_response(StatusCode::OK, body))
}

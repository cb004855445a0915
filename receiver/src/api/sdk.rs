//! Flagsmith's SDK routes, answered by Flagsmith's engine from each environment's document and
//! the web-hook changes on top of it ([`crate::evaluation`]):
//!
//! - `GET /api/v1/flags/`: the environment's flags (rendered once per change);
//! - `GET /api/v1/identities/?identifier=` and `POST /api/v1/identities/` with traits: the flags
//!   for one identity, its traits as sent (the receiver stores no traits: see the README);
//! - `GET /api/v1/environment-document/` for server-side keys: the document as held, so that
//!   SDKs in local evaluation mode run against the receiver;
//! - `POST /api/v1/analytics/flags/`: accepted, counted and forwarded to the upstream if any.

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::response::Response;
use flagsmith_flag_engine::types::FlagsmithValue;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::api::{AppState, json_response};
use crate::app::Shared;
use crate::documents::{EnvCache, FeatureMeta};
use crate::error::{ApiError, LookupError};
use crate::evaluation::{IdentityInput, ResolvedFlag};

const ENVIRONMENT_KEY_HEADER: &str = "x-environment-key";

#[derive(Serialize)]
struct SdkFeature<'a> {
    id: u64,
    name: &'a str,
    #[serde(rename = "type")]
    feature_type: &'a str,
    description: Option<&'a str>,
    initial_value: Option<&'a flagpost::wire::FlagValue>,
    default_enabled: bool,
    created_date: Option<&'a str>,
}

#[derive(Serialize)]
struct SdkFlag<'a> {
    id: Option<u64>,
    feature: SdkFeature<'a>,
    enabled: bool,
    feature_state_value: &'a serde_json::Value,
    environment: Option<u64>,
    identity: Option<u64>,
    feature_segment: Option<()>,
    /// Identity answers only.
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a Option<String>>,
}

fn sdk_flag<'a>(
    env_id: u64,
    env: &'a EnvCache,
    flag: &'a ResolvedFlag,
    for_identity: bool,
    hide_sensitive_data: bool,
) -> SdkFlag<'a> {
    // What the document does not carry (description, initial value, ...) comes from web hooks.
    let meta: Option<&FeatureMeta> = env.features.get(&flag.feature_id).map(|e| &e.meta);
    let flag_view = SdkFlag {
        id: flag.state_id,
        feature: SdkFeature {
            id: flag.feature_id,
            name: &flag.name,
            feature_type: &flag.feature_type,
            description: meta.and_then(|m| m.description.as_deref()),
            initial_value: meta.and_then(|m| m.initial_value.as_ref()),
            default_enabled: meta.and_then(|m| m.default_enabled).unwrap_or(false),
            created_date: meta.and_then(|m| m.created_date.as_deref()),
        },
        enabled: flag.enabled,
        feature_state_value: &flag.value,
        environment: Some(env_id),
        identity: flag.identity_id,
        feature_segment: None,
        variant: for_identity.then_some(&flag.variant),
    };
    if hide_sensitive_data {
        return hidden(flag_view);
    }
    flag_view
}

/// What Flagsmith answers under `hide_sensitive_data`: no ids, no feature details.
fn hidden(flag: SdkFlag<'_>) -> SdkFlag<'_> {
    SdkFlag {
        id: None,
        feature: SdkFeature {
            description: None,
            initial_value: None,
            default_enabled: false,
            created_date: None,
            ..flag.feature
        },
        environment: None,
        identity: None,
        ..flag
    }
}

/// The body of `GET /api/v1/flags/`, rendered once per change of the environment.
pub fn environment_flags(env_id: u64, env: &EnvCache) -> Bytes {
    env.rendered(|env| {
        let prepared = env.prepared();
        let hide = prepared.settings().hide_sensitive_data;
        let evaluation = prepared.evaluate(None, &[]);
        let flags: Vec<SdkFlag<'_>> = evaluation
            .flags
            .iter()
            .map(|flag| sdk_flag(env_id, env, flag, false, hide))
            .collect();
        Bytes::from(serde_json::to_vec(&flags).expect("flags serialise"))
    })
}

/// `POST /api/v1/identities/` as the SDKs send it.
#[derive(Debug, Deserialize)]
pub struct IdentityRequest {
    #[serde(default)]
    pub identifier: Option<String>,
    #[serde(default)]
    pub traits: Vec<Trait>,
    #[serde(default)]
    pub transient: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trait {
    pub trait_key: String,
    #[serde(default)]
    pub trait_value: serde_json::Value,
    #[serde(default)]
    pub transient: bool,
}

#[derive(Serialize)]
struct TraitView<'a> {
    id: Option<u64>,
    trait_key: &'a str,
    trait_value: &'a serde_json::Value,
    transient: bool,
}

#[derive(Serialize)]
struct IdentityResponse<'a> {
    identifier: &'a str,
    flags: Vec<SdkFlag<'a>>,
    traits: Vec<TraitView<'a>>,
}

/// The traits the engine reads: a `null` value deletes a trait in Flagsmith, so it is left out,
/// and so is a value that is no scalar.
fn engine_traits(traits: &[Trait]) -> std::collections::HashMap<String, FlagsmithValue> {
    traits
        .iter()
        .filter(|t| !t.trait_value.is_null())
        .filter_map(|t| {
            let value = serde_json::from_value(t.trait_value.clone()).ok()?;
            Some((t.trait_key.clone(), value))
        })
        .collect()
}

/// The body of `GET`/`POST /api/v1/identities/`; an environment with no data yet gives no flags.
pub fn identity_flags(
    env_id: u64,
    env: Option<&EnvCache>,
    identifier: &str,
    traits: &[Trait],
) -> Vec<u8> {
    let input = IdentityInput {
        identifier: identifier.to_owned(),
        key: None,
        traits: engine_traits(traits),
    };
    let evaluation = env.map(|env| {
        let overlay = env.identity_overlay(identifier);
        let prepared = env.prepared();
        let hide = prepared.settings().hide_sensitive_data;
        (env, prepared.evaluate(Some(&input), &overlay), hide)
    });
    let hide = evaluation.as_ref().is_some_and(|(_, _, hide)| *hide);
    let flags = evaluation
        .as_ref()
        .map(|(env, evaluation, _)| {
            evaluation
                .flags
                .iter()
                .map(|flag| sdk_flag(env_id, env, flag, true, hide))
                .collect()
        })
        .unwrap_or_default();
    let mut traits: Vec<TraitView<'_>> = traits
        .iter()
        .filter(|t| !t.trait_value.is_null())
        .map(|t| TraitView {
            id: None,
            trait_key: &t.trait_key,
            trait_value: &t.trait_value,
            transient: t.transient,
        })
        .collect();
    traits.sort_by(|a, b| a.trait_key.cmp(b.trait_key));
    if hide {
        traits.clear();
    }
    let response = IdentityResponse {
        identifier,
        flags,
        traits,
    };
    serde_json::to_vec(&response).expect("identity response serialises")
}

/// The environment an SDK request is for, from its `X-Environment-Key` (client or server key).
fn sdk_environment(shared: &Shared, headers: &HeaderMap) -> Result<u64, LookupError> {
    let key = environment_key(headers).ok_or(LookupError::MissingEnvironmentKey)?;
    shared
        .live
        .load()
        .environment_keys
        .get(key)
        .copied()
        .ok_or(LookupError::UnknownEnvironmentKey)
}

fn environment_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(ENVIRONMENT_KEY_HEADER)
        .and_then(|value| value.to_str().ok())
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
    // Without an identifier, Flagsmith makes the identity transient, named by its traits.
    let named = request
        .identifier
        .filter(|identifier| !identifier.is_empty());
    let transient = request.transient || named.is_none();
    let identifier = named.unwrap_or_else(|| crate::api::transient::identifier(&request.traits));
    let mut traits = request.traits;
    if transient {
        traits.iter_mut().for_each(|t| t.transient = true);
    }
    let cache = shared.cache.load();
    let body = identity_flags(
        env,
        cache.env(env).map(|e| e.as_ref()),
        &identifier,
        &traits,
    );
    Ok(json_response(StatusCode::OK, body))
}

/// `GET /api/v1/environment-document/`: server-side keys only, as in Flagsmith.
pub(crate) async fn environment_document(
    State(shared): AppState,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let env = environment_key(&headers)
        .and_then(|key| shared.live.load().server_keys.get(key).copied())
        .ok_or(LookupError::NotAServerKey)?;
    let cache = shared.cache.load();
    let doc = cache
        .env(env)
        .and_then(|env| env.upstream.as_ref())
        .ok_or(LookupError::NoDocument(env))?;
    Ok(json_response(StatusCode::OK, doc.raw.bytes()))
}

/// `POST /api/v1/analytics/flags/`: SDKs report evaluation counts here. Accepted whatever its
/// content (an SDK logs any error), counted, and forwarded to the environment's upstream.
pub(crate) async fn analytics(
    State(shared): AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Ok(env) = sdk_environment(&shared, &headers) {
        shared.metrics.analytics(env);
        if let Some(upstream) = shared.live.load().upstreams.get(&env).cloned() {
            let shared = shared.clone();
            tokio::spawn(async move {
                let client = shared.upstreams.client();
                if let Err(error) = client.forward_analytics(&upstream, body).await {
                    tracing::debug!(env, %error, "flag analytics not forwarded");
                }
            });
        }
    }
    json_response(StatusCode::OK, Bytes::from_static(b"{}"))
}

//! Flagsmith's SDK routes, answered by Flagsmith's engine from each environment's document and
//! the web-hook changes on top of it ([`crate::evaluation`]):
//!
//! - `GET /api/v1/flags/`: the environment's flags (rendered once per change);
//! - `GET /api/v1/identities/?identifier=` and `POST /api/v1/identities/` with traits: the flags
//!   for one identity, its traits as sent (the receiver stores no traits: see the README);
//! - `GET /api/v1/environment-document/` for server-side keys: the document as held, so that
//!   SDKs in local evaluation mode run against the receiver;
//! - `POST /api/v1/analytics/flags/`: accepted, counted and forwarded to the upstream if any.

use std::sync::OnceLock;

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
use crate::evaluation::outcome::write_json;
use crate::evaluation::{FlagOutcome, IdentityInput, ResolvedFlag};

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

/// Parts of identity answers, kept until the environment changes: each feature's `"feature"`
/// object (by feature id, with the name and type it was rendered for), and each flag the
/// prepared environment can give, rendered whole on first use (by [`FlagOutcome::prepared`]).
struct FeatureParts {
    by_id: Vec<(u64, String, String, Box<[u8]>)>,
    flags: Vec<OnceLock<Box<[u8]>>>,
}

impl FeatureParts {
    fn build(env: &EnvCache) -> FeatureParts {
        let prepared = env.prepared();
        let hide = prepared.settings().hide_sensitive_data;
        let mut by_id: Vec<_> = prepared
            .context()
            .features
            .values()
            .map(|feature| {
                let id = u64::from(feature.metadata.feature_id);
                let (name, kind) = (&feature.name, &feature.metadata.feature_type);
                let json = serde_json::to_vec(&feature_view(env, id, name, kind, hide));
                let json = json.expect("a feature serialises").into_boxed_slice();
                (id, name.clone(), kind.clone(), json)
            })
            .collect();
        by_id.sort_by_key(|(id, ..)| *id);
        let flags = (0..prepared.prepared_outcomes())
            .map(|_| OnceLock::new())
            .collect();
        FeatureParts { by_id, flags }
    }

    /// The rendered feature of `flag`, unless the flag names it otherwise (then it is rendered
    /// for this answer alone).
    fn get(&self, flag: &FlagOutcome<'_>) -> Option<&[u8]> {
        let i = self
            .by_id
            .binary_search_by_key(&flag.feature_id, |(id, ..)| *id)
            .ok()?;
        let (_, name, kind, json) = &self.by_id[i];
        (name == flag.name && kind == flag.feature_type).then_some(json)
    }
}

fn feature_view<'a>(
    env: &'a EnvCache,
    id: u64,
    name: &'a str,
    feature_type: &'a str,
    hide: bool,
) -> SdkFeature<'a> {
    // What the document does not carry (description, initial value, ...) comes from web hooks.
    let meta: Option<&FeatureMeta> = env.features.get(&id).map(|e| &e.meta).filter(|_| !hide);
    SdkFeature {
        id,
        name,
        feature_type,
        description: meta.and_then(|m| m.description.as_deref()),
        initial_value: meta.and_then(|m| m.initial_value.as_ref()),
        default_enabled: meta.and_then(|m| m.default_enabled).unwrap_or(false),
        created_date: meta.and_then(|m| m.created_date.as_deref()),
    }
}

/// Appends one flag of an identity answer: copied whole where this environment rendered it
/// before, else rendered.
fn write_prepared_flag(
    out: &mut Vec<u8>,
    env_id: u64,
    env: &EnvCache,
    parts: &FeatureParts,
    flag: &FlagOutcome<'_>,
    hide: bool,
) {
    let slot = flag.prepared.and_then(|n| parts.flags.get(n as usize));
    crate::api::write_kept(out, slot, |out| {
        write_identity_flag(out, env_id, env, parts, flag, hide);
    });
}

/// Appends one flag of an identity answer, as [`SdkFlag`] serialises (the same bytes).
fn write_identity_flag(
    out: &mut Vec<u8>,
    env_id: u64,
    env: &EnvCache,
    parts: &FeatureParts,
    flag: &FlagOutcome<'_>,
    hide: bool,
) {
    let number = |out: &mut Vec<u8>, n: Option<u64>| match n.filter(|_| !hide) {
        Some(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        None => out.extend_from_slice(b"null"),
    };
    out.extend_from_slice(b"{\"id\":");
    number(out, flag.state_id);
    out.extend_from_slice(b",\"feature\":");
    match parts.get(flag) {
        Some(json) => out.extend_from_slice(json),
        None => {
            let (id, name, kind) = (flag.feature_id, flag.name, flag.feature_type);
            write_json(out, &feature_view(env, id, name, kind, hide));
        }
    }
    out.extend_from_slice(if flag.enabled {
        b",\"enabled\":true,\"feature_state_value\":"
    } else {
        b",\"enabled\":false,\"feature_state_value\":"
    });
    flag.value.write_json(out);
    out.extend_from_slice(b",\"environment\":");
    number(out, Some(env_id));
    out.extend_from_slice(b",\"identity\":");
    number(out, flag.identity_id);
    out.extend_from_slice(b",\"feature_segment\":null,\"variant\":");
    write_json(out, &flag.variant);
    out.push(b'}');
}

/// The body of `GET`/`POST /api/v1/identities/`; an environment with no data yet gives no flags.
/// Written straight into one buffer from parts prepared per change: this is the hottest answer
/// that is evaluated per request.
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
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(b"{\"identifier\":");
    write_json(&mut out, identifier);
    out.extend_from_slice(b",\"flags\":[");
    let mut hide = false;
    if let Some(env) = env {
        let overlay = env.identity_overlay(identifier);
        let prepared = env.prepared();
        hide = prepared.settings().hide_sensitive_data;
        let parts = env.answer_parts(FeatureParts::build);
        prepared.evaluate_identity(&input, &overlay, |flags, _| {
            out.reserve(flags.len() * parts.by_id.first().map_or(256, |p| p.3.len() + 160));
            for (i, flag) in flags.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_prepared_flag(&mut out, env_id, env, &parts, flag, hide);
            }
        });
    }
    out.extend_from_slice(b"],\"traits\":");
    let mut traits: Vec<TraitView<'_>> = traits
        .iter()
        .filter(|t| !t.trait_value.is_null() && !hide)
        .map(|t| TraitView {
            id: None,
            trait_key: &t.trait_key,
            trait_value: &t.trait_value,
            transient: t.transient,
        })
        .collect();
    traits.sort_by(|a, b| a.trait_key.cmp(b.trait_key));
    write_json(&mut out, &traits);
    out.push(b'}');
    out
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
    Ok(with_updated_at(
        json_response(StatusCode::OK, body),
        cache.env(env),
    ))
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
    Ok(with_updated_at(
        json_response(StatusCode::OK, body),
        cache.env(env),
    ))
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
    Ok(with_updated_at(
        json_response(StatusCode::OK, body),
        cache.env(env),
    ))
}

/// The environment's `updated_at` in `x-flagsmith-document-updated-at`, as Flagsmith sends it:
/// Flagsmith's JS client in realtime mode compares it with each event's.
fn with_updated_at(mut response: Response, env: Option<&std::sync::Arc<EnvCache>>) -> Response {
    if let Some(env) = env {
        crate::api::streams::set_updated_at(&mut response, env.updated_at_micros);
    }
    response
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::documents::FeatureEntry;

    /// An environment whose feature 7 has details only web hooks carry.
    fn environment() -> EnvCache {
        let mut env = EnvCache::default();
        let mut entry = FeatureEntry::default();
        entry.meta.name = "banner \"x\"".to_owned();
        entry.meta.description = Some("shown on top".to_owned());
        entry.meta.default_enabled = Some(true);
        entry.meta.created_date = Some("2026-12-01T00:00:00Z".to_owned());
        env.features.insert(7, Arc::new(entry));
        env
    }

    fn flag(variant: Option<&str>, identity_id: Option<u64>) -> ResolvedFlag {
        ResolvedFlag {
            feature_id: 7,
            name: "banner \"x\"".to_owned(),
            feature_type: "MULTIVARIATE".to_owned(),
            enabled: true,
            value: serde_json::json!("caf\u{e9} \"quoted\""),
            variant: variant.map(str::to_owned),
            reason: "STATIC".to_owned(),
            state_id: Some(41),
            identity_override: identity_id.is_some(),
            identity_id,
        }
    }

    /// The identity answer is written by hand for speed; it must be what serde wrote before.
    #[test]
    fn identity_flags_are_written_as_serde_serialises_them() {
        let env = environment();
        // With the feature rendered and a slot for the flag, and with neither.
        let parts = |prepared: bool| FeatureParts {
            by_id: [(7, "banner \"x\"", "MULTIVARIATE")]
                .into_iter()
                .filter(|_| prepared)
                .map(|(id, name, kind)| {
                    let json = serde_json::to_vec(&feature_view(&env, id, name, kind, false));
                    (
                        id,
                        name.into(),
                        kind.into(),
                        json.unwrap().into_boxed_slice(),
                    )
                })
                .collect(),
            flags: (0..usize::from(prepared))
                .map(|_| OnceLock::new())
                .collect(),
        };
        for (resolved, hide) in [
            (flag(Some("big"), None), false),
            (flag(None, Some(9)), false),
            (flag(Some("control"), Some(9)), true),
        ] {
            let expected = serde_json::to_vec(&sdk_flag(3, &env, &resolved, true, hide)).unwrap();
            let expected = String::from_utf8(expected).unwrap();
            // Prepared parts are rendered for the environment's own `hide`.
            for parts in [parts(!hide), parts(false)] {
                let mut outcome = FlagOutcome::from(&resolved);
                outcome.prepared = Some(0).filter(|_| !parts.flags.is_empty());
                // Twice: rendered, then copied.
                for _ in 0..2 {
                    let mut written = Vec::new();
                    write_prepared_flag(&mut written, 3, &env, &parts, &outcome, hide);
                    assert_eq!(String::from_utf8(written).unwrap(), expected);
                }
            }
        }
    }
}

//! Lookups in the native JSON shape, all from memory: an environment's flags, one flag, the flags
//! Flagsmith's engine resolves for an identity (with traits, saying what decided each); their
//! routes' handlers. The snapshot file uses the environment shape.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use flagpost::wire::FlagValue;
use flagsmith_flag_engine::types::FlagsmithValue;
use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::api::{AppState, json_value};
use crate::documents::{EnvCache, FeatureEntry, FlagCache, SegmentState};
use crate::error::{ApiError, LookupError};
use crate::evaluation::{IdentityInput, ResolvedFlag, value_json};

#[derive(Debug, Serialize)]
pub struct EnvironmentFlags<'a> {
    pub environment: EnvironmentInfo<'a>,
    pub flags: Vec<FlagView<'a>>,
}

#[derive(Debug, Serialize)]
pub struct EnvironmentInfo<'a> {
    pub id: u64,
    pub name: Option<&'a str>,
    /// The `last_sequence` of the last document loaded, if any.
    pub document_sequence: Option<u64>,
    pub refreshed_at: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct FlagView<'a> {
    pub id: u64,
    pub name: Cow<'a, str>,
    #[serde(rename = "type")]
    pub feature_type: Option<Cow<'a, str>>,
    pub enabled: bool,
    pub value: Cow<'a, Option<FlagValue>>,
    pub segment_overrides: Vec<SegmentOverrideView<'a>>,
    /// Present in single-flag lookups and the snapshot; omitted from environment listings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_overrides: Option<Vec<IdentityOverrideView<'a>>>,
}

#[derive(Debug, Serialize)]
pub struct SegmentOverrideView<'a> {
    pub segment_id: u64,
    pub segment_name: Option<Cow<'a, str>>,
    pub priority: Option<i64>,
    pub enabled: bool,
    pub value: Cow<'a, Option<FlagValue>>,
}

#[derive(Debug, Serialize)]
pub struct IdentityOverrideView<'a> {
    pub identifier: Cow<'a, str>,
    pub enabled: bool,
    pub value: Cow<'a, Option<FlagValue>>,
}

#[derive(Debug, Serialize)]
pub struct IdentityFlags<'a> {
    pub environment: EnvironmentInfo<'a>,
    pub identifier: &'a str,
    pub flags: Vec<IdentityFlag>,
}

/// A flag as Flagsmith's engine resolves it for one identity, and what decided it.
#[derive(Debug, Serialize)]
pub struct IdentityFlag {
    pub id: u64,
    pub name: String,
    pub enabled: bool,
    pub value: serde_json::Value,
    /// What decided it: `identity` (an identity override), `segment` (the override of
    /// [`IdentityFlag::segment`]), `split` (a multivariate or percentage allocation), or
    /// `environment` (the default).
    pub source: &'static str,
    /// The segment whose override decided it.
    pub segment: Option<String>,
    /// The multivariate option's key, `control`, or `null`.
    pub variant: Option<String>,
    /// The engine's own reason, e.g. `TARGETING_MATCH; segment=beta` or `SPLIT; weight=30`.
    pub reason: String,
}

impl IdentityFlag {
    fn from_resolved(flag: ResolvedFlag) -> IdentityFlag {
        let segment = flag
            .reason
            .strip_prefix("TARGETING_MATCH; segment=")
            .map(str::to_owned);
        let source = if flag.identity_override {
            "identity"
        } else if segment.is_some() {
            "segment"
        } else if flag.reason.starts_with("SPLIT") {
            "split"
        } else {
            "environment"
        };
        IdentityFlag {
            id: flag.feature_id,
            name: flag.name,
            enabled: flag.enabled,
            value: flag.value,
            source,
            segment,
            variant: flag.variant,
            reason: flag.reason,
        }
    }
}

pub fn env_info(id: u64, env: &EnvCache) -> EnvironmentInfo<'_> {
    EnvironmentInfo {
        id,
        name: env.name.as_deref(),
        document_sequence: env.document_seq,
        refreshed_at: env.refreshed_at,
    }
}

fn segment_views(entry: &FeatureEntry) -> Vec<SegmentOverrideView<'_>> {
    let mut views: Vec<_> = entry
        .segment_states()
        .map(
            |(segment_id, state): (u64, &SegmentState)| SegmentOverrideView {
                segment_id,
                segment_name: state.name.as_deref().map(Cow::Borrowed),
                priority: state.priority,
                enabled: state.enabled,
                value: Cow::Borrowed(&state.value),
            },
        )
        .collect();
    views.sort_by_key(|view| (view.priority.unwrap_or(i64::MAX), view.segment_id));
    views
}

fn flag_view(id: u64, entry: &FeatureEntry, with_identities: bool) -> Option<FlagView<'_>> {
    let default = entry.default_state()?;
    let identity_overrides = with_identities.then(|| {
        let mut views: Vec<_> = entry
            .identities
            .iter()
            .filter_map(|(identifier, slot)| {
                slot.state.as_ref().map(|state| IdentityOverrideView {
                    identifier: Cow::Borrowed(identifier),
                    enabled: state.enabled,
                    value: Cow::Borrowed(&state.value),
                })
            })
            .collect();
        views.sort_by(|a, b| a.identifier.cmp(&b.identifier));
        views
    });
    Some(FlagView {
        id,
        name: Cow::Borrowed(&entry.meta.name),
        feature_type: entry.meta.feature_type.as_deref().map(Cow::Borrowed),
        enabled: default.enabled,
        value: Cow::Borrowed(&default.value),
        segment_overrides: segment_views(entry),
        identity_overrides,
    })
}

fn env_of(cache: &FlagCache, env: u64) -> Result<&EnvCache, LookupError> {
    cache
        .env(env)
        .map(|env| env.as_ref())
        .ok_or(LookupError::UnknownEnvironment(env))
}

/// Every flag of an environment, by feature id; identity overrides included when asked (snapshot).
pub fn environment_flags(id: u64, env: &EnvCache, with_identities: bool) -> EnvironmentFlags<'_> {
    let mut flags: Vec<_> = if env.upstream.is_some() {
        document_flag_views(env, with_identities)
    } else {
        env.live_features()
            .filter_map(|(feature, entry)| flag_view(feature, entry, with_identities))
            .collect()
    };
    flags.sort_by_key(|flag| flag.id);
    EnvironmentFlags {
        environment: env_info(id, env),
        flags,
    }
}

pub fn all_flags(cache: &FlagCache, env: u64) -> Result<EnvironmentFlags<'_>, LookupError> {
    Ok(environment_flags(env, env_of(cache, env)?, false))
}

/// One flag, by feature name or id, with its identity overrides.
pub fn one_flag<'a>(
    cache: &'a FlagCache,
    env: u64,
    feature: &str,
) -> Result<FlagView<'a>, LookupError> {
    let env_cache = env_of(cache, env)?;
    let by_id = feature.parse::<u64>().ok();
    let found = if env_cache.upstream.is_some() {
        document_flag_views(env_cache, true)
            .into_iter()
            .find(|flag| Some(flag.id) == by_id || flag.name == feature)
    } else {
        env_cache
            .live_features()
            .find(|(id, entry)| Some(*id) == by_id || entry.meta.name == feature)
            .and_then(|(id, entry)| flag_view(id, entry, true))
    };
    found.ok_or_else(|| LookupError::UnknownFeature {
        env,
        feature: feature.to_owned(),
    })
}

/// The flags Flagsmith's engine resolves for an identity with `traits`.
pub fn identity_flags<'a>(
    cache: &'a FlagCache,
    env: u64,
    identifier: &'a str,
    traits: HashMap<String, FlagsmithValue>,
) -> Result<IdentityFlags<'a>, LookupError> {
    let env_cache = env_of(cache, env)?;
    let input = IdentityInput {
        identifier: identifier.to_owned(),
        key: None,
        traits,
    };
    let evaluation = env_cache
        .prepared()
        .evaluate(Some(&input), &env_cache.identity_overlay(identifier));
    Ok(IdentityFlags {
        environment: env_info(env, env_cache),
        identifier,
        flags: evaluation
            .flags
            .into_iter()
            .map(IdentityFlag::from_resolved)
            .collect(),
    })
}

pub(crate) async fn environment_flags_route(
    State(shared): AppState,
    Path(env): Path<u64>,
) -> Result<Response, ApiError> {
    let cache = shared.cache.load();
    Ok(json_value(&all_flags(&cache, env)?))
}

pub(crate) async fn one_flag_route(
    State(shared): AppState,
    Path((env, feature)): Path<(u64, String)>,
) -> Result<Response, ApiError> {
    let cache = shared.cache.load();
    Ok(json_value(&one_flag(&cache, env, &feature)?))
}

pub(crate) async fn identity_flags_route(
    State(shared): AppState,
    Path((env, identifier)): Path<(u64, String)>,
) -> Result<Response, ApiError> {
    let cache = shared.cache.load();
    Ok(json_value(&identity_flags(
        &cache,
        env,
        &identifier,
        HashMap::new(),
    )?))
}

/// `POST .../identities/{identifier}/flags` with `{"traits": {"plan": "pro", "age": 31}}`.
#[derive(Deserialize)]
pub(crate) struct IdentityTraits {
    #[serde(default)]
    traits: HashMap<String, FlagsmithValue>,
}

pub(crate) async fn identity_flags_with_traits_route(
    State(shared): AppState,
    Path((env, identifier)): Path<(u64, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    crate::intake::request::check_content_type(&headers)?;
    let request: IdentityTraits = serde_json::from_slice(&body)
        .map_err(|error| LookupError::BadRequest(error.to_string()))?;
    let cache = shared.cache.load();
    Ok(json_value(&identity_flags(
        &cache,
        env,
        &identifier,
        request.traits,
    )?))
}

// An environment held as a Flagsmith document: its features, segment overrides and identity
// overrides as the engine holds them (web-hook changes applied), in the same shape.

fn flag_value(value: &FlagsmithValue) -> Option<FlagValue> {
    serde_json::from_value(value_json(value)).ok()
}

/// Every feature of `env`'s document, by feature id.
fn document_flag_views(env: &EnvCache, with_identities: bool) -> Vec<FlagView<'static>> {
    let prepared = env.prepared();
    let context = prepared.context();
    let mut segments: BTreeMap<u64, Vec<SegmentOverrideView<'static>>> = BTreeMap::new();
    for segment in context.segments.values() {
        let Some(segment_id) = segment.metadata.segment_id else {
            continue;
        };
        for feature in &segment.overrides {
            segments
                .entry(u64::from(feature.metadata.feature_id))
                .or_default()
                .push(SegmentOverrideView {
                    segment_id: u64::try_from(segment_id).unwrap_or_default(),
                    segment_name: Some(Cow::Owned(segment.name.clone())),
                    priority: feature.priority.map(|p| p as i64),
                    enabled: feature.enabled,
                    value: Cow::Owned(flag_value(&feature.value)),
                });
        }
    }
    let mut flags: Vec<FlagView<'static>> = context
        .features
        .values()
        .map(|feature| {
            let id = u64::from(feature.metadata.feature_id);
            let mut segment_overrides = segments.remove(&id).unwrap_or_default();
            segment_overrides
                .sort_by_key(|view| (view.priority.unwrap_or(i64::MAX), view.segment_id));
            FlagView {
                id,
                name: Cow::Owned(feature.name.clone()),
                feature_type: Some(Cow::Owned(feature.metadata.feature_type.clone())),
                enabled: feature.enabled,
                value: Cow::Owned(flag_value(&feature.value)),
                segment_overrides,
                identity_overrides: with_identities.then(|| identity_views(env, id)),
            }
        })
        .collect();
    flags.sort_by_key(|flag| flag.id);
    flags
}

/// The identity overrides of feature `id`: the document's, replaced by web-hook changes.
fn identity_views(env: &EnvCache, id: u64) -> Vec<IdentityOverrideView<'static>> {
    let prepared = env.prepared();
    let held = env.features.get(&id);
    let changed = |identifier: &str| held.is_some_and(|e| e.identities.get(identifier).is_some());
    let from_document = prepared
        .document_identities()
        .iter()
        .filter(|(identifier, _)| !changed(identifier))
        .flat_map(|(identifier, entry)| {
            entry
                .overrides
                .iter()
                .filter(|o| o.feature_id == id)
                .map(|o| IdentityOverrideView {
                    identifier: Cow::Owned(identifier.clone()),
                    enabled: o.enabled,
                    value: Cow::Owned(flag_value(&o.value)),
                })
        });
    let from_webhooks = held.into_iter().flat_map(|entry| {
        entry.identities.iter().filter_map(|(identifier, slot)| {
            slot.state.as_ref().map(|state| IdentityOverrideView {
                identifier: Cow::Owned(identifier.to_owned()),
                enabled: state.enabled,
                value: Cow::Owned(state.value.clone()),
            })
        })
    });
    let mut views: Vec<_> = from_document.chain(from_webhooks).collect();
    views.sort_by(|a, b| a.identifier.cmp(&b.identifier));
    views
}

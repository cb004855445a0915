//! Lookups in the native JSON shape, all from memory: an environment's flags, one flag, the flags
//! resolved for an identity; their routes' handlers. The snapshot file uses the same shape.

use axum::extract::{Path, State};
use axum::response::Response;
use flagpost::wire::FlagValue;
use serde::Serialize;

use crate::api::{AppState, json_value};
use crate::documents::{EnvCache, FeatureEntry, FlagCache, SegmentState};
use crate::error::{ApiError, LookupError};

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
    pub name: &'a str,
    #[serde(rename = "type")]
    pub feature_type: Option<&'a str>,
    pub enabled: bool,
    pub value: &'a Option<FlagValue>,
    pub segment_overrides: Vec<SegmentOverrideView<'a>>,
    /// Present in single-flag lookups and the snapshot; omitted from environment listings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_overrides: Option<Vec<IdentityOverrideView<'a>>>,
}

#[derive(Debug, Serialize)]
pub struct SegmentOverrideView<'a> {
    pub segment_id: u64,
    pub segment_name: Option<&'a str>,
    pub priority: Option<i64>,
    pub enabled: bool,
    pub value: &'a Option<FlagValue>,
}

#[derive(Debug, Serialize)]
pub struct IdentityOverrideView<'a> {
    pub identifier: &'a str,
    pub enabled: bool,
    pub value: &'a Option<FlagValue>,
}

#[derive(Debug, Serialize)]
pub struct IdentityFlags<'a> {
    pub environment: EnvironmentInfo<'a>,
    pub identifier: &'a str,
    pub flags: Vec<ResolvedFlag<'a>>,
}

/// A flag as it resolves for one identity.
#[derive(Debug, Serialize)]
pub struct ResolvedFlag<'a> {
    pub id: u64,
    pub name: &'a str,
    pub enabled: bool,
    pub value: &'a Option<FlagValue>,
    /// `identity` when an identity override decided, else `environment`.
    pub source: &'static str,
    /// Segment overrides that would apply if the identity is in the segment: the receiver does
    /// not have segment rules, so it cannot decide membership.
    pub segment_overrides: Vec<SegmentOverrideView<'a>>,
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
                segment_name: state.name.as_deref(),
                priority: state.priority,
                enabled: state.enabled,
                value: &state.value,
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
                    identifier,
                    enabled: state.enabled,
                    value: &state.value,
                })
            })
            .collect();
        views.sort_by_key(|view| view.identifier);
        views
    });
    Some(FlagView {
        id,
        name: &entry.meta.name,
        feature_type: entry.meta.feature_type.as_deref(),
        enabled: default.enabled,
        value: &default.value,
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
    let mut flags: Vec<_> = env
        .live_features()
        .filter_map(|(feature, entry)| flag_view(feature, entry, with_identities))
        .collect();
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
    env_cache
        .live_features()
        .find(|(id, entry)| Some(*id) == by_id || entry.meta.name == feature)
        .and_then(|(id, entry)| flag_view(id, entry, true))
        .ok_or_else(|| LookupError::UnknownFeature {
            env,
            feature: feature.to_owned(),
        })
}

/// The flags resolved for an identity: its override where it has one, else the default.
pub fn identity_flags<'a>(
    cache: &'a FlagCache,
    env: u64,
    identifier: &'a str,
) -> Result<IdentityFlags<'a>, LookupError> {
    let env_cache = env_of(cache, env)?;
    let mut flags: Vec<_> = env_cache
        .live_features()
        .filter_map(|(id, entry)| {
            let (state, source) = match entry.identity_state(identifier) {
                Some(state) => (state, "identity"),
                None => (entry.default_state()?, "environment"),
            };
            Some(ResolvedFlag {
                id,
                name: &entry.meta.name,
                enabled: state.enabled,
                value: &state.value,
                source,
                segment_overrides: segment_views(entry),
            })
        })
        .collect();
    flags.sort_by_key(|flag| flag.id);
    Ok(IdentityFlags {
        environment: env_info(env, env_cache),
        identifier,
        flags,
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
    Ok(json_value(&identity_flags(&cache, env, &identifier)?))
}

//! `/api/v1/environments`: listing environments, reading an environment's document, and setting
//! its feature states and overrides.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use super::request::{BodilessRequest, Caller, JsonBody, PathParams, commit};
use crate::changes::{Changes, EnvironmentRecord, FlagStore, Owner, StateKey, StateUpdate};
use crate::config::{Config, Environment};
use crate::error::WriteError;
use crate::store::events::database_instance;
use crate::store::queries::read_document;

/// An environment named in a path: its id or its name.
fn environment<'c>(config: &'c Config, reference: &str) -> Result<&'c Environment, ApiError> {
    reference
        .parse::<u64>()
        .ok()
        .and_then(|id| config.environments.get(&id))
        .or_else(|| config.environment_by_name(reference))
        .ok_or_else(|| WriteError::UnknownEnvironment(reference.to_owned()).into())
}

/// A feature named in a path: its id, or its name in the environment's project.
fn feature_id<S: FlagStore>(
    changes: &mut Changes<S>,
    project: u64,
    reference: &str,
) -> Result<u64, WriteError> {
    if let Ok(id) = reference.parse::<u64>() {
        return Ok(id);
    }
    changes
        .feature_by_name(project, reference)?
        .map(|f| f.id)
        .ok_or_else(|| WriteError::UnknownFeature(reference.to_owned()))
}

pub async fn list(State(state): State<Arc<AppState>>, _caller: Caller) -> Json<Value> {
    let config = state.config.load();
    let environments: Vec<Value> = config
        .environments
        .values()
        .map(|e| json!({"id": e.id, "name": e.name, "project": e.project}))
        .collect();
    Json(json!({ "environments": environments }))
}

pub async fn document(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    PathParams(env): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let config = state.config.load_full();
    let env = environment(&config, &env)?;
    let record = EnvironmentRecord {
        id: env.id,
        name: env.name.clone(),
        project: env.project,
        project_name: config
            .projects
            .get(&env.project)
            .map(|p| p.name.clone())
            .unwrap_or_default(),
    };
    let (document, instance) = state
        .store
        .read(move |txn| Ok((read_document(txn, &record)?, database_instance(txn)?)))
        .await?;
    let mut answer = json!(document);
    // The database `last_sequence` counts in, written as in event ids: a receiver tells by it a
    // flagpost that started again on a new database (its sequences count from 1 again).
    answer["instance"] = json!(format!("{instance:016x}"));
    Ok(Json(answer))
}

/// Sets the state at `key` of a feature in an environment.
async fn set(
    state: Arc<AppState>,
    caller: Caller,
    (env, feature): (String, String),
    key: StateKey,
    JsonBody { value, request }: JsonBody<StateUpdate>,
) -> Result<Response, ApiError> {
    let config = state.config.load_full();
    let env = environment(&config, &env)?;
    let (env_id, project) = (env.id, env.project);
    let segment_fields = value.segment_name.is_some() || value.priority.is_some();
    if segment_fields && !matches!(key, StateKey::Segment(_)) {
        return Err(WriteError::Invalid(
            "segment_name and priority apply to segment overrides only".into(),
        )
        .into());
    }
    commit(&state, caller, request, StatusCode::OK, move |changes| {
        let feature = feature_id(changes, project, &feature)?;
        let changed = changes.set_state(env_id, feature, &key, &value, Owner::Api)?;
        let mut body = Map::new();
        body.insert("changed".into(), json!(changed));
        Ok(body)
    })
    .await
}

async fn remove(
    state: Arc<AppState>,
    caller: Caller,
    (env, feature): (String, String),
    key: StateKey,
    request: BodilessRequest,
) -> Result<Response, ApiError> {
    let config = state.config.load_full();
    let env = environment(&config, &env)?;
    let (env_id, project) = (env.id, env.project);
    commit(&state, caller, request.0, StatusCode::OK, move |changes| {
        let feature = feature_id(changes, project, &feature)?;
        changes.remove_override(env_id, feature, &key, Owner::Api)?;
        Ok(Map::new())
    })
    .await
}

pub async fn set_default(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams(path): PathParams<(String, String)>,
    body: JsonBody<StateUpdate>,
) -> Result<Response, ApiError> {
    set(state, caller, path, StateKey::Default, body).await
}

pub async fn set_identity(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams((env, feature, identifier)): PathParams<(String, String, String)>,
    body: JsonBody<StateUpdate>,
) -> Result<Response, ApiError> {
    let key = StateKey::Identity(identifier);
    set(state, caller, (env, feature), key, body).await
}

pub async fn remove_identity(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams((env, feature, identifier)): PathParams<(String, String, String)>,
    request: BodilessRequest,
) -> Result<Response, ApiError> {
    remove(
        state,
        caller,
        (env, feature),
        StateKey::Identity(identifier),
        request,
    )
    .await
}

pub async fn set_segment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams((env, feature, segment)): PathParams<(String, String, u64)>,
    body: JsonBody<StateUpdate>,
) -> Result<Response, ApiError> {
    set(
        state,
        caller,
        (env, feature),
        StateKey::Segment(segment),
        body,
    )
    .await
}

pub async fn remove_segment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams((env, feature, segment)): PathParams<(String, String, u64)>,
    request: BodilessRequest,
) -> Result<Response, ApiError> {
    remove(
        state,
        caller,
        (env, feature),
        StateKey::Segment(segment),
        request,
    )
    .await
}

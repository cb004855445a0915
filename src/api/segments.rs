//! `/api/v1/segments`: create, read, update and delete segments and their rules, and
//! `/api/v1/features/{id}/multivariate-options`: a feature's multivariate options.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use super::request::{
    BodilessRequest, Caller, JsonBody, PathParams, ProjectFilter, QueryParams, commit,
};
use crate::changes::{
    MultivariateOption, NewOption, NewSegment, OptionUpdate, Owner, SegmentRecord, SegmentUpdate,
};
use crate::error::WriteError;
use crate::store::segments::{feature_options, project_segments, segment};

fn option_json(option: &MultivariateOption) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("multivariate_option".into(), json!(option));
    body
}

fn segment_json(segment: &SegmentRecord) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("segment".into(), json!(segment));
    body
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    JsonBody { value, request }: JsonBody<NewSegment>,
) -> Result<Response, ApiError> {
    commit(
        &state,
        caller,
        request,
        StatusCode::CREATED,
        move |changes| {
            changes
                .create_segment(&value, Owner::Api)
                .map(|s| segment_json(&s))
        },
    )
    .await
}

pub async fn update(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams(id): PathParams<u64>,
    JsonBody { value, request }: JsonBody<SegmentUpdate>,
) -> Result<Response, ApiError> {
    commit(&state, caller, request, StatusCode::OK, move |changes| {
        changes
            .update_segment(id, &value, Owner::Api)
            .map(|s| segment_json(&s))
    })
    .await
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams(id): PathParams<u64>,
    BodilessRequest(request): BodilessRequest,
) -> Result<Response, ApiError> {
    commit(&state, caller, request, StatusCode::OK, move |changes| {
        changes
            .delete_segment(id, Owner::Api)
            .map(|s| segment_json(&s))
    })
    .await
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    QueryParams(filter): QueryParams<ProjectFilter>,
) -> Result<Json<Value>, ApiError> {
    let projects = filter.projects(&state);
    let segments = state
        .store
        .read(move |txn| {
            let mut all = Vec::new();
            for project in projects {
                all.extend(project_segments(txn, project)?);
            }
            Ok(all)
        })
        .await?;
    Ok(Json(json!({ "segments": segments })))
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    PathParams(id): PathParams<u64>,
) -> Result<Json<Value>, ApiError> {
    let found = state
        .store
        .read(move |txn| segment(txn, id))
        .await?
        .ok_or(ApiError::Write(WriteError::UnknownSegment(id)))?;
    Ok(Json(json!({ "segment": found })))
}

pub async fn list_options(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    PathParams(feature): PathParams<u64>,
) -> Result<Json<Value>, ApiError> {
    let options = state
        .store
        .read(move |txn| feature_options(txn, feature))
        .await?;
    Ok(Json(json!({ "multivariate_options": options })))
}

pub async fn add_option(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams(feature): PathParams<u64>,
    JsonBody { value, request }: JsonBody<NewOption>,
) -> Result<Response, ApiError> {
    commit(
        &state,
        caller,
        request,
        StatusCode::CREATED,
        move |changes| {
            let option = changes.add_option(feature, &value, Owner::Api)?;
            Ok(option_json(&option))
        },
    )
    .await
}

pub async fn update_option(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams((feature, option)): PathParams<(u64, u64)>,
    JsonBody { value, request }: JsonBody<OptionUpdate>,
) -> Result<Response, ApiError> {
    commit(&state, caller, request, StatusCode::OK, move |changes| {
        let updated = changes.update_option(feature, option, &value, Owner::Api)?;
        Ok(option_json(&updated))
    })
    .await
}

pub async fn remove_option(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams((feature, option)): PathParams<(u64, u64)>,
    BodilessRequest(request): BodilessRequest,
) -> Result<Response, ApiError> {
    commit(&state, caller, request, StatusCode::OK, move |changes| {
        let removed = changes.remove_option(feature, option, Owner::Api)?;
        Ok(option_json(&removed))
    })
    .await
}

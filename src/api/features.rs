//! `/api/v1/features`: create, read, update and delete features.

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
use crate::changes::{FeatureRecord, FeatureUpdate, NewFeature, Owner};
use crate::document::FeatureInfo;
use crate::store::queries::{live_feature, project_features};

fn feature_json(feature: &FeatureRecord) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("feature".into(), json!(FeatureInfo::from(feature)));
    body
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    JsonBody { value, request }: JsonBody<NewFeature>,
) -> Result<Response, ApiError> {
    commit(
        &state,
        caller,
        request,
        StatusCode::CREATED,
        move |changes| {
            changes
                .create_feature(&value, Owner::Api)
                .map(|f| feature_json(&f))
        },
    )
    .await
}

pub async fn update(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PathParams(id): PathParams<u64>,
    JsonBody { value, request }: JsonBody<FeatureUpdate>,
) -> Result<Response, ApiError> {
    commit(&state, caller, request, StatusCode::OK, move |changes| {
        changes
            .update_feature(id, &value, Owner::Api)
            .map(|f| feature_json(&f))
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
            .delete_feature(id, Owner::Api)
            .map(|f| feature_json(&f))
    })
    .await
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    QueryParams(filter): QueryParams<ProjectFilter>,
) -> Result<Json<Value>, ApiError> {
    let projects = filter.projects(&state);
    let features = state
        .store
        .read(move |txn| {
            let mut live = Vec::new();
            for project in projects {
                live.extend(
                    project_features(txn, project)?
                        .into_iter()
                        .filter(|f| !f.deleted)
                        .map(|f| json!({"project": f.project, "owner": f.owner, "feature": FeatureInfo::from(&f)})),
                );
            }
            Ok(live)
        })
        .await?;
    Ok(Json(json!({ "features": features })))
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    PathParams(id): PathParams<u64>,
) -> Result<Json<Value>, ApiError> {
    let feature = state
        .store
        .read(move |txn| live_feature(txn, id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("feature {id} does not exist")))?;
    Ok(Json(
        json!({"project": feature.project, "owner": feature.owner, "feature": FeatureInfo::from(&feature)}),
    ))
}

//! `GET /api/v1/environment-document/`: Flagsmith's environment document, for Flagsmith's SDKs in
//! local evaluation mode and for receivers. The caller names the environment by one of its
//! server-side keys in `X-Environment-Key`; the answer is prepared bytes ([`crate::envdoc`]), with
//! an ETag a poller sends back in `If-None-Match` to get `304` while nothing changed. An
//! environment fed by a `[[relay]]` source with an `upstream` answers the document fetched from
//! that Flagsmith ([`crate::envdoc::upstream`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::AppState;
use super::error::ApiError;
use crate::changes::EnvironmentRecord;
use crate::config::{Config, Environment};
use crate::envdoc::{EnvironmentFacts, PreparedDocument};

const ENVIRONMENT_KEY_HEADER: &str = "x-environment-key";

pub async fn environment_document(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let result = answer(&state, &headers).await;
    if let Err(error) = &result {
        state
            .metrics
            .refused("environment_document", error.reason());
    }
    result
}

async fn answer(state: &AppState, headers: &HeaderMap) -> Result<Response, ApiError> {
    let config = state.config.load_full();
    let env = headers
        .get(ENVIRONMENT_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|key| environment_of_key(&config, key))
        .ok_or(ApiError::Unauthorized(
            "X-Environment-Key is missing or is not a server-side key of any environment",
        ))?;
    let relayed = config
        .relay_sources
        .values()
        .any(|r| r.environment == env.id && r.upstream.is_some());
    if relayed {
        let document = state
            .documents
            .relayed_document(&state.store, env.id)
            .await?;
        let document = document.ok_or_else(|| {
            ApiError::Unavailable(
                "no document has been fetched from the upstream Flagsmith yet".into(),
            )
        })?;
        return Ok(respond(headers, document));
    }
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
    let facts = EnvironmentFacts {
        client_key: env.api_key.clone(),
        organisation_id: config.organisation_id,
    };
    let document = state
        .documents
        .document(&state.store, record, facts)
        .await?;
    Ok(respond(headers, document))
}

/// The environment one of whose server-side keys is `presented`. Every key is compared (each in
/// constant time), so how long this takes says nothing of which key came close.
fn environment_of_key<'c>(config: &'c Config, presented: &str) -> Option<&'c Environment> {
    let mut found = None;
    for env in config.environments.values() {
        for key in &env.server_keys {
            if key.matches(presented) {
                found = Some(env);
            }
        }
    }
    found
}

fn respond(headers: &HeaderMap, document: PreparedDocument) -> Response {
    let not_modified = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == document.etag || tag.trim() == "*");
    let updated_at = document
        .updated_at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let builder = Response::builder()
        .header(header::ETAG, &document.etag)
        .header(
            header::LAST_MODIFIED,
            httpdate::fmt_http_date(document.updated_at),
        )
        // As Flagsmith sends it: SDKs that poll compare it with the `updated_at` they hold.
        .header(
            "x-flagsmith-document-updated-at",
            format!("{updated_at:.6}"),
        );
    let response = if not_modified {
        builder.status(StatusCode::NOT_MODIFIED).body(Body::empty())
    } else {
        builder
            .status(StatusCode::OK)
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .body(Body::from(document.bytes))
    };
    response.expect("the document's headers are valid")
}

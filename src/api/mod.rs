//! The HTTP API: thin handlers that authenticate, parse, and hand a change to the store, the
//! delivery admin routes ([`admin`], with [`endpoint_summary`]) and the status page
//! ([`status_page`]) that reads them. Domain rules live in [`crate::changes`], storage in
//! [`crate::store`]; how each error maps to a status, in [`error`].

pub mod admin;
mod documents;
pub mod endpoint_summary;
mod environments;
pub mod error;
mod events;
mod features;
mod relay;
pub mod request;
mod segments;
pub mod status_page;

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, patch, post, put};

use crate::config::Config;
use crate::envdoc::DocumentCache;
use crate::envdoc::upstream::UpstreamTriggers;
use crate::metrics::Metrics;
use crate::metrics::exposition::Format;
use crate::store::Store;

/// What every handler reads. The router hands each request its own copy of the state, so it is
/// shared behind one `Arc`: a copy of the struct would count up and down a reference for each
/// of its fields, on every request.
pub struct AppState {
    pub store: Store,
    pub config: Arc<ArcSwap<Config>>,
    pub metrics: Metrics,
    /// Flagsmith's environment documents, prepared ([`documents`]).
    pub documents: DocumentCache,
    /// Wakes the fetch of a relay source's upstream document after a relayed web hook.
    pub upstream: UpstreamTriggers,
}

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.load().max_body_bytes;
    Router::new()
        .route(
            "/api/v1/features",
            get(features::list).post(features::create),
        )
        .route(
            "/api/v1/features/{id}",
            get(features::get)
                .patch(features::update)
                .delete(features::delete),
        )
        .route(
            "/api/v1/features/{id}/multivariate-options",
            get(segments::list_options).post(segments::add_option),
        )
        .route(
            "/api/v1/features/{id}/multivariate-options/{option}",
            patch(segments::update_option).delete(segments::remove_option),
        )
        .route(
            "/api/v1/segments",
            get(segments::list).post(segments::create),
        )
        .route(
            "/api/v1/segments/{id}",
            get(segments::get)
                .patch(segments::update)
                .delete(segments::delete),
        )
        .route("/api/v1/events", get(events::list))
        .route("/api/v1/environments", get(environments::list))
        .route(
            "/api/v1/environments/{env}/document",
            get(environments::document),
        )
        .route(
            "/api/v1/environments/{env}/features/{feature}/state",
            put(environments::set_default),
        )
        .route(
            "/api/v1/environments/{env}/features/{feature}/identities/{identifier}",
            put(environments::set_identity).delete(environments::remove_identity),
        )
        .route(
            "/api/v1/environments/{env}/features/{feature}/segments/{segment}",
            put(environments::set_segment).delete(environments::remove_segment),
        )
        .route(
            "/api/v1/environment-document/",
            get(documents::environment_document),
        )
        .route("/api/v1/relay/{source}", post(relay::relay))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(status_page::router())
        .fallback(|| async { error::ApiError::NotFound("no such route".into()) })
        // Bodies are read with this limit; a larger one is refused with 413 before it is buffered.
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The metrics page, in the format the scrape's `Accept` asks for (see
/// [`crate::metrics::exposition`]).
async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> impl IntoResponse {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.content_type())],
        state.metrics.render(format),
    )
}

/// Healthy while the writer takes changes: once it has stopped, nothing can be acknowledged.
async fn healthz(State(state): State<Arc<AppState>>) -> Result<&'static str, error::ApiError> {
    if state.store.is_writing() {
        Ok("ok")
    } else {
        Err(error::ApiError::WriterStopped)
    }
}

/// Ready while the store commits. A writer that cannot commit (a full disk, a damaged file) is
/// reported here rather than on `/healthz`: it retries and recovers by itself once space is freed,
/// and a restart (what a failing liveness probe brings) would not free any.
async fn readyz(State(state): State<Arc<AppState>>) -> Result<&'static str, error::ApiError> {
    match state.store.commit_failure() {
        None => Ok("ready"),
        Some(failure) => Err(error::ApiError::CannotCommit(failure)),
    }
}

#[cfg(test)]
mod tests;

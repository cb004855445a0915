//! `GET /api/v1/events`: the committed events in sequence order, bodies included, for operators
//! and for anyone auditing what flagpost sent or will send.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::request::{Caller, QueryParams};
use crate::store::events::events_page;

#[derive(Deserialize)]
pub struct EventsQuery {
    /// Events with a greater sequence than this.
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    QueryParams(query): QueryParams<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.clamp(1, 1000);
    let page = state
        .store
        .read(move |txn| events_page(txn, query.after, limit))
        .await?;
    let events: Vec<Value> = page
        .events
        .iter()
        .map(|(record, body)| json!({"event": record, "body": String::from_utf8_lossy(body)}))
        .collect();
    Ok(Json(json!({
        "events": events,
        "last_sequence": page.last_sequence,
    })))
}

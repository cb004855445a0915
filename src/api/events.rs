//! `GET /api/v1/events`: the committed events in sequence order, bodies included, for operators
//! and for anyone auditing what flagpost sent or will send.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::request::{Caller, QueryParams};
use crate::store::tables::{EVENT_BODIES, EVENTS, META};
use crate::store::{EventRecord, last_sequence};

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
    State(state): State<AppState>,
    _caller: Caller,
    QueryParams(query): QueryParams<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.clamp(1, 1000);
    let page = state
        .store
        .read(move |txn| {
            let events = txn.open_table(EVENTS)?;
            let bodies = txn.open_table(EVENT_BODIES)?;
            let mut page = Vec::new();
            for entry in events.range(query.after.saturating_add(1)..)?.take(limit) {
                let (sequence, record) = entry?;
                let record: EventRecord = serde_json::from_str(record.value())?;
                let body = bodies
                    .get(sequence.value())?
                    .map(|b| String::from_utf8_lossy(b.value()).into_owned())
                    .unwrap_or_default();
                page.push(json!({"event": record, "body": body}));
            }
            Ok(json!({
                "events": page,
                "last_sequence": last_sequence(&txn.open_table(META)?)?,
            }))
        })
        .await?;
    Ok(Json(page))
}

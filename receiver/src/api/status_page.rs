//! The status page: `GET /status` (HTML, its script and style embedded in the binary, the parts
//! shared with flagpost's page taken from the `flagpost` library) and the data it polls,
//! `GET /admin/status`: each environment with its source, data age and document version, and
//! the latest web hooks taken and refused.
//!
//! Like every other lookup and admin route, the data needs no token unless `status_token` is
//! set; then it asks for `Authorization: Bearer`, which the page sends from the token the
//! operator entered (kept in the tab's `sessionStorage`). The page itself holds no data.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use flagpost::api::status_page::{StatusPage, page_router};
use http::{HeaderMap, StatusCode, header};
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::{AppState, json_value};
use crate::app::Shared;
use crate::clock::{now_micros, now_unix};
use crate::config::Live;
use crate::documents::EnvCache;
use crate::error::ApiError;
use crate::intake::recent::RecentWebhooksView;

const RECEIVER_PAGE: StatusPage = StatusPage {
    title: "flagpost-receiver status",
    token_hint: "status token (if set)",
    token_label: "status token",
    sections: include_str!("status_page/receiver-sections.html"),
    script_path: "/status/receiver.js",
    script: include_str!("status_page/receiver.js"),
};

/// The page, its files and its data.
pub fn router() -> Router<std::sync::Arc<Shared>> {
    page_router(RECEIVER_PAGE).route("/admin/status", get(status_data))
}

#[derive(Serialize)]
struct StatusAnswer {
    /// The receiver's clock, unix milliseconds, so that ages are not skewed by the browser's.
    now_ms: i64,
    environments: Vec<Value>,
    webhooks: RecentWebhooksView,
    /// Change streams open now, Flagsmith realtime and native.
    open_streams: usize,
    /// The storage's last commit failure (a full disk, a damaged file), if it cannot commit.
    storage_error: Option<String>,
}

async fn status_data(State(shared): AppState, headers: HeaderMap) -> Result<Response, ApiError> {
    let live = shared.live.load_full();
    check_token(&live, &headers)?;
    let cache = shared.cache.load();
    let mut ids: Vec<u64> = live.environments.clone();
    let mut others: Vec<u64> = cache
        .envs()
        .map(|(id, _)| id)
        .filter(|id| !ids.contains(id))
        .collect();
    others.sort_unstable();
    ids.extend(others);
    let now = now_unix();
    let fetches = shared.upstreams.status();
    let environments = ids
        .into_iter()
        .map(|id| {
            let env = cache.env(id).map(AsRef::as_ref);
            let fetch = fetches.get(&id);
            environment(id, env, &live, fetch, now)
        })
        .collect();
    Ok(json_value(&StatusAnswer {
        now_ms: now_micros() / 1_000,
        environments,
        webhooks: shared.recent_webhooks.view(),
        open_streams: shared.streams.open_streams(),
        storage_error: shared.writer.commit_failure().map(|f| f.to_string()),
    }))
}

/// Admits any request when no `status_token` is set, else one bearing it.
fn check_token(live: &Live, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &live.status_token else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let message = match presented {
        Some(token) if expected.matches(token.trim()) => return Ok(()),
        Some(_) => "token not recognised",
        None => "missing Authorization: Bearer <status_token>",
    };
    Err(ApiError::Rejected {
        status: StatusCode::UNAUTHORIZED,
        message: message.into(),
    })
}

/// One environment: where its data comes from, how old it is, and which document it holds.
fn environment(
    id: u64,
    env: Option<&EnvCache>,
    live: &Live,
    fetch: Option<&crate::sources::upstream::FetchStatus>,
    now: i64,
) -> Value {
    let source = if live.upstreams.contains_key(&id) {
        "flagsmith"
    } else if live.bootstrap.is_some() && live.environments.contains(&id) {
        "flagpost"
    } else {
        "web_hooks"
    };
    let refreshed_at = env.and_then(|env| env.refreshed_at);
    let upstream = env.and_then(|env| env.upstream.as_ref());
    json!({
        "id": id,
        "name": env
            .and_then(|env| env.name.clone())
            .or_else(|| upstream.map(|doc| doc.parsed.name.clone())),
        "configured": live.environments.contains(&id),
        "source": source,
        // A Flagsmith document's features are in the document; these are flagpost's.
        "features": env
            .filter(|_| upstream.is_none())
            .map(|env| env.live_features().count()),
        "refreshed_at": refreshed_at,
        "data_age_seconds": refreshed_at.map(|at| now.saturating_sub(at)),
        "flagpost_document": {
            "last_sequence": env.and_then(|env| env.document_seq),
            "instance": env.and_then(|env| env.sender),
            "loaded_at": env.and_then(|env| env.loaded_at),
        },
        "flagsmith_document": upstream.map(|doc| json!({
            "updated_at": doc.parsed.updated_at,
            "fetched_at": doc.fetched_at,
            "age_seconds": now.saturating_sub(doc.fetched_at),
        })),
        "fetches": fetch.map(|f| json!({
            "fetched": f.fetched,
            "failures_in_a_row": f.failures_in_a_row,
            "last_error": f.last_error,
        })),
    })
}

//! Admin HTTP handlers for delivery: list pending deliveries, attempts and dead letters, and
//! replay dead letters. A `Router` that the server nests (under `/api/v1/admin`). Every route
//! takes the change API's bearer tokens (from the configuration in force). Answers carry endpoint
//! names, sequences, event ids, statuses and errors: never a URL or a secret.

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::request::ObjectBody;
use crate::delivery::client::now_millis;
use crate::delivery::{DeliveryMetrics, Dispatcher, DropError};
use crate::store::deliveries::{
    AttemptRecord, DeadLetter, PendingRow, ReplayFilter, attempts_for_endpoint, attempts_for_event,
    count_pending, list_dead_letters, list_pending, outbox_endpoints, replay_dead_letters,
};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

type AdminResult<T> = Result<Json<T>, ApiError>;

/// The delivery admin routes, relative to wherever they are nested:
///
/// - `GET /endpoints` — every endpoint's state, pending, in flight, last success and failure,
///   latency ([`super::endpoint_summary`]).
/// - `GET /deliveries/pending` — pending counts per endpoint;
///   `?endpoint=NAME[&after=SEQ][&limit=N]` — that endpoint's pending rows.
/// - `GET /attempts?sequence=SEQ` — every attempt of one event;
///   `?endpoint=NAME[&limit=N]` — an endpoint's latest attempts.
/// - `GET /dead-letters[?endpoint=NAME][&after_endpoint=NAME&after=SEQ][&limit=N]`.
/// - `POST /dead-letters/replay` with `{}` (all), `{"endpoint": NAME}`, or
///   `{"endpoint": NAME, "sequence": SEQ}` (one).
/// - `POST /deliveries/drop-removed` with `{"endpoint": NAME}`: dead-letters now the waiting
///   deliveries of an endpoint removed from the configuration.
pub fn router(dispatcher: Arc<Dispatcher>) -> Router {
    Router::new()
        .route("/endpoints", get(super::endpoint_summary::endpoints))
        .route("/deliveries/pending", get(pending))
        .route("/attempts", get(attempts))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/replay", post(replay))
        .route("/deliveries/drop-removed", post(drop_removed))
        .route_layer(middleware::from_fn_with_state(
            dispatcher.clone(),
            require_token,
        ))
        .with_state(dispatcher)
}

/// Admits a request bearing one of the configured API tokens.
async fn require_token(
    State(dispatcher): State<Arc<Dispatcher>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    super::request::authenticate(request.headers(), &dispatcher.config())
        .map_err(ApiError::Unauthorized)?;
    Ok(next.run(request).await)
}

fn limit(asked: Option<usize>) -> Result<usize, ApiError> {
    match asked {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!(
            "limit {n} is out of range: give 1 to {MAX_LIMIT}"
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PendingQuery {
    endpoint: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum PendingAnswer {
    Counts { endpoints: Vec<EndpointCount> },
    Rows { deliveries: Vec<PendingRow> },
}

#[derive(Debug, Serialize)]
struct EndpointCount {
    endpoint: String,
    /// "http" or "jetstream"; absent for an endpoint no longer configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    pending: u64,
}

/// The kind of each configured endpoint, by name.
fn endpoint_kinds(dispatcher: &Dispatcher) -> std::collections::HashMap<String, &'static str> {
    dispatcher
        .config()
        .webhooks()
        .map(|w| {
            let kind = if w.jetstream.is_some() {
                "jetstream"
            } else {
                "http"
            };
            (w.name.clone(), kind)
        })
        .collect()
}

async fn pending(
    State(dispatcher): State<Arc<Dispatcher>>,
    Query(query): Query<PendingQuery>,
) -> AdminResult<PendingAnswer> {
    let limit = limit(query.limit)?;
    let store = dispatcher.store().clone();
    match query.endpoint {
        Some(endpoint) => {
            let after = query.after.unwrap_or(0);
            let deliveries = store
                .read(move |txn| list_pending(txn, &endpoint, after, limit))
                .await?;
            Ok(Json(PendingAnswer::Rows { deliveries }))
        }
        None => {
            if query.after.is_some() {
                return Err(ApiError::BadRequest(
                    "after needs an endpoint: counts are per endpoint".to_owned(),
                ));
            }
            let kinds = endpoint_kinds(&dispatcher);
            let endpoints = store
                .read(move |txn| {
                    outbox_endpoints(txn)?
                        .into_iter()
                        .map(|endpoint| {
                            let pending = count_pending(txn, &endpoint, 0)?;
                            let kind = kinds.get(&endpoint).copied();
                            Ok(EndpointCount {
                                endpoint,
                                kind,
                                pending,
                            })
                        })
                        .collect()
                })
                .await?;
            Ok(Json(PendingAnswer::Counts { endpoints }))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttemptsQuery {
    sequence: Option<u64>,
    endpoint: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct AttemptsAnswer {
    attempts: Vec<AttemptRecord>,
}

async fn attempts(
    State(dispatcher): State<Arc<Dispatcher>>,
    Query(query): Query<AttemptsQuery>,
) -> AdminResult<AttemptsAnswer> {
    let limit = limit(query.limit)?;
    let store = dispatcher.store().clone();
    let attempts = match (query.sequence, query.endpoint) {
        (Some(sequence), None) => {
            store
                .read(move |txn| attempts_for_event(txn, sequence))
                .await?
        }
        (None, Some(endpoint)) => {
            store
                .read(move |txn| attempts_for_endpoint(txn, &endpoint, limit))
                .await?
        }
        (Some(sequence), Some(endpoint)) => {
            let mut attempts = store
                .read(move |txn| attempts_for_event(txn, sequence))
                .await?;
            attempts.retain(|a| a.endpoint == endpoint);
            attempts
        }
        (None, None) => {
            return Err(ApiError::BadRequest(
                "give sequence (an event) or endpoint".to_owned(),
            ));
        }
    };
    Ok(Json(AttemptsAnswer { attempts }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLettersQuery {
    endpoint: Option<String>,
    after_endpoint: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct DeadLettersAnswer {
    dead_letters: Vec<DeadLetter>,
}

async fn dead_letters(
    State(dispatcher): State<Arc<Dispatcher>>,
    Query(query): Query<DeadLettersQuery>,
) -> AdminResult<DeadLettersAnswer> {
    let limit = limit(query.limit)?;
    let after_endpoint = match (query.after_endpoint, query.after, &query.endpoint) {
        (Some(name), Some(seq), _) => Some((name, seq)),
        (None, Some(seq), Some(endpoint)) => Some((endpoint.clone(), seq)),
        (None, None, _) => None,
        _ => {
            return Err(ApiError::BadRequest(
                "after needs an endpoint (endpoint or after_endpoint)".to_owned(),
            ));
        }
    };
    let dead_letters = dispatcher
        .store()
        .read(move |txn| {
            list_dead_letters(
                txn,
                query.endpoint.as_deref(),
                after_endpoint.as_ref().map(|(n, s)| (n.as_str(), *s)),
                limit,
            )
        })
        .await?;
    Ok(Json(DeadLettersAnswer { dead_letters }))
}

#[derive(Debug, Serialize)]
struct ReplayAnswer {
    replayed: u64,
    by_endpoint: std::collections::BTreeMap<String, u64>,
    /// Dead letters of endpoints no longer configured, left where they are.
    skipped_unconfigured: u64,
}

async fn replay(
    State(dispatcher): State<Arc<Dispatcher>>,
    ObjectBody(filter): ObjectBody<ReplayFilter>,
) -> AdminResult<ReplayAnswer> {
    let config = dispatcher.config();
    let configured: std::collections::BTreeSet<String> =
        config.webhooks().map(|w| w.name.clone()).collect();
    if let Some(endpoint) = &filter.endpoint
        && !configured.contains(endpoint)
    {
        return Err(ApiError::NotFound(format!(
            "endpoint {endpoint:?} is not configured: its dead letters cannot be replayed"
        )));
    }
    if filter.sequence.is_some() && filter.endpoint.is_none() {
        return Err(ApiError::BadRequest(
            "sequence needs an endpoint: a dead letter is one event to one endpoint".to_owned(),
        ));
    }
    let job_filter = filter.clone();
    let (by_endpoint, skipped_unconfigured) = dispatcher
        .store()
        .write_txn(move |txn| {
            let is_endpoint = |name: &str| configured.contains(name);
            Ok(replay_dead_letters(
                txn,
                &job_filter,
                &is_endpoint,
                now_millis(),
            )?)
        })
        .await?;
    let replayed = by_endpoint.values().sum();
    if replayed == 0 && filter.sequence.is_some() {
        return Err(ApiError::NotFound(format!(
            "no dead letter for event {} to {:?}",
            filter.sequence.unwrap_or_default(),
            filter.endpoint.unwrap_or_default()
        )));
    }
    for (endpoint, count) in &by_endpoint {
        dispatcher
            .metrics()
            .pending
            .get_or_create(&DeliveryMetrics::endpoint(endpoint))
            .inc_by(*count as i64);
    }
    dispatcher.rescan(by_endpoint.keys().cloned().collect());
    Ok(Json(ReplayAnswer {
        replayed,
        by_endpoint,
        skipped_unconfigured,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DropRemovedRequest {
    endpoint: String,
}

#[derive(Debug, Serialize)]
struct DropRemovedAnswer {
    endpoint: String,
    dead_lettered: usize,
}

/// Dead-letters a removed endpoint's waiting deliveries before its grace ends.
async fn drop_removed(
    State(dispatcher): State<Arc<Dispatcher>>,
    ObjectBody(request): ObjectBody<DropRemovedRequest>,
) -> AdminResult<DropRemovedAnswer> {
    let endpoint = request.endpoint;
    match dispatcher.drop_removed(endpoint.clone()).await {
        Ok(dead_lettered) => Ok(Json(DropRemovedAnswer {
            endpoint,
            dead_lettered,
        })),
        Err(error @ DropError::NotRemoved(_)) => Err(ApiError::NotFound(error.to_string())),
        Err(error @ DropError::Configured(_)) => Err(ApiError::Rejected {
            status: axum::http::StatusCode::CONFLICT,
            message: error.to_string(),
        }),
        Err(DropError::Stopped) => Err(ApiError::WriterStopped),
    }
}

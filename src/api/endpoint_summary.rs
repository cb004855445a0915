//! `GET /api/v1/admin/endpoints`: every endpoint at a glance, for the status page and for
//! operators: its state, pending and in-flight deliveries, last success and failure, latency.
//! Behind the admin routes' token rule ([`super::admin`]). Never a URL or a secret.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::error::ApiError;
use crate::config::Config;
use crate::delivery::client::now_millis;
use crate::delivery::{DeliveryMetrics, Dispatcher, LaneActivity};
use crate::store::deliveries::{
    AttemptRecord, committed_sequence, count_pending, outbox_endpoints,
};

/// What an operator most needs to know of an endpoint first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointState {
    /// Configured, enabled, at full concurrency.
    Healthy,
    /// Paused after failures (or a `Retry-After`), or probing with one request at a time.
    BackingOff,
    /// Configured with `enabled = false`: its deliveries wait.
    Disabled,
    /// No longer configured: its deliveries wait for the removed-endpoint grace.
    Removed,
}

#[derive(Debug, Serialize)]
pub struct EndpointSummary {
    pub name: String,
    /// The environment whose events it takes; none for an organisation's audit-log endpoint or
    /// an endpoint no longer configured.
    pub environment: Option<u64>,
    pub state: EndpointState,
    pub pending: u64,
    #[serde(flatten)]
    pub activity: LaneActivity,
}

/// How many attempts the answer lists, newest first, across endpoints.
const RECENT_ATTEMPTS: usize = 20;

#[derive(Debug, Serialize)]
pub struct EndpointsAnswer {
    pub endpoints: Vec<EndpointSummary>,
    /// The latest attempts of every endpoint since the process started, newest first (the
    /// stored ones: `GET /attempts`).
    pub recent_attempts: Vec<AttemptRecord>,
    /// The last committed event's sequence, from which the page asks for the latest events.
    pub last_sequence: u64,
    /// The server's clock, unix milliseconds, so that ages are not skewed by the browser's.
    pub now_ms: u64,
}

pub async fn endpoints(
    State(dispatcher): State<Arc<Dispatcher>>,
) -> Result<Json<EndpointsAnswer>, ApiError> {
    let config = dispatcher.config();
    let configured = configured_endpoints(&config);
    let mut activity = dispatcher.activity();
    let mut recent_attempts: Vec<AttemptRecord> = activity
        .values()
        .flat_map(|lane| lane.latest_attempts.iter().cloned())
        .collect();
    recent_attempts.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then(b.sequence.cmp(&a.sequence)));
    recent_attempts.truncate(RECENT_ATTEMPTS);
    // Endpoints no longer configured have no lane keeping a count: their rows are counted here,
    // as few as they are.
    let (last_sequence, removed) = dispatcher
        .store()
        .read({
            let configured: Vec<String> = configured.keys().cloned().collect();
            move |txn| {
                let mut removed = BTreeMap::new();
                for name in outbox_endpoints(txn)? {
                    if !configured.contains(&name) {
                        let pending = count_pending(txn, &name, 0)?;
                        removed.insert(name, pending);
                    }
                }
                Ok((committed_sequence(txn)?, removed))
            }
        })
        .await?;
    let mut endpoints = Vec::new();
    for (name, (environment, enabled)) in configured {
        let lane = activity.remove(&name).unwrap_or_default();
        let state = match (enabled, lane.backing_off()) {
            (false, _) => EndpointState::Disabled,
            (true, true) => EndpointState::BackingOff,
            (true, false) => EndpointState::Healthy,
        };
        let pending = dispatcher
            .metrics()
            .pending
            .get_or_create(&DeliveryMetrics::endpoint(&name))
            .get();
        endpoints.push(EndpointSummary {
            name,
            environment,
            state,
            pending: u64::try_from(pending).unwrap_or(0),
            activity: lane,
        });
    }
    let mut gone: BTreeMap<String, u64> = activity.keys().map(|n| (n.clone(), 0)).collect();
    gone.extend(removed);
    for (name, pending) in gone {
        endpoints.push(EndpointSummary {
            activity: activity.remove(&name).unwrap_or_default(),
            name,
            environment: None,
            state: EndpointState::Removed,
            pending,
        });
    }
    Ok(Json(EndpointsAnswer {
        endpoints,
        recent_attempts,
        last_sequence,
        now_ms: now_millis(),
    }))
}

/// Every configured endpoint by name: its environment (none for audit-log endpoints) and
/// whether it is enabled.
fn configured_endpoints(config: &Config) -> BTreeMap<String, (Option<u64>, bool)> {
    let environments = config.environments.values().flat_map(|environment| {
        environment
            .webhooks
            .iter()
            .map(|w| (w.name.clone(), (Some(environment.id), w.enabled)))
    });
    let audit = config
        .audit_webhooks
        .iter()
        .map(|w| (w.name.clone(), (None, w.enabled)));
    environments.chain(audit).collect()
}

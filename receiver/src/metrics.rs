//! Prometheus metrics. Labels carry reasons, outcomes and environment ids, never a secret or a
//! request's content.
//!
//! The receiver has one registry ([`registry`]), built at start and handed to [`Metrics::new`],
//! each subsystem's metrics in a sub-registry of their own. Label sets are derived types whose
//! values are borrowed, so that counting a request allocates nothing once its series exists.
//!
//! Every family is on the page from start, registered with [`register_family`] and the label
//! values it can count (see [`flagpost::metrics`]); the series of each configured environment are
//! made at zero at start and after each reload ([`Metrics::show_environments`]), except the two
//! ages, which have no value before the environment's first data. Each family has its row in the
//! README's metrics table (`tests/operations/metrics.rs` compares them).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use flagpost::metrics::exposition::{self, Format};
use flagpost::metrics::{KnownCounters, register_family, subsystem};
use flagpost::reload::ReloadMetrics;

use crate::config::Live;
use crate::documents::FlagCache;
use crate::error::{UpstreamError, WriteError};
use crate::intake::IntakeOutcome;

/// `flagpost_receiver_bootstraps_total{result}`.
const BOOTSTRAP_RESULTS: [&str; 2] = ["loaded", "failed"];

/// The receiver's registry: every metric is named `flagpost_receiver_*`.
pub fn registry() -> Registry {
    Registry::with_prefix("flagpost_receiver")
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// `ofrep_evaluations_total{result}`: an answer, or the protocol's error code in snake_case.
pub const OFREP_RESULTS: [&str; 7] = [
    "ok",
    "not_modified",
    "unauthorized",
    "flag_not_found",
    "parse_error",
    "invalid_context",
    "targeting_key_missing",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OfrepLabels {
    route: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvironmentLabels {
    environment: u64,
}

pub struct Metrics {
    registry: Registry,
    refused: Family<ReasonLabels, Counter>,
    accepted: KnownCounters<IntakeOutcome, { IntakeOutcome::ALL.len() }>,
    data_age: Family<EnvironmentLabels, Gauge>,
    document_age: Family<EnvironmentLabels, Gauge>,
    reloads: ReloadMetrics,
    bootstraps: Family<ResultLabels, Counter>,
    upstream_fetches: Family<EnvironmentResultLabels, Counter>,
    analytics: Family<EnvironmentLabels, Counter>,
    ofrep: Family<OfrepLabels, Counter>,
    cors_refused: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvironmentResultLabels {
    environment: u64,
    result: &'static str,
}

/// `ofrep_evaluations_total` (every route and result at zero) and `cors_refused_total`.
fn register_browser_and_ofrep(registry: &mut Registry) -> (Family<OfrepLabels, Counter>, Counter) {
    let ofrep = Family::default();
    register_family(
        subsystem(registry),
        "ofrep_evaluations",
        "OFREP requests, by route (flag, bulk) and result (ok, not_modified, unauthorized, or the protocol's error code in snake_case)",
        &ofrep,
        ["flag", "bulk"]
            .into_iter()
            .flat_map(|route| OFREP_RESULTS.map(|result| OfrepLabels { route, result })),
    );
    let cors_refused = Counter::default();
    subsystem(registry).register(
        "cors_refused",
        "Requests refused because their Origin is not in cors.allowed_origins",
        cors_refused.clone(),
    );
    (ofrep, cors_refused)
}

impl Metrics {
    /// Registers the receiver's metrics in `registry` (in which the writer's are registered) and
    /// keeps it for [`Metrics::render`].
    pub fn new(mut registry: Registry) -> Metrics {
        let intake = subsystem(&mut registry);
        let refused = Family::default();
        register_family(
            intake,
            "webhooks_refused",
            "Web hooks refused, by reason; the cache is unchanged by each",
            &refused,
            WriteError::REFUSALS.map(|reason| ReasonLabels { reason }),
        );
        let accepted = KnownCounters::register(
            intake,
            "webhooks_accepted",
            "Web hooks acknowledged after a durable commit, by outcome",
            IntakeOutcome::ALL,
            |o| OutcomeLabels {
                outcome: o.as_str(),
            },
        );
        let data_age = Family::default();
        register_family(
            subsystem(&mut registry),
            "environment_data_age_seconds",
            "Seconds since the environment last took a change or a document",
            &data_age,
            [],
        );
        let document_age = Family::default();
        register_family(
            subsystem(&mut registry),
            "upstream_document_age_seconds",
            "Seconds since the environment's document was last fetched from its upstream Flagsmith",
            &document_age,
            [],
        );
        let reloads = ReloadMetrics::register(subsystem(&mut registry));
        let bootstraps = Family::default();
        register_family(
            subsystem(&mut registry),
            "bootstraps",
            "Environment documents loaded from flagpost, by result",
            &bootstraps,
            BOOTSTRAP_RESULTS.map(|result| ResultLabels { result }),
        );
        let upstream_fetches = Family::default();
        register_family(
            subsystem(&mut registry),
            "upstream_fetches",
            "Environment documents fetched from an upstream Flagsmith, by environment and result",
            &upstream_fetches,
            [],
        );
        let analytics = Family::default();
        register_family(
            subsystem(&mut registry),
            "sdk_analytics",
            "Flag analytics posted by SDKs (POST /api/v1/analytics/flags/), by environment",
            &analytics,
            [],
        );
        let (ofrep, cors_refused) = register_browser_and_ofrep(&mut registry);
        Metrics {
            ofrep,
            cors_refused,
            upstream_fetches,
            analytics,
            registry,
            refused,
            accepted,
            data_age,
            document_age,
            reloads,
            bootstraps,
        }
    }

    /// Makes the series of each environment `live` configures, at zero: called at start and after
    /// each reload, so that a new environment's counters are there before its first event.
    pub fn show_environments(&self, live: &Live) {
        for &environment in &live.environments {
            drop(
                self.analytics
                    .get_or_create(&EnvironmentLabels { environment }),
            );
        }
        for &environment in live.upstreams.keys() {
            for result in UpstreamError::FETCH_RESULTS {
                let labels = EnvironmentResultLabels {
                    environment,
                    result,
                };
                drop(self.upstream_fetches.get_or_create(&labels));
            }
        }
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn accepted(&self, outcome: IntakeOutcome) {
        self.accepted.inc(outcome);
    }

    /// Configuration reloads, counted by the reload helper and by [`crate::reload`].
    pub fn reloads(&self) -> &ReloadMetrics {
        &self.reloads
    }

    pub fn bootstrap(&self, result: &'static str) {
        self.bootstraps
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn upstream_fetch(&self, environment: u64, result: &'static str) {
        self.upstream_fetches
            .get_or_create(&EnvironmentResultLabels {
                environment,
                result,
            })
            .inc();
    }

    pub fn analytics(&self, environment: u64) {
        self.analytics
            .get_or_create(&EnvironmentLabels { environment })
            .inc();
    }

    pub fn ofrep(&self, route: &'static str, result: &'static str) {
        self.ofrep
            .get_or_create(&OfrepLabels { route, result })
            .inc();
    }

    pub fn cors_refused(&self) {
        self.cors_refused.inc();
    }

    /// The page in `format`, with each environment's data age computed now.
    pub fn render(&self, cache: &FlagCache, now_unix: i64, format: Format) -> String {
        for (environment, env) in cache.envs() {
            if let Some(at) = env.refreshed_at {
                self.data_age
                    .get_or_create(&EnvironmentLabels { environment })
                    .set(now_unix.saturating_sub(at));
            }
            if let Some(doc) = &env.upstream {
                self.document_age
                    .get_or_create(&EnvironmentLabels { environment })
                    .set(now_unix.saturating_sub(doc.fetched_at));
            }
        }
        exposition::render(&self.registry, format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each outcome counts into its own series, the others staying at zero.
    #[test]
    fn accepted_web_hooks_count_under_their_outcome() {
        let metrics = Metrics::new(registry());
        metrics.accepted(IntakeOutcome::Applied);
        metrics.accepted(IntakeOutcome::Applied);
        metrics.accepted(IntakeOutcome::NotApplied);
        let text = metrics.render(&FlagCache::default(), 0, Format::Prometheus);
        for line in [
            "flagpost_receiver_webhooks_accepted_total{outcome=\"applied\"} 2",
            "flagpost_receiver_webhooks_accepted_total{outcome=\"superseded\"} 0",
            "flagpost_receiver_webhooks_accepted_total{outcome=\"duplicate\"} 0",
            "flagpost_receiver_webhooks_accepted_total{outcome=\"not_applied\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}

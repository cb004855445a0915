//! Prometheus metrics. Labels carry reasons, outcomes and environment ids, never a secret or a
//! request's content.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::documents::FlagCache;

use std::borrow::Cow;

/// One label; its value borrowed when static, so that counting a request allocates nothing.
type Labels = [(&'static str, Cow<'static, str>); 1];

fn label(name: &'static str, value: impl Into<Cow<'static, str>>) -> Labels {
    [(name, value.into())]
}

pub struct Metrics {
    registry: Registry,
    refused: Family<Labels, Counter>,
    accepted: Family<Labels, Counter>,
    data_age: Family<Labels, Gauge>,
    config_reloads: Family<Labels, Counter>,
    bootstraps: Family<Labels, Counter>,
}

/// Creates a metric family and registers it.
fn register<M: Default + Clone + std::fmt::Debug + Send + Sync + 'static>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> Family<Labels, M>
where
    Family<Labels, M>: prometheus_client::registry::Metric,
{
    let family = Family::<Labels, M>::default();
    registry.register(name, help, family.clone());
    family
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flagpost_receiver");
        let refused = register(
            &mut registry,
            "webhooks_refused",
            "Web hooks refused, by reason; the cache is unchanged by each",
        );
        let accepted = register(
            &mut registry,
            "webhooks_accepted",
            "Web hooks acknowledged after a durable commit, by outcome",
        );
        let data_age = register(
            &mut registry,
            "environment_data_age_seconds",
            "Seconds since the environment last took a change or a document",
        );
        let config_reloads = register(
            &mut registry,
            "config_reloads",
            "Configuration reloads, by result (applied, invalid, needs_restart)",
        );
        let bootstraps = register(
            &mut registry,
            "bootstraps",
            "Environment documents loaded from flagpost, by result",
        );
        Metrics {
            registry,
            refused,
            accepted,
            data_age,
            config_reloads,
            bootstraps,
        }
    }
}

impl Metrics {
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&label("reason", reason)).inc();
    }

    pub fn accepted(&self, outcome: &'static str) {
        self.accepted
            .get_or_create(&label("outcome", outcome))
            .inc();
    }

    pub fn config_reload(&self, result: &'static str) {
        self.config_reloads
            .get_or_create(&label("result", result))
            .inc();
    }

    pub fn bootstrap(&self, result: &'static str) {
        self.bootstraps
            .get_or_create(&label("result", result))
            .inc();
    }

    /// The text exposition, with each environment's data age computed now.
    pub fn render(&self, cache: &FlagCache, now_unix: i64) -> String {
        for (id, env) in cache.envs() {
            if let Some(at) = env.refreshed_at {
                self.data_age
                    .get_or_create(&label("environment", id.to_string()))
                    .set(now_unix.saturating_sub(at));
            }
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

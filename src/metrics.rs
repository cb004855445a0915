//! Prometheus metrics of the sidecar, served at `/metrics`. Labels never carry secrets: only
//! sources, reasons, event types and endpoint names.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    changes: Family<Labels, Counter>,
    events: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    config_reloads: Family<Labels, Counter>,
    flag_files: Family<Labels, Counter>,
}

impl Metrics {
    /// Builds the sidecar's metrics; `extend` registers more (delivery's) in the same registry.
    pub fn new(extend: impl FnOnce(&mut Registry)) -> Metrics {
        let mut registry = Registry::with_prefix("flagpost");
        let changes = Family::<Labels, Counter>::default();
        registry.register(
            "changes",
            "Changes committed, by source (api, file, relay)",
            changes.clone(),
        );
        let events = Family::<Labels, Counter>::default();
        registry.register("events", "Events committed, by event type", events.clone());
        let refused = Family::<Labels, Counter>::default();
        registry.register(
            "refused",
            "Input refused, by source and reason (nothing of it was applied)",
            refused.clone(),
        );
        let config_reloads = Family::<Labels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads, by result (applied, invalid, needs_restart)",
            config_reloads.clone(),
        );
        let flag_files = Family::<Labels, Counter>::default();
        registry.register(
            "flag_files",
            "Flag file reads, by outcome (applied, unchanged, invalid, ignored, not_applied)",
            flag_files.clone(),
        );
        extend(&mut registry);
        Metrics {
            registry: Arc::new(registry),
            changes,
            events,
            refused,
            config_reloads,
            flag_files,
        }
    }

    pub fn change_committed(
        &self,
        source: &'static str,
        events: &[crate::changes::CommittedEvent],
    ) {
        self.changes
            .get_or_create(&vec![("source", source.to_owned())])
            .inc();
        for event in events {
            self.events
                .get_or_create(&vec![("type", event.event_type.clone())])
                .inc();
        }
    }

    pub fn refused(&self, source: &'static str, reason: &'static str) {
        self.refused
            .get_or_create(&vec![
                ("source", source.to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }

    pub fn config_reload(&self, result: &'static str) {
        self.config_reloads
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }

    pub fn flag_file(&self, outcome: &'static str) {
        self.flag_files
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

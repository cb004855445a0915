//! Prometheus metrics of the sidecar, served at `/metrics`. Labels never carry secrets: only
//! sources, reasons, event types and endpoint names.
//!
//! The program has one registry ([`registry`]), built at start and handed down: each subsystem
//! registers its metrics in a sub-registry of its own ([`subsystem`]), and [`Metrics::new`] then
//! takes the registry to serve it. Label sets are derived types whose values are borrowed, so that
//! counting allocates nothing once a series exists.

use std::borrow::Cow;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::reload::ReloadMetrics;
use crate::wire::EventType;

/// The sidecar's registry: every metric is named `flagpost_*`.
pub fn registry() -> Registry {
    Registry::with_prefix("flagpost")
}

/// A sub-registry for one subsystem's metrics. The metric names are public (the README, the
/// tests, dashboards) and older than the sub-registries, so this one adds no prefix of its own;
/// a new subsystem takes one with `sub_registry_with_prefix`, as the store's does.
pub fn subsystem(registry: &mut Registry) -> &mut Registry {
    registry.sub_registry_with_labels(std::iter::empty())
}

/// Registers a writer's durable-commit latency as `<prefix>_store_commit_duration_seconds`
/// (`flagpost_store_…` here, `flagpost_receiver_store_…` in the receiver), in a `store`
/// sub-registry of the program's registry. The histogram is the writer thread's own (a clone
/// shares its buckets), so observing it costs the writer nothing here.
pub fn register_commit_latency(registry: &mut Registry, commit_latency: Histogram) {
    registry.sub_registry_with_prefix("store").register(
        "commit_duration_seconds",
        "Time of one durable commit of the writer: the batch's transaction to the end of commit()",
        commit_latency,
    );
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventTypeLabels {
    r#type: Cow<'static, str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    source: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The sidecar's own metrics (the change path, configuration and flag files), and the registry
/// they are served from. Cheap to clone: every clone counts into the same series.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    changes: Family<SourceLabels, Counter>,
    events: Family<EventTypeLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    reloads: ReloadMetrics,
    flag_files: Family<OutcomeLabels, Counter>,
}

impl Metrics {
    /// Registers the sidecar's own metrics in `registry`, in which the other subsystems have
    /// registered theirs, and keeps it for [`Metrics::render`].
    pub fn new(mut registry: Registry) -> Metrics {
        let changes = subsystem(&mut registry);
        let changes_committed = Family::default();
        changes.register(
            "changes",
            "Changes committed, by source (api, file, relay)",
            changes_committed.clone(),
        );
        let events = Family::default();
        changes.register("events", "Events committed, by event type", events.clone());
        let refused = Family::default();
        changes.register(
            "refused",
            "Input refused, by source and reason (nothing of it was applied)",
            refused.clone(),
        );
        let reloads = ReloadMetrics::register(subsystem(&mut registry));
        let flag_files = Family::default();
        subsystem(&mut registry).register(
            "flag_files",
            "Flag file reads, by outcome (applied, unchanged, invalid, ignored, not_applied)",
            flag_files.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            changes: changes_committed,
            events,
            refused,
            reloads,
            flag_files,
        }
    }

    pub fn change_committed(
        &self,
        source: &'static str,
        events: &[crate::changes::CommittedEvent],
    ) {
        self.changes.get_or_create(&SourceLabels { source }).inc();
        for event in events {
            let labels = EventTypeLabels {
                r#type: event_type_label(&event.event_type),
            };
            self.events.get_or_create(&labels).inc();
        }
    }

    pub fn refused(&self, source: &'static str, reason: &'static str) {
        self.refused
            .get_or_create(&RefusedLabels { source, reason })
            .inc();
    }

    /// Configuration reloads, counted by the reload helper and by the server.
    pub fn reloads(&self) -> &ReloadMetrics {
        &self.reloads
    }

    pub fn flag_file(&self, outcome: &'static str) {
        self.flag_files
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) = encode(&mut out, &self.registry) {
            // Writing to a String does not fail; a metric whose encoding does is a bug to see.
            tracing::error!(%error, "metrics not encoded");
        }
        out
    }
}

/// The event type as a label, borrowed for the types this version knows.
fn event_type_label(name: &str) -> Cow<'static, str> {
    match EventType::parse(name) {
        EventType::FlagUpdated => Cow::Borrowed("FLAG_UPDATED"),
        EventType::FlagDeleted => Cow::Borrowed("FLAG_DELETED"),
        EventType::AuditLogCreated => Cow::Borrowed("AUDIT_LOG_CREATED"),
        EventType::SegmentUpdated => Cow::Borrowed("SEGMENT_UPDATED"),
        EventType::SegmentDeleted => Cow::Borrowed("SEGMENT_DELETED"),
        EventType::Other(other) => Cow::Owned(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition the README and the tests read: names and label values unchanged.
    #[test]
    fn series_are_named_and_labelled_as_documented() {
        let metrics = Metrics::new(registry());
        metrics.refused("api", "unauthorized");
        metrics.flag_file("applied");
        let event = crate::changes::CommittedEvent {
            id: "e1".to_owned(),
            sequence: 1,
            event_type: "FLAG_UPDATED".to_owned(),
        };
        metrics.change_committed("api", &[event]);
        metrics.reloads().applied();
        let text = metrics.render();
        for line in [
            "flagpost_changes_total{source=\"api\"} 1",
            "flagpost_events_total{type=\"FLAG_UPDATED\"} 1",
            "flagpost_config_reloads_total{result=\"applied\"} 1",
            "flagpost_refused_total{source=\"api\",reason=\"unauthorized\"} 1",
            "flagpost_flag_files_total{outcome=\"applied\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}

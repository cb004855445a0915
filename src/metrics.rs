//! Prometheus metrics of the sidecar, served at `/metrics`. Labels never carry secrets: only
//! sources, reasons, event types and endpoint names.
//!
//! The program has one registry ([`registry`]), built at start and handed down: each subsystem
//! registers its metrics in a sub-registry of its own ([`subsystem`]), and [`Metrics::new`] then
//! takes the registry to serve it. Label sets are derived types whose values are borrowed, so that
//! counting allocates nothing once a series exists.
//!
//! **Every family is on the page from start** (so that `increase()` sees the first event, and a
//! dashboard shows a zero rather than no data): register a family with [`register_family`], giving
//! every label set it can count that is known at start (each reason, outcome, configured endpoint
//! or environment); those series start at zero, and the family's `# HELP`/`# TYPE` show even while
//! it has none (labels known only later, such as an endpoint added by a reload, get theirs when
//! the program learns them). Label values are snake_case, and each family has its row in the
//! README's metrics table, which `tests/operations/metrics.rs` compares with both programs' pages.
//! The page is served in Prometheus' text format or OpenMetrics, by [`exposition`].

pub mod exposition;

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use exposition::Format;

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

/// A family whose descriptor is encoded even while it has no series: `prometheus-client` leaves
/// out an empty family, so a family labelled by endpoint would be missing until its first sample.
#[derive(Debug)]
struct Declared<M>(M);

impl<M: EncodeMetric> EncodeMetric for Declared<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// Registers `family` so that it is on `/metrics` from start: a series at zero for each label set
/// of `known`, and the family's `# HELP`/`# TYPE` even when `known` is empty. The way every
/// labelled family of both programs is registered (see the module's documentation).
pub fn register_family<S, M, C>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    family: &Family<S, M, C>,
    known: impl IntoIterator<Item = S>,
) where
    S: Clone + Hash + Eq + EncodeLabelSet + Debug + Send + Sync + 'static,
    M: EncodeMetric + TypedMetric + Debug + Send + Sync + 'static,
    C: MetricConstructor<M> + Clone + Debug + Send + Sync + 'static,
{
    for labels in known {
        drop(family.get_or_create(&labels));
    }
    registry.register(name, help, Declared(family.clone()));
}

/// A counter family whose label sets are all known at start, each series taken from the family
/// once and kept beside the key it counts: counting is then a short scan and one atomic add,
/// where counting through the family is a lock and a lookup that request threads contend for.
#[derive(Clone)]
pub struct KnownCounters<K, const N: usize> {
    series: [(K, Counter); N],
}

impl<K: Copy + PartialEq + Debug, const N: usize> KnownCounters<K, N> {
    /// Registers the family (see [`register_family`]) with a series at zero for each of `keys`,
    /// labelled by `labels`.
    pub fn register<S>(
        registry: &mut Registry,
        name: &str,
        help: &str,
        keys: [K; N],
        labels: impl Fn(K) -> S,
    ) -> KnownCounters<K, N>
    where
        S: Clone + Hash + Eq + EncodeLabelSet + Debug + Send + Sync + 'static,
    {
        let family = Family::<S, Counter>::default();
        register_family(registry, name, help, &family, keys.map(&labels));
        let series = keys.map(|key| (key, family.get_or_create(&labels(key)).clone()));
        KnownCounters { series }
    }

    /// Counts one for `key`, which must be one of the keys registered.
    pub fn inc(&self, key: K) {
        let series = self.series.iter().find(|(known, _)| *known == key);
        debug_assert!(series.is_some(), "{key:?} is not a registered series");
        if let Some((_, counter)) = series {
            counter.inc();
        }
    }
}

/// Where a committed change came from, as `flagpost_changes_total{source}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeSource {
    Api,
    File,
    Relay,
}

impl ChangeSource {
    const ALL: [ChangeSource; 3] = [ChangeSource::Api, ChangeSource::File, ChangeSource::Relay];

    fn label(self) -> &'static str {
        match self {
            ChangeSource::Api => "api",
            ChangeSource::File => "file",
            ChangeSource::Relay => "relay",
        }
    }
}

/// The HTTP routes whose refusals `flagpost_refused_total{source}` counts, each with every reason
/// of [`crate::api::error::ApiError::REASONS`]; flag files refuse with their own two.
const HTTP_REFUSAL_SOURCES: [&str; 3] = ["api", "environment_document", "relay"];
const FILE_REFUSALS: [&str; 2] = ["invalid", "refused"];

/// `flagpost_events_total{type}`: the event types, snake_case; a relayed type this version does
/// not know counts as `other`, so that a sender cannot grow the page without bound.
const EVENT_TYPES: [&str; 6] = [
    "flag_updated",
    "flag_deleted",
    "audit_log_created",
    "segment_updated",
    "segment_deleted",
    "other",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventTypeLabels {
    r#type: &'static str,
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
    changes: KnownCounters<ChangeSource, { ChangeSource::ALL.len() }>,
    /// By label: one of [`EVENT_TYPES`].
    events: KnownCounters<&'static str, { EVENT_TYPES.len() }>,
    refused: Family<RefusedLabels, Counter>,
    reloads: ReloadMetrics,
    flag_files: Family<OutcomeLabels, Counter>,
}

impl Metrics {
    /// Registers the sidecar's own metrics in `registry`, in which the other subsystems have
    /// registered theirs, and keeps it for [`Metrics::render`].
    pub fn new(mut registry: Registry) -> Metrics {
        let changes = subsystem(&mut registry);
        let changes_committed = KnownCounters::register(
            changes,
            "changes",
            "Changes committed, by source (api, file, relay)",
            ChangeSource::ALL,
            |source| SourceLabels {
                source: source.label(),
            },
        );
        let events = KnownCounters::register(
            changes,
            "events",
            "Events committed, by event type",
            EVENT_TYPES,
            |r#type| EventTypeLabels { r#type },
        );
        let refused = Family::default();
        register_family(
            changes,
            "refused",
            "Input refused, by source and reason (nothing of it was applied)",
            &refused,
            known_refusals(),
        );
        let reloads = ReloadMetrics::register(subsystem(&mut registry));
        let flag_files = Family::default();
        register_family(
            subsystem(&mut registry),
            "flag_files",
            "Flag file reads, by outcome (applied, unchanged, invalid, ignored, not_applied)",
            &flag_files,
            crate::flagfiles::FileOutcome::NAMES.map(|outcome| OutcomeLabels { outcome }),
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
        source: ChangeSource,
        events: &[crate::changes::CommittedEvent],
    ) {
        self.changes.inc(source);
        for event in events {
            self.events.inc(event_type_label(&event.event_type));
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

    /// The page in `format`.
    pub fn render(&self, format: Format) -> String {
        exposition::render(&self.registry, format)
    }
}

/// Every (source, reason) `flagpost_refused_total` can count.
fn known_refusals() -> impl Iterator<Item = RefusedLabels> {
    let http = HTTP_REFUSAL_SOURCES.into_iter().flat_map(|source| {
        crate::api::error::ApiError::REASONS
            .into_iter()
            .map(move |reason| RefusedLabels { source, reason })
    });
    let files = FILE_REFUSALS.map(|reason| RefusedLabels {
        source: "file",
        reason,
    });
    http.chain(files)
}

/// The event type as a label: one of [`EVENT_TYPES`].
fn event_type_label(name: &str) -> &'static str {
    match EventType::parse(name) {
        EventType::FlagUpdated => "flag_updated",
        EventType::FlagDeleted => "flag_deleted",
        EventType::AuditLogCreated => "audit_log_created",
        EventType::SegmentUpdated => "segment_updated",
        EventType::SegmentDeleted => "segment_deleted",
        EventType::Other(_) => "other",
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
        metrics.change_committed(ChangeSource::Api, &[event]);
        metrics.reloads().applied();
        let text = metrics.render(Format::Prometheus);
        for line in [
            "flagpost_changes_total{source=\"api\"} 1",
            "flagpost_changes_total{source=\"relay\"} 0",
            "flagpost_events_total{type=\"flag_updated\"} 1",
            "flagpost_events_total{type=\"segment_deleted\"} 0",
            "flagpost_refused_total{source=\"relay\",reason=\"storage\"} 0",
            "flagpost_config_reloads_total{result=\"applied\"} 1",
            "flagpost_config_reloads_total{result=\"needs_restart\"} 0",
            "flagpost_refused_total{source=\"api\",reason=\"unauthorized\"} 1",
            "flagpost_flag_files_total{outcome=\"applied\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}

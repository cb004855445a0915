//! Delivery metrics, registered in delivery's sub-registry of the sidecar's one registry, which the
//! HTTP layer serves at `/metrics`. Labels are endpoint names and fixed words only: never a URL (it
//! may carry credentials) and never anything derived from a secret. A lane resolves its endpoint's
//! series once (`DeliveryMetrics::for_endpoint`), so that an attempt counts without a lookup.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::client::AttemptOutcome;
use crate::metrics::register_family;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum AttemptKind {
    /// 2xx.
    Delivered,
    /// Any other status.
    HttpError,
    /// No response: connection refused or reset, TLS, timeout.
    TransportError,
}

impl AttemptKind {
    /// The label value, snake_case as the README documents it (the derive would write the
    /// variant's name, `HttpError`).
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptKind::Delivered => "delivered",
            AttemptKind::HttpError => "http_error",
            AttemptKind::TransportError => "transport_error",
        }
    }
}

impl EncodeLabelValue for AttemptKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub endpoint: String,
    pub outcome: AttemptKind,
}

type HistogramFamily = Family<EndpointLabel, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 0.5 ms to about 16 s: a loopback delivery and a slow endpoint's timeout both fit.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

#[derive(Debug)]
pub struct DeliveryMetrics {
    pub pending: Family<EndpointLabel, Gauge>,
    pub attempts: Family<AttemptLabels, Counter>,
    pub attempt_duration: HistogramFamily,
    pub delivery_latency: HistogramFamily,
    pub dead_letters: Family<EndpointLabel, Counter>,
    pub record_failures: Counter,
}

impl Default for DeliveryMetrics {
    fn default() -> Self {
        DeliveryMetrics {
            pending: Family::default(),
            attempts: Family::default(),
            attempt_duration: Family::new_with_constructor(seconds_histogram),
            delivery_latency: Family::new_with_constructor(seconds_histogram),
            dead_letters: Family::default(),
            record_failures: Counter::default(),
        }
    }
}

impl DeliveryMetrics {
    /// Makes the metrics and registers them in `registry`: delivery's sub-registry of the
    /// sidecar's registry, which names them `flagpost_*`. Configuration reloads are counted by
    /// the sidecar's own metrics. The families are shown from start; each endpoint's series are
    /// made at zero when its lane starts ([`DeliveryMetrics::for_endpoint`]).
    pub fn register(registry: &mut Registry) -> DeliveryMetrics {
        let metrics = DeliveryMetrics::default();
        let r = registry;
        register_family(
            r,
            "deliveries_pending",
            "Deliveries waiting in the outbox, per endpoint",
            &metrics.pending,
            [],
        );
        register_family(
            r,
            "delivery_attempts",
            "Delivery attempts by endpoint and outcome",
            &metrics.attempts,
            [],
        );
        register_family(
            r,
            "delivery_attempt_duration_seconds",
            "Time of one delivery attempt, connect to last response byte",
            &metrics.attempt_duration,
            [],
        );
        register_family(
            r,
            "delivery_latency_seconds",
            "Time from an event's commit to its successful delivery",
            &metrics.delivery_latency,
            [],
        );
        register_family(
            r,
            "dead_letters",
            "Deliveries given up, per endpoint",
            &metrics.dead_letters,
            [],
        );
        r.register(
            "delivery_record_failures",
            "Batches of delivery outcomes that could not be written",
            metrics.record_failures.clone(),
        );
        metrics
    }

    pub fn endpoint(name: &str) -> EndpointLabel {
        EndpointLabel {
            endpoint: name.to_owned(),
        }
    }

    /// One endpoint's metrics, looked up once: a lane updates them on every attempt, and a
    /// lookup by label costs an allocation and a lock each time.
    pub(crate) fn for_endpoint(&self, endpoint: &str) -> EndpointMetrics {
        let label = Self::endpoint(endpoint);
        let attempts = |outcome| {
            self.attempts.get_or_create_owned(&AttemptLabels {
                endpoint: endpoint.to_owned(),
                outcome,
            })
        };
        EndpointMetrics {
            delivered: attempts(AttemptKind::Delivered),
            http_error: attempts(AttemptKind::HttpError),
            transport_error: attempts(AttemptKind::TransportError),
            attempt_duration: self.attempt_duration.get_or_create_owned(&label),
            delivery_latency: self.delivery_latency.get_or_create_owned(&label),
            pending: self.pending.get_or_create_owned(&label),
        }
    }
}

/// The metrics of one endpoint, shared with the registry.
pub(crate) struct EndpointMetrics {
    delivered: Counter,
    http_error: Counter,
    transport_error: Counter,
    attempt_duration: Histogram,
    pub delivery_latency: Histogram,
    pub pending: Gauge,
}

impl EndpointMetrics {
    pub fn observe_attempt(&self, outcome: &AttemptOutcome) {
        let counter = if outcome.delivered() {
            &self.delivered
        } else if outcome.status.is_some() && outcome.error.is_none() {
            &self.http_error
        } else {
            &self.transport_error
        };
        counter.inc();
        self.attempt_duration.observe(outcome.latency.as_secs_f64());
    }
}

//! Delivery: taking each outbox row to its endpoint, signed, retried until the endpoint took it
//! or it is dead-lettered.
//!
//! - [`retry`]: when a failed delivery is tried again, and when it is given up (pure).
//! - [`endpoint_health`]: when a failing endpoint's whole lane pauses and probes (pure).
//! - [`client`]: one signed HTTP attempt over pooled connections.
//! - [`config`]: the `[delivery]` section.
//! - [`lane`]: one endpoint's deliveries, streamed from the outbox, bounded in flight.
//! - [`dispatcher`]: one lane per configured endpoint, following configuration reloads.
//! - [`recorder`]: outcomes written in batches, not one commit per delivery.
//! - [`metrics`]: Prometheus metrics.
//!
//! The HTTP routes that list and replay are in [`crate::api::admin`]; `flagpost deliveries`, in
//! [`crate::cli`], asks them from the command line.

pub mod client;
pub mod config;
pub mod dispatcher;
pub mod endpoint_health;
mod lane;
pub mod metrics;
mod recorder;
pub mod retry;

pub use client::{AttemptOutcome, DeliveryClient, SignedDelivery};
pub use config::DeliveryConfig;
pub use dispatcher::{DeliveryError, Dispatcher};
pub use endpoint_health::{EndpointHealth, HealthPolicy};
pub use metrics::DeliveryMetrics;
pub use retry::{DeadLetterReason, Jitter, RetryDecision, RetrySchedule};

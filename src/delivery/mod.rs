//! Delivery: taking each outbox row to its endpoint, signed, retried until the endpoint took it
//! or it is dead-lettered.
//!
//! - [`retry`]: when a failed delivery is tried again, and when it is given up (pure).
//! - [`endpoint_health`]: when a failing endpoint's whole lane pauses and probes (pure).
//! - [`client`]: one signed HTTP attempt over pooled connections.
//! - [`config`]: the `[delivery]` section.

pub mod client;
pub mod config;
pub mod endpoint_health;
pub mod retry;

pub use client::{AttemptOutcome, DeliveryClient, SignedDelivery};
pub use config::DeliveryConfig;
pub use endpoint_health::{EndpointHealth, HealthPolicy};
pub use retry::{DeadLetterReason, Jitter, RetryDecision, RetrySchedule};

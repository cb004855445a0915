//! Delivery: taking each outbox row to its endpoint, signed, retried until the endpoint took it
//! or it is dead-lettered.
//!
//! - [`retry`]: when a failed delivery is tried again, and when it is given up (pure).
//! - [`endpoint_health`]: when a failing endpoint's whole lane pauses and probes (pure).
//! - [`client`]: one signed HTTP attempt; `http_target`: an endpoint's own connections.
//! - `transport`: what a lane attempts through: HTTP, or `jetstream` (a publish acknowledged
//!   by the stream).
//! - `[delivery]` settings live with the rest of the configuration, in `crate::config`.
//! - [`lane`]: one endpoint's deliveries, streamed from the outbox, bounded in flight.
//! - [`dispatcher`]: one lane per configured endpoint, following configuration reloads.
//! - [`recorder`]: outcomes written in batches, not one commit per delivery.
//! - [`removed`]: endpoints removed from the configuration, whose deliveries wait for a grace.
//! - [`settle`]: how the recorder answers a lane once its outcomes are written.
//! - [`metrics`]: Prometheus metrics; [`status`]: what each lane is doing, for operators.
//!
//! The HTTP routes that list and replay are in [`crate::api::admin`]; `flagpost deliveries`, in
//! [`crate::cli`], asks them from the command line.

pub mod client;
pub mod dispatcher;
pub mod endpoint_health;
mod http_target;
mod jetstream;
mod lane;
pub mod metrics;
mod recorder;
mod removed;
pub mod retry;
mod settle;
pub mod status;
mod transport;

pub use crate::config::{DeliveryConfig, Jitter};
pub use client::{AttemptOutcome, DeliveryClient, SignedDelivery};
pub use dispatcher::{DeliveryError, Dispatcher};
pub use endpoint_health::{EndpointHealth, HealthPolicy};
pub use metrics::DeliveryMetrics;
pub use removed::DropError;
pub use retry::{DeadLetterReason, RetryDecision, RetrySchedule};
pub use status::{ActivityBoard, LaneActivity};

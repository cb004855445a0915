//! flagpost: keeps flag state and an outbox of flag events in one redb file, and posts signed
//! Flagsmith-format web hooks to every subscribed endpoint until each has taken each event.
//!
//! The wire format ([`wire`]), signing ([`signing`]), directory watching ([`watch`]), configuration
//! reload ([`reload`]), metrics set-up ([`metrics`]), process set-up ([`process`]) and HTTP serving
//! with its connection limits and timeouts ([`serve`]) are shared with `flagpost-receiver`.

pub mod api;
pub mod changes;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod document;
pub mod envdoc;
pub mod error;
pub mod flagfiles;
pub mod http_error;
pub mod jetstream;
pub mod metrics;
pub mod process;
pub mod reload;
pub mod serve;
pub mod server;
pub mod signing;
pub mod store;
pub mod watch;
pub mod wire;

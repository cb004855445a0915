//! NATS JetStream end to end: real `nats-server` processes (one, or a cluster of three), the real
//! `flagpost` binary publishing to a stream, and real `flagpost-receiver` binaries consuming it
//! durably. One module per situation; [`fleet`] starts and watches the processes.

#[path = "../sidecar/common.rs"]
#[allow(dead_code)]
mod common;
mod fleet;
#[path = "../support/mod.rs"]
mod support;

mod cluster;
mod one_server;
mod outage;

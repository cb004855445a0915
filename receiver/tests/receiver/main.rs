//! Integration tests of flagpost-receiver: the real `run` function or the real binary, on real
//! sockets on 127.0.0.1, with real redb files in temporary directories. One test binary, a module
//! per area.

mod common;

mod bad_input;
mod bootstrap;
mod config;
mod config_secrets;
mod conformance;
mod connections;
mod cors;
mod crash;
mod dedupe;
mod engine_suite;
mod evaluation_differential;
mod hardening;
mod large_documents;
mod live_replay;
mod local_evaluation;
mod ofrep;
mod ordering;
mod sdk;
mod senders;
mod stand_in;
mod status_page;
mod storage;
mod streams;
mod streams_sdk;
#[path = "../../../tests/support/test_deps.rs"]
#[allow(dead_code)]
mod test_deps;
mod transient;
mod upstream;
mod upstream_kept;
mod upstream_triggers;
mod webhooks_window;

//! Integration tests of the sidecar: the real server on 127.0.0.1 with a real redb file, one
//! module per area.

mod api;
mod check;
mod common;
mod config_secrets;
mod connections;
mod crash;
mod engine_cases;
mod envdoc;
mod event_format;
mod flag_files;
mod input_rules;
mod multivariate;
mod relay;
mod reload;
mod removed_endpoints;
mod sdk_operators;
mod segment_crash;
mod segment_files;
mod segment_receiver;
mod segments;
mod status_page;
mod storage;
#[path = "../support/mod.rs"]
mod support;
mod upstream_document;

//! Helpers shared by the integration tests. Each test binary uses only some of them. `config` and
//! `process` need nothing from this crate, so the benches and the receiver's tests and bench
//! include them by path too.
#![allow(dead_code)]

pub mod config;
pub mod connections;
pub mod nats;
pub mod process;
pub mod sink;
pub mod test_deps;
pub mod webdriver;

//! For the people who run it (issue 12): both real binaries as an operator meets them. Their
//! metrics pages by Prometheus' conventions and as the README documents them, JSON logs, the
//! shipped example configurations, `--version`, the packaging files, and the README's quick start.

mod common;
mod logs;
mod metrics;
mod packaging;
mod quick_start;
#[path = "../support/mod.rs"]
mod support;

//! `[log]`: how each program writes its log lines to stderr. Both programs read the same section
//! (the receiver takes this type from here), and [`crate::process::init_logging`] applies it.
//! It applies at start only: the subscriber is installed once, before anything is logged, and a
//! reload that changes the section is reported as needing a restart.

use serde::Deserialize;

/// The format of every log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event; coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, the span context),
    /// for a log pipeline; never coloured.
    Json,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `"text"` (the default) or `"json"`.
    pub format: LogFormat,
}

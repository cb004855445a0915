//! `[streams]`: the change streams' limits, as written and as validated.

use std::time::Duration;

use serde::Deserialize;

/// `[streams]`: the change streams (`/sse/environments/{key}/stream`, `/v1/environments/{env}/stream`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamsFile {
    /// The most streams open at once; one more is answered 503.
    pub max_streams: usize,
    /// Notices (changes, heartbeats) a stream may be behind its environment, beyond what its
    /// socket holds, before it is dropped.
    pub buffer_events: usize,
    /// Seconds between heartbeats (SSE comment lines) on every stream.
    pub heartbeat_secs: u64,
}

impl Default for StreamsFile {
    fn default() -> Self {
        StreamsFile {
            max_streams: 1000,
            buffer_events: 64,
            heartbeat_secs: 15,
        }
    }
}

/// Validated `[streams]` limits.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamLimits {
    pub max_streams: usize,
    pub buffer_events: usize,
    pub heartbeat: Duration,
}

pub(super) fn check_streams(streams: &StreamsFile, errors: &mut Vec<String>) -> StreamLimits {
    if streams.buffer_events == 0 {
        errors.push("streams.buffer_events: must be at least 1".into());
    }
    if streams.heartbeat_secs == 0 {
        errors.push("streams.heartbeat_secs: must be at least 1".into());
    }
    StreamLimits {
        max_streams: streams.max_streams,
        buffer_events: streams.buffer_events,
        heartbeat: Duration::from_secs(streams.heartbeat_secs),
    }
}

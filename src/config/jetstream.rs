//! A JetStream endpoint's settings: the subject it publishes on, the connection and the stream.

use super::file::RawJetStreamEndpoint;
use crate::jetstream::{NatsConnection, StreamSettings};

/// Where a JetStream endpoint publishes: one subject (per environment: each environment's
/// endpoint names its own), over one connection, into one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct JetStreamTarget {
    pub subject: String,
    pub connection: NatsConnection,
    pub stream: StreamSettings,
}

impl JetStreamTarget {
    /// The first server, shown where an HTTP endpoint shows its URL (admin API, status page).
    pub fn display_url(&self) -> http::Uri {
        self.connection
            .server_names
            .first()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| http::Uri::from_static("nats://unknown"))
    }
}

/// Validates a JetStream endpoint; `None` (with the problems added) when anything is wrong.
pub(super) fn target(
    raw: &RawJetStreamEndpoint,
    at: &str,
    problems: &mut Vec<String>,
) -> Option<JetStreamTarget> {
    let before = problems.len();
    let subject_ok = !raw.subject.is_empty()
        && raw.subject.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && !token.contains(|c: char| c.is_whitespace())
        });
    if !subject_ok {
        problems.push(format!(
            "{at}.subject: {:?} is not a literal NATS subject (dot-separated tokens, no wildcards)",
            raw.subject
        ));
    }
    let connection = raw
        .connection
        .validate(&format!("{at}.connection"), problems);
    let stream = raw
        .stream
        .validate(&raw.subject, &format!("{at}.stream"), problems);
    if problems.len() > before {
        return None;
    }
    Some(JetStreamTarget {
        subject: raw.subject.clone(),
        connection: connection?,
        stream: stream?,
    })
}

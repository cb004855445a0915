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

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const ENVIRONMENT: &str =
        "[[environments]]\nid = 1\nname = \"Development\"\napi_key = \"k\"\nproject = 1\n";

    fn endpoint(lines: &str) -> String {
        format!("{ENVIRONMENT}[[environments.webhooks]]\nname = \"fleet\"\n{lines}")
    }

    #[test]
    fn a_jetstream_endpoint_is_read_with_its_defaults() {
        let text = endpoint(
            "[environments.webhooks.jetstream]\nsubject = \"flagpost.Development\"\n\
             connection = { servers = [\"nats://127.0.0.1:4222\", \"tls://n2:4222\"] }\n",
        );
        let config = Config::parse(&text).unwrap();
        let webhook = config.webhooks().next().unwrap();
        let target = webhook.jetstream.as_ref().unwrap();
        assert_eq!(target.subject, "flagpost.Development");
        assert_eq!(target.stream.name, "FLAGPOST");
        assert_eq!(webhook.url.to_string(), "nats://127.0.0.1:4222/");
    }

    #[test]
    fn bad_jetstream_endpoints_are_refused_with_every_problem() {
        let both = endpoint(
            "url = \"http://127.0.0.1:1/h\"\n[environments.webhooks.jetstream]\nsubject = \"a\"\n\
             connection = { servers = [\"nats://127.0.0.1:4222\"] }\n",
        );
        let problems = Config::parse(&both).unwrap_err().problems;
        assert!(
            problems.iter().any(|p| p.contains("not both")),
            "{problems:?}"
        );

        let bad = endpoint(
            "[environments.webhooks.jetstream]\nsubject = \"flags.>\"\n\
             connection = { servers = [] }\nstream = { replicas = 0 }\n",
        );
        let problems = Config::parse(&bad).unwrap_err().problems;
        for expected in ["jetstream.subject", "connection.servers", "stream.replicas"] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:?}"
            );
        }
    }
}

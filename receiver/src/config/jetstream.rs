//! `[jetstream]`: the receiver's intake from a NATS JetStream stream, beside `POST /webhook`.

use std::time::Duration;

use flagpost::jetstream::{NatsConnection, RawNatsConnection};
use serde::Deserialize;

/// `[jetstream]` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JetStreamFile {
    pub connection: RawNatsConnection,
    /// The stream flagpost publishes to.
    pub stream: String,
    /// This receiver's durable consumer: its position in the stream, kept by the server. One
    /// name per receiver; two receivers sharing one would split the messages between them.
    pub durable: String,
    /// The subject taken, wildcards allowed (default: every subject of the stream). One only:
    /// NATS 2.9 consumers filter on one subject.
    pub subject: String,
    /// How long the server waits for an acknowledgement before delivering a message again.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// The most messages asked for at once (and unacknowledged at once).
    pub batch: usize,
}

impl Default for JetStreamFile {
    fn default() -> Self {
        JetStreamFile {
            connection: RawNatsConnection::default(),
            stream: "FLAGPOST".into(),
            durable: String::new(),
            subject: String::new(),
            ack_wait: Duration::from_secs(30),
            batch: 256,
        }
    }
}

/// A validated `[jetstream]`.
#[derive(Debug, Clone, PartialEq)]
pub struct JetStreamIntake {
    pub connection: NatsConnection,
    pub stream: String,
    pub durable: String,
    /// Empty: every subject of the stream.
    pub subject: String,
    pub ack_wait: Duration,
    pub batch: usize,
}

fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Checks `[jetstream]`, adding every problem to `errors`.
pub(super) fn check(file: &JetStreamFile, errors: &mut Vec<String>) -> Option<JetStreamIntake> {
    let before = errors.len();
    let connection = file.connection.validate("jetstream.connection", errors);
    if !is_name(&file.stream) {
        errors.push("jetstream.stream: a stream name is letters, digits, '-' or '_'".into());
    }
    if !is_name(&file.durable) {
        errors.push(
            "jetstream.durable: name this receiver's consumer (letters, digits, '-' or '_'), \
             one name per receiver"
                .into(),
        );
    }
    if file.subject.contains(char::is_whitespace)
        || file.subject.split('.').any(str::is_empty) && !file.subject.is_empty()
    {
        errors.push("jetstream.subject: dot-separated tokens, without spaces".into());
    }
    if file.ack_wait < Duration::from_secs(1) {
        errors.push("jetstream.ack_wait: must be at least 1s".into());
    }
    if !(1..=10_000).contains(&file.batch) {
        errors.push("jetstream.batch: must be 1 to 10000".into());
    }
    if errors.len() > before {
        return None;
    }
    Some(JetStreamIntake {
        connection: connection?,
        stream: file.stream.clone(),
        durable: file.durable.clone(),
        subject: file.subject.clone(),
        ack_wait: file.ack_wait,
        batch: file.batch,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text, "test") {
            Err(ConfigError::Invalid { errors, .. }) => errors,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_jetstream_intake_needs_servers_and_a_durable_name() {
        let text = "[jetstream]\ndurable = \"app-1\"\n\
                    connection = { servers = [\"nats://127.0.0.1:4222\"], token = { value = \"t0ken\" } }\n";
        let config = Config::parse(text, "test").unwrap();
        let intake = config.fixed.jetstream.unwrap();
        assert_eq!((intake.stream.as_str(), intake.batch), ("FLAGPOST", 256));
        assert!(!format!("{intake:?}").contains("t0ken"));

        let all = errors("[jetstream]\nbatch = 0\nsubject = \"a..b\"\n");
        for expected in [
            "jetstream.connection.servers",
            "jetstream.durable",
            "jetstream.batch",
            "jetstream.subject",
        ] {
            assert!(
                all.iter().any(|e| e.starts_with(expected)),
                "{expected}: {all:?}"
            );
        }
    }
}

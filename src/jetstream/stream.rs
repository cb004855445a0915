//! The JetStream stream that flagpost publishes to: created by flagpost when configured to
//! (subjects, replicas, retention, age, duplicate window), or an existing one that must already
//! take the endpoint's subject. Either way it is checked before the first publish, and what is
//! wrong is said in words an operator can act on.

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::stream::{Config, RetentionPolicy, StorageType};
use serde::Deserialize;

/// A stream as written in a configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawStream {
    pub name: String,
    /// Create the stream when it does not exist; otherwise it must exist already.
    pub create: bool,
    /// The subjects a created stream takes (default: the endpoint's subject).
    pub subjects: Vec<String>,
    /// Copies kept in a cluster (1 to 5).
    pub replicas: usize,
    /// "limits" (kept by age), "interest" (kept until every consumer took it) or "workqueue".
    pub retention: String,
    /// How long a created stream keeps messages; a receiver away longer must bootstrap.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// How long JetStream remembers a `Nats-Msg-Id`, dropping a republished event within it.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
}

impl Default for RawStream {
    fn default() -> Self {
        RawStream {
            name: "FLAGPOST".to_owned(),
            create: true,
            subjects: Vec::new(),
            replicas: 1,
            retention: "limits".to_owned(),
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// A validated stream: its name, and what flagpost creates it with when told to.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    pub name: String,
    pub create: bool,
    config: Config,
}

/// Why the stream cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("stream {stream:?} does not exist and create = false: create it, or set create = true")]
    Missing { stream: String },
    #[error("stream {stream:?} does not take subject {subject:?} (it takes {takes:?})")]
    SubjectNotTaken {
        stream: String,
        subject: String,
        takes: Vec<String>,
    },
    #[error("cannot {doing} stream {stream:?}: {reason}")]
    Api {
        doing: &'static str,
        stream: String,
        reason: String,
    },
}

impl RawStream {
    /// Validates the settings for an endpoint publishing on `subject`.
    pub fn validate(
        &self,
        subject: &str,
        at: &str,
        problems: &mut Vec<String>,
    ) -> Option<StreamSettings> {
        let before = problems.len();
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            problems.push(format!(
                "{at}.name: a stream name is letters, digits, '-' or '_'"
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            problems.push(format!("{at}.replicas: must be 1 to 5"));
        }
        let retention = match self.retention.as_str() {
            "limits" => RetentionPolicy::Limits,
            "interest" => RetentionPolicy::Interest,
            "workqueue" => RetentionPolicy::WorkQueue,
            other => {
                problems.push(format!(
                    "{at}.retention: {other:?} is not \"limits\", \"interest\" or \"workqueue\""
                ));
                RetentionPolicy::Limits
            }
        };
        if self.duplicate_window < Duration::from_secs(1) {
            problems.push(format!("{at}.duplicate_window: must be at least 1s"));
        }
        if !self.max_age.is_zero() && self.max_age < self.duplicate_window {
            problems.push(format!(
                "{at}.max_age: must be 0 (no limit) or at least duplicate_window"
            ));
        }
        if problems.len() > before {
            return None;
        }
        let subjects = match self.subjects.is_empty() {
            true => vec![subject.to_owned()],
            false => self.subjects.clone(),
        };
        Some(StreamSettings {
            name: self.name.clone(),
            create: self.create,
            config: Config {
                name: self.name.clone(),
                subjects,
                retention,
                num_replicas: self.replicas,
                max_age: self.max_age,
                duplicate_window: self.duplicate_window,
                storage: StorageType::File,
                ..Default::default()
            },
        })
    }
}

impl StreamSettings {
    /// Makes sure the stream exists (creating it when configured to) and takes `subject`.
    pub async fn ensure(&self, context: &Context, subject: &str) -> Result<(), StreamError> {
        let api = |doing: &'static str| {
            let stream = self.name.clone();
            move |e: &dyn std::fmt::Display| StreamError::Api {
                doing,
                stream,
                reason: e.to_string(),
            }
        };
        let mut stream = if self.create {
            context
                .get_or_create_stream(self.config.clone())
                .await
                .map_err(|e| api("create")(&e))?
        } else {
            use async_nats::jetstream::ErrorCode;
            use async_nats::jetstream::context::GetStreamErrorKind;
            match context.get_stream(&self.name).await {
                Ok(stream) => stream,
                Err(e)
                    if matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                        if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
                {
                    return Err(StreamError::Missing {
                        stream: self.name.clone(),
                    });
                }
                Err(e) => return Err(api("look up")(&e)),
            }
        };
        let info = stream.info().await.map_err(|e| api("read")(&e))?;
        let takes = info.config.subjects.clone();
        if !takes
            .iter()
            .any(|pattern| subject_matches(pattern, subject))
        {
            return Err(StreamError::SubjectNotTaken {
                stream: self.name.clone(),
                subject: subject.to_owned(),
                takes,
            });
        }
        Ok(())
    }
}

/// Whether NATS subject `pattern` (with `*` and `>` wildcards) matches the literal `subject`.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for part in pattern.split('.') {
        match (part, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (part, Some(token)) if part == token => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_nats_matches_them() {
        assert!(subject_matches("flags.>", "flags.Development"));
        assert!(subject_matches("flags.>", "flags.a.b"));
        assert!(!subject_matches("flags.>", "flags"));
        assert!(subject_matches("flags.*", "flags.Development"));
        assert!(!subject_matches("flags.*", "flags.a.b"));
        assert!(subject_matches("flags.Development", "flags.Development"));
        assert!(!subject_matches("flags.Development", "flags.Production"));
    }

    #[test]
    fn settings_are_checked_together() {
        let mut problems = Vec::new();
        let raw = RawStream {
            name: "bad.name".into(),
            replicas: 7,
            retention: "forever".into(),
            ..Default::default()
        };
        assert!(raw.validate("flags.x", "s", &mut problems).is_none());
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}

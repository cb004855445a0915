//! The latest web hooks taken and refused, for the status page: an operator sees at a glance
//! whether a sender's hooks arrive and why any are refused (a wrong secret, a stale timestamp).
//!
//! In memory only, since the process started: the metrics (`webhooks_accepted_total`,
//! `webhooks_refused_total`) are what to alert on; this is what to look at.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

/// How many of the latest web hooks are kept.
pub const KEPT: usize = 50;

/// One web hook as the receiver answered it. Nothing of a refused request's content is kept:
/// it was not verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookRecord {
    /// When it was answered, unix milliseconds.
    pub at_ms: i64,
    pub accepted: bool,
    /// `applied`, `superseded`, `duplicate`, `not_applied`; or the refusal's reason
    /// (`bad_signature`, `stale_timestamp`, ...), as the metrics name them.
    pub outcome: &'static str,
    /// What a verified hook was about: its environment and feature.
    pub environment: Option<u64>,
    pub feature: Option<String>,
}

#[derive(Debug, Default, Serialize, Clone, PartialEq, Eq)]
pub struct RecentWebhooksView {
    /// Newest first.
    pub latest: Vec<WebhookRecord>,
    /// Since the process started, by outcome.
    pub accepted: BTreeMap<&'static str, u64>,
    /// Since the process started, by reason.
    pub refused: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Default)]
struct Kept {
    latest: VecDeque<WebhookRecord>,
    accepted: BTreeMap<&'static str, u64>,
    refused: BTreeMap<&'static str, u64>,
}

/// The latest web hooks and the counts of every outcome.
#[derive(Debug, Default)]
pub struct RecentWebhooks(Mutex<Kept>);

impl RecentWebhooks {
    pub fn record(&self, record: WebhookRecord) {
        let mut kept = self.lock();
        let counts = if record.accepted {
            &mut kept.accepted
        } else {
            &mut kept.refused
        };
        *counts.entry(record.outcome).or_default() += 1;
        if kept.latest.len() == KEPT {
            kept.latest.pop_back();
        }
        kept.latest.push_front(record);
    }

    pub fn view(&self) -> RecentWebhooksView {
        let kept = self.lock();
        RecentWebhooksView {
            latest: kept.latest.iter().cloned().collect(),
            accepted: kept.accepted.clone(),
            refused: kept.refused.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        // Plain records: what a panicking holder left is still worth showing.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(at_ms: i64, accepted: bool, outcome: &'static str) -> WebhookRecord {
        WebhookRecord {
            at_ms,
            accepted,
            outcome,
            environment: None,
            feature: None,
        }
    }

    #[test]
    fn the_latest_are_kept_newest_first_and_every_one_is_counted() {
        let recent = RecentWebhooks::default();
        for at in 0..(KEPT as i64 + 10) {
            recent.record(hook(at, true, "applied"));
        }
        recent.record(hook(1_000, false, "bad_signature"));
        let view = recent.view();
        assert_eq!(view.latest.len(), KEPT);
        assert_eq!(view.latest[0], hook(1_000, false, "bad_signature"));
        assert_eq!(view.latest[1].at_ms, KEPT as i64 + 9);
        assert_eq!(view.accepted["applied"], KEPT as u64 + 10);
        assert_eq!(view.refused["bad_signature"], 1);
    }
}

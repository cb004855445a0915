//! What each lane is doing now, for operators (the admin API's endpoint summary and the status
//! page): its health, requests in flight, its last success, failure and latency, and its latest
//! attempts. Those are kept here, in time order and with replays among them, because the stored
//! attempts are keyed by event: finding an endpoint's latest there walks the table backwards,
//! past every other endpoint's, which a page polling every second must not do.
//!
//! Kept in memory, written by the lanes and read by the admin API. Each lane writes only its own
//! endpoint's record, so the lock a lane takes on every attempt is never contended by another
//! lane; the board's map is locked only when a lane starts and when the summary is read. A record
//! outlives its lane, so an endpoint removed and brought back keeps its history. Since the
//! process started only: the stored attempts (`GET /attempts`) are the durable history.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::client::AttemptOutcome;
use super::endpoint_health::LaneState;
use crate::store::deliveries::AttemptRecord;

/// How many of an endpoint's latest attempts are kept.
pub const ATTEMPTS_KEPT: usize = 10;

/// How much of each new latency goes into the running average: about the last ten attempts.
const LATENCY_WEIGHT: f64 = 0.1;

/// One endpoint's lane as it was last seen. Never a URL or a secret.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LaneActivity {
    /// Requests in flight now.
    pub in_flight: usize,
    /// Paused after failures (or a `Retry-After`) until this time, unix milliseconds; probing
    /// with a single request once it has passed.
    pub backing_off_until_ms: Option<u64>,
    /// Sending one probe at a time, after a pause, until one succeeds.
    pub probing: bool,
    /// Failed attempts since the last success.
    pub failures_in_a_row: u32,
    pub last_success_at_ms: Option<u64>,
    pub last_failure_at_ms: Option<u64>,
    /// The last failure: `HTTP 500`, or the connection error.
    pub last_failure: Option<String>,
    /// The last attempt's latency, connect to the last byte of the answer.
    pub last_latency_ms: Option<f64>,
    /// A running average of attempt latency, weighted to about the last ten attempts.
    pub average_latency_ms: Option<f64>,
    /// The latest attempts, newest first.
    #[serde(skip)]
    pub latest_attempts: VecDeque<AttemptRecord>,
}

impl LaneActivity {
    /// Whether the lane is paused or probing: fewer requests than configured may start.
    pub fn backing_off(&self) -> bool {
        self.backing_off_until_ms.is_some() || self.probing
    }

    fn attempted(&mut self, outcome: &AttemptOutcome, record: &AttemptRecord, finished_at_ms: u64) {
        if self.latest_attempts.len() == ATTEMPTS_KEPT {
            self.latest_attempts.pop_back();
        }
        self.latest_attempts.push_front(record.clone());
        let latency = outcome.latency.as_secs_f64() * 1000.0;
        self.last_latency_ms = Some(latency);
        self.average_latency_ms = Some(match self.average_latency_ms {
            None => latency,
            Some(average) => average + LATENCY_WEIGHT * (latency - average),
        });
        if outcome.delivered() {
            self.last_success_at_ms = Some(finished_at_ms);
            self.failures_in_a_row = 0;
        } else {
            self.last_failure_at_ms = Some(finished_at_ms);
            self.last_failure = Some(outcome.describe());
            self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        }
    }

    fn set_health(&mut self, state: LaneState) {
        (self.backing_off_until_ms, self.probing) = match state {
            LaneState::Healthy { .. } => (None, false),
            LaneState::Paused { until_ms, .. } => (Some(until_ms), false),
            LaneState::Probing { .. } => (None, true),
        };
    }
}

/// One lane's handle on its record.
#[derive(Debug, Clone, Default)]
pub(crate) struct ActivityCell(Arc<Mutex<LaneActivity>>);

impl ActivityCell {
    /// After the lane started what it had room for.
    pub fn dispatched(&self, in_flight: usize, health: LaneState) {
        let mut activity = self.lock();
        activity.in_flight = in_flight;
        activity.set_health(health);
    }

    /// After an attempt finished (`record`, as stored), with the health it left the lane in.
    pub fn attempted(
        &self,
        outcome: &AttemptOutcome,
        record: &AttemptRecord,
        finished_at_ms: u64,
        health: LaneState,
    ) {
        let mut activity = self.lock();
        activity.attempted(outcome, record, finished_at_ms);
        activity.set_health(health);
    }

    /// The lane stopped: nothing is in flight any more, and it no longer backs off.
    pub fn stopped(&self) {
        let mut activity = self.lock();
        activity.in_flight = 0;
        activity.set_health(LaneState::Healthy {
            consecutive_failures: 0,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LaneActivity> {
        // A panic while holding it leaves plain numbers behind: still worth showing.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Every endpoint's record, by name.
#[derive(Debug, Clone, Default)]
pub struct ActivityBoard(Arc<Mutex<BTreeMap<String, ActivityCell>>>);

impl ActivityBoard {
    /// The record of `endpoint`, made on first use and kept for the life of the process.
    pub(crate) fn cell(&self, endpoint: &str) -> ActivityCell {
        self.lock().entry(endpoint.to_owned()).or_default().clone()
    }

    /// A copy of every record.
    pub fn snapshot(&self) -> BTreeMap<String, LaneActivity> {
        self.lock()
            .iter()
            .map(|(name, cell)| (name.clone(), cell.lock().clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ActivityCell>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::deliveries::AttemptResult;

    fn record(sequence: u64) -> AttemptRecord {
        AttemptRecord {
            endpoint: "app".into(),
            sequence,
            attempt: 1,
            at_ms: 0,
            latency_ms: 1.0,
            status: Some(500),
            error: None,
            result: AttemptResult::WillRetry,
            next_attempt_at_ms: None,
        }
    }

    fn outcome(status: Option<u16>, error: Option<&str>, latency_ms: u64) -> AttemptOutcome {
        AttemptOutcome {
            started_at_ms: 0,
            latency: Duration::from_millis(latency_ms),
            status,
            error: error.map(str::to_owned),
            retry_after: None,
        }
    }

    #[test]
    fn a_lane_record_follows_failures_backoff_and_recovery() {
        let board = ActivityBoard::default();
        let cell = board.cell("app");
        let paused = LaneState::Paused {
            until_ms: 5_000,
            level: 0,
        };
        cell.attempted(&outcome(Some(500), None, 10), &record(1), 1_000, paused);
        let refused = outcome(None, Some("connection refused"), 30);
        cell.attempted(&refused, &record(2), 2_000, paused);
        let seen = &board.snapshot()["app"];
        assert_eq!(seen.failures_in_a_row, 2);
        assert_eq!(seen.last_failure.as_deref(), Some("connection refused"));
        assert_eq!(seen.last_failure_at_ms, Some(2_000));
        assert_eq!(seen.backing_off_until_ms, Some(5_000));
        assert!(seen.backing_off());
        assert_eq!(seen.average_latency_ms, Some(12.0));

        let healthy = LaneState::Healthy {
            consecutive_failures: 0,
        };
        cell.attempted(&outcome(Some(204), None, 20), &record(1), 6_000, healthy);
        cell.dispatched(3, healthy);
        let seen = &board.snapshot()["app"];
        assert_eq!(seen.failures_in_a_row, 0);
        assert_eq!(seen.last_success_at_ms, Some(6_000));
        assert_eq!(seen.last_latency_ms, Some(20.0));
        assert_eq!(seen.in_flight, 3);
        assert!(!seen.backing_off());
        assert_eq!(
            seen.last_failure_at_ms,
            Some(2_000),
            "the last failure stays"
        );
        let latest: Vec<u64> = seen.latest_attempts.iter().map(|a| a.sequence).collect();
        assert_eq!(latest, [1, 2, 1], "newest first, a replay among them");
    }

    #[test]
    fn only_the_latest_attempts_are_kept() {
        let cell = ActivityCell::default();
        let healthy = LaneState::Healthy {
            consecutive_failures: 0,
        };
        for sequence in 0..25 {
            cell.attempted(&outcome(Some(200), None, 1), &record(sequence), 0, healthy);
        }
        let latest = &cell.lock().latest_attempts;
        assert_eq!(latest.len(), ATTEMPTS_KEPT);
        assert_eq!(latest.front().map(|a| a.sequence), Some(24));
    }

    #[test]
    fn a_record_outlives_its_lane() {
        let board = ActivityBoard::default();
        board
            .cell("app")
            .dispatched(2, LaneState::Probing { level: 1 });
        board.cell("app").stopped();
        let seen = &board.snapshot()["app"];
        assert_eq!(seen.in_flight, 0);
        assert!(!seen.backing_off());
    }
}

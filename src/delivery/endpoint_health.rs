//! The health of one endpoint as its lane sees it, deciding how many requests the lane may have in
//! flight. A failing endpoint is not sent its whole backlog at full concurrency (which would spend
//! every delivery's retries at once and hammer a server that is trying to come back): after a few
//! consecutive failures the lane pauses as a whole, then sends a single probe, and only a success
//! restores full concurrency. Each failed probe doubles the pause, up to a cap.
//!
//! A pure state machine over unix milliseconds: the lane feeds it outcomes and the clock.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive failures that pause the lane.
    pub failures_before_backoff: u32,
    pub initial_pause: Duration,
    pub max_pause: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneState {
    /// Full concurrency; counts failures in a row.
    Healthy { consecutive_failures: u32 },
    /// Nothing new starts before `until_ms`; `level` counts failed probes.
    Paused { until_ms: u64, level: u32 },
    /// One request at a time until one succeeds.
    Probing { level: u32 },
}

#[derive(Debug, Clone)]
pub struct EndpointHealth {
    policy: HealthPolicy,
    state: LaneState,
}

impl EndpointHealth {
    pub fn new(policy: HealthPolicy) -> EndpointHealth {
        EndpointHealth {
            policy,
            state: LaneState::Healthy {
                consecutive_failures: 0,
            },
        }
    }

    pub fn state(&self) -> LaneState {
        self.state
    }

    /// How many requests may be in flight now, given the endpoint's configured maximum.
    pub fn capacity(&mut self, now_ms: u64, max_in_flight: usize) -> usize {
        if let LaneState::Paused { until_ms, level } = self.state
            && now_ms >= until_ms
        {
            self.state = LaneState::Probing { level };
        }
        match self.state {
            LaneState::Healthy { .. } => max_in_flight,
            LaneState::Paused { .. } => 0,
            LaneState::Probing { .. } => 1.min(max_in_flight),
        }
    }

    /// When a paused lane may probe; `None` when it is not paused.
    pub fn paused_until(&self) -> Option<u64> {
        match self.state {
            LaneState::Paused { until_ms, .. } => Some(until_ms),
            _ => None,
        }
    }

    /// Any success shows the endpoint is up again, even one that was sent before a pause.
    pub fn on_success(&mut self) {
        self.state = LaneState::Healthy {
            consecutive_failures: 0,
        };
    }

    /// `retry_after`: what the endpoint asked for (429/503), already capped by the caller; it
    /// pauses the lane at once, since the endpoint said outright that it wants fewer requests.
    /// `unit` is a random number in `[0, 1)` that spreads the pause.
    pub fn on_failure(&mut self, now_ms: u64, retry_after: Option<Duration>, unit: f64) {
        let asked_until = retry_after.map(|d| now_ms.saturating_add(millis(d)));
        self.state = match self.state {
            LaneState::Healthy {
                consecutive_failures,
            } => {
                let failures = consecutive_failures + 1;
                if failures >= self.policy.failures_before_backoff || asked_until.is_some() {
                    self.pause(now_ms, 0, asked_until, unit)
                } else {
                    LaneState::Healthy {
                        consecutive_failures: failures,
                    }
                }
            }
            LaneState::Probing { level } => self.pause(now_ms, level + 1, asked_until, unit),
            // A request sent before the pause failed too: that says nothing new, unless the
            // endpoint asked for a longer wait.
            LaneState::Paused { until_ms, level } => LaneState::Paused {
                until_ms: until_ms.max(asked_until.unwrap_or(0)),
                level,
            },
        };
    }

    fn pause(&self, now_ms: u64, level: u32, asked_until: Option<u64>, unit: f64) -> LaneState {
        let doubled = self
            .policy
            .initial_pause
            .saturating_mul(1u32.checked_shl(level.min(31)).unwrap_or(u32::MAX));
        let pause = doubled
            .min(self.policy.max_pause)
            .mul_f64(0.75 + 0.5 * unit.clamp(0.0, 1.0));
        LaneState::Paused {
            until_ms: (now_ms.saturating_add(millis(pause))).max(asked_until.unwrap_or(0)),
            level,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> EndpointHealth {
        EndpointHealth::new(HealthPolicy {
            failures_before_backoff: 3,
            initial_pause: Duration::from_secs(1),
            max_pause: Duration::from_secs(4),
        })
    }

    #[test]
    fn a_few_failures_are_tolerated_at_full_concurrency() {
        let mut h = health();
        h.on_failure(0, None, 0.5);
        h.on_failure(0, None, 0.5);
        assert_eq!(h.capacity(0, 8), 8);
        h.on_success();
        h.on_failure(0, None, 0.5);
        h.on_failure(0, None, 0.5);
        assert_eq!(h.capacity(0, 8), 8, "a success resets the count");
    }

    #[test]
    fn repeated_failures_pause_then_probe_then_resume() {
        let mut h = health();
        for _ in 0..3 {
            h.on_failure(10_000, None, 0.5);
        }
        assert_eq!(h.paused_until(), Some(11_000));
        assert_eq!(h.capacity(10_999, 8), 0);
        assert_eq!(h.capacity(11_000, 8), 1, "one probe after the pause");
        assert_eq!(h.state(), LaneState::Probing { level: 0 });
        h.on_success();
        assert_eq!(h.capacity(11_001, 8), 8);
    }

    #[test]
    fn each_failed_probe_doubles_the_pause_up_to_the_cap() {
        let mut h = health();
        for _ in 0..3 {
            h.on_failure(0, None, 0.5);
        }
        let mut now = 0;
        let mut pauses = Vec::new();
        for _ in 0..4 {
            let until = h.paused_until().unwrap();
            pauses.push(until - now);
            now = until;
            assert_eq!(h.capacity(now, 8), 1);
            h.on_failure(now, None, 0.5);
        }
        assert_eq!(pauses, [1_000, 2_000, 4_000, 4_000]);
    }

    #[test]
    fn failures_of_requests_sent_before_a_pause_do_not_extend_it() {
        let mut h = health();
        for _ in 0..3 {
            h.on_failure(0, None, 0.5);
        }
        h.on_failure(500, None, 0.5);
        assert_eq!(h.paused_until(), Some(1_000));
    }

    #[test]
    fn retry_after_pauses_at_once_for_as_long_as_asked() {
        let mut h = health();
        h.on_failure(0, Some(Duration::from_secs(30)), 0.5);
        assert_eq!(h.paused_until(), Some(30_000));
        h.on_failure(100, Some(Duration::from_secs(60)), 0.5);
        assert_eq!(h.paused_until(), Some(60_100));
    }
}

//! When a failed delivery is tried again, and when it is given up: a pure function of the attempts
//! made, the failure and the clock, so that every branch is tested without a server or a sleep.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::{DeliveryConfig, Jitter};

impl Jitter {
    /// `unit` is a random number in `[0, 1)`.
    fn apply(self, nominal: Duration, unit: f64) -> Duration {
        let unit = unit.clamp(0.0, 1.0);
        match self {
            Jitter::None => nominal,
            Jitter::Full => nominal.mul_f64(unit),
            Jitter::Spread => nominal.mul_f64(0.75 + 0.5 * unit),
        }
    }
}

/// Why a delivery was given up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// Every retry of the schedule failed.
    ScheduleSpent { attempts: u32 },
    /// The endpoint left the configuration while this delivery was pending.
    EndpointRemoved,
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetterReason::ScheduleSpent { attempts } => {
                write!(f, "retry schedule spent after {attempts} attempts")
            }
            DeadLetterReason::EndpointRemoved => f.write_str("endpoint removed"),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again at this unix time in milliseconds.
    RetryAt {
        at_ms: u64,
        delay: Duration,
    },
    DeadLetter(DeadLetterReason),
}

/// The delays between attempts, their jitter, and how far a `Retry-After` is honoured.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
    jitter: Jitter,
    retry_after_cap: Duration,
}

impl RetrySchedule {
    /// The schedule `[delivery]` configures.
    pub fn from_config(config: &DeliveryConfig) -> RetrySchedule {
        RetrySchedule::new(
            config.retry_schedule.clone(),
            config.jitter,
            config.retry_after_cap,
        )
    }

    pub fn new(delays: Vec<Duration>, jitter: Jitter, retry_after_cap: Duration) -> RetrySchedule {
        RetrySchedule {
            delays,
            jitter,
            retry_after_cap,
        }
    }

    /// Attempts a delivery gets in all: the first and one per delay.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.delays.len()).unwrap_or(u32::MAX - 1) + 1
    }

    /// Decides after a failed attempt. `attempts_made` counts this one; `retry_after` is the
    /// response's `Retry-After` already turned into a delay (see [`parse_retry_after`]), honoured
    /// only for 429 and 503 as HTTP defines it; `unit` is a random number in `[0, 1)`.
    pub fn decide(
        &self,
        attempts_made: u32,
        status: Option<u16>,
        retry_after: Option<Duration>,
        now_ms: u64,
        unit: f64,
    ) -> RetryDecision {
        let index = attempts_made.saturating_sub(1) as usize;
        let Some(nominal) = self.delays.get(index) else {
            return RetryDecision::DeadLetter(DeadLetterReason::ScheduleSpent {
                attempts: attempts_made,
            });
        };
        let mut delay = self.jitter.apply(*nominal, unit);
        if let (Some(429 | 503), Some(asked)) = (status, retry_after) {
            delay = delay.max(asked.min(self.retry_after_cap));
        }
        RetryDecision::RetryAt {
            at_ms: now_ms.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
            delay,
        }
    }
}

/// Reads a `Retry-After` value: delta-seconds or an HTTP-date. A date in the past is no delay;
/// anything unreadable is ignored (the schedule's own delay applies).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(jitter: Jitter) -> RetrySchedule {
        RetrySchedule::new(
            vec![Duration::from_secs(5), Duration::from_secs(30)],
            jitter,
            Duration::from_secs(60),
        )
    }

    #[test]
    fn each_failure_waits_its_step_then_the_schedule_is_spent() {
        let s = schedule(Jitter::None);
        assert_eq!(s.max_attempts(), 3);
        assert_eq!(
            s.decide(1, Some(500), None, 1_000, 0.5),
            RetryDecision::RetryAt {
                at_ms: 6_000,
                delay: Duration::from_secs(5)
            }
        );
        assert_eq!(
            s.decide(2, None, None, 1_000, 0.5),
            RetryDecision::RetryAt {
                at_ms: 31_000,
                delay: Duration::from_secs(30)
            }
        );
        assert_eq!(
            s.decide(3, Some(500), None, 1_000, 0.5),
            RetryDecision::DeadLetter(DeadLetterReason::ScheduleSpent { attempts: 3 })
        );
    }

    #[test]
    fn an_empty_schedule_dead_letters_on_the_first_failure() {
        let s = RetrySchedule::new(Vec::new(), Jitter::None, Duration::ZERO);
        assert_eq!(s.max_attempts(), 1);
        assert!(matches!(
            s.decide(1, Some(500), None, 0, 0.0),
            RetryDecision::DeadLetter(_)
        ));
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let delay = |jitter, unit| match schedule(jitter).decide(1, None, None, 0, unit) {
            RetryDecision::RetryAt { delay, .. } => delay,
            other => panic!("{other:?}"),
        };
        assert_eq!(delay(Jitter::Full, 0.0), Duration::ZERO);
        assert_eq!(delay(Jitter::Full, 0.5), Duration::from_millis(2_500));
        assert_eq!(delay(Jitter::Spread, 0.0), Duration::from_millis(3_750));
        assert_eq!(delay(Jitter::Spread, 0.999_999).as_millis(), 6_249);
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_only_and_capped() {
        let s = schedule(Jitter::None);
        let at = |status, asked| match s.decide(1, Some(status), Some(asked), 0, 0.0) {
            RetryDecision::RetryAt { delay, .. } => delay,
            other => panic!("{other:?}"),
        };
        assert_eq!(at(429, Duration::from_secs(20)), Duration::from_secs(20));
        assert_eq!(at(503, Duration::from_secs(20)), Duration::from_secs(20));
        // Shorter than the schedule's step: the step wins.
        assert_eq!(at(429, Duration::from_secs(1)), Duration::from_secs(5));
        // Longer than the cap: the cap.
        assert_eq!(at(429, Duration::from_secs(3_600)), Duration::from_secs(60));
        // Other statuses do not carry it.
        assert_eq!(at(500, Duration::from_secs(20)), Duration::from_secs(5));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn reasons_read_as_operators_expect() {
        assert_eq!(
            DeadLetterReason::EndpointRemoved.to_string(),
            "endpoint removed"
        );
        assert_eq!(
            DeadLetterReason::ScheduleSpent { attempts: 11 }.to_string(),
            "retry schedule spent after 11 attempts"
        );
    }
}

//! `[delivery]`: how hard and how fast flagpost tries to deliver.
//!
//! Durations are humane strings as elsewhere in the configuration (`"5s"`, `"2m"`, `"1h 30m"`,
//! `"250ms"`), parsed by `humantime`. Every field has a default, so the section may be left out.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Delay before each retry, in order; when every delay is spent the delivery is dead-lettered.
    /// Default: 5s, 30s, 2m, 10m, 30m, 1h, 2h, 4h, 8h, 8h (about 24 hours in all, 11 attempts).
    #[serde(deserialize_with = "durations")]
    pub retry_schedule: Vec<Duration>,
    /// How each delay is spread so that many failed deliveries do not retry in lockstep:
    /// `"spread"` (default: 75% to 125% of the delay), `"full"` (0 to 100%), or `"none"`.
    pub jitter: Jitter,
    /// A `Retry-After` (on 429 or 503) longer than this is shortened to it. Default 1h.
    #[serde(with = "humantime_serde")]
    pub retry_after_cap: Duration,
    /// The whole request, connect to last response byte. Default 10s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests in flight per endpoint unless the endpoint sets `max_in_flight`. Default 8.
    pub max_in_flight: usize,
    /// Consecutive failures of an endpoint after which its whole lane pauses. Default 3.
    pub lane_failures_before_backoff: u32,
    /// The first pause of a failing lane; each failed probe doubles it. Default 1s.
    #[serde(with = "humantime_serde")]
    pub lane_backoff_initial: Duration,
    /// The longest pause of a failing lane. Default 5m.
    #[serde(with = "humantime_serde")]
    pub lane_backoff_max: Duration,
    /// On shutdown, how long requests already in flight may take to finish. Default 10s.
    #[serde(with = "humantime_serde")]
    pub shutdown_deadline: Duration,
    /// How long attempt records are kept. Default 7 days (168h).
    #[serde(with = "humantime_serde")]
    pub attempt_retention: Duration,
    /// How long an event stays stored after every endpoint took it. Default 7 days (168h).
    #[serde(with = "humantime_serde")]
    pub delivered_retention: Duration,
    /// Outbox rows a lane reads per range scan: the most a lane holds in memory. Default 256.
    pub scan_batch: usize,
    /// The most outcomes (delivered, retry, dead letter) recorded in one write. Default 2048.
    pub record_batch: usize,
    /// How long the pending deliveries of an endpoint removed from the configuration wait,
    /// paused, for it to come back under the same name before they are dead-lettered as
    /// "endpoint removed". Default 24h, the span of the default retry schedule; "0s"
    /// dead-letters them at once.
    #[serde(with = "humantime_serde")]
    pub removed_endpoint_grace: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            retry_schedule: default_retry_delays(),
            jitter: Jitter::Spread,
            retry_after_cap: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(10),
            max_in_flight: 8,
            lane_failures_before_backoff: 3,
            lane_backoff_initial: Duration::from_secs(1),
            lane_backoff_max: Duration::from_secs(300),
            shutdown_deadline: Duration::from_secs(10),
            attempt_retention: Duration::from_secs(7 * 24 * 3600),
            delivered_retention: Duration::from_secs(7 * 24 * 3600),
            scan_batch: 256,
            record_batch: 2048,
            removed_endpoint_grace: Duration::from_secs(24 * 3600),
        }
    }
}

impl DeliveryConfig {
    /// Every problem with the section, one line each, for the configuration's own report.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.request_timeout.is_zero() {
            problems.push("delivery.request_timeout must be more than 0".to_owned());
        }
        if self.max_in_flight == 0 {
            problems.push("delivery.max_in_flight must be at least 1".to_owned());
        }
        if self.lane_failures_before_backoff == 0 {
            problems.push("delivery.lane_failures_before_backoff must be at least 1".to_owned());
        }
        if self.lane_backoff_initial > self.lane_backoff_max {
            problems.push(
                "delivery.lane_backoff_initial must not be longer than lane_backoff_max".to_owned(),
            );
        }
        if self.scan_batch == 0 {
            problems.push("delivery.scan_batch must be at least 1".to_owned());
        }
        if self.record_batch == 0 {
            problems.push("delivery.record_batch must be at least 1".to_owned());
        }
        // tokio's timers end about 2^36 s ahead; a year is far past any sensible grace.
        if self.removed_endpoint_grace > Duration::from_secs(366 * 24 * 3600) {
            problems.push("delivery.removed_endpoint_grace must be at most 366 days".to_owned());
        }
        problems
    }
}

/// How a nominal delay is spread, so that deliveries that failed together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// Exactly the nominal delay: for tests and for operators who want predictability.
    None,
    /// Uniform between 0 and the nominal delay ("full jitter"): spreads best, but the mean delay
    /// (and the schedule's whole span) is halved.
    Full,
    /// Uniform between 75% and 125% of the nominal delay: spreads enough to break lockstep while
    /// keeping the schedule's span as configured.
    Spread,
}

/// About a day in all, the first retries within seconds: most outages are a deploy or a
/// restart, so early retries catch them; the long tail covers a night without an operator.
pub fn default_retry_delays() -> Vec<Duration> {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 3600;
    [
        5,
        30,
        2 * MINUTE,
        10 * MINUTE,
        30 * MINUTE,
        HOUR,
        2 * HOUR,
        4 * HOUR,
        8 * HOUR,
        8 * HOUR,
    ]
    .into_iter()
    .map(Duration::from_secs)
    .collect()
}

fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let list: Vec<humantime_serde::Serde<Duration>> = Vec::deserialize(d)?;
    Ok(list.into_iter().map(|d| d.into_inner()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_section_gives_the_defaults_and_they_are_valid() {
        let config: DeliveryConfig = toml::from_str("").unwrap();
        assert_eq!(config, DeliveryConfig::default());
        assert!(config.problems().is_empty());
        let total: Duration = config.retry_schedule.iter().sum();
        assert!(total > Duration::from_secs(20 * 3600) && total < Duration::from_secs(28 * 3600));
        assert!(config.retry_schedule[0] <= Duration::from_secs(10));
    }

    #[test]
    fn durations_are_humane_strings() {
        let config: DeliveryConfig = toml::from_str(
            r#"
            retry_schedule = ["100ms", "2s", "1h 30m"]
            jitter = "full"
            request_timeout = "250ms"
            "#,
        )
        .unwrap();
        assert_eq!(
            config.retry_schedule,
            [
                Duration::from_millis(100),
                Duration::from_secs(2),
                Duration::from_secs(5400)
            ]
        );
        assert_eq!(config.jitter, Jitter::Full);
        assert_eq!(config.request_timeout, Duration::from_millis(250));
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let err = toml::from_str::<DeliveryConfig>("retry_shedule = []")
            .unwrap_err()
            .to_string();
        assert!(err.contains("retry_shedule"), "{err}");
        let err = toml::from_str::<DeliveryConfig>("retry_schedule = [\"soon\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("retry_schedule"), "{err}");
        let config: DeliveryConfig = toml::from_str("max_in_flight = 0").unwrap();
        assert_eq!(
            config.problems(),
            ["delivery.max_in_flight must be at least 1"]
        );
    }
}

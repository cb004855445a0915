//! Attempt records and dead letters: the structs the admin API answers with, and their compact
//! rows in `ATTEMPTS` and `DEAD_LETTERS`. The key holds what identifies a record (endpoint,
//! sequence, attempt number), so the value holds only the rest, fixed-width where it can.

use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// One delivery attempt as kept in `ATTEMPTS` and listed by the admin API. The writer of an
/// outcome numbers its attempt: the lane knows the count from the outbox row it read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub endpoint: String,
    pub sequence: u64,
    /// Counts every attempt of this event to this endpoint, replays included.
    pub attempt: u32,
    pub at_ms: u64,
    pub latency_ms: f64,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub result: AttemptResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptResult {
    Delivered,
    WillRetry,
    DeadLettered,
}

/// A delivery that was given up, as kept in `DEAD_LETTERS`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub endpoint: String,
    pub sequence: u64,
    pub event_id: String,
    pub reason: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub dead_lettered_at_ms: u64,
}

/// An attempt's value in `ATTEMPTS`: (at unix ms, latency ms, status, result, next attempt at
/// unix ms, error).
type AttemptValue<'a> = (u64, f64, Option<u16>, u8, Option<u64>, Option<&'a str>);

/// A dead letter's value in `DEAD_LETTERS`: (event id, reason, attempts, last status, last error,
/// dead-lettered at unix ms).
type DeadLetterValue<'a> = (&'a str, &'a str, u32, Option<u16>, Option<&'a str>, u64);

const DELIVERED: u8 = 0;
const WILL_RETRY: u8 = 1;
const DEAD_LETTERED: u8 = 2;

pub(in crate::store) fn attempt_row(attempt: &AttemptRecord) -> AttemptValue<'_> {
    let result = match attempt.result {
        AttemptResult::Delivered => DELIVERED,
        AttemptResult::WillRetry => WILL_RETRY,
        AttemptResult::DeadLettered => DEAD_LETTERED,
    };
    (
        attempt.at_ms,
        attempt.latency_ms,
        attempt.status,
        result,
        attempt.next_attempt_at_ms,
        attempt.error.as_deref(),
    )
}

pub(super) fn attempt_from_row(
    (sequence, endpoint, attempt): (u64, &str, u32),
    (at_ms, latency_ms, status, result, next_attempt_at_ms, error): AttemptValue<'_>,
) -> Result<AttemptRecord, StoreError> {
    let result = match result {
        DELIVERED => AttemptResult::Delivered,
        WILL_RETRY => AttemptResult::WillRetry,
        DEAD_LETTERED => AttemptResult::DeadLettered,
        other => {
            return Err(StoreError::new(format!(
                "attempt {attempt} of event {sequence} has an unknown result {other}"
            )));
        }
    };
    Ok(AttemptRecord {
        endpoint: endpoint.to_owned(),
        sequence,
        attempt,
        at_ms,
        latency_ms,
        status,
        error: error.map(str::to_owned),
        result,
        next_attempt_at_ms,
    })
}

pub(in crate::store) fn dead_letter_row(letter: &DeadLetter) -> DeadLetterValue<'_> {
    (
        &letter.event_id,
        &letter.reason,
        letter.attempts,
        letter.last_status,
        letter.last_error.as_deref(),
        letter.dead_lettered_at_ms,
    )
}

pub(super) fn dead_letter_from_row(
    (endpoint, sequence): (&str, u64),
    (event_id, reason, attempts, last_status, last_error, dead_lettered_at_ms): DeadLetterValue<'_>,
) -> DeadLetter {
    DeadLetter {
        endpoint: endpoint.to_owned(),
        sequence,
        event_id: event_id.to_owned(),
        reason: reason.to_owned(),
        attempts,
        last_status,
        last_error: last_error.map(str::to_owned),
        dead_lettered_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_come_back_as_they_were_written() {
        for (result, status, error, next) in [
            (AttemptResult::Delivered, Some(204), None, None),
            (
                AttemptResult::WillRetry,
                None,
                Some("timed out after 10000 ms"),
                Some(7_000),
            ),
            (AttemptResult::DeadLettered, Some(500), None, None),
        ] {
            let attempt = AttemptRecord {
                endpoint: "a".into(),
                sequence: 9,
                attempt: 3,
                at_ms: 1_000,
                latency_ms: 0.1 + 0.2,
                status,
                error: error.map(str::to_owned),
                result,
                next_attempt_at_ms: next,
            };
            let decoded = attempt_from_row((9, "a", 3), attempt_row(&attempt)).unwrap();
            assert_eq!(decoded, attempt);
        }
        let delivered = AttemptRecord {
            endpoint: "a".into(),
            sequence: 1,
            attempt: 1,
            at_ms: 0,
            latency_ms: 0.0,
            status: None,
            error: None,
            result: AttemptResult::Delivered,
            next_attempt_at_ms: None,
        };
        let mut row = attempt_row(&delivered);
        row.3 = 7;
        assert!(attempt_from_row((1, "a", 1), row).is_err());
    }

    #[test]
    fn dead_letters_come_back_as_they_were_written() {
        let letter = DeadLetter {
            endpoint: "a".into(),
            sequence: 4,
            event_id: "evt_1".into(),
            reason: "endpoint removed".into(),
            attempts: 2,
            last_status: Some(503),
            last_error: Some("reading the response: reset".into()),
            dead_lettered_at_ms: 5,
        };
        assert_eq!(
            dead_letter_from_row(("a", 4), dead_letter_row(&letter)),
            letter
        );
    }
}

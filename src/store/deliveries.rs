//! The delivery side of the store: reading a lane's next outbox rows, recording outcomes,
//! dead letters and their replay, attempt history, and pruning. Every function here runs inside a
//! transaction the caller got from [`Store::read`] or [`Store::write`], so none touches redb on a
//! tokio worker.
//!
//! Outbox rows, attempts and dead letters are redb tuples (see [`super::tables`]), written and
//! read without a parser; [`rows`] holds the structs the admin API answers with, and turns rows
//! into them and back.

mod rows;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::events::{DeliveryEvent, delivery_event, event_id, instance_id};
use super::rows::EventRow;
use super::schema::{ATTEMPTS, AttemptRow, DEAD_LETTERS, EVENTS, EndpointSequence, META, OUTBOX};
use super::tuple::Tuple;
use super::{StoreError, Tables, last_sequence};
pub use rows::{AttemptRecord, AttemptResult, DeadLetter};
use rows::{attempt_from_row, dead_letter_from_row};
pub(super) use rows::{attempt_row, dead_letter_row};

/// One outbox row with what it takes to send it.
#[derive(Debug, Clone)]
pub struct OutboxDelivery {
    pub sequence: u64,
    /// Attempts made since the row was (re)queued: the position in the retry schedule.
    pub attempts: u32,
    /// Attempts recorded before the row was last requeued (by a replay): the next attempt's
    /// number is this plus `attempts` plus one.
    pub earlier_attempts: u32,
    pub next_attempt_at_ms: u64,
    pub event_id: String,
    pub committed_at_ms: u64,
    pub body: Vec<u8>,
}

/// A page of a lane's outbox, read by one range scan.
#[derive(Debug)]
pub struct OutboxPage {
    pub rows: Vec<OutboxDelivery>,
    /// No more rows after the last one in this snapshot.
    pub exhausted: bool,
    /// The last sequence committed in the snapshot: every row of this endpoint up to it was seen
    /// once `exhausted`, so later rows can only have a higher sequence.
    pub last_sequence: u64,
}

/// The outcome of one attempt, to be written with others in one transaction.
#[derive(Debug, Clone)]
pub enum DeliveryOutcome {
    Delivered(AttemptRecord),
    WillRetry {
        attempt: AttemptRecord,
        attempts: u32,
        next_attempt_at_ms: u64,
    },
    DeadLettered {
        attempt: AttemptRecord,
        letter: DeadLetter,
    },
}

/// A pending row as listed by the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingRow {
    pub endpoint: String,
    pub sequence: u64,
    pub event_id: String,
    pub event_type: String,
    pub attempts: u32,
    pub next_attempt_at_ms: u64,
}

/// Which dead letters to replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayFilter {
    pub endpoint: Option<String>,
    pub sequence: Option<u64>,
}

/// An event with what delivery needs of it, body included: the one place this module reads
/// events, so that a change of their layout is made here only.
fn event_record(
    events: &impl ReadableTable<u64, Tuple<EventRow<'static>>>,
    sequence: u64,
) -> Result<DeliveryEvent, StoreError> {
    delivery_event(events, sequence)?
        .ok_or_else(|| StoreError::new(format!("event {sequence} is missing")))
}

/// Reads up to `limit` of `endpoint`'s rows after sequence `after`, with their events.
pub fn outbox_page(
    txn: &ReadTransaction,
    endpoint: &str,
    after: u64,
    limit: usize,
) -> Result<OutboxPage, StoreError> {
    let meta = txn.open_table(META)?;
    let (last_sequence, instance_id) = (last_sequence(&meta)?, instance_id(&meta)?);
    let outbox = txn.open_table(OUTBOX)?;
    let events = txn.open_table(EVENTS)?;
    let mut rows = Vec::new();
    let mut exhausted = true;
    let Some(start) = after.checked_add(1) else {
        return Ok(OutboxPage {
            rows,
            exhausted,
            last_sequence,
        });
    };
    for entry in outbox.range((endpoint, start)..=(endpoint, u64::MAX))? {
        if rows.len() == limit {
            exhausted = false;
            break;
        }
        let (key, value) = entry?;
        let (_, sequence) = key.value();
        let (attempts, next_attempt_at_ms, earlier_attempts) = value.value();
        let event = event_record(&events, sequence)?;
        rows.push(OutboxDelivery {
            sequence,
            attempts,
            earlier_attempts,
            next_attempt_at_ms,
            event_id: event_id(instance_id, sequence),
            committed_at_ms: event.committed_at_ms,
            body: event.body,
        });
    }
    Ok(OutboxPage {
        rows,
        exhausted,
        last_sequence,
    })
}

/// The last sequence committed, for lanes waiting on new rows.
pub fn committed_sequence(txn: &ReadTransaction) -> Result<u64, StoreError> {
    last_sequence(&txn.open_table(META)?)
}

/// How many rows `endpoint` has pending after sequence `after` (0: all of them).
pub fn count_pending(txn: &ReadTransaction, endpoint: &str, after: u64) -> Result<u64, StoreError> {
    let outbox = txn.open_table(OUTBOX)?;
    let mut count = 0;
    let Some(start) = after.checked_add(1) else {
        return Ok(0);
    };
    for entry in outbox.range((endpoint, start)..=(endpoint, u64::MAX))? {
        entry?;
        count += 1;
    }
    Ok(count)
}

/// Every endpoint name that has rows in `OUTBOX`.
pub fn outbox_endpoints(txn: &ReadTransaction) -> Result<Vec<String>, StoreError> {
    let outbox = txn.open_table(OUTBOX)?;
    Ok(first_row_per_endpoint(&outbox)?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// The first (lowest) sequence of each endpoint in a table keyed by (endpoint, sequence), found
/// by skipping from one endpoint to the next rather than reading every row.
fn first_row_per_endpoint<V: redb::Value + 'static>(
    table: &impl ReadableTable<EndpointSequence, V>,
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut firsts: Vec<(String, u64)> = Vec::new();
    loop {
        let next = match firsts.last() {
            None => table.first()?,
            Some((last, _)) => {
                let from = (last.as_str(), u64::MAX);
                let mut range =
                    table.range::<(&str, u64)>((Bound::Excluded(from), Bound::Unbounded))?;
                range.next().transpose()?
            }
        };
        match next {
            Some((key, _)) => {
                let (name, sequence) = key.value();
                firsts.push((name.to_owned(), sequence));
            }
            None => return Ok(firsts),
        }
    }
}

/// How many attempts of `sequence` to `endpoint` are recorded: the number of the last one, so
/// that a replayed delivery's attempts go on from there rather than overwrite the history.
fn recorded_attempts(
    attempts: &impl ReadableTable<Tuple<(u64, &'static str, u32)>, Tuple<AttemptRow>>,
    sequence: u64,
    endpoint: &str,
) -> Result<u32, StoreError> {
    let last = attempts
        .range((sequence, endpoint, 0)..=(sequence, endpoint, u32::MAX))?
        .next_back()
        .transpose()?
        .map(|(key, _)| key.value().2);
    Ok(last.unwrap_or(0))
}

/// Writes a batch of outcomes, each attempt under the number its writer gave it. A row that is
/// gone (its endpoint was removed and its deliveries dead-lettered meanwhile) is not brought back
/// by a late retry. Nothing is read but the rows written: a success is one removal and one insert.
/// Every write goes through the batch's logged tables, so a batch of outcomes is made durable by
/// the redo log like a change, not by a durable commit of the file.
pub fn record_outcomes(
    tables: &mut Tables<'_>,
    outcomes: &[DeliveryOutcome],
) -> Result<(), StoreError> {
    for outcome in outcomes {
        let attempt = match outcome {
            DeliveryOutcome::Delivered(attempt) => {
                tables
                    .outbox()?
                    .remove((attempt.endpoint.as_str(), attempt.sequence))?;
                attempt
            }
            DeliveryOutcome::WillRetry {
                attempt,
                attempts: made,
                next_attempt_at_ms,
            } => {
                let key = (attempt.endpoint.as_str(), attempt.sequence);
                let earlier = attempt.attempt.saturating_sub(*made);
                let outbox = tables.outbox()?;
                if outbox
                    .insert(key, (*made, *next_attempt_at_ms, earlier))?
                    .is_none()
                {
                    outbox.remove(key)?;
                }
                attempt
            }
            DeliveryOutcome::DeadLettered { attempt, letter } => {
                let key = (attempt.endpoint.as_str(), attempt.sequence);
                if tables.outbox()?.remove(key)?.is_some() {
                    tables
                        .dead_letters()?
                        .insert(key, dead_letter_row(letter))?;
                }
                attempt
            }
        };
        tables.attempts()?.insert(
            (attempt.sequence, attempt.endpoint.as_str(), attempt.attempt),
            attempt_row(attempt),
        )?;
    }
    Ok(())
}

/// Moves up to `limit` of `endpoint`'s pending rows with a sequence up to `up_to` to dead letters
/// with `reason`; returns how many moved (0 when none are left). Called repeatedly, so that a
/// large backlog is moved in several commits rather than one huge transaction. `up_to` (the last
/// sequence when the endpoint was removed) spares the rows of an endpoint added back meanwhile.
pub fn dead_letter_pending(
    txn: &WriteTransaction,
    endpoint: &str,
    up_to: u64,
    reason: &str,
    now_ms: u64,
    limit: usize,
) -> Result<usize, StoreError> {
    let instance_id = instance_id(&txn.open_table(META)?)?;
    let mut outbox = txn.open_table(OUTBOX)?;
    let mut dead_letters = txn.open_table(DEAD_LETTERS)?;
    let mut rows = Vec::new();
    for entry in outbox.range((endpoint, 0)..=(endpoint, up_to))?.take(limit) {
        let (key, value) = entry?;
        rows.push((key.value().1, value.value().0));
    }
    for (sequence, attempts) in &rows {
        outbox.remove((endpoint, *sequence))?;
        let letter = DeadLetter {
            endpoint: endpoint.to_owned(),
            sequence: *sequence,
            event_id: event_id(instance_id, *sequence),
            reason: reason.to_owned(),
            attempts: *attempts,
            last_status: None,
            last_error: None,
            dead_lettered_at_ms: now_ms,
        };
        dead_letters.insert((endpoint, *sequence), dead_letter_row(&letter))?;
    }
    Ok(rows.len())
}

/// Puts dead letters matching `filter` back in the outbox, due now and with a fresh schedule (its
/// attempt numbers going on from the last recorded), if
/// `is_endpoint` says their endpoint is configured. Returns how many were requeued per endpoint,
/// and how many matched an endpoint that is no longer configured (left where they are).
pub fn replay_dead_letters(
    txn: &WriteTransaction,
    filter: &ReplayFilter,
    is_endpoint: &dyn Fn(&str) -> bool,
    now_ms: u64,
) -> Result<(BTreeMap<String, u64>, u64), StoreError> {
    let mut outbox = txn.open_table(OUTBOX)?;
    let mut dead_letters = txn.open_table(DEAD_LETTERS)?;
    let attempts = txn.open_table(ATTEMPTS)?;
    let mut matching = Vec::new();
    {
        let range = match &filter.endpoint {
            Some(endpoint) => {
                dead_letters.range((endpoint.as_str(), 0)..=(endpoint.as_str(), u64::MAX))?
            }
            None => dead_letters.range::<(&str, u64)>(..)?,
        };
        for entry in range {
            let (key, _) = entry?;
            let (endpoint, sequence) = key.value();
            if filter.sequence.is_none_or(|s| s == sequence) {
                matching.push((endpoint.to_owned(), sequence));
            }
        }
    }
    let mut replayed = BTreeMap::new();
    let mut unknown = 0;
    for (endpoint, sequence) in matching {
        if !is_endpoint(&endpoint) {
            unknown += 1;
            continue;
        }
        dead_letters.remove((endpoint.as_str(), sequence))?;
        let earlier = recorded_attempts(&attempts, sequence, &endpoint)?;
        outbox.insert((endpoint.as_str(), sequence), (0, now_ms, earlier))?;
        *replayed.entry(endpoint).or_insert(0) += 1;
    }
    Ok((replayed, unknown))
}

/// Up to `limit` of `endpoint`'s pending rows after `after`.
pub fn list_pending(
    txn: &ReadTransaction,
    endpoint: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<PendingRow>, StoreError> {
    let instance_id = instance_id(&txn.open_table(META)?)?;
    let outbox = txn.open_table(OUTBOX)?;
    let events = txn.open_table(EVENTS)?;
    let mut rows = Vec::new();
    let Some(start) = after.checked_add(1) else {
        return Ok(rows);
    };
    for entry in outbox
        .range((endpoint, start)..=(endpoint, u64::MAX))?
        .take(limit)
    {
        let (key, value) = entry?;
        let sequence = key.value().1;
        let (attempts, next_attempt_at_ms, _) = value.value();
        let event = event_record(&events, sequence)?;
        rows.push(PendingRow {
            endpoint: endpoint.to_owned(),
            sequence,
            event_id: event_id(instance_id, sequence),
            event_type: event.event_type.as_str().to_owned(),
            attempts,
            next_attempt_at_ms,
        });
    }
    Ok(rows)
}

/// Every attempt at delivering event `sequence`, to every endpoint.
pub fn attempts_for_event(
    txn: &ReadTransaction,
    sequence: u64,
) -> Result<Vec<AttemptRecord>, StoreError> {
    let attempts = txn.open_table(ATTEMPTS)?;
    let mut records = Vec::new();
    for entry in attempts.range::<(u64, &str, u32)>((
        Bound::Included((sequence, "", 0)),
        Bound::Excluded((sequence.saturating_add(1), "", 0)),
    ))? {
        let (key, value) = entry?;
        records.push(attempt_from_row(key.value(), value.value())?);
    }
    Ok(records)
}

/// The latest `limit` attempts to `endpoint`, newest event first. Attempts are keyed by event, so
/// this reads the table backwards; retention keeps the table, and so this walk, bounded.
pub fn attempts_for_endpoint(
    txn: &ReadTransaction,
    endpoint: &str,
    limit: usize,
) -> Result<Vec<AttemptRecord>, StoreError> {
    let attempts = txn.open_table(ATTEMPTS)?;
    let mut records = Vec::new();
    for entry in attempts.range::<(u64, &str, u32)>(..)?.rev() {
        if records.len() == limit {
            break;
        }
        let (key, value) = entry?;
        let key = key.value();
        if key.1 == endpoint {
            records.push(attempt_from_row(key, value.value())?);
        }
    }
    Ok(records)
}

/// Up to `limit` dead letters, of one endpoint or all, in (endpoint, sequence) order after
/// `after` (an endpoint and a sequence).
pub fn list_dead_letters(
    txn: &ReadTransaction,
    endpoint: Option<&str>,
    after: Option<(&str, u64)>,
    limit: usize,
) -> Result<Vec<DeadLetter>, StoreError> {
    let dead_letters = txn.open_table(DEAD_LETTERS)?;
    let lower = match after {
        Some(after) => Bound::Excluded(after),
        None => match endpoint {
            Some(endpoint) => Bound::Included((endpoint, 0)),
            None => Bound::Unbounded,
        },
    };
    let upper = match endpoint {
        Some(endpoint) => Bound::Included((endpoint, u64::MAX)),
        None => Bound::Unbounded,
    };
    let mut letters = Vec::new();
    for entry in dead_letters
        .range::<(&str, u64)>((lower, upper))?
        .take(limit)
    {
        let (key, value) = entry?;
        letters.push(dead_letter_from_row(key.value(), value.value()));
    }
    Ok(letters)
}

/// Deletes attempt records older than `cutoff_ms`, looking at no more than `budget` records from
/// event `from` on. Returns where to continue next time (back to 0 at the end of the table), so
/// that pruning walks the whole table over several short transactions.
pub fn prune_attempts(
    txn: &WriteTransaction,
    cutoff_ms: u64,
    from: u64,
    budget: usize,
) -> Result<(u64, usize), StoreError> {
    let mut attempts = txn.open_table(ATTEMPTS)?;
    let mut old = Vec::new();
    let mut next = 0;
    for (seen, entry) in attempts
        .range::<(u64, &str, u32)>((from, "", 0)..)?
        .enumerate()
    {
        let (key, value) = entry?;
        let (sequence, endpoint, number) = key.value();
        if seen == budget {
            next = sequence;
            break;
        }
        let (at_ms, ..) = value.value();
        if at_ms < cutoff_ms {
            old.push((sequence, endpoint.to_owned(), number));
        }
    }
    for (sequence, endpoint, number) in &old {
        attempts.remove((*sequence, endpoint.as_str(), *number))?;
    }
    Ok((next, old.len()))
}

/// Deletes events (record and body) committed before `cutoff_ms` that no endpoint has pending
/// and none has dead-lettered (a replay needs the body), looking at no more than `budget` events
/// from sequence `from`. Events are in commit order, so the walk stops at the first one that is
/// too recent or still pending somewhere. Returns where to continue (0: start over next time) and
/// how many were deleted.
pub fn prune_delivered_events(
    txn: &WriteTransaction,
    cutoff_ms: u64,
    from: u64,
    budget: usize,
) -> Result<(u64, usize), StoreError> {
    let oldest_pending = first_row_per_endpoint(&txn.open_table(OUTBOX)?)?
        .into_iter()
        .map(|(_, sequence)| sequence)
        .min();
    let dead_letters = txn.open_table(DEAD_LETTERS)?;
    let dead_letter_endpoints: Vec<String> = first_row_per_endpoint(&dead_letters)?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let mut events = txn.open_table(EVENTS)?;
    let mut prunable = Vec::new();
    let mut next = 0;
    for (seen, entry) in events.range(from..)?.enumerate() {
        let (key, value) = entry?;
        let sequence = key.value();
        if seen == budget {
            next = sequence;
            break;
        }
        if oldest_pending.is_some_and(|pending| sequence >= pending) {
            break;
        }
        if value.value().3 >= cutoff_ms {
            break;
        }
        let mut dead = false;
        for endpoint in &dead_letter_endpoints {
            if dead_letters.get((endpoint.as_str(), sequence))?.is_some() {
                dead = true;
                break;
            }
        }
        if !dead {
            prunable.push(sequence);
        }
    }
    for sequence in &prunable {
        events.remove(*sequence)?;
    }
    Ok((next, prunable.len()))
}

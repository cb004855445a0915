//! Event rows: appending an event with its outbox rows, and reading events back for the API and
//! for delivery.

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use super::schema::{EVENT_BODIES, EVENTS, META};
use super::tables::Tables;
use super::{StoreError, last_sequence};
use crate::changes::{CommittedEvent, NewEvent};

/// The `webhook-id` of an event: unique to this database (its random instance id) and sequence.
pub fn event_id(instance_id: u64, sequence: u64) -> String {
    format!("evt_{instance_id:016x}_{sequence:012}")
}

/// An event's metadata, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// The `webhook-id`: stable across every retry and replay.
    pub id: String,
    pub sequence: u64,
    pub event_type: String,
    pub environment: Option<u64>,
    pub committed_at_ms: u64,
    pub changed_by: String,
}

/// Stores `event` under the next sequence, with a delivery row per subscriber.
pub(super) fn append(
    tables: &mut Tables,
    event: &NewEvent<'_>,
) -> Result<CommittedEvent, StoreError> {
    let sequence = tables.take_counter("next_sequence")?;
    let record = EventRecord {
        id: event_id(tables.instance_id()?, sequence),
        sequence,
        event_type: event.event_type.as_str().to_owned(),
        environment: event.environment,
        committed_at_ms: event.committed_at_ms,
        changed_by: event.changed_by.to_owned(),
    };
    tables
        .events()?
        .insert(sequence, serde_json::to_string(&record)?.as_str())?;
    tables.event_bodies()?.insert(sequence, event.body)?;
    let outbox = tables.outbox()?;
    for endpoint in event.subscribers {
        outbox.insert((endpoint.as_str(), sequence), (0u32, 0u64))?;
    }
    Ok(CommittedEvent {
        id: record.id,
        sequence,
        event_type: record.event_type,
    })
}

/// Reads an event's body and metadata, for delivery and for the admin API.
pub fn read_event(
    events: &impl ReadableTable<u64, &'static str>,
    bodies: &impl ReadableTable<u64, &'static [u8]>,
    sequence: u64,
) -> Result<Option<(EventRecord, Vec<u8>)>, StoreError> {
    let Some(record) = events.get(sequence)? else {
        return Ok(None);
    };
    let record: EventRecord = serde_json::from_str(record.value())?;
    let body = bodies
        .get(sequence)?
        .map(|b| b.value().to_vec())
        .ok_or_else(|| StoreError::new(format!("event {sequence} has no body")))?;
    Ok(Some((record, body)))
}

/// A page of committed events, in sequence order.
#[derive(Debug)]
pub struct EventsPage {
    pub events: Vec<(EventRecord, Vec<u8>)>,
    /// The last sequence committed when the page was read.
    pub last_sequence: u64,
}

/// Up to `limit` events with a sequence after `after`, bodies included.
pub fn events_page(
    txn: &ReadTransaction,
    after: u64,
    limit: usize,
) -> Result<EventsPage, StoreError> {
    let events = txn.open_table(EVENTS)?;
    let bodies = txn.open_table(EVENT_BODIES)?;
    let mut page = Vec::new();
    for entry in events.range(after.saturating_add(1)..)?.take(limit) {
        let (sequence, record) = entry?;
        let record: EventRecord = serde_json::from_str(record.value())?;
        let body = bodies
            .get(sequence.value())?
            .map(|b| b.value().to_vec())
            .unwrap_or_default();
        page.push((record, body));
    }
    Ok(EventsPage {
        events: page,
        last_sequence: last_sequence(&txn.open_table(META)?)?,
    })
}

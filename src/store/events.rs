//! Event rows: appending an event with its outbox rows, and reading events back for the API and
//! for delivery. An event's metadata and body are one row; its id is derived, not stored.

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use super::rows::{EventRow, event_type_code, event_type_of};
use super::schema::{EVENTS, META, NEXT_SEQUENCE};
use super::tables::Tables;
use super::tuple::Tuple;
use super::{StoreError, last_sequence, meta_value};
use crate::changes::{CommittedEvent, NewEvent};
use crate::wire::EventType;

/// The `webhook-id` of an event: unique to this database (its random instance id) and sequence,
/// `evt_{instance_id:016x}_{sequence:012}`. Written by hand: every event and every delivery makes
/// one, and `format!` cost several times as much.
pub fn event_id(instance_id: u64, sequence: u64) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = Vec::with_capacity(41);
    id.extend_from_slice(b"evt_");
    for shift in (0..16).rev() {
        id.push(HEX[(instance_id >> (shift * 4)) as usize & 0xf]);
    }
    id.push(b'_');
    let mut digits = [0u8; 20];
    let (mut left, mut n) = (sequence, 0);
    while left > 0 || n < 12 {
        digits[n] = b'0' + (left % 10) as u8;
        left /= 10;
        n += 1;
    }
    id.extend(digits[..n].iter().rev());
    String::from_utf8(id).expect("ASCII digits")
}

/// This database's random id, part of every event id.
pub fn instance_id(meta: &impl ReadableTable<&'static str, u64>) -> Result<u64, StoreError> {
    meta_value(meta, "instance_id")
}

/// This database's random id, read in `txn` (what a document names beside its `last_sequence`).
pub fn database_instance(txn: &ReadTransaction) -> Result<u64, StoreError> {
    instance_id(&txn.open_table(META)?)
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

/// What a delivery needs of an event, read in one lookup without parsing JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryEvent {
    pub sequence: u64,
    pub event_type: EventType,
    pub environment: Option<u64>,
    pub committed_at_ms: u64,
    /// The exact bytes that are signed and sent.
    pub body: Vec<u8>,
}

/// Stores `event` under the next sequence, with a delivery row per subscriber.
pub(super) fn append(
    tables: &mut Tables,
    event: &NewEvent<'_>,
) -> Result<CommittedEvent, StoreError> {
    let sequence = tables.take_counter(NEXT_SEQUENCE)?;
    let (code, name) = event_type_code(&event.event_type);
    let row: EventRow = (
        code,
        name,
        event.environment,
        event.committed_at_ms,
        event.changed_by,
        event.body,
    );
    tables.events()?.insert(sequence, row)?;
    let outbox = tables.outbox()?;
    for endpoint in event.subscribers {
        outbox.insert((endpoint.as_str(), sequence), (0u32, 0u64, 0u32))?;
    }
    Ok(CommittedEvent {
        id: event_id(tables.instance_id()?, sequence),
        sequence,
        event_type: event.event_type.as_str().to_owned(),
    })
}

/// What a delivery needs of event `sequence` (`None`: pruned, or never committed).
pub fn delivery_event(
    events: &impl ReadableTable<u64, Tuple<EventRow<'static>>>,
    sequence: u64,
) -> Result<Option<DeliveryEvent>, StoreError> {
    Ok(events.get(sequence)?.map(|row| {
        let (code, name, environment, committed_at_ms, _, body) = row.value();
        DeliveryEvent {
            sequence,
            event_type: event_type_of(code, name),
            environment,
            committed_at_ms,
            body: body.to_vec(),
        }
    }))
}

/// One event's metadata and body, for the admin API (`None`: pruned, or never committed).
pub fn read_event(
    events: &impl ReadableTable<u64, Tuple<EventRow<'static>>>,
    instance_id: u64,
    sequence: u64,
) -> Result<Option<(EventRecord, Vec<u8>)>, StoreError> {
    Ok(events
        .get(sequence)?
        .map(|row| event_record(instance_id, sequence, row.value())))
}

fn event_record(instance_id: u64, sequence: u64, row: EventRow<'_>) -> (EventRecord, Vec<u8>) {
    let (code, name, environment, committed_at_ms, changed_by, body) = row;
    let record = EventRecord {
        id: event_id(instance_id, sequence),
        sequence,
        event_type: event_type_of(code, name).as_str().to_owned(),
        environment,
        committed_at_ms,
        changed_by: changed_by.to_owned(),
    };
    (record, body.to_vec())
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
    let meta = txn.open_table(META)?;
    let instance_id = instance_id(&meta)?;
    let mut events = Vec::new();
    for entry in txn
        .open_table(EVENTS)?
        .range(after.saturating_add(1)..)?
        .take(limit)
    {
        let (sequence, row) = entry?;
        events.push(event_record(instance_id, sequence.value(), row.value()));
    }
    Ok(EventsPage {
        events,
        last_sequence: last_sequence(&meta)?,
    })
}

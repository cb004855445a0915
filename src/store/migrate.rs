//! Migrating a file of schema 1 (flagpost 0.1: features, states, event metadata, attempts and
//! dead letters as JSON, event bodies in a table of their own) to schema 2, in the transaction that opens it: either
//! every row is carried over and the old tables dropped, or (on any error) nothing changes and
//! the file is refused with the reason.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::StoreError;
use super::events::EventRecord;
use super::rows::{EventRow, event_type_code, feature_row, state_key, state_row};
use super::schema::{EVENTS, FEATURES, STATES};
use crate::changes::{FeatureRecord, StateKey, StateRecord};
use crate::wire::EventType;

const FEATURES_1: TableDefinition<u64, &str> = TableDefinition::new("features");
const STATES_1: TableDefinition<(u64, u64, &str), &str> = TableDefinition::new("states");
const EVENTS_1: TableDefinition<u64, &str> = TableDefinition::new("events");
const EVENT_BODIES_1: TableDefinition<u64, &[u8]> = TableDefinition::new("event_bodies");

fn undecodable(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::new(format!(
        "this file was written by flagpost <= 0.1 (schema 1) and its {what} cannot be migrated \
         ({error}); run flagpost 0.1 on it until its outbox is empty, or move it aside to start \
         empty"
    ))
}

/// Carries every feature, state, event and delivery row of a schema-1 file over to the schema-2 tables.
pub(super) fn from_schema_1(txn: &WriteTransaction) -> Result<(), StoreError> {
    {
        let old = txn.open_table(FEATURES_1)?;
        let mut new = txn.open_table(FEATURES)?;
        for entry in old.iter()? {
            let (_, json) = entry?;
            let feature: FeatureRecord =
                serde_json::from_str(json.value()).map_err(|e| undecodable("feature", e))?;
            new.insert(feature.id, feature_row(&feature))?;
        }
    }
    {
        let old = txn.open_table(STATES_1)?;
        let mut new = txn.open_table(STATES)?;
        for entry in old.iter()? {
            let (key, json) = entry?;
            let (env, feature, text) = key.value();
            let key = state_key_1(text).ok_or_else(|| undecodable("state key", text))?;
            let state: StateRecord =
                serde_json::from_str(json.value()).map_err(|e| undecodable("state", e))?;
            new.insert(
                (env, feature, state_key(&key).as_slice()),
                state_row(&state),
            )?;
        }
    }
    {
        let old = txn.open_table(EVENTS_1)?;
        let bodies = txn.open_table(EVENT_BODIES_1)?;
        let mut new = txn.open_table(EVENTS)?;
        for entry in old.iter()? {
            let (sequence, json) = entry?;
            let sequence = sequence.value();
            let record: EventRecord =
                serde_json::from_str(json.value()).map_err(|e| undecodable("event", e))?;
            let body = bodies
                .get(sequence)?
                .ok_or_else(|| undecodable("event", format!("event {sequence} has no body")))?;
            let event_type = EventType::parse(&record.event_type);
            let (code, name) = event_type_code(&event_type);
            let row: EventRow = (
                code,
                name,
                record.environment,
                record.committed_at_ms,
                &record.changed_by,
                body.value(),
            );
            new.insert(sequence, row)?;
        }
    }
    deliveries::from_schema_1(txn)?;
    txn.delete_table(FEATURES_1)?;
    txn.delete_table(STATES_1)?;
    txn.delete_table(EVENTS_1)?;
    txn.delete_table(EVENT_BODIES_1)?;
    Ok(())
}

/// A state key as schema 1 wrote it: "", `identity:<identifier>` or `segment:<20 digits>`.
fn state_key_1(text: &str) -> Option<StateKey> {
    if text.is_empty() {
        Some(StateKey::Default)
    } else if let Some(identifier) = text.strip_prefix("identity:") {
        Some(StateKey::Identity(identifier.to_owned()))
    } else {
        text.strip_prefix("segment:")?
            .parse()
            .ok()
            .map(StateKey::Segment)
    }
}

mod deliveries;
#[cfg(test)]
mod tests;

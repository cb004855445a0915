//! Schemas 2-3's rows, redb tuples: read to migrate such a file to schema 4's own bytes
//! ([`super::super::rows`]), and to replay a redo log such a receiver left (its ops name these
//! tables' numbers, and hold their tuples).

use flagpost::store::redo::{self, ReplayError};
use redb::{ReadableTable, TableDefinition, Value, WriteTransaction};

use crate::documents::{FeatureMeta, FlagState, Order, SegmentState, Slot};
use crate::error::WriteError;
use crate::storage::rows::{self, ValueParts, value_of};
use crate::storage::{FEATURES, STATES};

/// A key's state: (enabled, value, state id, identity id, segment priority, segment name).
pub(in crate::storage) type StateRow<'a> = (
    bool,
    ValueParts<'a>,
    Option<u64>,
    Option<u64>,
    Option<i64>,
    Option<&'a str>,
);

/// A key's slot: (sequence, timestamp in µs, arrived in µs, state; none for a tombstone).
pub(in crate::storage) type SlotRow<'a> = (Option<u64>, Option<i64>, i64, Option<StateRow<'a>>);

/// A feature's description: (name, type, description, initial value, default enabled, created
/// date, sequence, timestamp in µs).
pub(in crate::storage) type MetaRow<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    ValueParts<'a>,
    Option<bool>,
    Option<&'a str>,
    Option<u64>,
    Option<i64>,
);

pub(in crate::storage) const FEATURES_AS_TUPLES: TableDefinition<(u64, u64), MetaRow> =
    TableDefinition::new("feature_meta");
pub(in crate::storage) const STATES_AS_TUPLES: TableDefinition<(u64, u64, &str), SlotRow> =
    TableDefinition::new("feature_states");

/// Rewrites every description and slot in schema 4's bytes, and drops the tables of tuples.
pub(super) fn migrate(txn: &WriteTransaction) -> Result<(), WriteError> {
    let mut out = Vec::new();
    {
        let old = txn.open_table(FEATURES_AS_TUPLES)?;
        let mut new = txn.open_table(FEATURES)?;
        for row in old.iter()? {
            let (key, value) = row?;
            new.insert(key.value(), rows::meta(&mut out, &meta_of(value.value())))?;
        }
    }
    {
        let old = txn.open_table(STATES_AS_TUPLES)?;
        let mut new = txn.open_table(STATES)?;
        for row in old.iter()? {
            let (key, value) = row?;
            let key = key.value();
            new.insert(key, slot_bytes(&mut out, key.2, value.value()))?;
        }
    }
    txn.delete_table(FEATURES_AS_TUPLES)?;
    txn.delete_table(STATES_AS_TUPLES)?;
    Ok(())
}

/// Replays a logged write of a description as schemas 2-3 laid it out.
pub(in crate::storage) fn replay_feature(
    txn: &WriteTransaction,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), ReplayError> {
    let mut out = Vec::new();
    let value = value.map(|tuple| rows::meta(&mut out, &meta_of(MetaRow::from_bytes(tuple))));
    Ok(redo::replay_op(txn, FEATURES, key, value)?)
}

/// Replays a logged write of a slot as schemas 2-3 laid it out.
pub(in crate::storage) fn replay_state(
    txn: &WriteTransaction,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), ReplayError> {
    let mut out = Vec::new();
    let (_, _, scope) = <(u64, u64, &str)>::from_bytes(key);
    let value = value.map(|tuple| slot_bytes(&mut out, scope, SlotRow::from_bytes(tuple)));
    Ok(redo::replay_op(txn, STATES, key, value)?)
}

/// A slot in schema 4's bytes: a segment override under `s:<id>`, else a flag state.
fn slot_bytes<'o>(out: &'o mut Vec<u8>, scope: &str, row: SlotRow<'_>) -> &'o [u8] {
    let (seq, ts_micros, arrived_micros, state) = row;
    let order = Order { seq, ts_micros };
    if scope.starts_with("s:") {
        let state = state.map(
            |(enabled, value, state_id, _, priority, name)| SegmentState {
                enabled,
                value: value_of(value),
                priority,
                name: name.map(str::to_owned),
                state_id,
            },
        );
        rows::segment_slot(
            out,
            &Slot {
                order,
                state,
                arrived_micros,
            },
        )
    } else {
        let state = state.map(|(enabled, value, state_id, identity_id, _, _)| FlagState {
            enabled,
            value: value_of(value),
            state_id,
            identity_id,
        });
        rows::flag_slot(
            out,
            &Slot {
                order,
                state,
                arrived_micros,
            },
        )
    }
}

fn meta_of(row: MetaRow<'_>) -> FeatureMeta {
    let (name, feature_type, description, initial_value, default_enabled, created_date, seq, ts) =
        row;
    FeatureMeta {
        name: name.to_owned(),
        feature_type: feature_type.map(str::to_owned),
        description: description.map(str::to_owned),
        initial_value: value_of(initial_value),
        default_enabled,
        created_date: created_date.map(str::to_owned),
        order: Order { seq, ts_micros: ts },
    }
}

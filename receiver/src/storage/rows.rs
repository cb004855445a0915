//! How a feature's description and each key's slot are laid out: redb tuples, written on every
//! web hook without formatting JSON, and about half the bytes (so fewer pages per commit).

use flagpost::wire::FlagValue;

use crate::documents::{FeatureMeta, FlagState, Order, SegmentState, Slot};

/// A flag value: (kind, number bits, text). Kinds: 0 none, 1 false, 2 true, 3 integer (the bits
/// of an `i64`), 4 float (the bits of an `f64`), 5 string (the text).
///
/// flagpost's store lays values out the same way, but in its own code on purpose: each file's
/// format belongs to its program and moves only with that program's schema version, so a change
/// to one must never silently change how the other's files are read.
pub type ValueRow<'a> = (u8, u64, &'a str);

/// A key's state: (enabled, value, state id, identity id, segment priority, segment name).
pub type StateRow<'a> = (
    bool,
    ValueRow<'a>,
    Option<u64>,
    Option<u64>,
    Option<i64>,
    Option<&'a str>,
);

/// A key's slot: (sequence, timestamp in µs, arrived in µs, state; none for a tombstone).
pub type SlotRow<'a> = (Option<u64>, Option<i64>, i64, Option<StateRow<'a>>);

/// A feature's description: (name, type, description, initial value, default enabled, created
/// date, sequence, timestamp in µs), the last two the order of the change that told it.
pub type MetaRow<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    ValueRow<'a>,
    Option<bool>,
    Option<&'a str>,
    Option<u64>,
    Option<i64>,
);

fn value_row(value: &Option<FlagValue>) -> ValueRow<'_> {
    match value {
        None => (0, 0, ""),
        Some(FlagValue::Bool(false)) => (1, 0, ""),
        Some(FlagValue::Bool(true)) => (2, 0, ""),
        Some(FlagValue::Integer(n)) => (3, *n as u64, ""),
        Some(FlagValue::Float(x)) => (4, x.to_bits(), ""),
        Some(FlagValue::String(s)) => (5, 0, s.as_str()),
    }
}

fn value_of((kind, bits, text): ValueRow<'_>) -> Option<FlagValue> {
    match kind {
        1 => Some(FlagValue::Bool(false)),
        2 => Some(FlagValue::Bool(true)),
        3 => Some(FlagValue::Integer(bits as i64)),
        4 => Some(FlagValue::Float(f64::from_bits(bits))),
        5 => Some(FlagValue::String(text.to_owned())),
        _ => None,
    }
}

pub fn meta_row(meta: &FeatureMeta) -> MetaRow<'_> {
    (
        meta.name.as_str(),
        meta.feature_type.as_deref(),
        meta.description.as_deref(),
        value_row(&meta.initial_value),
        meta.default_enabled,
        meta.created_date.as_deref(),
        meta.order.seq,
        meta.order.ts_micros,
    )
}

pub fn meta_of(row: MetaRow<'_>) -> FeatureMeta {
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

fn slot_row<T>(slot: &Slot<T>, state: impl FnOnce(&T) -> StateRow<'_>) -> SlotRow<'_> {
    (
        slot.order.seq,
        slot.order.ts_micros,
        slot.arrived_micros,
        slot.state.as_ref().map(state),
    )
}

fn slot_of<T>(row: SlotRow<'_>, state: impl FnOnce(StateRow<'_>) -> T) -> Slot<T> {
    let (seq, ts_micros, arrived_micros, held) = row;
    Slot {
        order: Order { seq, ts_micros },
        state: held.map(state),
        arrived_micros,
    }
}

/// The default state or an identity override.
pub fn flag_slot_row(slot: &Slot<FlagState>) -> SlotRow<'_> {
    slot_row(slot, |state| {
        let value = value_row(&state.value);
        (
            state.enabled,
            value,
            state.state_id,
            state.identity_id,
            None,
            None,
        )
    })
}

pub fn flag_slot_of(row: SlotRow<'_>) -> Slot<FlagState> {
    slot_of(row, |(enabled, value, state_id, identity_id, _, _)| {
        FlagState {
            enabled,
            value: value_of(value),
            state_id,
            identity_id,
        }
    })
}

pub fn segment_slot_row(slot: &Slot<SegmentState>) -> SlotRow<'_> {
    slot_row(slot, |state| {
        let value = value_row(&state.value);
        let name = state.name.as_deref();
        (
            state.enabled,
            value,
            state.state_id,
            None,
            state.priority,
            name,
        )
    })
}

pub fn segment_slot_of(row: SlotRow<'_>) -> Slot<SegmentState> {
    slot_of(row, |(enabled, value, state_id, _, priority, name)| {
        SegmentState {
            enabled,
            value: value_of(value),
            priority,
            name: name.map(str::to_owned),
            state_id,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_reads_back_as_written() {
        let values = [
            None,
            Some(FlagValue::Bool(false)),
            Some(FlagValue::Bool(true)),
            Some(FlagValue::Integer(-7)),
            Some(FlagValue::Float(0.25)),
            Some(FlagValue::String("blue".into())),
        ];
        for value in values {
            let order = Order {
                seq: Some(9),
                ts_micros: Some(-3),
            };
            let flag = Slot {
                order,
                state: Some(FlagState {
                    enabled: true,
                    value: value.clone(),
                    state_id: Some(4),
                    identity_id: None,
                }),
                arrived_micros: 12,
            };
            assert_eq!(flag_slot_of(flag_slot_row(&flag)), flag);
            let segment = Slot {
                order: Order::default(),
                state: Some(SegmentState {
                    enabled: false,
                    value: value.clone(),
                    priority: Some(-1),
                    name: Some("beta".into()),
                    state_id: None,
                }),
                arrived_micros: 0,
            };
            assert_eq!(segment_slot_of(segment_slot_row(&segment)), segment);
            let meta = FeatureMeta {
                name: "f".into(),
                feature_type: Some("STANDARD".into()),
                description: None,
                initial_value: value,
                default_enabled: Some(false),
                created_date: Some("2026-01-01T00:00:00Z".into()),
                order,
            };
            assert_eq!(meta_of(meta_row(&meta)), meta);
        }
        let tombstone: Slot<FlagState> = Slot {
            order: Order::default(),
            state: None,
            arrived_micros: 0,
        };
        assert_eq!(flag_slot_of(flag_slot_row(&tombstone)), tombstone);
    }
}

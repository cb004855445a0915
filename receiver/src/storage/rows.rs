//! How a feature's description and each key's slot are laid out (schema 4): bytes of this
//! module's own, written once per row into the batch's buffer and handed as they are both to the
//! redo log's record and to redb.
//!
//! Schemas 2-3 kept these rows as nested redb tuples ([`super::schema::tuples`]). redb encodes each
//! nested tuple and option of such a row into a `Vec` of its own, and the row was encoded twice
//! (once for the log, once for the table), and each batch's opening of the tables formatted the
//! tuples' type names again: together a third of the writer's instructions per web hook.
//!
//! A row read back is checked whole: a truncated or malformed row is answered as a corrupt file,
//! never misread and never a panic.

use flagpost::wire::FlagValue;

use crate::documents::{FeatureMeta, FlagState, Order, SegmentState, Slot};
use crate::error::WriteError;
use crate::storage::corrupt;

/// A table value of bytes this module lays out; its type name ties the table to the layout, so a
/// table of another layout is refused when opened, never misread.
macro_rules! encoded_value {
    ($(#[$doc:meta])* $name:ident, $type_name:literal) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl redb::Value for $name {
            type SelfType<'a> = &'a [u8];
            type AsBytes<'a> = &'a [u8];

            fn fixed_width() -> Option<usize> {
                None
            }

            fn from_bytes<'a>(data: &'a [u8]) -> &'a [u8]
            where
                Self: 'a,
            {
                data
            }

            fn as_bytes<'a, 'b: 'a>(value: &'a &'b [u8]) -> &'a [u8]
            where
                Self: 'b,
            {
                value
            }

            fn type_name() -> redb::TypeName {
                redb::TypeName::new($type_name)
            }
        }
    };
}

encoded_value!(
    /// A feature's description ([`meta`], [`meta_of`]).
    MetaBytes,
    "flagpost_receiver::FeatureMeta/4"
);
encoded_value!(
    /// A key's slot ([`flag_slot`], [`segment_slot`]).
    SlotBytes,
    "flagpost_receiver::Slot/4"
);

/// A flag value's parts: (kind, number bits, text). Kinds: 0 none, 1 false, 2 true, 3 integer (the
/// bits of an `i64`), 4 float (the bits of an `f64`), 5 string (the text). Schema 2-3's tuples
/// held the same parts.
///
/// flagpost's store lays values out the same way, but in its own code on purpose: each file's
/// format belongs to its program and moves only with that program's schema version, so a change
/// to one must never silently change how the other's files are read.
pub type ValueParts<'a> = (u8, u64, &'a str);

pub fn value_parts(value: &Option<FlagValue>) -> ValueParts<'_> {
    match value {
        None => (0, 0, ""),
        Some(FlagValue::Bool(false)) => (1, 0, ""),
        Some(FlagValue::Bool(true)) => (2, 0, ""),
        Some(FlagValue::Integer(n)) => (3, *n as u64, ""),
        Some(FlagValue::Float(x)) => (4, x.to_bits(), ""),
        Some(FlagValue::String(s)) => (5, 0, s.as_str()),
    }
}

pub fn value_of((kind, bits, text): ValueParts<'_>) -> Option<FlagValue> {
    match kind {
        1 => Some(FlagValue::Bool(false)),
        2 => Some(FlagValue::Bool(true)),
        3 => Some(FlagValue::Integer(bits as i64)),
        4 => Some(FlagValue::Float(f64::from_bits(bits))),
        5 => Some(FlagValue::String(text.to_owned())),
        _ => None,
    }
}

// A description: a byte of which optional fields are present (`META_*`), the name, then each
// present field in the order of the bits, the value between description and created date.
const META_TYPE: u8 = 1;
const META_DESCRIPTION: u8 = 1 << 1;
const META_DEFAULT_ENABLED: u8 = 1 << 2;
const META_DEFAULT_ENABLED_TRUE: u8 = 1 << 3;
const META_CREATED: u8 = 1 << 4;
const META_SEQ: u8 = 1 << 5;
const META_TS: u8 = 1 << 6;
const META_FIELDS: u8 = META_TYPE
    | META_DESCRIPTION
    | META_DEFAULT_ENABLED
    | META_DEFAULT_ENABLED_TRUE
    | META_CREATED
    | META_SEQ
    | META_TS;

/// Lays `meta` out in `out` (emptied first), and answers the bytes.
pub fn meta<'o>(out: &'o mut Vec<u8>, meta: &FeatureMeta) -> &'o [u8] {
    out.clear();
    let flags = bit(META_TYPE, meta.feature_type.is_some())
        | bit(META_DESCRIPTION, meta.description.is_some())
        | bit(META_DEFAULT_ENABLED, meta.default_enabled.is_some())
        | bit(
            META_DEFAULT_ENABLED_TRUE,
            meta.default_enabled == Some(true),
        )
        | bit(META_CREATED, meta.created_date.is_some())
        | bit(META_SEQ, meta.order.seq.is_some())
        | bit(META_TS, meta.order.ts_micros.is_some());
    out.push(flags);
    put_str(out, &meta.name);
    meta.feature_type.iter().for_each(|text| put_str(out, text));
    meta.description.iter().for_each(|text| put_str(out, text));
    put_value(out, value_parts(&meta.initial_value));
    meta.created_date.iter().for_each(|text| put_str(out, text));
    put_order(out, meta.order);
    out
}

pub fn meta_of(bytes: &[u8]) -> Result<FeatureMeta, WriteError> {
    let mut row = Row::new(bytes);
    let flags = row.u8()?;
    if flags & !META_FIELDS != 0 {
        return Err(corrupt("feature row", "a field no layout writes"));
    }
    let name = row.str()?.to_owned();
    let feature_type = row.str_if(flags & META_TYPE)?;
    let description = row.str_if(flags & META_DESCRIPTION)?;
    let initial_value = value_of(row.value()?);
    let created_date = row.str_if(flags & META_CREATED)?;
    let order = row.order(flags & META_SEQ, flags & META_TS)?;
    row.end()?;
    Ok(FeatureMeta {
        name,
        feature_type,
        description,
        initial_value,
        default_enabled: (flags & META_DEFAULT_ENABLED != 0)
            .then_some(flags & META_DEFAULT_ENABLED_TRUE != 0),
        created_date,
        order,
    })
}

// A slot: a byte of which optional fields are present (`SLOT_*`), when it arrived, its order,
// then the state when held: value, state id, identity id, priority, name, each when present.
const SLOT_SEQ: u8 = 1;
const SLOT_TS: u8 = 1 << 1;
const SLOT_HELD: u8 = 1 << 2;
const SLOT_ENABLED: u8 = 1 << 3;
const SLOT_STATE_ID: u8 = 1 << 4;
const SLOT_IDENTITY_ID: u8 = 1 << 5;
const SLOT_PRIORITY: u8 = 1 << 6;
const SLOT_NAME: u8 = 1 << 7;

/// What a slot's state holds, flag or segment: a flag's has no priority or name, a segment's no
/// identity id.
struct StateParts<'a> {
    enabled: bool,
    value: ValueParts<'a>,
    state_id: Option<u64>,
    identity_id: Option<u64>,
    priority: Option<i64>,
    name: Option<&'a str>,
}

fn slot<'o, T>(
    out: &'o mut Vec<u8>,
    slot: &Slot<T>,
    parts: impl FnOnce(&T) -> StateParts<'_>,
) -> &'o [u8] {
    out.clear();
    let state = slot.state.as_ref().map(parts);
    let mut flags = bit(SLOT_SEQ, slot.order.seq.is_some())
        | bit(SLOT_TS, slot.order.ts_micros.is_some())
        | bit(SLOT_HELD, state.is_some());
    if let Some(state) = &state {
        flags |= bit(SLOT_ENABLED, state.enabled)
            | bit(SLOT_STATE_ID, state.state_id.is_some())
            | bit(SLOT_IDENTITY_ID, state.identity_id.is_some())
            | bit(SLOT_PRIORITY, state.priority.is_some())
            | bit(SLOT_NAME, state.name.is_some());
    }
    out.push(flags);
    out.extend_from_slice(&slot.arrived_micros.to_le_bytes());
    put_order(out, slot.order);
    if let Some(state) = state {
        put_value(out, state.value);
        state.state_id.iter().for_each(|id| put_u64(out, *id));
        state.identity_id.iter().for_each(|id| put_u64(out, *id));
        state.priority.iter().for_each(|p| put_u64(out, *p as u64));
        state.name.iter().for_each(|name| put_str(out, name));
    }
    out
}

fn slot_of<T>(
    bytes: &[u8],
    state: impl FnOnce(StateParts<'_>) -> T,
) -> Result<Slot<T>, WriteError> {
    let mut row = Row::new(bytes);
    let flags = row.u8()?;
    let arrived_micros = row.u64()? as i64;
    let order = row.order(flags & SLOT_SEQ, flags & SLOT_TS)?;
    let parts = if flags & SLOT_HELD != 0 {
        Some(StateParts {
            enabled: flags & SLOT_ENABLED != 0,
            value: row.value()?,
            state_id: row.u64_if(flags & SLOT_STATE_ID)?,
            identity_id: row.u64_if(flags & SLOT_IDENTITY_ID)?,
            priority: row.u64_if(flags & SLOT_PRIORITY)?.map(|p| p as i64),
            name: if flags & SLOT_NAME != 0 {
                Some(row.str()?)
            } else {
                None
            },
        })
    } else if flags & !(SLOT_SEQ | SLOT_TS) != 0 {
        return Err(corrupt("state row", "a tombstone with a state's fields"));
    } else {
        None
    };
    row.end()?;
    Ok(Slot {
        order,
        state: parts.map(state),
        arrived_micros,
    })
}

/// Lays out the default state or an identity override in `out` (emptied first).
pub fn flag_slot<'o>(out: &'o mut Vec<u8>, flag: &Slot<FlagState>) -> &'o [u8] {
    slot(out, flag, |state| StateParts {
        enabled: state.enabled,
        value: value_parts(&state.value),
        state_id: state.state_id,
        identity_id: state.identity_id,
        priority: None,
        name: None,
    })
}

pub fn flag_slot_of(bytes: &[u8]) -> Result<Slot<FlagState>, WriteError> {
    slot_of(bytes, |parts| FlagState {
        enabled: parts.enabled,
        value: value_of(parts.value),
        state_id: parts.state_id,
        identity_id: parts.identity_id,
    })
}

/// Lays out a segment override in `out` (emptied first).
pub fn segment_slot<'o>(out: &'o mut Vec<u8>, segment: &Slot<SegmentState>) -> &'o [u8] {
    slot(out, segment, |state| StateParts {
        enabled: state.enabled,
        value: value_parts(&state.value),
        state_id: state.state_id,
        identity_id: None,
        priority: state.priority,
        name: state.name.as_deref(),
    })
}

pub fn segment_slot_of(bytes: &[u8]) -> Result<Slot<SegmentState>, WriteError> {
    slot_of(bytes, |parts| SegmentState {
        enabled: parts.enabled,
        value: value_of(parts.value),
        priority: parts.priority,
        name: parts.name.map(str::to_owned),
        state_id: parts.state_id,
    })
}

fn bit(flag: u8, set: bool) -> u8 {
    if set { flag } else { 0 }
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn put_value(out: &mut Vec<u8>, (kind, bits, text): ValueParts<'_>) {
    out.push(kind);
    match kind {
        3 | 4 => put_u64(out, bits),
        5 => put_str(out, text),
        _ => {}
    }
}

fn put_order(out: &mut Vec<u8>, order: Order) {
    order.seq.iter().for_each(|seq| put_u64(out, *seq));
    order
        .ts_micros
        .iter()
        .for_each(|ts| put_u64(out, *ts as u64));
}

/// A row being read back; every read checks that the bytes are there.
struct Row<'a> {
    bytes: &'a [u8],
}

impl<'a> Row<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Row { bytes }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], WriteError> {
        if self.bytes.len() < len {
            return Err(corrupt("row", "shorter than its fields"));
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, WriteError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, WriteError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn u64_if(&mut self, present: u8) -> Result<Option<u64>, WriteError> {
        (present != 0).then(|| self.u64()).transpose()
    }

    fn str(&mut self) -> Result<&'a str, WriteError> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
        std::str::from_utf8(self.take(len as usize)?).map_err(|e| corrupt("row text", e))
    }

    fn str_if(&mut self, present: u8) -> Result<Option<String>, WriteError> {
        (present != 0)
            .then(|| self.str().map(str::to_owned))
            .transpose()
    }

    fn value(&mut self) -> Result<ValueParts<'a>, WriteError> {
        match self.u8()? {
            kind @ 0..=2 => Ok((kind, 0, "")),
            kind @ (3 | 4) => Ok((kind, self.u64()?, "")),
            5 => Ok((5, 0, self.str()?)),
            _ => Err(corrupt("row", "an unknown kind of value")),
        }
    }

    fn order(&mut self, seq: u8, ts: u8) -> Result<Order, WriteError> {
        Ok(Order {
            seq: self.u64_if(seq)?,
            ts_micros: self.u64_if(ts)?.map(|ts| ts as i64),
        })
    }

    fn end(&self) -> Result<(), WriteError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(corrupt("row", "bytes after its last field"))
        }
    }
}

#[cfg(test)]
mod tests;

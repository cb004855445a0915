//! How the hot records are laid out in their tables: redb tuples, so that reading or writing a
//! feature, a state or an event on the change path parses and formats no JSON, and a delivery
//! reads an event's metadata and body in one lookup.

use crate::changes::{FeatureRecord, Owner, StateKey, StateRecord};
use crate::wire::{EventType, FlagValue};

/// A flag value: (kind, number bits, text). Kinds: 0 null, 1 false, 2 true, 3 integer (the bits
/// of an `i64`), 4 float (the bits of an `f64`), 5 string (the text).
pub type ValueRow<'a> = (u8, u64, &'a str);

/// (state id, enabled, value, identity id, segment name, segment priority).
pub type StateRow<'a> = (
    u64,
    bool,
    ValueRow<'a>,
    Option<u64>,
    Option<&'a str>,
    Option<i64>,
);

/// (project, name, type, description, initial value, default enabled, created date, owner
/// (0 API, 1 files), deleted). The id is the key.
pub type FeatureRow<'a> = (
    u64,
    &'a str,
    &'a str,
    Option<&'a str>,
    ValueRow<'a>,
    bool,
    &'a str,
    u8,
    bool,
);

/// (event type code, event type name when the code is 0, environment, committed at (unix ms),
/// changed by, body). Codes: 1 `FLAG_UPDATED`, 2 `FLAG_DELETED`, 3 `AUDIT_LOG_CREATED`, 0 another
/// type (a relayed event), named in the second field; 4 `SEGMENT_UPDATED`, 5 `SEGMENT_DELETED`.
pub type EventRow<'a> = (u8, &'a str, Option<u64>, u64, &'a str, &'a [u8]);

pub fn value_row(value: &Option<FlagValue>) -> ValueRow<'_> {
    match value {
        None => (0, 0, ""),
        Some(FlagValue::Bool(false)) => (1, 0, ""),
        Some(FlagValue::Bool(true)) => (2, 0, ""),
        Some(FlagValue::Integer(n)) => (3, *n as u64, ""),
        Some(FlagValue::Float(x)) => (4, x.to_bits(), ""),
        Some(FlagValue::String(s)) => (5, 0, s.as_str()),
    }
}

pub fn value_of((kind, bits, text): ValueRow<'_>) -> Option<FlagValue> {
    match kind {
        1 => Some(FlagValue::Bool(false)),
        2 => Some(FlagValue::Bool(true)),
        3 => Some(FlagValue::Integer(bits as i64)),
        4 => Some(FlagValue::Float(f64::from_bits(bits))),
        5 => Some(FlagValue::String(text.to_owned())),
        _ => None,
    }
}

pub fn state_row(state: &StateRecord) -> StateRow<'_> {
    (
        state.id,
        state.enabled,
        value_row(&state.value),
        state.identity_id,
        state.segment_name.as_deref(),
        state.priority,
    )
}

pub fn state_of(row: StateRow<'_>) -> StateRecord {
    let (id, enabled, value, identity_id, segment_name, priority) = row;
    StateRecord {
        id,
        enabled,
        value: value_of(value),
        identity_id,
        segment_name: segment_name.map(str::to_owned),
        priority,
        // Kept in their own table (`super::flag_state` fills them in).
        multivariate: Vec::new(),
    }
}

pub fn feature_row(feature: &FeatureRecord) -> FeatureRow<'_> {
    (
        feature.project,
        &feature.name,
        &feature.feature_type,
        feature.description.as_deref(),
        value_row(&feature.initial_value),
        feature.default_enabled,
        &feature.created_date,
        match feature.owner {
            Owner::Api => 0,
            Owner::Files => 1,
        },
        feature.deleted,
    )
}

pub fn feature_of(id: u64, row: FeatureRow<'_>) -> FeatureRecord {
    let (
        project,
        name,
        feature_type,
        description,
        initial_value,
        default_enabled,
        created,
        owner,
        deleted,
    ) = row;
    FeatureRecord {
        id,
        project,
        name: name.to_owned(),
        feature_type: feature_type.to_owned(),
        description: description.map(str::to_owned),
        initial_value: value_of(initial_value),
        default_enabled,
        created_date: created.to_owned(),
        owner: if owner == 1 { Owner::Files } else { Owner::Api },
        deleted,
    }
}

/// The code and (for a type this version does not know) the name of an event type.
pub fn event_type_code(event_type: &EventType) -> (u8, &str) {
    match event_type {
        EventType::FlagUpdated => (1, ""),
        EventType::FlagDeleted => (2, ""),
        EventType::AuditLogCreated => (3, ""),
        EventType::SegmentUpdated => (4, ""),
        EventType::SegmentDeleted => (5, ""),
        EventType::Other(name) => (0, name),
    }
}

pub fn event_type_of(code: u8, name: &str) -> EventType {
    match code {
        1 => EventType::FlagUpdated,
        2 => EventType::FlagDeleted,
        3 => EventType::AuditLogCreated,
        4 => EventType::SegmentUpdated,
        5 => EventType::SegmentDeleted,
        _ => EventType::parse(name),
    }
}

/// A state key in `STATES`: empty for the environment default, 1 and the identifier for an
/// identity, 2 and the big-endian segment id for a segment, so that they sort in that order.
pub fn state_key(key: &StateKey) -> Vec<u8> {
    match key {
        StateKey::Default => Vec::new(),
        StateKey::Identity(identifier) => {
            let mut bytes = Vec::with_capacity(1 + identifier.len());
            bytes.push(1);
            bytes.extend_from_slice(identifier.as_bytes());
            bytes
        }
        StateKey::Segment(id) => {
            let mut bytes = Vec::with_capacity(9);
            bytes.push(2);
            bytes.extend_from_slice(&id.to_be_bytes());
            bytes
        }
    }
}

/// The keys of every state of one feature in one environment, the default first.
pub fn feature_states(env: u64, feature: u64) -> std::ops::Range<(u64, u64, &'static [u8])> {
    const DEFAULT: &[u8] = &[];
    (env, feature, DEFAULT)..(env, feature + 1, DEFAULT)
}

pub fn state_key_of(bytes: &[u8]) -> Option<StateKey> {
    match bytes.split_first() {
        None => Some(StateKey::Default),
        Some((1, identifier)) => std::str::from_utf8(identifier)
            .ok()
            .map(|i| StateKey::Identity(i.to_owned())),
        Some((2, id)) => Some(StateKey::Segment(u64::from_be_bytes(id.try_into().ok()?))),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_keys_round_trip_and_sort_default_first() {
        let keys = [
            StateKey::Default,
            StateKey::Identity("user-42".into()),
            StateKey::Segment(9),
            StateKey::Segment(256),
        ];
        let mut encoded: Vec<Vec<u8>> = keys.iter().map(state_key).collect();
        encoded.sort();
        let decoded: Vec<StateKey> = encoded.iter().map(|k| state_key_of(k).unwrap()).collect();
        assert_eq!(decoded, keys);
    }

    #[test]
    fn records_round_trip_through_their_rows() {
        for value in [
            None,
            Some(FlagValue::Bool(false)),
            Some(FlagValue::Bool(true)),
            Some(FlagValue::Integer(-7)),
            Some(FlagValue::Float(0.25)),
            Some(FlagValue::String("v2".into())),
        ] {
            let state = StateRecord {
                id: 3,
                enabled: true,
                value: value.clone(),
                identity_id: Some(4),
                segment_name: Some("beta".into()),
                priority: Some(-1),
                multivariate: Vec::new(),
            };
            assert_eq!(state_of(state_row(&state)), state);
            let feature = FeatureRecord {
                id: 5,
                project: 1,
                name: "dark_mode".into(),
                feature_type: "STANDARD".into(),
                description: None,
                initial_value: value,
                default_enabled: true,
                created_date: "2026-01-02T03:04:05.000000Z".into(),
                owner: Owner::Files,
                deleted: true,
            };
            assert_eq!(feature_of(5, feature_row(&feature)), feature);
        }
        for event_type in [
            EventType::FlagUpdated,
            EventType::FlagDeleted,
            EventType::AuditLogCreated,
            EventType::Other("ENVIRONMENT_CREATED".into()),
        ] {
            let (code, name) = event_type_code(&event_type);
            assert_eq!(event_type_of(code, name), event_type);
        }
    }
}

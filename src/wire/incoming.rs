//! What receivers read: a web hook body, checked and read into its types.

use serde::Deserialize;
use time::OffsetDateTime;

use super::{EventType, FlagValue, parse_timestamp};

mod unique_keys;

/// Why a body could not be read as a web hook.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("body is not valid JSON for a web hook: {0}")]
    Json(#[from] serde_json::Error),
    #[error("body is not valid JSON for a web hook: {0}")]
    DuplicateKey(#[from] unique_keys::DuplicateKey),
    #[error("data.timestamp is neither empty nor an RFC 3339 time")]
    BadTimestamp,
    #[error("{event_type} needs {field}")]
    Missing {
        event_type: &'static str,
        field: &'static str,
    },
}

/// A web hook as a receiver reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum IncomingEvent {
    Flag(Box<IncomingFlagEvent>),
    /// `AUDIT_LOG_CREATED` or a type this version does not know: acknowledged, never applied.
    NotApplied(EventType),
}

/// `FLAG_UPDATED` or `FLAG_DELETED`, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingFlagEvent {
    pub deleted: bool,
    pub changed_by: String,
    /// `None` when the sender sent no timestamp or an empty one; any other that does not parse
    /// is refused ([`WireError::BadTimestamp`]), never ranked by arrival.
    pub timestamp: Option<OffsetDateTime>,
    /// The state the event is about: `new_state` of an update, `previous_state` of a deletion.
    pub state: IncomingState,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct IncomingState {
    pub enabled: bool,
    pub environment: IdRef,
    pub feature: IncomingFeature,
    #[serde(default)]
    pub feature_segment: Option<IncomingFeatureSegment>,
    #[serde(default)]
    pub feature_state_value: Option<FlagValue>,
    #[serde(default)]
    pub identity: Option<IdentityRef>,
    #[serde(default)]
    pub identity_identifier: Option<String>,
    #[serde(default)]
    pub multivariate_feature_state_values: Vec<serde_json::Value>,
    /// The feature state's id (Flagsmith's `id`; a document's `django_id`).
    #[serde(default)]
    pub id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct IncomingFeature {
    pub id: u64,
    pub name: String,
    #[serde(default, rename = "type")]
    pub feature_type: Option<String>,
    #[serde(default)]
    pub project: Option<IdRef>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub default_enabled: Option<bool>,
    #[serde(default)]
    pub initial_value: Option<FlagValue>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct IncomingFeatureSegment {
    pub segment: IncomingSegment,
    #[serde(default)]
    pub priority: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct IncomingSegment {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
}

/// `environment` and `project`: an integer (the seed) or an object `{id, name}` (Flagsmith today).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum IdRef {
    Id(u64),
    Object {
        id: u64,
        #[serde(default)]
        name: Option<String>,
    },
}

impl IdRef {
    pub fn id(&self) -> u64 {
        match self {
            IdRef::Id(id) | IdRef::Object { id, .. } => *id,
        }
    }
}

/// `identity`: an integer id (Flagsmith's core identities) or a UUID string (edge identities).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum IdentityRef {
    Id(u64),
    Uuid(String),
}

/// The envelope as almost every body has it, read in one pass: `data` straight into a flag
/// event's fields, whatever the order of the keys (Flagsmith sends `event_type` last).
#[derive(Deserialize)]
struct FlagEnvelope {
    event_type: EventType,
    #[serde(default)]
    data: Option<RawFlagData>,
}

/// The envelope read in two steps, for a body [`FlagEnvelope`] could not read: `data` is read
/// only for the event types that apply one, so another type's data of any shape is acknowledged,
/// and a flag event's is refused with what is wrong in it.
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    event_type: EventType,
    #[serde(default, borrow)]
    data: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct RawFlagData {
    #[serde(default)]
    changed_by: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    new_state: Option<IncomingState>,
    #[serde(default)]
    previous_state: Option<IncomingState>,
}

/// Reads a web hook body. Flag events must carry the state they are about; other event types are
/// returned as [`IncomingEvent::NotApplied`] once the body is valid JSON. A body with a duplicate
/// key in any object is refused first, by a pass over its bytes that builds nothing; the body is
/// then read straight into its types.
pub fn parse_incoming(body: &[u8]) -> Result<IncomingEvent, WireError> {
    unique_keys::check(body)?;
    // Read as text checked once: from bytes, serde_json checks the UTF-8 of every key and string
    // again, a tenth of the read. A body that is not UTF-8 is read from bytes, for its error.
    let envelope = match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str::<FlagEnvelope>(text),
        Err(_) => serde_json::from_slice::<FlagEnvelope>(body),
    };
    let envelope = match envelope {
        Ok(envelope) => envelope,
        Err(_) => read_by_event_type(body)?,
    };
    let deleted = match envelope.event_type {
        EventType::FlagUpdated => false,
        EventType::FlagDeleted => true,
        other => return Ok(IncomingEvent::NotApplied(other)),
    };
    let event_name = if deleted {
        "FLAG_DELETED"
    } else {
        "FLAG_UPDATED"
    };
    let data = envelope.data.ok_or(WireError::Missing {
        event_type: event_name,
        field: "data",
    })?;
    let state = if deleted {
        data.previous_state.or(data.new_state)
    } else {
        data.new_state
    };
    let state = state.ok_or(WireError::Missing {
        event_type: event_name,
        field: if deleted {
            "data.previous_state"
        } else {
            "data.new_state"
        },
    })?;
    let timestamp = match data.timestamp.as_deref() {
        None | Some("") => None,
        Some(text) => Some(parse_timestamp(text).ok_or(WireError::BadTimestamp)?),
    };
    Ok(IncomingEvent::Flag(Box::new(IncomingFlagEvent {
        deleted,
        changed_by: data.changed_by.unwrap_or_default(),
        timestamp,
        state,
    })))
}

fn read_by_event_type(body: &[u8]) -> Result<FlagEnvelope, WireError> {
    let RawEnvelope { event_type, data } = serde_json::from_slice(body)?;
    let data = match event_type {
        EventType::FlagUpdated | EventType::FlagDeleted => data
            .map(|data| serde_json::from_str(data.get()))
            .transpose()?,
        _ => None,
    };
    Ok(FlagEnvelope { event_type, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_value_of_the_wrong_type_is_refused() {
        let body = br#"{"event_type":"FLAG_UPDATED","data":{"new_state":{"enabled":true,"environment":1,"feature":{"id":1,"name":"f"},"feature_state_value":{"nested":1}}}}"#;
        let err = parse_incoming(body).unwrap_err().to_string();
        assert!(err.contains("flag value"), "{err}");
    }

    #[test]
    fn unknown_event_types_are_read_but_not_applied() {
        let event = parse_incoming(br#"{"event_type":"SOMETHING_NEW","data":{"x":1}}"#).unwrap();
        assert_eq!(
            event,
            IncomingEvent::NotApplied(EventType::Other("SOMETHING_NEW".into()))
        );
    }

    #[test]
    fn another_types_data_of_any_shape_is_acknowledged_whatever_the_key_order() {
        // Fields named as a flag event's, of other types: the one pass fails, the second reads.
        let data = r#"{"timestamp":7,"new_state":[1],"log":"x"}"#;
        for body in [
            format!(r#"{{"data":{data},"event_type":"AUDIT_LOG_CREATED"}}"#),
            format!(r#"{{"event_type":"AUDIT_LOG_CREATED","data":{data}}}"#),
        ] {
            let event = parse_incoming(body.as_bytes()).unwrap();
            assert_eq!(event, IncomingEvent::NotApplied(EventType::AuditLogCreated));
        }
        let bad = r#"{"new_state":{"enabled":"yes"}}"#;
        for body in [
            format!(r#"{{"data":{bad},"event_type":"FLAG_UPDATED"}}"#),
            format!(r#"{{"event_type":"FLAG_UPDATED","data":{bad}}}"#),
        ] {
            let err = parse_incoming(body.as_bytes()).unwrap_err().to_string();
            assert!(err.contains("invalid type"), "{err}");
        }
    }

    #[test]
    fn an_update_without_new_state_is_refused() {
        let err = parse_incoming(br#"{"event_type":"FLAG_UPDATED","data":{"timestamp":""}}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "FLAG_UPDATED needs data.new_state");
    }
}

//! The webhook wire format: Flagsmith's environment and audit-log web hooks.
//!
//! Two directions live here. [`FlagEventBody`] and [`AuditLogBody`] are what flagpost *writes*: exactly
//! the seed document's shape (integer `environment` and `project`, every key present, keys in sorted
//! order as Flagsmith's serializer emits them). [`IncomingEvent`] is what a receiver *reads*: every
//! shape a real Flagsmith sends today as well as the seed's, with unknown fields ignored
//! (`wire/incoming.rs`).

use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

mod incoming;
mod number_range;

pub use incoming::{
    IdRef, IdentityRef, IncomingEvent, IncomingFeature, IncomingFeatureSegment, IncomingFlagEvent,
    IncomingSegment, IncomingState, WireError, parse_incoming,
};
pub use number_range::{INTEGER_RANGE, first_integer_out_of_range};

/// The `event_type` of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventType {
    FlagUpdated,
    FlagDeleted,
    AuditLogCreated,
    /// flagpost's own: a segment was created or its name, description or rules changed (Flagsmith
    /// signals this to nobody). Receivers that know only Flagsmith's types acknowledge and ignore it.
    SegmentUpdated,
    /// flagpost's own: a segment was deleted (its overrides each had a `FLAG_DELETED` before it).
    SegmentDeleted,
    /// A type this version does not know; receivers acknowledge and ignore it.
    Other(String),
}

impl EventType {
    pub fn as_str(&self) -> &str {
        match self {
            EventType::FlagUpdated => "FLAG_UPDATED",
            EventType::FlagDeleted => "FLAG_DELETED",
            EventType::AuditLogCreated => "AUDIT_LOG_CREATED",
            EventType::SegmentUpdated => "SEGMENT_UPDATED",
            EventType::SegmentDeleted => "SEGMENT_DELETED",
            EventType::Other(other) => other,
        }
    }

    pub fn parse(s: &str) -> EventType {
        match s {
            "FLAG_UPDATED" => EventType::FlagUpdated,
            "FLAG_DELETED" => EventType::FlagDeleted,
            "AUDIT_LOG_CREATED" => EventType::AuditLogCreated,
            "SEGMENT_UPDATED" => EventType::SegmentUpdated,
            "SEGMENT_DELETED" => EventType::SegmentDeleted,
            other => EventType::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(EventType::parse(&s))
    }
}

/// A flag value as Flagsmith stores it: a string, an integer, a float or a boolean. `None` (in an
/// `Option<FlagValue>`) is JSON null.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FlagValue {
    Bool(bool),
    Integer(i64),
    Float(f64),
    String(String),
}

// Written by hand rather than `#[serde(untagged)]`: one pass with a clear message, instead of
// trying each variant in turn (which builds and drops an error per miss on every read).
impl<'de> Deserialize<'de> for FlagValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = FlagValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a flag value: a string, number, boolean or null")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<FlagValue, E> {
                Ok(FlagValue::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FlagValue, E> {
                Ok(FlagValue::Integer(v))
            }
            // An integer wider than i64 would only be kept as a float, losing digits: refused
            // (see `number_range`), as TOML and JSON readers hand such integers over here.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FlagValue, E> {
                i64::try_from(v)
                    .map(FlagValue::Integer)
                    .map_err(|_| out_of_range(v))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<FlagValue, E> {
                i64::try_from(v)
                    .map(FlagValue::Integer)
                    .map_err(|_| out_of_range(v))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<FlagValue, E> {
                i64::try_from(v)
                    .map(FlagValue::Integer)
                    .map_err(|_| out_of_range(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<FlagValue, E> {
                Ok(FlagValue::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FlagValue, E> {
                Ok(FlagValue::String(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<FlagValue, E> {
                Ok(FlagValue::String(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

fn out_of_range<E: de::Error>(v: impl fmt::Display) -> E {
    E::custom(format_args!(
        "integer {v} is outside the range of a flag value ({INTEGER_RANGE})"
    ))
}

impl fmt::Display for FlagValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagValue::Bool(b) => write!(f, "{b}"),
            FlagValue::Integer(i) => write!(f, "{i}"),
            FlagValue::Float(x) => write!(f, "{x}"),
            FlagValue::String(s) => f.write_str(s),
        }
    }
}

/// Flagsmith's timestamps: `%Y-%m-%dT%H:%M:%S.%fZ` (microseconds), as `time` describes them.
const FLAGSMITH_TIMESTAMP: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Formats a time the way Flagsmith does: `%Y-%m-%dT%H:%M:%S.%fZ` in UTC (microseconds).
///
/// Every change formats one, on the writer thread: written digit by digit, it costs a twentieth of
/// `time`'s interpreted format description, which stays for years outside 0-9999.
pub fn format_timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let year = at.year();
    if !(0..=9999).contains(&year) {
        return at
            .format(FLAGSMITH_TIMESTAMP)
            .expect("a UTC date always formats");
    }
    let mut text = [0u8; 27];
    let mut put = |at: usize, value: u32, digits: u32| {
        for i in 0..digits {
            text[at + i as usize] = b'0' + (value / 10u32.pow(digits - 1 - i) % 10) as u8;
        }
    };
    put(0, year as u32, 4);
    put(5, u8::from(at.month()).into(), 2);
    put(8, at.day().into(), 2);
    put(11, at.hour().into(), 2);
    put(14, at.minute().into(), 2);
    put(17, at.second().into(), 2);
    put(20, at.microsecond(), 6);
    for (at, separator) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ] {
        text[at] = separator;
    }
    String::from_utf8(text.to_vec()).expect("digits and separators are ASCII")
}

/// Parses a webhook `timestamp`. Flagsmith's have 3 or 6 fractional digits and a `Z`; anything RFC
/// 3339 is accepted. An empty or unparseable string gives `None` (the sender told no time).
pub fn parse_timestamp(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

// ---------------------------------------------------------------------------------------------
// What flagpost writes.
// ---------------------------------------------------------------------------------------------

/// `{"data": ..., "event_type": ...}`, the envelope of every web hook.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope<'a, D: Serialize> {
    pub data: &'a D,
    pub event_type: &'a EventType,
}

/// Serialises an envelope to the bytes that are stored, signed and sent.
pub fn envelope_bytes<D: Serialize>(event_type: &EventType, data: &D) -> Vec<u8> {
    // Room for a typical event (a `FLAG_UPDATED` is about 700 bytes): `to_vec` starts at 128
    // and grew three times for each event on the change path.
    let mut body = Vec::with_capacity(1024);
    serde_json::to_writer(&mut body, &Envelope { data, event_type })
        .expect("wire types always serialise");
    body
}

/// `data` of `FLAG_UPDATED` and `FLAG_DELETED`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlagEventBody {
    pub changed_by: String,
    pub new_state: Option<FeatureStateBody>,
    pub previous_state: Option<FeatureStateBody>,
    pub timestamp: String,
}

/// A feature state in the seed's shape: the environment default when `feature_segment` and
/// `identity` are both null, else an override.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureStateBody {
    pub enabled: bool,
    pub environment: u64,
    pub feature: FeatureBody,
    pub feature_segment: Option<FeatureSegmentBody>,
    pub feature_state_value: Option<FlagValue>,
    pub id: u64,
    pub identity: Option<u64>,
    pub identity_identifier: Option<String>,
    /// Present, as Flagsmith always sends it, for a `MULTIVARIATE` feature or a state with
    /// allocations; absent otherwise, as in the seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multivariate_feature_state_values: Option<Vec<MultivariateValueBody>>,
}

/// One allocation of a state, as Flagsmith's web hooks carry it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MultivariateValueBody {
    pub id: u64,
    pub multivariate_feature_option: MultivariateOptionBody,
    pub percentage_allocation: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MultivariateOptionBody {
    pub id: u64,
    pub value: Option<FlagValue>,
}

/// `data` of flagpost's `SEGMENT_UPDATED` and `SEGMENT_DELETED`: the segment whole (id, project,
/// name, description, rules, owner), for the environment the event is sent to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentEventBody<'a, T: Serialize> {
    pub changed_by: String,
    pub environment: u64,
    pub project: u64,
    pub segment: &'a T,
    pub timestamp: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureBody {
    pub created_date: String,
    pub default_enabled: bool,
    pub description: Option<String>,
    pub id: u64,
    pub initial_value: Option<FlagValue>,
    pub name: String,
    pub project: u64,
    #[serde(rename = "type")]
    pub feature_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureSegmentBody {
    pub priority: i64,
    pub segment: SegmentBody,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentBody {
    pub description: Option<String>,
    pub id: u64,
    pub name: String,
}

/// `data` of `AUDIT_LOG_CREATED`, the seed's audit-log object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditLogBody {
    pub author: AuthorBody,
    pub created_date: String,
    pub environment: Option<u64>,
    pub log: String,
    pub project: ProjectBody,
    pub related_object_id: u64,
    pub related_object_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuthorBody {
    pub email: String,
    pub first_name: String,
    pub id: u64,
    pub last_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectBody {
    pub id: u64,
    pub name: String,
    pub organisation: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_use_six_fractional_digits_in_utc() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_583_589_547_040_123_456).unwrap();
        assert_eq!(format_timestamp(at), "2020-03-07T13:59:07.040123Z");
        assert_eq!(
            parse_timestamp("2020-03-07T13:59:07.040Z")
                .unwrap()
                .unix_timestamp(),
            1_583_589_547
        );
        assert_eq!(parse_timestamp(""), None);
        // Digit by digit, as `time`'s format description writes them, across the range written.
        let described = |at: OffsetDateTime| at.format(FLAGSMITH_TIMESTAMP).unwrap();
        for _ in 0..10_000 {
            let nanos = fastrand::i128(-62_167_219_200_000_000_000..253_402_300_799_999_999_999);
            let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            assert_eq!(format_timestamp(at), described(at), "{nanos}");
        }
    }

    #[test]
    fn flag_values_keep_their_json_type() {
        let values: Vec<Option<FlagValue>> =
            serde_json::from_str(r#"["a", 42, 1.5, true, null]"#).unwrap();
        assert_eq!(
            values,
            vec![
                Some(FlagValue::String("a".into())),
                Some(FlagValue::Integer(42)),
                Some(FlagValue::Float(1.5)),
                Some(FlagValue::Bool(true)),
                None
            ]
        );
        assert_eq!(
            serde_json::to_string(&values).unwrap(),
            r#"["a",42,1.5,true,null]"#
        );
    }
}

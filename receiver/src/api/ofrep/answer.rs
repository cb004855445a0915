//! OFREP's request and answer shapes, and how a Flagsmith flag maps onto them. Pure: no I/O.
//! Answers are written field by field ([`write_flag`]); serde's rendering ([`reference_flag`]) is
//! kept as the reference the tests hold it to.
//!
//! - The context's `targetingKey` is the identity's identifier; every other field is a trait.
//!   No `targetingKey` and no other field: the environment's own flags. Traits without a
//!   `targetingKey` are refused (`TARGETING_KEY_MISSING`): Flagsmith evaluates traits only for an
//!   identity, and a percentage split needs a stable key to hash.
//! - A flag whose value is `null` is a boolean flag: its value is `enabled`. Any other flag's
//!   value is its value (string, integer, float or boolean, as Flagsmith holds it) while enabled;
//!   disabled, it has no value (the provider answers the caller's default: OFREP's code default)
//!   and reason `DISABLED`. `metadata.enabled` always tells the Flagsmith state.
//! - Reason: `DISABLED`; `TARGETING_MATCH` for a segment or identity override; `SPLIT` for a
//!   multivariate option chosen by the identity's hash; `STATIC` for the environment's default.
//! - Variant: the multivariate option's key (or `control`) when Flagsmith names one; else what
//!   supplied the value: `default`, the segment's name, `identity_override`, or a keyless
//!   option's value.

use std::borrow::Cow;
use std::collections::HashMap;

use flagsmith_flag_engine::types::{FlagsmithValue, FlagsmithValueType};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::OfrepError;
use crate::evaluation::outcome::write_json;
use crate::evaluation::{FlagOutcome, IDENTITY_OVERRIDE_REASON, IdentityInput, OutcomeValue};

const SEGMENT_REASON: &str = "TARGETING_MATCH; segment=";

/// Reads an OFREP request body: who to evaluate for (`None`: the environment itself). Read
/// without a JSON tree: each context field is borrowed from the body, and only traits are
/// converted (by the engine crate's own reader of values).
pub fn read_request(body: &[u8]) -> Result<Option<IdentityInput>, OfrepError> {
    #[derive(Deserialize)]
    struct RequestBody<'a> {
        #[serde(borrow, default)]
        context: Option<&'a RawValue>,
    }
    let not_json = |error| OfrepError::Parse(format!("the body is not JSON: {error}"));
    // serde would read a list into the struct too.
    if body.trim_ascii_start().first() != Some(&b'{') {
        serde_json::from_slice::<IgnoredAny>(body).map_err(not_json)?;
        return Err(OfrepError::Parse(
            "the body must be a JSON object: {\"context\": {...}}".to_owned(),
        ));
    }
    let request: RequestBody<'_> = serde_json::from_slice(body).map_err(not_json)?;
    let Some(context) = request.context else {
        return Ok(None);
    };
    let ContextFields(fields) = serde_json::from_str(context.get())
        .map_err(|_| OfrepError::InvalidContext("context must be a JSON object".to_owned()))?;
    read_context(fields)
}

/// A context's fields in their order, each value still JSON text.
struct ContextFields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for ContextFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = ContextFields<'de>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(field) = map.next_entry()? {
                    fields.push(field);
                }
                Ok(ContextFields(fields))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// The identity of a context's fields; a field given twice counts as given last, as in a JSON
/// object read whole.
fn read_context(fields: Vec<(String, &RawValue)>) -> Result<Option<IdentityInput>, OfrepError> {
    let mut identifier = None;
    let mut traits = HashMap::with_capacity(fields.len());
    for (name, value) in fields {
        let json = value.get();
        if name == "targetingKey" {
            identifier = match json {
                "null" => None,
                _ => Some(serde_json::from_str::<String>(json).map_err(|_| {
                    OfrepError::InvalidContext("targetingKey must be a string".to_owned())
                })?),
            };
            continue;
        }
        match json.as_bytes().first() {
            // A null trait is an absent one (Flagsmith deletes a trait set to null).
            _ if json == "null" => {
                traits.remove(&name);
            }
            Some(b'{' | b'[') => {
                return Err(OfrepError::InvalidContext(format!(
                    "context field {name:?} is an object or a list: Flagsmith traits are \
                     strings, numbers or booleans"
                )));
            }
            _ => {
                let value: FlagsmithValue = serde_json::from_str(json).map_err(|error| {
                    OfrepError::InvalidContext(format!("context field {name:?}: {error}"))
                })?;
                traits.insert(name, value);
            }
        }
    }
    let identifier = identifier.filter(|key: &String| !key.is_empty());
    match identifier {
        Some(identifier) => Ok(Some(IdentityInput {
            identifier,
            key: None,
            traits,
        })),
        None if traits.is_empty() => Ok(None),
        None => Err(OfrepError::TargetingKeyMissing),
    }
}

/// Appends one flag's answer to `out`: the bytes [`reference_flag`] serialises, written field by
/// field (this is what every answer is made of).
pub fn write_flag(out: &mut Vec<u8>, flag: &FlagOutcome<'_>) {
    out.extend_from_slice(b"{\"key\":");
    write_json(out, flag.name);
    if is_null(&flag.value) {
        out.extend_from_slice(if flag.enabled {
            b",\"value\":true"
        } else {
            b",\"value\":false"
        });
    } else if flag.enabled {
        out.extend_from_slice(b",\"value\":");
        flag.value.write_json(out);
    }
    out.extend_from_slice(b",\"reason\":\"");
    out.extend_from_slice(reason(flag).as_bytes());
    out.extend_from_slice(b"\",\"variant\":");
    write_json(out, &*variant(flag));
    out.extend_from_slice(if flag.enabled {
        b",\"metadata\":{\"enabled\":true,\"featureId\":"
    } else {
        b",\"metadata\":{\"enabled\":false,\"featureId\":"
    });
    out.extend_from_slice(itoa::Buffer::new().format(flag.feature_id).as_bytes());
    out.extend_from_slice(b",\"flagsmithReason\":");
    write_json(out, flag.reason);
    out.extend_from_slice(b"}}");
}

/// One flag as OFREP answers it, as serde writes it: the reference [`write_flag`] is held to.
#[derive(Debug, Serialize)]
pub struct FlagAnswer<'a> {
    key: &'a str,
    /// Absent for a disabled value flag: the provider answers the caller's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
    reason: &'static str,
    variant: Cow<'a, str>,
    metadata: FlagMetadata<'a>,
}

#[derive(Debug, Serialize)]
struct FlagMetadata<'a> {
    enabled: bool,
    #[serde(rename = "featureId")]
    feature_id: u64,
    /// The engine's own words: `TARGETING_MATCH; segment=beta`, `SPLIT; weight=30`, ...
    #[serde(rename = "flagsmithReason")]
    flagsmith_reason: &'a str,
}

/// The answer for one evaluated flag, by serde.
pub fn reference_flag<'a>(flag: &FlagOutcome<'a>) -> FlagAnswer<'a> {
    let value = match (is_null(&flag.value), flag.enabled) {
        (true, enabled) => Some(Value::Bool(enabled)),
        (false, true) => Some(flag.value.to_json()),
        (false, false) => None,
    };
    FlagAnswer {
        key: flag.name,
        value,
        reason: reason(flag),
        variant: variant(flag),
        metadata: FlagMetadata {
            enabled: flag.enabled,
            feature_id: flag.feature_id,
            flagsmith_reason: flag.reason,
        },
    }
}

/// The bulk answer's body, by serde: `{"flags": [...]}`.
pub fn reference_bulk(flags: &[FlagOutcome<'_>]) -> Vec<u8> {
    #[derive(Serialize)]
    struct BulkAnswer<'a> {
        flags: Vec<FlagAnswer<'a>>,
    }
    let flags = flags.iter().map(reference_flag).collect();
    serde_json::to_vec(&BulkAnswer { flags }).expect("an answer serialises")
}

/// Whether Flagsmith holds no value: a boolean flag.
fn is_null(value: &OutcomeValue<'_>) -> bool {
    match value {
        OutcomeValue::Prepared(value, _) | OutcomeValue::Raw(value) => {
            value.value_type == FlagsmithValueType::None
        }
        OutcomeValue::Json(value) => value.is_null(),
    }
}

fn reason(flag: &FlagOutcome<'_>) -> &'static str {
    if !flag.enabled {
        "DISABLED"
    } else if flag.identity_override || flag.reason.starts_with("TARGETING_MATCH") {
        "TARGETING_MATCH"
    } else if flag.reason.starts_with("SPLIT") {
        "SPLIT"
    } else {
        "STATIC"
    }
}

fn variant<'a>(flag: &FlagOutcome<'a>) -> Cow<'a, str> {
    if let Some(variant) = flag.variant {
        return Cow::Borrowed(variant);
    }
    if flag.identity_override || flag.reason == IDENTITY_OVERRIDE_REASON {
        return Cow::Borrowed("identity_override");
    }
    if let Some(segment) = flag.reason.strip_prefix(SEGMENT_REASON) {
        return Cow::Borrowed(segment);
    }
    if !flag.reason.starts_with("SPLIT") {
        return Cow::Borrowed("default");
    }
    // A keyless option is named by its value, where that is a string.
    match flag.value {
        OutcomeValue::Json(Value::String(option)) => Cow::Borrowed(option),
        OutcomeValue::Prepared(value, _) | OutcomeValue::Raw(value)
            if value.value_type == FlagsmithValueType::String =>
        {
            Cow::Borrowed(&value.value)
        }
        other => match other.to_json() {
            Value::String(option) => Cow::Owned(option),
            _ => Cow::Borrowed("default"),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::evaluation::ResolvedFlag;

    fn flag(value: Value, enabled: bool, reason: &str) -> ResolvedFlag {
        ResolvedFlag {
            feature_id: 7,
            name: "banner".into(),
            feature_type: "STANDARD".into(),
            enabled,
            value,
            variant: None,
            reason: reason.into(),
            state_id: None,
            identity_override: false,
            identity_id: None,
        }
    }

    /// The written answer, which must be serde's to the byte.
    fn answer(flag: &ResolvedFlag) -> Value {
        let outcome = FlagOutcome::from(flag);
        let mut written = Vec::new();
        write_flag(&mut written, &outcome);
        let reference = serde_json::to_vec(&reference_flag(&outcome)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&written),
            String::from_utf8_lossy(&reference)
        );
        serde_json::from_slice(&written).unwrap()
    }

    #[test]
    fn a_context_is_an_identity_with_traits_or_the_environment() {
        let body = br#"{"context": {"targetingKey": "u-1", "plan": "pro", "n": 3, "x": null}}"#;
        let identity = read_request(body).unwrap().unwrap();
        assert_eq!(identity.identifier, "u-1");
        assert_eq!(identity.traits.len(), 2);
        // Fields as JSON allows them: spaced, escaped, given twice (the last counts), with
        // other fields beside the context.
        let body = br#" { "flagKey": 1, "context" : { "targetingKey" : "u\u002d2", "pl\"an": 1.5,
            "gone": "x", "gone": null, "n": 3, "n": "3", "on": true } } "#;
        let identity = read_request(body).unwrap().unwrap();
        assert_eq!(identity.identifier, "u-2");
        let mut traits: Vec<_> = identity.traits.iter().collect();
        traits.sort_by_key(|(name, _)| name.as_str());
        let traits: Vec<_> = traits
            .into_iter()
            .map(|(name, value)| {
                (
                    name.as_str(),
                    value.value.as_str(),
                    value.value_type.clone(),
                )
            })
            .collect();
        assert_eq!(
            traits,
            [
                ("n", "3", FlagsmithValueType::String),
                ("on", "true", FlagsmithValueType::Bool),
                ("pl\"an", "1.5", FlagsmithValueType::Float),
            ]
        );
        for empty in [
            br#"{"context": null}"#,
            &b"{}"[..],
            br#"{"context": {}}"#,
            br#"{"context": {"targetingKey": ""}}"#,
        ] {
            assert!(read_request(empty).unwrap().is_none());
        }
    }

    #[test]
    fn bad_requests_get_the_protocols_error_codes() {
        let code = |body: &[u8]| read_request(body).unwrap_err().code();
        assert_eq!(code(b"{not json"), "PARSE_ERROR");
        assert_eq!(code(b"[]"), "PARSE_ERROR");
        assert_eq!(code(b""), "PARSE_ERROR");
        assert_eq!(code(br#"{"context": {}} x"#), "PARSE_ERROR");
        assert_eq!(code(br#"{"context": {"a": 1,}}"#), "PARSE_ERROR");
        assert_eq!(code(br#"{"context": "u"}"#), "INVALID_CONTEXT");
        assert_eq!(code(br#"{"context": 3}"#), "INVALID_CONTEXT");
        assert_eq!(
            code(br#"{"context": {"targetingKey": 3}}"#),
            "INVALID_CONTEXT"
        );
        let nested = br#"{"context": {"targetingKey": "u", "user": {"a": 1}}}"#;
        assert_eq!(code(nested), "INVALID_CONTEXT");
        assert_eq!(
            code(br#"{"context": {"plan": "pro"}}"#),
            "TARGETING_KEY_MISSING"
        );
    }

    #[test]
    fn flagsmith_states_map_to_values_reasons_and_variants() {
        let on = answer(&flag(json!("blue"), true, "DEFAULT"));
        assert_eq!(on["value"], "blue");
        assert_eq!(on["reason"], "STATIC");
        assert_eq!(on["variant"], "default");
        assert_eq!(
            on["metadata"],
            json!({"enabled": true, "featureId": 7, "flagsmithReason": "DEFAULT"})
        );
        let off = answer(&flag(json!(5), false, "DEFAULT"));
        assert!(off.get("value").is_none(), "{off}");
        assert_eq!(off["reason"], "DISABLED");
        let boolean_off = answer(&flag(Value::Null, false, "DEFAULT"));
        assert_eq!(boolean_off["value"], false);
        assert_eq!(boolean_off["reason"], "DISABLED");
        let segment = answer(&flag(json!(1.5), true, "TARGETING_MATCH; segment=beta"));
        assert_eq!(
            (&segment["reason"], &segment["variant"]),
            (&json!("TARGETING_MATCH"), &json!("beta"))
        );
        let split = answer(&flag(json!("wizard"), true, "SPLIT; weight=30"));
        assert_eq!(
            (&split["reason"], &split["variant"]),
            (&json!("SPLIT"), &json!("wizard"))
        );
        let mut keyed = flag(json!(7), true, "SPLIT; weight=30");
        keyed.variant = Some("seven".into());
        assert_eq!(answer(&keyed)["variant"], "seven");
        let mut overridden = flag(json!(false), true, IDENTITY_OVERRIDE_REASON);
        overridden.identity_override = true;
        let overridden = answer(&overridden);
        assert_eq!(overridden["value"], false);
        assert_eq!(overridden["reason"], "TARGETING_MATCH");
        assert_eq!(overridden["variant"], "identity_override");
        let mut quoted = flag(json!("a \"b\"\n"), true, "TARGETING_MATCH; segment=x\"y");
        quoted.name = "k\u{e9}\\".into();
        assert_eq!(answer(&quoted)["variant"], "x\"y");
        assert_eq!(
            answer(&flag(json!(2), true, "SPLIT; weight=5"))["variant"],
            "default"
        );
    }
}

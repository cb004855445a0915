//! One evaluated flag, borrowed from the prepared environment it was evaluated on: what answers
//! are written from without copying names, reasons or values per request.

use std::io::Write;

use flagsmith_flag_engine::types::FlagsmithValue;

use crate::evaluation::prepared::ResolvedFlag;
use crate::evaluation::value_json;

/// A flag's value.
#[derive(Debug, Clone, Copy)]
pub enum OutcomeValue<'a> {
    /// A value of the prepared environment, with its JSON rendered when it was prepared.
    Prepared(&'a FlagsmithValue, &'a str),
    /// A value only this request sees (an identity override).
    Raw(&'a FlagsmithValue),
    /// A value as JSON already (an evaluation made by the engine crate).
    Json(&'a serde_json::Value),
}

impl OutcomeValue<'_> {
    /// The value as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            OutcomeValue::Prepared(value, _) | OutcomeValue::Raw(value) => value_json(value),
            OutcomeValue::Json(value) => (*value).clone(),
        }
    }

    /// Appends the value's JSON to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            OutcomeValue::Prepared(_, json) => out.extend_from_slice(json.as_bytes()),
            OutcomeValue::Raw(value) => write_json(out, &value_json(value)),
            OutcomeValue::Json(value) => write_json(out, value),
        }
    }
}

/// Appends `value`'s JSON to `out` (writing to a vector cannot fail).
pub fn write_json(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    serde_json::to_writer(out.by_ref(), value).expect("JSON writes to a vector");
}

/// One flag as evaluated for an identity; see [`ResolvedFlag`] for each field.
#[derive(Debug, Clone, Copy)]
pub struct FlagOutcome<'a> {
    pub feature_id: u64,
    pub name: &'a str,
    pub feature_type: &'a str,
    pub enabled: bool,
    pub value: OutcomeValue<'a>,
    pub variant: Option<&'a str>,
    pub reason: &'a str,
    /// The segment whose override decided it.
    pub segment: Option<&'a str>,
    pub state_id: Option<u64>,
    pub identity_override: bool,
    pub identity_id: Option<u64>,
    /// Which of the flags the prepared environment can give this is, below
    /// [`crate::evaluation::PreparedEnvironment::prepared_outcomes`]: while the environment is
    /// unchanged the same number is always the same flag, so an answer may render it once.
    /// `None` for a flag of this request's own (an identity override, an engine evaluation).
    pub prepared: Option<u32>,
}

impl FlagOutcome<'_> {
    /// The flag, owned.
    pub fn to_resolved(&self) -> ResolvedFlag {
        ResolvedFlag {
            feature_id: self.feature_id,
            name: self.name.to_owned(),
            feature_type: self.feature_type.to_owned(),
            enabled: self.enabled,
            value: self.value.to_json(),
            variant: self.variant.map(str::to_owned),
            reason: self.reason.to_owned(),
            state_id: self.state_id,
            identity_override: self.identity_override,
            identity_id: self.identity_id,
        }
    }
}

impl<'a> From<&'a ResolvedFlag> for FlagOutcome<'a> {
    fn from(flag: &'a ResolvedFlag) -> FlagOutcome<'a> {
        FlagOutcome {
            feature_id: flag.feature_id,
            name: &flag.name,
            feature_type: &flag.feature_type,
            enabled: flag.enabled,
            value: OutcomeValue::Json(&flag.value),
            variant: flag.variant.as_deref(),
            reason: &flag.reason,
            segment: flag.reason.strip_prefix("TARGETING_MATCH; segment="),
            state_id: flag.state_id,
            identity_override: flag.identity_override,
            identity_id: flag.identity_id,
            prepared: None,
        }
    }
}

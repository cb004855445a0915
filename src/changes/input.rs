//! What a change asks for, as the API and flag files give it, and the checks on each field.

use serde::{Deserialize, Serialize};

use crate::error::WriteError;
use crate::wire::FlagValue;

/// A feature's definition, as the API and flag files give it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewFeature {
    pub project: u64,
    pub name: String,
    #[serde(default = "standard", rename = "type")]
    pub feature_type: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub initial_value: Option<FlagValue>,
    #[serde(default)]
    pub default_enabled: bool,
}

fn standard() -> String {
    "STANDARD".to_owned()
}

/// Fields of a feature that can change after creation; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureUpdate {
    #[serde(default, rename = "type")]
    pub feature_type: Option<String>,
    #[serde(default, with = "present")]
    pub description: Option<Option<String>>,
    #[serde(default, with = "present")]
    pub initial_value: Option<Option<FlagValue>>,
    #[serde(default)]
    pub default_enabled: Option<bool>,
}

/// A state to set; absent fields keep their current value (or, for a new override, the
/// environment default's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateUpdate {
    #[serde(default)]
    pub enabled: Option<bool>,
    /// `Some(None)` sets the value to null; `None` leaves it.
    #[serde(default, with = "present")]
    pub value: Option<Option<FlagValue>>,
    /// Segment overrides only.
    #[serde(default)]
    pub segment_name: Option<String>,
    #[serde(default)]
    pub priority: Option<i64>,
}

/// Tells "absent" (`None`) from "null" (`Some(None)`) in JSON bodies.
mod present {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        value: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

pub const MAX_NAME_LEN: usize = 150;
pub const MAX_IDENTIFIER_LEN: usize = 2000;

pub fn validate_feature_name(name: &str) -> Result<(), WriteError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(WriteError::Invalid(format!(
            "feature name {name:?} must be 1 to {MAX_NAME_LEN} letters, digits, '_', '-' or '.'"
        )))
    }
}

pub fn validate_identifier(identifier: &str) -> Result<(), WriteError> {
    if identifier.is_empty() || identifier.len() > MAX_IDENTIFIER_LEN || identifier.contains('\0') {
        return Err(WriteError::Invalid(format!(
            "identity identifier must be 1 to {MAX_IDENTIFIER_LEN} bytes without NUL"
        )));
    }
    Ok(())
}

pub(super) fn validate_value(value: &Option<FlagValue>) -> Result<(), WriteError> {
    if let Some(FlagValue::Float(x)) = value
        && !x.is_finite()
    {
        return Err(WriteError::Invalid(
            "a flag value must be a finite number".into(),
        ));
    }
    if let Some(FlagValue::String(s)) = value
        && s.len() > 20_000
    {
        return Err(WriteError::Invalid(
            "a flag value string must be at most 20000 bytes".into(),
        ));
    }
    Ok(())
}

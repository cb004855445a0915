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
    /// Replaces the state's multivariate allocations (options left out get none).
    #[serde(default)]
    pub multivariate_feature_state_values: Option<Vec<super::AllocationInput>>,
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

/// The feature types Flagsmith gives its features today. (Its "test endpoint" sample still says
/// `CONFIG`, a type from before remote config merged into `STANDARD`; receivers read any type, but
/// flagpost only makes these.)
pub const FEATURE_TYPES: [&str; 2] = ["STANDARD", "MULTIVARIATE"];

/// A feature name must be usable as a path segment of every route and every SDK's URL: 1 to
/// [`MAX_NAME_LEN`] of `A-Z a-z 0-9 _ - .`, not made only of dots (clients normalise `.` and `..`
/// out of URLs) and not only of digits (routes take a number as a feature id).
pub fn validate_feature_name(name: &str) -> Result<(), WriteError> {
    let rule = || {
        format!(
            "must be 1 to {MAX_NAME_LEN} letters, digits, '_', '-' or '.', \
             not only dots and not only digits"
        )
    };
    let shown = || {
        let mut shown: String = name.chars().take(40).collect();
        if shown.len() < name.len() {
            shown.push('…');
        }
        shown
    };
    let allowed = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    let problem = if !allowed {
        Some(rule())
    } else if name.chars().all(|c| c == '.') {
        Some("must not be only dots: URLs cannot carry it".to_owned())
    } else if name.chars().all(|c| c.is_ascii_digit()) {
        Some("must not be only digits: routes read a number as a feature id".to_owned())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(WriteError::Invalid(format!(
            "feature name {:?} {problem}",
            shown()
        ))),
    }
}

/// A feature's `type` must be one of [`FEATURE_TYPES`].
pub fn validate_feature_type(feature_type: &str) -> Result<(), WriteError> {
    if FEATURE_TYPES.contains(&feature_type) {
        return Ok(());
    }
    Err(WriteError::Invalid(format!(
        "type must be {} (as in Flagsmith)",
        FEATURE_TYPES.join(" or ")
    )))
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

//! The flag file format: `<environment name>.toml` declares the desired state of the features it
//! names in that environment, overrides included.
//!
//! ```toml
//! [features.dark_mode]
//! enabled = true
//! value = "v2"                 # string, integer (64-bit), float or boolean; leave out for null
//! description = "Dark theme"   # optional
//! type = "STANDARD"            # optional: STANDARD or MULTIVARIATE
//!
//! [features.dark_mode.identities.user-42]
//! enabled = false
//! value = "identity-value"
//!
//! [[features.dark_mode.segments]]
//! name = "beta_users"          # a segment of `<project>.segments.toml` ([`super::segment_file`]),
//! priority = 0                 # or `id = 9` for an override of a segment id defined nowhere
//! enabled = true
//! value = "segment-value"
//!
//! [[features.dark_mode.options]]  # multivariate options; `allocation` is this environment's
//! value = "grid"                  # share (0-100, summing to at most 100), and the default
//! allocation = 50                 # allocation of an option the file adds
//! ```
//!
//! An option is named by its value. An option a file stops listing gets no allocation in that
//! environment; options are never deleted by files (another environment may still list them).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::changes::{validate_feature_name, validate_feature_type, validate_identifier};
use crate::wire::FlagValue;

/// A flag file that parsed and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct FlagFile {
    pub path: PathBuf,
    /// The environment it is for: the file's name without `.toml`.
    pub environment: String,
    pub features: BTreeMap<String, DesiredFeature>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredFeature {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub value: Option<FlagValue>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, rename = "type")]
    pub feature_type: Option<String>,
    #[serde(default)]
    pub identities: BTreeMap<String, DesiredState>,
    #[serde(default)]
    pub segments: Vec<DesiredSegment>,
    #[serde(default)]
    pub options: Vec<DesiredOption>,
}

/// A multivariate option and this environment's allocation of it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredOption {
    pub value: FlagValue,
    #[serde(default)]
    pub allocation: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub value: Option<FlagValue>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredSegment {
    /// Absent for a segment defined in the project's segment file, found by `name`.
    #[serde(default)]
    pub id: Option<u64>,
    pub name: String,
    #[serde(default)]
    pub priority: i64,
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub value: Option<FlagValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    features: BTreeMap<String, Spanned<DesiredFeature>>,
}

/// Why a flag file was not applied: the file, the line when known, and the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct FlagFileError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for FlagFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The environment a flag file is for, from its name; `None` for files that are not flag files
/// (other extensions, hidden files, editor leftovers, segment files).
pub fn environment_of(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with('.') || name.ends_with(super::segment_file::SEGMENT_FILE_SUFFIX) {
        return None;
    }
    name.strip_suffix(".toml").map(str::to_owned)
}

/// Parses and validates a flag file's text. Every check that does not need the store is made here,
/// so a file that fails applies nothing.
pub fn parse(path: &Path, text: &str) -> Result<FlagFile, FlagFileError> {
    let error = |line, message: String| FlagFileError {
        path: path.to_path_buf(),
        line,
        message,
    };
    let environment = environment_of(path)
        .ok_or_else(|| error(None, "a flag file's name must end in .toml".into()))?;
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|span| line_of(text, span.start));
        error(line, e.message().to_owned())
    })?;
    let mut features = BTreeMap::new();
    for (name, spanned) in raw.features {
        let line = Some(line_of(text, spanned.span().start));
        let feature = spanned.into_inner();
        validate_feature_name(&name).map_err(|e| error(line, e.to_string()))?;
        if let Some(feature_type) = &feature.feature_type {
            validate_feature_type(feature_type)
                .map_err(|e| error(line, format!("feature {name}: {e}")))?;
        }
        for value in std::iter::once(&feature.value)
            .chain(feature.identities.values().map(|s| &s.value))
            .chain(feature.segments.iter().map(|s| &s.value))
        {
            if let Some(FlagValue::Float(x)) = value
                && !x.is_finite()
            {
                return Err(error(
                    line,
                    format!("feature {name}: values must be finite"),
                ));
            }
        }
        for identifier in feature.identities.keys() {
            validate_identifier(identifier)
                .map_err(|e| error(line, format!("feature {name}: {e}")))?;
        }
        let mut segment_ids = std::collections::BTreeSet::new();
        for segment in &feature.segments {
            let shown = segment.id.map_or(segment.name.clone(), |id| id.to_string());
            if segment.id.is_some_and(|id| i64::try_from(id).is_err()) {
                return Err(error(
                    line,
                    format!(
                        "feature {name}: segment id {shown} is outside the range taken ({})",
                        crate::wire::INTEGER_RANGE
                    ),
                ));
            }
            if !segment_ids.insert((segment.id, segment.id.is_none().then_some(&segment.name))) {
                return Err(error(
                    line,
                    format!("feature {name}: segment {shown} is declared twice"),
                ));
            }
            if segment.name.is_empty() {
                return Err(error(
                    line,
                    format!("feature {name}: segment {shown} has an empty name"),
                ));
            }
        }
        check_options(&feature.options).map_err(|e| error(line, format!("feature {name}: {e}")))?;
        features.insert(name, feature);
    }
    Ok(FlagFile {
        path: path.to_path_buf(),
        environment,
        features,
    })
}

/// Each option listed once, allocations from 0 to 100 summing to at most 100.
fn check_options(options: &[DesiredOption]) -> Result<(), String> {
    let mut sum = 0.0;
    for (i, option) in options.iter().enumerate() {
        if options[..i].iter().any(|o| o.value == option.value) {
            return Err(format!("option {} is listed twice", option.value));
        }
        if !(option.allocation.is_finite() && (0.0..=100.0).contains(&option.allocation)) {
            return Err(format!(
                "option {}: allocation must be a number from 0 to 100",
                option.value
            ));
        }
        sum += option.allocation;
    }
    if sum > 100.0 + 1e-9 {
        return Err(format!(
            "option allocations sum to {sum}; they must sum to at most 100"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> PathBuf {
        PathBuf::from("flags/Development.toml")
    }

    #[test]
    fn a_full_file_parses() {
        let file = parse(
            &path(),
            r#"
[features.dark_mode]
enabled = true
value = "v2"

[features.dark_mode.identities.user-42]
value = 7

[[features.dark_mode.segments]]
id = 9
name = "beta"
enabled = true
value = 1.5
"#,
        )
        .unwrap();
        assert_eq!(file.environment, "Development");
        let feature = &file.features["dark_mode"];
        assert_eq!(feature.value, Some(FlagValue::String("v2".into())));
        assert_eq!(
            feature.identities["user-42"].value,
            Some(FlagValue::Integer(7))
        );
        assert_eq!(feature.segments[0].value, Some(FlagValue::Float(1.5)));
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let err = parse(
            &path(),
            "[features.ok]\nenabled = true\n\n[features.x]\nenabld = true\n",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(5), "{err}");
        assert!(
            err.to_string().starts_with("flags/Development.toml:5: "),
            "{err}"
        );

        let err = parse(&path(), "\n\n[features.\"bad name\"]\nenabled = true\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.message.contains("bad name"), "{err}");
    }

    #[test]
    fn a_value_of_another_type_is_refused() {
        let err = parse(&path(), "[features.f]\nvalue = 1979-05-27\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }
}

//! Segment files: `<flag_files.dir>/<project name>.segments.toml` declares every segment of that
//! project that the files own, with its rules, in one place a reviewer can read. Environment flag
//! files then name these segments in their overrides (`[[features.x.segments]] name = "beta"`).
//!
//! ```toml
//! [segments.beta_users]
//! description = "Asked for early access"   # optional
//!
//! [[segments.beta_users.rules]]
//! type = "ALL"                             # ALL, ANY or NONE
//!
//! [[segments.beta_users.rules.conditions]]
//! property = "plan"
//! operator = "EQUAL"                       # any operator Flagsmith's engine evaluates
//! value = "beta"
//!
//! [[segments.beta_users.rules.rules]]      # rules nest
//! type = "ANY"
//! conditions = [
//!   { property = "app_version", operator = "GREATER_THAN_INCLUSIVE", value = "2.1.0:semver" },
//!   { operator = "PERCENTAGE_SPLIT", value = "30" },
//! ]
//! ```
//!
//! Ownership is as for features: a segment the file declares belongs to the files, the API cannot
//! change it, and the file cannot declare a segment made through the API. A segment dropped from
//! the file is deleted (its overrides with it); a file removed or emptied deletes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::file::FlagFileError;
use crate::changes::{
    Changes, FlagStore, NewSegment, Owner, SegmentRule, SegmentUpdate, validate_segment,
};
use crate::error::WriteError;

/// How a segment file's name ends.
pub const SEGMENT_FILE_SUFFIX: &str = ".segments.toml";

/// A segment file that parsed and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentFile {
    pub path: PathBuf,
    /// The project it is for: the file's name without `.segments.toml`.
    pub project: String,
    pub segments: BTreeMap<String, DeclaredSegment>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredSegment {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub rules: Vec<SegmentRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSegmentFile {
    #[serde(default)]
    segments: BTreeMap<String, Spanned<DeclaredSegment>>,
}

/// The project a segment file is for, from its name; `None` for any other file.
pub fn project_of(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with('.') {
        return None;
    }
    name.strip_suffix(SEGMENT_FILE_SUFFIX)
        .filter(|project| !project.is_empty())
        .map(str::to_owned)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses a segment file and checks every segment's name and rules, so that a file that fails
/// applies nothing.
pub fn parse_segment_file(path: &Path, text: &str) -> Result<SegmentFile, FlagFileError> {
    let error = |line, message: String| FlagFileError {
        path: path.to_path_buf(),
        line,
        message,
    };
    let project = project_of(path).ok_or_else(|| {
        error(
            None,
            format!("a segment file's name must end in {SEGMENT_FILE_SUFFIX}"),
        )
    })?;
    let raw: RawSegmentFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|span| line_of(text, span.start));
        error(line, e.message().to_owned())
    })?;
    let mut segments = BTreeMap::new();
    for (name, spanned) in raw.segments {
        let line = Some(line_of(text, spanned.span().start));
        let segment = spanned.into_inner();
        validate_segment(&name, segment.description.as_deref(), &segment.rules)
            .map_err(|e| error(line, format!("segment {name}: {e}")))?;
        segments.insert(name, segment);
    }
    Ok(SegmentFile {
        path: path.to_path_buf(),
        project,
        segments,
    })
}

/// Makes project `project`'s file-owned segments match `file`, in one transaction.
pub fn apply_segment_file<S: FlagStore>(
    changes: &mut Changes<S>,
    project: u64,
    file: &SegmentFile,
) -> Result<(), WriteError> {
    for (name, declared) in &file.segments {
        match changes.segment_by_name(project, name)? {
            Some(existing) if existing.owner == Owner::Api => {
                return Err(WriteError::SegmentManagedByApi(name.clone()));
            }
            Some(existing) => {
                let update = SegmentUpdate {
                    name: None,
                    description: Some(declared.description.clone()),
                    rules: Some(declared.rules.clone()),
                };
                changes.update_segment(existing.id, &update, Owner::Files)?;
            }
            None => {
                let new = NewSegment {
                    project,
                    name: name.clone(),
                    description: declared.description.clone(),
                    rules: declared.rules.clone(),
                };
                changes.create_segment(&new, Owner::Files)?;
            }
        }
    }
    for segment in changes.store.project_segments(project)? {
        if segment.owner == Owner::Files && !file.segments.contains_key(&segment.name) {
            changes.delete_segment(segment.id, Owner::Files)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_file_parses_with_nested_rules() {
        let path = PathBuf::from("flags/Default.segments.toml");
        let file = parse_segment_file(
            &path,
            r#"
[segments.beta]
description = "early access"

[[segments.beta.rules]]
type = "ALL"

[[segments.beta.rules.conditions]]
property = "plan"
operator = "EQUAL"
value = "beta"

[[segments.beta.rules.rules]]
type = "ANY"
conditions = [{ operator = "PERCENTAGE_SPLIT", value = "30" }]
"#,
        )
        .unwrap();
        assert_eq!(file.project, "Default");
        let beta = &file.segments["beta"];
        assert_eq!(beta.rules[0].conditions[0].operator, "EQUAL");
        assert_eq!(beta.rules[0].rules[0].rule_type, "ANY");
    }

    #[test]
    fn a_bad_rule_is_refused_with_its_line() {
        let path = PathBuf::from("flags/Default.segments.toml");
        let err = parse_segment_file(
            &path,
            "\n[segments.bad]\nrules = [{ type = \"ALL\", conditions = [{ property = \"n\", operator = \"MODULO\", value = \"3\" }] }]\n",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.message.contains("divisor|remainder"), "{err}");
    }
}

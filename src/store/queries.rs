//! What the API reads: features, and an environment's document.
//!
//! The document is read in one read transaction together with the last committed sequence, so a
//! receiver that applies it and then every event with a greater sequence misses nothing.

use redb::{ReadTransaction, ReadableTable};

use super::rows::{feature_of, feature_states, state_key_of, state_of};
use super::schema::{FEATURES, META, STATES};
use super::segments::{feature_options, project_segments, state_allocations};
use super::{StoreError, last_sequence};
use crate::changes::{
    EnvironmentRecord, FeatureRecord, MultivariateOption, SegmentRecord, StateKey, StateRecord,
};
use crate::document::{
    EnvironmentDocument, EnvironmentInfo, FeatureDocument, FeatureInfo, IdentityOverride,
    ProjectInfo, SegmentInfo, SegmentOverride,
};

/// A live feature.
pub fn live_feature(txn: &ReadTransaction, id: u64) -> Result<Option<FeatureRecord>, StoreError> {
    let table = txn.open_table(FEATURES)?;
    let feature = table.get(id)?.map(|v| feature_of(id, v.value()));
    Ok(feature.filter(|f| !f.deleted))
}

/// Every feature record (live and tombstones) of a project.
pub fn project_features(
    txn: &ReadTransaction,
    project: u64,
) -> Result<Vec<FeatureRecord>, StoreError> {
    let table = txn.open_table(FEATURES)?;
    let mut features = Vec::new();
    for entry in table.iter()? {
        let (id, row) = entry?;
        let feature = feature_of(id.value(), row.value());
        if feature.project == project {
            features.push(feature);
        }
    }
    Ok(features)
}

/// An environment's document, as of the last committed event.
pub fn read_document(
    txn: &ReadTransaction,
    environment: &EnvironmentRecord,
) -> Result<EnvironmentDocument, StoreError> {
    let last_sequence = last_sequence(&txn.open_table(META)?)?;
    let states = txn.open_table(STATES)?;
    let mut features = Vec::new();
    let mut deleted_feature_ids = Vec::new();
    for feature in project_features(txn, environment.project)? {
        if feature.deleted {
            deleted_feature_ids.push(feature.id);
            continue;
        }
        let mut document = FeatureDocument {
            feature: FeatureInfo::from(&feature),
            enabled: feature.default_enabled,
            value: feature.initial_value.clone(),
            identity_overrides: Vec::new(),
            segment_overrides: Vec::new(),
        };
        let (env, id) = (environment.id, feature.id);
        for entry in states.range(feature_states(env, id))? {
            let (key, value) = entry?;
            let state = state_of(value.value());
            match state_key_of(key.value().2) {
                Some(StateKey::Default) => {
                    document.enabled = state.enabled;
                    document.value = state.value;
                }
                Some(StateKey::Identity(identifier)) => {
                    document.identity_overrides.push(IdentityOverride {
                        identifier,
                        enabled: state.enabled,
                        value: state.value,
                    })
                }
                Some(StateKey::Segment(segment)) => {
                    document.segment_overrides.push(SegmentOverride {
                        segment: SegmentInfo {
                            id: segment,
                            name: state.segment_name.unwrap_or_default(),
                        },
                        priority: state.priority.unwrap_or(0),
                        enabled: state.enabled,
                        value: state.value,
                    })
                }
                None => {}
            }
        }
        features.push(document);
    }
    Ok(EnvironmentDocument {
        environment: EnvironmentInfo {
            id: environment.id,
            name: environment.name.clone(),
            project: ProjectInfo {
                id: environment.project,
                name: environment.project_name.clone(),
            },
        },
        last_sequence,
        features,
        deleted_feature_ids,
    })
}

/// What an environment document shows changes with: an environment's states (and their
/// allocations), or its project's features, multivariate options and segments. The store counts
/// the commits that changed each, in `META`, in the commit that made the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ContentScope {
    Environment(u64),
    Project(u64),
}

/// The `META` row counting `scope`'s changes.
pub fn change_count_key(scope: ContentScope) -> String {
    match scope {
        ContentScope::Environment(id) => format!("changes_environment_{id}"),
        ContentScope::Project(id) => format!("changes_project_{id}"),
    }
}

/// How many commits changed what `environment`'s document shows: its own count and its
/// project's. While both stand, so does the document (bar its `last_sequence`).
pub fn change_counts(
    txn: &ReadTransaction,
    environment: &EnvironmentRecord,
) -> Result<(u64, u64), StoreError> {
    let meta = txn.open_table(META)?;
    let count = |scope| -> Result<u64, StoreError> {
        let key = change_count_key(scope);
        Ok(meta.get(key.as_str())?.map_or(0, |v| v.value()))
    };
    Ok((
        count(ContentScope::Environment(environment.id))?,
        count(ContentScope::Project(environment.project))?,
    ))
}

/// Everything Flagsmith's environment document says of an environment, as stored: what
/// [`crate::envdoc`] writes the document from.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentContent {
    /// Every event up to this sequence is reflected here; none after it is.
    pub last_sequence: u64,
    /// Live features, by id.
    pub features: Vec<FeatureContent>,
    /// The project's segments, by id.
    pub segments: Vec<SegmentRecord>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FeatureContent {
    pub feature: FeatureRecord,
    pub options: Vec<MultivariateOption>,
    /// The environment default first, then identity overrides, then segment overrides, each
    /// with its multivariate allocations.
    pub states: Vec<(StateKey, StateRecord)>,
}

/// An environment's content, as of the last committed event (one read transaction).
pub fn read_environment_content(
    txn: &ReadTransaction,
    environment: &EnvironmentRecord,
) -> Result<EnvironmentContent, StoreError> {
    let last_sequence = last_sequence(&txn.open_table(META)?)?;
    let table = txn.open_table(STATES)?;
    let mut features = Vec::new();
    for feature in project_features(txn, environment.project)? {
        if feature.deleted {
            continue;
        }
        let mut states = Vec::new();
        for entry in table.range(feature_states(environment.id, feature.id))? {
            let (key, row) = entry?;
            let Some(state_key) = state_key_of(key.value().2) else {
                continue;
            };
            let mut state = state_of(row.value());
            state.multivariate = state_allocations(txn, environment.id, feature.id, &state_key)?;
            states.push((state_key, state));
        }
        features.push(FeatureContent {
            options: feature_options(txn, feature.id)?,
            feature,
            states,
        });
    }
    Ok(EnvironmentContent {
        last_sequence,
        features,
        segments: project_segments(txn, environment.project)?,
    })
}

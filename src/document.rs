//! An environment's full state as one document: what receivers bootstrap from.
//!
//! It is read in one read transaction together with the last committed sequence, so a receiver
//! that applies it and then every event with a greater sequence misses nothing.
//!
//! These types are the one contract: flagpost writes the document with them and
//! flagpost-receiver reads it with them. Fields a receiver can do without are `#[serde(default)]`,
//! so a document that leaves them out still loads; what flagpost writes is unchanged.

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::store::tables::{FEATURES, META, STATES};
use crate::store::{
    EnvironmentRecord, FeatureRecord, StateKey, StateRecord, StoreError, last_sequence,
};
use crate::wire::FlagValue;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentDocument {
    pub environment: EnvironmentInfo,
    /// Every event up to this sequence is reflected here; none after it is.
    pub last_sequence: u64,
    #[serde(default)]
    pub features: Vec<FeatureDocument>,
    /// Deleted features of the project: a receiver keeps them deleted whatever arrives late.
    #[serde(default)]
    pub deleted_feature_ids: Vec<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentInfo {
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub project: ProjectInfo,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectInfo {
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureDocument {
    pub feature: FeatureInfo,
    pub enabled: bool,
    pub value: Option<FlagValue>,
    #[serde(default)]
    pub identity_overrides: Vec<IdentityOverride>,
    #[serde(default)]
    pub segment_overrides: Vec<SegmentOverride>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureInfo {
    pub id: u64,
    pub name: String,
    #[serde(rename = "type", default)]
    pub feature_type: String,
    pub description: Option<String>,
    pub initial_value: Option<FlagValue>,
    #[serde(default)]
    pub default_enabled: bool,
    #[serde(default)]
    pub created_date: String,
}

impl From<&FeatureRecord> for FeatureInfo {
    fn from(f: &FeatureRecord) -> Self {
        FeatureInfo {
            id: f.id,
            name: f.name.clone(),
            feature_type: f.feature_type.clone(),
            description: f.description.clone(),
            initial_value: f.initial_value.clone(),
            default_enabled: f.default_enabled,
            created_date: f.created_date.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IdentityOverride {
    pub identifier: String,
    pub enabled: bool,
    pub value: Option<FlagValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SegmentOverride {
    pub segment: SegmentInfo,
    #[serde(default)]
    pub priority: i64,
    pub enabled: bool,
    pub value: Option<FlagValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SegmentInfo {
    pub id: u64,
    #[serde(default)]
    pub name: String,
}

/// Every feature record (live and tombstones) of a project.
pub fn project_features(
    txn: &ReadTransaction,
    project: u64,
) -> Result<Vec<FeatureRecord>, StoreError> {
    let table = txn.open_table(FEATURES)?;
    let mut features = Vec::new();
    for entry in table.iter()? {
        let feature: FeatureRecord = serde_json::from_str(entry?.1.value())?;
        if feature.project == project {
            features.push(feature);
        }
    }
    Ok(features)
}

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
        for entry in states.range((env, id, "")..(env, id + 1, ""))? {
            let (key, value) = entry?;
            let state: StateRecord = serde_json::from_str(value.value())?;
            match StateKey::decode(key.value().2) {
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

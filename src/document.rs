//! An environment's full state as one document: what receivers bootstrap from.
//!
//! The store reads it ([`crate::store::queries::read_document`]) in one read transaction together
//! with the last committed sequence, so a receiver that applies it and then every event with a
//! greater sequence misses nothing.

use serde::{Deserialize, Serialize};

use crate::changes::FeatureRecord;
use crate::wire::FlagValue;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentDocument {
    pub environment: EnvironmentInfo,
    /// Every event up to this sequence is reflected here; none after it is.
    pub last_sequence: u64,
    pub features: Vec<FeatureDocument>,
    /// Deleted features of the project: a receiver keeps them deleted whatever arrives late.
    pub deleted_feature_ids: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentInfo {
    pub id: u64,
    pub name: String,
    pub project: ProjectInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectInfo {
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDocument {
    pub feature: FeatureInfo,
    pub enabled: bool,
    pub value: Option<FlagValue>,
    pub identity_overrides: Vec<IdentityOverride>,
    pub segment_overrides: Vec<SegmentOverride>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureInfo {
    pub id: u64,
    pub name: String,
    #[serde(rename = "type")]
    pub feature_type: String,
    pub description: Option<String>,
    pub initial_value: Option<FlagValue>,
    pub default_enabled: bool,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityOverride {
    pub identifier: String,
    pub enabled: bool,
    pub value: Option<FlagValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentOverride {
    pub segment: SegmentInfo,
    pub priority: i64,
    pub enabled: bool,
    pub value: Option<FlagValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentInfo {
    pub id: u64,
    pub name: String,
}

//! An environment's full state as one document: what receivers bootstrap from.
//!
//! The store reads it ([`crate::store::queries::read_document`]) in one read transaction together
//! with the last committed sequence, so a receiver that applies it and then every event with a
//! greater sequence misses nothing.
//!
//! These types are the one contract: flagpost writes the document with them and
//! flagpost-receiver reads it with them. Fields a receiver can do without are `#[serde(default)]`,
//! so a document that leaves them out still loads; what flagpost writes is unchanged.

use serde::{Deserialize, Serialize};

use crate::changes::FeatureRecord;
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

//! The domain's records: features, states and their keys, environments, authors, and the events
//! a change committed. Plain values; how the store encodes them is its own business.

use serde::{Deserialize, Serialize};

use super::multivariate::MultivariateValue;
use crate::wire::FlagValue;

/// Who made a change: an API token, a flag file, a relay source or the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Author {
    /// `author.id` of audit-log events: the token's configured id, 0 for everything else.
    pub id: u64,
    /// `changed_by`: the token's name, the flag file's path, `relay:<source>`, `configuration`.
    pub name: String,
    pub email: Option<String>,
}

impl Author {
    /// An author that is not an API token.
    pub fn system(name: impl Into<String>) -> Author {
        Author {
            id: 0,
            name: name.into(),
            email: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentRecord {
    pub id: u64,
    pub name: String,
    pub project: u64,
    pub project_name: String,
}

/// Who may change a feature: the change API, or the flag files (which own what they declare).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    Api,
    Files,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureRecord {
    pub id: u64,
    pub project: u64,
    pub name: String,
    #[serde(rename = "type")]
    pub feature_type: String,
    pub description: Option<String>,
    pub initial_value: Option<FlagValue>,
    pub default_enabled: bool,
    pub created_date: String,
    pub owner: Owner,
    /// Set when deleted: the record stays as a tombstone.
    #[serde(default)]
    pub deleted: bool,
}

/// One feature state: an environment default or an override.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateRecord {
    /// The feature state id sent as `id`, assigned once per key.
    pub id: u64,
    pub enabled: bool,
    pub value: Option<FlagValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// The state's multivariate allocations, in the order they were set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub multivariate: Vec<MultivariateValue>,
}

/// Which state of a feature in an environment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StateKey {
    Default,
    Identity(String),
    Segment(u64),
}

/// An event as reported to whoever made the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedEvent {
    pub id: String,
    pub sequence: u64,
    pub event_type: String,
}

//! What the cache holds for one feature: its description, its default state and its overrides,
//! each key in a [`Slot`] that remembers the order of the change last applied to it.

use std::collections::BTreeMap;

use flagpost::wire::FlagValue;
use serde::{Deserialize, Serialize};

use crate::documents::order::Order;
use crate::documents::overrides::IdentityOverrides;

/// A flag's state for one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagState {
    pub enabled: bool,
    pub value: Option<FlagValue>,
    /// The feature state's id, when the web hook told it (Flagsmith answers it as `id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_id: Option<u64>,
    /// The identity's Flagsmith id, for an identity override whose web hook told it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<u64>,
}

/// A segment override: the flag state plus what the segment is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentState {
    pub enabled: bool,
    pub value: Option<FlagValue>,
    pub priority: Option<i64>,
    pub name: Option<String>,
    /// The feature state's id, when the web hook told it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_id: Option<u64>,
}

/// One cache key's content: `state: None` is a tombstone (the key was deleted at `order`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot<T> {
    pub order: Order,
    pub state: Option<T>,
    /// When the change arrived (unix microseconds; 0 for a flagpost document's keys): an upstream
    /// document drops the keys that arrived before its fetch began.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub arrived_micros: i64,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

/// What a feature is, as the latest change told.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FeatureMeta {
    pub name: String,
    #[serde(default)]
    pub feature_type: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub initial_value: Option<FlagValue>,
    #[serde(default)]
    pub default_enabled: Option<bool>,
    #[serde(default)]
    pub created_date: Option<String>,
    #[serde(default)]
    pub order: Order,
}

/// A feature in one environment: its default state and its overrides.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FeatureEntry {
    pub meta: FeatureMeta,
    pub default: Option<Slot<FlagState>>,
    pub identities: IdentityOverrides<Slot<FlagState>>,
    pub segments: BTreeMap<u64, Slot<SegmentState>>,
}

impl FeatureEntry {
    /// The live default state, if the feature has one.
    pub fn default_state(&self) -> Option<&FlagState> {
        self.default.as_ref().and_then(|slot| slot.state.as_ref())
    }

    /// The live identity override for `identifier`.
    pub fn identity_state(&self, identifier: &str) -> Option<&FlagState> {
        self.identities
            .get(identifier)
            .and_then(|slot| slot.state.as_ref())
    }

    /// Live segment overrides, by segment id.
    pub fn segment_states(&self) -> impl Iterator<Item = (u64, &SegmentState)> {
        self.segments
            .iter()
            .filter_map(|(id, slot)| slot.state.as_ref().map(|state| (*id, state)))
    }

    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.identities.is_empty() && self.segments.is_empty()
    }
}

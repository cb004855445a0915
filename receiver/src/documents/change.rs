//! One flag change, normalised from a `FLAG_UPDATED` / `FLAG_DELETED` web hook.

use flagpost::wire::{IdRef, IdentityRef, IncomingFlagEvent};

use crate::clock::now_micros;
use crate::documents::order::Order;
use crate::documents::state::{FeatureMeta, FlagState};

/// Which key of a feature a change is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Default,
    Identity(Box<str>),
    Segment(u64),
}

/// One flag change, normalised from a web hook.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub env: u64,
    pub env_name: Option<String>,
    pub feature: u64,
    pub meta: FeatureMeta,
    pub scope: Scope,
    pub deleted: bool,
    pub state: FlagState,
    /// For segment overrides.
    pub segment_priority: Option<i64>,
    pub segment_name: Option<String>,
    pub order: Order,
    /// When the receiver took it (unix microseconds): a document fetched from an upstream
    /// Flagsmith supersedes the changes taken before its fetch began.
    pub arrived_micros: i64,
}

impl Change {
    /// Reads a `FLAG_UPDATED` / `FLAG_DELETED` event, with flagpost's sequence when it sent one.
    pub fn from_event(event: &IncomingFlagEvent, seq: Option<u64>) -> Change {
        let state = &event.state;
        let scope = if let Some(segment) = &state.feature_segment {
            Scope::Segment(segment.segment.id)
        } else if let Some(identifier) = &state.identity_identifier {
            Scope::Identity(identifier.as_str().into())
        } else {
            match &state.identity {
                Some(IdentityRef::Id(id)) => Scope::Identity(id.to_string().into()),
                Some(IdentityRef::Uuid(uuid)) => Scope::Identity(uuid.as_str().into()),
                None => Scope::Default,
            }
        };
        let order = Order {
            seq,
            ts_micros: event
                .timestamp
                .map(|at| (at.unix_timestamp_nanos() / 1_000) as i64),
        };
        let env_name = match &state.environment {
            IdRef::Object { name, .. } => name.clone(),
            IdRef::Id(_) => None,
        };
        let feature = &state.feature;
        Change {
            env: state.environment.id(),
            env_name,
            feature: feature.id,
            meta: FeatureMeta {
                name: feature.name.clone(),
                feature_type: feature.feature_type.clone(),
                description: feature.description.clone(),
                initial_value: feature.initial_value.clone(),
                default_enabled: feature.default_enabled,
                created_date: None,
                order,
            },
            scope,
            deleted: event.deleted,
            state: FlagState {
                enabled: state.enabled,
                value: state.feature_state_value.clone(),
                state_id: state.id,
                identity_id: match &state.identity {
                    Some(IdentityRef::Id(id)) => Some(*id),
                    _ => None,
                },
            },
            segment_priority: state.feature_segment.as_ref().and_then(|s| s.priority),
            segment_name: state
                .feature_segment
                .as_ref()
                .and_then(|s| s.segment.name.clone()),
            order,
            arrived_micros: now_micros(),
        }
    }
}

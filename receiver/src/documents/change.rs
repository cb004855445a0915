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
    /// The flagpost database whose sequence `order.seq` is (the instance its signed
    /// `webhook-id` names); `None` for an unsequenced change. Sequences of two databases do not
    /// compare: the writer checks it ([`crate::documents::FlagCache::check_sender`]) before
    /// applying the change.
    pub sender: Option<u64>,
    /// When the receiver took it (unix microseconds): a document fetched from an upstream
    /// Flagsmith supersedes the changes taken before its fetch began.
    pub arrived_micros: i64,
}

impl Change {
    /// Reads a `FLAG_UPDATED` / `FLAG_DELETED` event, with flagpost's sequence when it sent one
    /// (its database, [`Change::sender`], is set by whoever read the event's id).
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
            sender: None,
            arrived_micros: now_micros(),
        }
    }
}

#[cfg(test)]
impl Change {
    /// A test's change: feature `feature` (named `name`) of environment `env`, enabled with the
    /// string `value`, for its default key, at no position; a test sets the rest it needs.
    pub(crate) fn with_string(env: u64, feature: u64, name: &str, value: &str) -> Change {
        Change {
            env,
            env_name: None,
            feature,
            meta: FeatureMeta {
                name: name.to_owned(),
                ..FeatureMeta::default()
            },
            scope: Scope::Default,
            deleted: false,
            state: FlagState {
                enabled: true,
                value: Some(flagpost::wire::FlagValue::String(value.to_owned())),
                state_id: None,
                identity_id: None,
            },
            segment_priority: None,
            segment_name: None,
            order: Order::default(),
            sender: None,
            arrived_micros: 0,
        }
    }
}

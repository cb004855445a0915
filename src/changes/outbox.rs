//! The events of one change: their bodies in the seed's shape, appended to the outbox.
//!
//! Every event is written in the same transaction as the state change it reports, with one outbox
//! row per endpoint subscribed to it at that moment: the change, its events and its deliveries
//! commit together or not at all.

use time::OffsetDateTime;

use super::multivariate::MultivariateOption;
use super::port::{FlagStore, NewEvent};
use super::records::{Author, CommittedEvent, FeatureRecord, StateKey, StateRecord};
use crate::config::Config;
use crate::error::StoreError;
use crate::wire::{
    AuditLogBody, AuthorBody, EventType, FeatureBody, FeatureSegmentBody, FeatureStateBody,
    FlagEventBody, MultivariateOptionBody, MultivariateValueBody, ProjectBody, SegmentBody,
    envelope_bytes, format_timestamp,
};

/// Writes events of one change into the outbox, remembering what it wrote for the answer.
pub struct Outbox<'a> {
    config: &'a Config,
    pub author: &'a Author,
    pub now: OffsetDateTime,
    /// `now` in the wire format: formatted once, as every event of a change carries it.
    timestamp: String,
    written: Vec<CommittedEvent>,
}

impl<'a> Outbox<'a> {
    pub fn new(config: &'a Config, author: &'a Author, now: OffsetDateTime) -> Outbox<'a> {
        Outbox {
            config,
            author,
            now,
            timestamp: format_timestamp(now),
            written: Vec::new(),
        }
    }

    pub fn timestamp(&self) -> String {
        self.timestamp.clone()
    }

    pub fn into_written(self) -> Vec<CommittedEvent> {
        self.written
    }

    /// Stores `body` as the next event, with a delivery row per subscribed endpoint.
    pub fn push(
        &mut self,
        store: &mut impl FlagStore,
        event_type: EventType,
        environment: Option<u64>,
        body: &[u8],
    ) -> Result<(), StoreError> {
        let subscribers = self.config.subscribers(environment, &event_type);
        let committed = store.append_event(&NewEvent {
            event_type,
            environment,
            committed_at_ms: (self.now.unix_timestamp_nanos() / 1_000_000) as u64,
            changed_by: &self.author.name,
            body,
            subscribers: &subscribers,
        })?;
        self.written.push(committed);
        Ok(())
    }

    /// `FLAG_UPDATED` (a state set) or `FLAG_DELETED` (a state removed: `new` is `None`).
    pub fn flag_event(
        &mut self,
        store: &mut impl FlagStore,
        environment: u64,
        feature: &FeatureRecord,
        key: &StateKey,
        previous: Option<&StateRecord>,
        new: Option<&StateRecord>,
    ) -> Result<(), StoreError> {
        self.flag_event_with_features(store, environment, feature, feature, key, previous, new)
    }

    /// As [`Outbox::flag_event`], for a change of the feature itself: `previous` is shown with the
    /// feature as it was, `new` with the feature as it is now (the seed's example is such an event).
    #[allow(clippy::too_many_arguments)]
    pub fn flag_event_with_features(
        &mut self,
        store: &mut impl FlagStore,
        environment: u64,
        previous_feature: &FeatureRecord,
        feature: &FeatureRecord,
        key: &StateKey,
        previous: Option<&StateRecord>,
        new: Option<&StateRecord>,
    ) -> Result<(), StoreError> {
        let event_type = if new.is_some() {
            EventType::FlagUpdated
        } else {
            EventType::FlagDeleted
        };
        let options = if feature.feature_type == "MULTIVARIATE"
            || new.is_some_and(|s| !s.multivariate.is_empty())
            || previous.is_some_and(|s| !s.multivariate.is_empty())
        {
            store.multivariate_options(feature.id)?
        } else {
            Vec::new()
        };
        let data = FlagEventBody {
            changed_by: self.author.name.clone(),
            new_state: new.map(|s| state_body(environment, feature, key, s, &options)),
            previous_state: previous
                .map(|s| state_body(environment, previous_feature, key, s, &options)),
            timestamp: self.timestamp(),
        };
        let body = envelope_bytes(&event_type, &data);
        self.push(store, event_type, Some(environment), &body)
    }

    /// `FLAG_UPDATED` of a state whose allocations show an option that changed: `previous` with
    /// the options as they were, `new` as they are.
    #[allow(clippy::too_many_arguments)]
    pub fn option_event(
        &mut self,
        store: &mut impl FlagStore,
        environment: u64,
        feature: &FeatureRecord,
        key: &StateKey,
        state: &StateRecord,
        previous_options: &[MultivariateOption],
        options: &[MultivariateOption],
    ) -> Result<(), StoreError> {
        let data = FlagEventBody {
            changed_by: self.author.name.clone(),
            new_state: Some(state_body(environment, feature, key, state, options)),
            previous_state: Some(state_body(
                environment,
                feature,
                key,
                state,
                previous_options,
            )),
            timestamp: self.timestamp(),
        };
        let body = envelope_bytes(&EventType::FlagUpdated, &data);
        self.push(store, EventType::FlagUpdated, Some(environment), &body)
    }

    /// `AUDIT_LOG_CREATED` for one change.
    pub fn audit(
        &mut self,
        store: &mut impl FlagStore,
        project: u64,
        environment: Option<u64>,
        log: String,
        related_object_type: &str,
        related_object_id: u64,
    ) -> Result<(), StoreError> {
        let project_name = self
            .config
            .projects
            .get(&project)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let data = AuditLogBody {
            author: AuthorBody {
                email: self.author.email.clone().unwrap_or_default(),
                first_name: self.author.name.clone(),
                id: self.author.id,
                last_name: String::new(),
            },
            created_date: self.timestamp(),
            environment,
            log,
            project: ProjectBody {
                id: project,
                name: project_name,
                organisation: self.config.organisation_id,
            },
            related_object_id,
            related_object_type: related_object_type.to_owned(),
        };
        let body = envelope_bytes(&EventType::AuditLogCreated, &data);
        self.push(store, EventType::AuditLogCreated, environment, &body)
    }
}

/// A feature state in the seed's shape; `options` are the feature's multivariate options, whose
/// values its allocations show.
pub fn state_body(
    environment: u64,
    feature: &FeatureRecord,
    key: &StateKey,
    state: &StateRecord,
    options: &[MultivariateOption],
) -> FeatureStateBody {
    let (identity, identity_identifier, feature_segment) = match key {
        StateKey::Default => (None, None, None),
        StateKey::Identity(identifier) => (state.identity_id, Some(identifier.clone()), None),
        StateKey::Segment(id) => (
            None,
            None,
            Some(FeatureSegmentBody {
                priority: state.priority.unwrap_or(0),
                segment: SegmentBody {
                    description: None,
                    id: *id,
                    name: state.segment_name.clone().unwrap_or_default(),
                },
            }),
        ),
    };
    FeatureStateBody {
        enabled: state.enabled,
        environment,
        feature: feature_body(feature),
        feature_segment,
        feature_state_value: state.value.clone(),
        id: state.id,
        identity,
        identity_identifier,
        multivariate_feature_state_values: multivariate_bodies(feature, state, options),
    }
}

/// Flagsmith sends `multivariate_feature_state_values` with every state; flagpost sends it for
/// multivariate features and states with allocations, and keeps the seed's shape for the others.
fn multivariate_bodies(
    feature: &FeatureRecord,
    state: &StateRecord,
    options: &[MultivariateOption],
) -> Option<Vec<MultivariateValueBody>> {
    if feature.feature_type != "MULTIVARIATE" && state.multivariate.is_empty() {
        return None;
    }
    let bodies = state
        .multivariate
        .iter()
        .map(|v| MultivariateValueBody {
            id: v.id,
            multivariate_feature_option: MultivariateOptionBody {
                id: v.option,
                value: options
                    .iter()
                    .find(|o| o.id == v.option)
                    .and_then(|o| o.value.clone()),
            },
            percentage_allocation: v.percentage_allocation,
        })
        .collect();
    Some(bodies)
}

pub fn feature_body(feature: &FeatureRecord) -> FeatureBody {
    FeatureBody {
        created_date: feature.created_date.clone(),
        default_enabled: feature.default_enabled,
        description: feature.description.clone(),
        id: feature.id,
        initial_value: feature.initial_value.clone(),
        name: feature.name.clone(),
        project: feature.project,
        feature_type: feature.feature_type.clone(),
    }
}

//! Building events and putting them in the outbox.
//!
//! Every event is written in the same transaction as the state change it reports, with one outbox
//! row per endpoint subscribed to it at that moment: the change, its events and its deliveries
//! commit together or not at all.

use redb::ReadableTable;
use time::OffsetDateTime;

use crate::config::Config;
use crate::store::{
    Author, CommittedEvent, EventRecord, FeatureRecord, StateKey, StateRecord, StoreError, Tables,
};
use crate::wire::{
    AuditLogBody, AuthorBody, EventType, FeatureBody, FeatureSegmentBody, FeatureStateBody,
    FlagEventBody, ProjectBody, SegmentBody, envelope_bytes, format_timestamp,
};

/// The `webhook-id` of an event: unique to this database (its random instance id) and sequence.
pub fn event_id(instance_id: u64, sequence: u64) -> String {
    format!("evt_{instance_id:016x}_{sequence:012}")
}

/// Writes events of one change into the outbox, remembering what it wrote for the answer.
pub struct Outbox<'a> {
    config: &'a Config,
    pub author: &'a Author,
    pub now: OffsetDateTime,
    written: Vec<CommittedEvent>,
}

impl<'a> Outbox<'a> {
    pub fn new(config: &'a Config, author: &'a Author, now: OffsetDateTime) -> Outbox<'a> {
        Outbox {
            config,
            author,
            now,
            written: Vec::new(),
        }
    }

    pub fn timestamp(&self) -> String {
        format_timestamp(self.now)
    }

    pub fn into_written(self) -> Vec<CommittedEvent> {
        self.written
    }

    /// Stores `body` as the next event, with a delivery row per subscribed endpoint.
    pub fn push(
        &mut self,
        tables: &mut Tables,
        event_type: EventType,
        environment: Option<u64>,
        body: &[u8],
    ) -> Result<(), StoreError> {
        let sequence = tables.next_id("next_sequence")?;
        let record = EventRecord {
            id: event_id(tables.instance_id()?, sequence),
            sequence,
            event_type: event_type.as_str().to_owned(),
            environment,
            committed_at_ms: (self.now.unix_timestamp_nanos() / 1_000_000) as u64,
            changed_by: self.author.name.clone(),
        };
        tables
            .events()?
            .insert(sequence, serde_json::to_string(&record)?.as_str())?;
        tables.event_bodies()?.insert(sequence, body)?;
        let outbox = tables.outbox()?;
        for endpoint in self.config.subscribers(environment, &event_type) {
            outbox.insert((endpoint.as_str(), sequence), (0u32, 0u64, 0u32))?;
        }
        self.written.push(CommittedEvent {
            id: record.id,
            sequence,
            event_type: record.event_type,
        });
        Ok(())
    }

    /// `FLAG_UPDATED` (a state set) or `FLAG_DELETED` (a state removed: `new` is `None`).
    pub fn flag_event(
        &mut self,
        tables: &mut Tables,
        environment: u64,
        feature: &FeatureRecord,
        key: &StateKey,
        previous: Option<&StateRecord>,
        new: Option<&StateRecord>,
    ) -> Result<(), StoreError> {
        self.flag_event_with_features(tables, environment, feature, feature, key, previous, new)
    }

    /// As [`Outbox::flag_event`], for a change of the feature itself: `previous` is shown with the
    /// feature as it was, `new` with the feature as it is now (the seed's example is such an event).
    #[allow(clippy::too_many_arguments)]
    pub fn flag_event_with_features(
        &mut self,
        tables: &mut Tables,
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
        let data = FlagEventBody {
            changed_by: self.author.name.clone(),
            new_state: new.map(|s| state_body(environment, feature, key, s)),
            previous_state: previous.map(|s| state_body(environment, previous_feature, key, s)),
            timestamp: self.timestamp(),
        };
        let body = envelope_bytes(&event_type, &data);
        self.push(tables, event_type, Some(environment), &body)
    }

    /// `AUDIT_LOG_CREATED` for one change.
    pub fn audit(
        &mut self,
        tables: &mut Tables,
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
        self.push(tables, EventType::AuditLogCreated, environment, &body)
    }
}

/// A feature state in the seed's shape.
pub fn state_body(
    environment: u64,
    feature: &FeatureRecord,
    key: &StateKey,
    state: &StateRecord,
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
    }
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

/// Reads an event's body and metadata, for delivery and for the admin API.
pub fn read_event(
    events: &impl ReadableTable<u64, &'static str>,
    bodies: &impl ReadableTable<u64, &'static [u8]>,
    sequence: u64,
) -> Result<Option<(EventRecord, Vec<u8>)>, StoreError> {
    let Some(record) = events.get(sequence)? else {
        return Ok(None);
    };
    let record: EventRecord = serde_json::from_str(record.value())?;
    let body = bodies
        .get(sequence)?
        .map(|b| b.value().to_vec())
        .ok_or_else(|| StoreError::new(format!("event {sequence} has no body")))?;
    Ok(Some((record, body)))
}

//! Segments: named sets of identities per project, defined by Flagsmith's rules (nested ALL / ANY
//! / NONE rules of property-operator-value conditions), and their changes.
//!
//! The serde shapes are Flagsmith's admin API's (`type`, `rules`, `conditions`, `property`,
//! `operator`, `value`); the environment document names the property `property_`, which is read
//! here as an alias. Rules are checked on write ([`super::segment_rules`]).
//!
//! Flagsmith tells nobody of a rules change; flagpost emits `SEGMENT_UPDATED` (and
//! `SEGMENT_DELETED`) carrying the segment, one per environment of its project, so that receivers
//! holding a document can update it without polling.

use serde::{Deserialize, Deserializer, Serialize};

use super::segment_rules::validate_rules;
use super::{Changes, Counter, FlagStore, Owner, StateKey};
use crate::error::WriteError;
use crate::wire::{EventType, SegmentEventBody};

/// A segment as stored and as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRecord {
    pub id: u64,
    pub project: u64,
    pub name: String,
    pub description: Option<String>,
    pub rules: Vec<SegmentRule>,
    pub owner: Owner,
}

/// A rule: its conditions and sub-rules combined by `type` (ALL, ANY or NONE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentRule {
    #[serde(rename = "type")]
    pub rule_type: String,
    #[serde(default)]
    pub rules: Vec<SegmentRule>,
    #[serde(default)]
    pub conditions: Vec<SegmentCondition>,
}

/// One condition on a trait. `value` is text as in Flagsmith (a number or boolean given is kept
/// as its text); `property` is absent for `PERCENTAGE_SPLIT`, and `value` for `IS_SET` /
/// `IS_NOT_SET`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentCondition {
    pub operator: String,
    #[serde(default, alias = "property_")]
    pub property: Option<String>,
    #[serde(default, deserialize_with = "condition_value")]
    pub value: Option<String>,
}

impl SegmentCondition {
    pub fn value_text(&self) -> &str {
        self.value.as_deref().unwrap_or("")
    }
}

/// A condition's value as text: Flagsmith stores it as a string whatever JSON type it came as.
fn condition_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
            Some(v.to_string())
        }
        Some(_) => {
            return Err(serde::de::Error::custom(
                "a condition value must be a string, number or boolean",
            ));
        }
    })
}

/// A segment to create, as the API and flag files give it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSegment {
    pub project: u64,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub rules: Vec<SegmentRule>,
}

/// Fields of a segment to change; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentUpdate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present_description")]
    pub description: Option<Option<String>>,
    #[serde(default)]
    pub rules: Option<Vec<SegmentRule>>,
}

/// Tells an absent description (`None`) from a null one (`Some(None)`).
fn present_description<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

pub const MAX_DESCRIPTION_LEN: usize = 2000;

/// Every check on a segment that needs no store: its name, description and rules.
pub fn validate_segment(
    name: &str,
    description: Option<&str>,
    rules: &[SegmentRule],
) -> Result<(), WriteError> {
    validate_segment_text(name, description)?;
    validate_rules(rules)
}

fn validate_segment_text(name: &str, description: Option<&str>) -> Result<(), WriteError> {
    if name.trim().is_empty() || name.len() > super::MAX_NAME_LEN || name.contains('\0') {
        return Err(WriteError::Invalid(format!(
            "segment name must be 1 to {} bytes, not blank, without NUL",
            super::MAX_NAME_LEN
        )));
    }
    if description.is_some_and(|d| d.len() > MAX_DESCRIPTION_LEN) {
        return Err(WriteError::Invalid(format!(
            "segment description must be at most {MAX_DESCRIPTION_LEN} bytes"
        )));
    }
    Ok(())
}

impl<S: FlagStore> Changes<'_, S> {
    /// A segment that exists.
    pub fn segment(&mut self, id: u64) -> Result<SegmentRecord, WriteError> {
        self.store
            .segment(id)?
            .ok_or(WriteError::UnknownSegment(id))
    }

    pub fn segment_by_name(
        &mut self,
        project: u64,
        name: &str,
    ) -> Result<Option<SegmentRecord>, WriteError> {
        Ok(self
            .store
            .project_segments(project)?
            .into_iter()
            .find(|s| s.name == name))
    }

    fn check_segment_owner(&self, segment: &SegmentRecord, owner: Owner) -> Result<(), WriteError> {
        match (segment.owner, owner) {
            (Owner::Files, Owner::Api) => {
                Err(WriteError::SegmentManagedByFiles(segment.name.clone()))
            }
            (Owner::Api, Owner::Files) => {
                Err(WriteError::SegmentManagedByApi(segment.name.clone()))
            }
            _ => Ok(()),
        }
    }

    pub fn create_segment(
        &mut self,
        new: &NewSegment,
        owner: Owner,
    ) -> Result<SegmentRecord, WriteError> {
        validate_segment_text(&new.name, new.description.as_deref())?;
        validate_rules(&new.rules)?;
        if !self.config.projects.contains_key(&new.project) {
            return Err(WriteError::UnknownProject(new.project));
        }
        if let Some(existing) = self.segment_by_name(new.project, &new.name)? {
            return Err(WriteError::SegmentExists {
                project: new.project,
                name: new.name.clone(),
                id: existing.id,
            });
        }
        let segment = SegmentRecord {
            id: self.store.next_id(Counter::Segment)?,
            project: new.project,
            name: new.name.clone(),
            description: new.description.clone(),
            rules: new.rules.clone(),
            owner,
        };
        self.store.put_segment(&segment)?;
        self.segment_event(&segment, EventType::SegmentUpdated)?;
        self.outbox.audit(
            self.store,
            segment.project,
            None,
            format!("New Segment created: {}", segment.name),
            "SEGMENT",
            segment.id,
        )?;
        Ok(segment)
    }

    pub fn update_segment(
        &mut self,
        id: u64,
        update: &SegmentUpdate,
        owner: Owner,
    ) -> Result<SegmentRecord, WriteError> {
        let before = self.segment(id)?;
        self.check_segment_owner(&before, owner)?;
        let mut after = before.clone();
        if let Some(name) = &update.name {
            after.name = name.clone();
        }
        if let Some(description) = &update.description {
            after.description = description.clone();
        }
        if let Some(rules) = &update.rules {
            validate_rules(rules)?;
            after.rules = rules.clone();
        }
        validate_segment_text(&after.name, after.description.as_deref())?;
        if after.name != before.name
            && let Some(existing) = self.segment_by_name(after.project, &after.name)?
        {
            return Err(WriteError::SegmentExists {
                project: after.project,
                name: after.name.clone(),
                id: existing.id,
            });
        }
        if after == before {
            return Ok(after);
        }
        self.store.put_segment(&after)?;
        if after.name != before.name {
            self.rename_overrides(&after)?;
        }
        self.segment_event(&after, EventType::SegmentUpdated)?;
        self.outbox.audit(
            self.store,
            after.project,
            None,
            format!("Segment updated: {}", after.name),
            "SEGMENT",
            after.id,
        )?;
        Ok(after)
    }

    /// Deletes a segment, and with it every override for it: a `FLAG_DELETED` for each (as for
    /// any override removed), then `SEGMENT_DELETED` per environment.
    pub fn delete_segment(&mut self, id: u64, owner: Owner) -> Result<SegmentRecord, WriteError> {
        let segment = self.segment(id)?;
        self.check_segment_owner(&segment, owner)?;
        let key = StateKey::Segment(id);
        for env in self.project_environments(segment.project) {
            for feature in self.store.live_features(segment.project)? {
                if let Some(previous) = self.store.state(env, feature.id, &key)? {
                    self.store.remove_state(env, feature.id, &key)?;
                    self.outbox.flag_event(
                        self.store,
                        env,
                        &feature,
                        &key,
                        Some(&previous),
                        None,
                    )?;
                }
            }
        }
        self.store.remove_segment(id)?;
        self.segment_event(&segment, EventType::SegmentDeleted)?;
        self.outbox.audit(
            self.store,
            segment.project,
            None,
            format!("Segment deleted: {}", segment.name),
            "SEGMENT",
            segment.id,
        )?;
        Ok(segment)
    }

    /// Gives every override of a renamed segment its new name, with a `FLAG_UPDATED` each: the
    /// name is part of the state receivers hold (`feature_segment.segment.name`).
    fn rename_overrides(&mut self, segment: &SegmentRecord) -> Result<(), WriteError> {
        let key = StateKey::Segment(segment.id);
        for env in self.project_environments(segment.project) {
            for feature in self.store.live_features(segment.project)? {
                let Some(previous) = self.store.state(env, feature.id, &key)? else {
                    continue;
                };
                let mut next = previous.clone();
                next.segment_name = Some(segment.name.clone());
                self.store.put_state(env, feature.id, &key, &next)?;
                self.outbox.flag_event(
                    self.store,
                    env,
                    &feature,
                    &key,
                    Some(&previous),
                    Some(&next),
                )?;
            }
        }
        Ok(())
    }

    /// `SEGMENT_UPDATED` or `SEGMENT_DELETED`, one per environment of the segment's project.
    fn segment_event(
        &mut self,
        segment: &SegmentRecord,
        event_type: EventType,
    ) -> Result<(), WriteError> {
        for env in self.project_environments(segment.project) {
            let data = SegmentEventBody {
                changed_by: self.outbox.author.name.clone(),
                environment: env,
                project: segment.project,
                segment,
                timestamp: self.outbox.timestamp(),
            };
            let body = crate::wire::envelope_bytes(&event_type, &data);
            self.outbox
                .push(self.store, event_type.clone(), Some(env), &body)?;
        }
        Ok(())
    }
}

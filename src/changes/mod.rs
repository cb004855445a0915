//! The domain: what each change does to flag state and which events it emits.
//!
//! Every rule is decided here from plain values read through [`FlagStore`], the one port to
//! storage; nothing here knows a table, a key or an encoding. The store runs each change inside its
//! writer's transaction. A change that refuses (returns a refusal [`WriteError`]) may have written
//! part of itself: the writer then drops the whole transaction and re-runs the batch without it, so
//! refusals never leave anything behind.
//!
//! A change that would leave the state as it is emits nothing and writes nothing.

mod input;
#[cfg(test)]
mod memory;
mod multivariate;
mod outbox;
mod port;
mod records;
pub mod relay;
mod segment_rules;
mod segments;
mod states;
#[cfg(test)]
mod tests;

pub use input::{
    FEATURE_TYPES, FeatureUpdate, MAX_IDENTIFIER_LEN, MAX_NAME_LEN, NewFeature, StateUpdate,
    validate_feature_name, validate_feature_type, validate_identifier,
};
pub use multivariate::{
    AllocationInput, MultivariateOption, MultivariateValue, NewOption, OptionUpdate,
};
pub use outbox::{Outbox, feature_body, state_body};
pub use port::{Counter, FlagStore, NewEvent};
pub use records::{
    Author, CommittedEvent, EnvironmentRecord, FeatureRecord, Owner, StateKey, StateRecord,
};
pub use segment_rules::{OPERATORS, RULE_TYPES};
pub use segments::{
    NewSegment, SegmentCondition, SegmentRecord, SegmentRule, SegmentUpdate, validate_segment,
};

use time::OffsetDateTime;

use crate::config::{Config, Environment};
use crate::error::WriteError;
use input::validate_value;

/// A change in progress: the batch's view of the store, the configuration it is made under, and
/// the events it has written so far.
pub struct Changes<'a, S: FlagStore> {
    pub store: &'a mut S,
    pub config: &'a Config,
    pub outbox: Outbox<'a>,
}

impl<'a, S: FlagStore> Changes<'a, S> {
    pub fn new(
        store: &'a mut S,
        config: &'a Config,
        author: &'a Author,
        now: OffsetDateTime,
    ) -> Changes<'a, S> {
        Changes {
            store,
            config,
            outbox: Outbox::new(config, author, now),
        }
    }

    /// The events written, in order.
    pub fn into_events(self) -> Vec<CommittedEvent> {
        self.outbox.into_written()
    }

    // -- reads ------------------------------------------------------------------------------

    /// A live feature.
    pub fn feature(&mut self, id: u64) -> Result<FeatureRecord, WriteError> {
        self.store
            .feature(id)?
            .filter(|f| !f.deleted)
            .ok_or_else(|| WriteError::UnknownFeature(id.to_string()))
    }

    pub fn feature_by_name(
        &mut self,
        project: u64,
        name: &str,
    ) -> Result<Option<FeatureRecord>, WriteError> {
        match self.store.feature_id(project, name)? {
            Some(id) => self.feature(id).map(Some),
            None => Ok(None),
        }
    }

    /// An environment as configuration has it now, borrowed from it (not from `self`): a
    /// change can hold it while it works through the store.
    fn configured_environment(&self, id: u64) -> Result<&'a Environment, WriteError> {
        self.config
            .environments
            .get(&id)
            .ok_or_else(|| WriteError::UnknownEnvironment(id.to_string()))
    }

    /// An environment as configuration has it now.
    pub fn environment(&self, id: u64) -> Result<EnvironmentRecord, WriteError> {
        let env = self.configured_environment(id)?;
        Ok(EnvironmentRecord {
            id: env.id,
            name: env.name.clone(),
            project: env.project,
            project_name: self
                .config
                .projects
                .get(&env.project)
                .map(|p| p.name.clone())
                .unwrap_or_default(),
        })
    }

    fn project_environments(&self, project: u64) -> Vec<u64> {
        self.config
            .environments
            .values()
            .filter(|e| e.project == project)
            .map(|e| e.id)
            .collect()
    }

    fn check_owner(&self, feature: &FeatureRecord, owner: Owner) -> Result<(), WriteError> {
        match (feature.owner, owner) {
            (Owner::Files, Owner::Api) => Err(WriteError::ManagedByFiles(feature.name.clone())),
            (Owner::Api, Owner::Files) => Err(WriteError::ManagedByApi(feature.name.clone())),
            _ => Ok(()),
        }
    }

    // -- features ---------------------------------------------------------------------------

    pub fn create_feature(
        &mut self,
        new: &NewFeature,
        owner: Owner,
    ) -> Result<FeatureRecord, WriteError> {
        validate_feature_name(&new.name)?;
        validate_feature_type(&new.feature_type)?;
        validate_value(&new.initial_value)?;
        if !self.config.projects.contains_key(&new.project) {
            return Err(WriteError::UnknownProject(new.project));
        }
        if let Some(existing) = self.feature_by_name(new.project, &new.name)? {
            return Err(WriteError::FeatureExists {
                project: new.project,
                name: new.name.clone(),
                id: existing.id,
            });
        }
        let feature = FeatureRecord {
            id: self.store.next_id(Counter::Feature)?,
            project: new.project,
            name: new.name.clone(),
            feature_type: new.feature_type.clone(),
            description: new.description.clone(),
            initial_value: new.initial_value.clone(),
            default_enabled: new.default_enabled,
            created_date: self.outbox.timestamp(),
            owner,
            deleted: false,
        };
        self.store.put_feature(&feature)?;
        for env in self.project_environments(feature.project) {
            self.create_default_state(env, &feature)?;
        }
        self.outbox.audit(
            self.store,
            feature.project,
            None,
            format!("New Flag / Remote Config created: {}", feature.name),
            "FEATURE",
            feature.id,
        )?;
        Ok(feature)
    }

    pub fn update_feature(
        &mut self,
        id: u64,
        update: &FeatureUpdate,
        owner: Owner,
    ) -> Result<FeatureRecord, WriteError> {
        let before = self.feature(id)?;
        self.check_owner(&before, owner)?;
        let mut after = before.clone();
        if let Some(feature_type) = &update.feature_type {
            validate_feature_type(feature_type)?;
            after.feature_type = feature_type.clone();
        }
        if let Some(description) = &update.description {
            after.description = description.clone();
        }
        if let Some(initial_value) = &update.initial_value {
            validate_value(initial_value)?;
            after.initial_value = initial_value.clone();
        }
        if let Some(default_enabled) = update.default_enabled {
            after.default_enabled = default_enabled;
        }
        if after == before {
            return Ok(after);
        }
        self.store.put_feature(&after)?;
        // Every state embeds the feature, so each environment's default state is reported with
        // the feature as it was and as it is (the seed's example is exactly such an event).
        for env in self.project_environments(after.project) {
            if let Some(state) = self.store.state(env, id, &StateKey::Default)? {
                self.outbox.flag_event_with_features(
                    self.store,
                    env,
                    &before,
                    &after,
                    &StateKey::Default,
                    Some(&state),
                    Some(&state),
                )?;
            }
        }
        self.outbox.audit(
            self.store,
            after.project,
            None,
            format!("Flag / Remote Config updated: {}", after.name),
            "FEATURE",
            after.id,
        )?;
        Ok(after)
    }

    /// Deletes a feature: one `FLAG_DELETED` per environment for its default state (as Flagsmith
    /// sends), its overrides removed with it. The record stays as a tombstone.
    pub fn delete_feature(&mut self, id: u64, owner: Owner) -> Result<FeatureRecord, WriteError> {
        let mut feature = self.feature(id)?;
        self.check_owner(&feature, owner)?;
        for env in self.project_environments(feature.project) {
            let states = self.store.states(env, id)?;
            for key in states.keys() {
                self.store.remove_state(env, id, key)?;
            }
            self.store.set_file_feature(env, id, false)?;
            if let Some(default) = states.get(&StateKey::Default) {
                self.outbox.flag_event(
                    self.store,
                    env,
                    &feature,
                    &StateKey::Default,
                    Some(default),
                    None,
                )?;
            }
        }
        feature.deleted = true;
        self.store.put_feature(&feature)?;
        self.outbox.audit(
            self.store,
            feature.project,
            None,
            format!("Feature deleted: {}", feature.name),
            "FEATURE",
            feature.id,
        )?;
        Ok(feature)
    }
}

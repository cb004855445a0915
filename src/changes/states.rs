//! Changes of feature states: environment defaults, identity and segment overrides, and the
//! default states a newly configured environment gets.

use super::input::{validate_identifier, validate_value};
use super::{
    Changes, Counter, FeatureRecord, FlagStore, Owner, StateKey, StateRecord, StateUpdate,
};
use crate::error::WriteError;

impl<S: FlagStore> Changes<'_, S> {
    /// Makes environment records match configuration, giving a newly configured environment the
    /// default state of each feature of its project.
    pub fn sync_environments(&mut self) -> Result<(), WriteError> {
        let configured: Vec<u64> = self.config.environments.keys().copied().collect();
        for id in configured {
            let record = self.environment(id)?;
            let stored = self.store.environment(id)?;
            if stored.as_ref() == Some(&record) {
                continue;
            }
            self.store.put_environment(&record)?;
            if stored.is_some() {
                continue;
            }
            for feature in self.store.live_features(record.project)? {
                if self
                    .store
                    .state(id, feature.id, &StateKey::Default)?
                    .is_none()
                {
                    self.create_default_state(id, &feature)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn create_default_state(
        &mut self,
        env: u64,
        feature: &FeatureRecord,
    ) -> Result<StateRecord, WriteError> {
        let state = StateRecord {
            id: self.store.next_id(Counter::State)?,
            enabled: feature.default_enabled,
            value: feature.initial_value.clone(),
            identity_id: None,
            segment_name: None,
            priority: None,
            multivariate: self.default_allocations(feature.id)?,
        };
        self.store
            .put_state(env, feature.id, &StateKey::Default, &state)?;
        self.outbox.flag_event(
            self.store,
            env,
            feature,
            &StateKey::Default,
            None,
            Some(&state),
        )?;
        Ok(state)
    }

    /// Sets the environment default or an override. Returns whether anything changed.
    pub fn set_state(
        &mut self,
        env: u64,
        feature: u64,
        key: &StateKey,
        update: &StateUpdate,
        owner: Owner,
    ) -> Result<bool, WriteError> {
        // Borrowed from configuration, not copied into a record: this runs for every change.
        let environment = self.configured_environment(env)?;
        let feature = self.feature(feature)?;
        self.check_owner(&feature, owner)?;
        if feature.project != environment.project {
            return Err(WriteError::WrongProject {
                feature: feature.name.clone(),
                feature_project: feature.project,
                environment: environment.name.clone(),
            });
        }
        if let Some(value) = &update.value {
            validate_value(value)?;
        }
        if let StateKey::Identity(identifier) = key {
            validate_identifier(identifier)?;
        }
        let default = match self.store.state(env, feature.id, &StateKey::Default)? {
            Some(default) => default,
            None => self.create_default_state(env, &feature)?,
        };
        let previous = if *key == StateKey::Default {
            Some(default.clone())
        } else {
            self.store.state(env, feature.id, key)?
        };
        let next = match &previous {
            Some(previous) => previous.clone(),
            None => StateRecord {
                id: self.store.next_id(Counter::State)?,
                enabled: default.enabled,
                value: default.value.clone(),
                identity_id: None,
                segment_name: None,
                priority: None,
                // An override starts with no allocations, as in Flagsmith.
                multivariate: Vec::new(),
            },
        };
        let mut next = self.updated(env, key, next, update)?;
        if let Some(inputs) = &update.multivariate_feature_state_values {
            next.multivariate = self.allocations(&feature, &next.multivariate, inputs)?;
        }
        if previous.as_ref() == Some(&next) {
            return Ok(false);
        }
        self.store.put_state(env, feature.id, key, &next)?;
        self.outbox.flag_event(
            self.store,
            env,
            &feature,
            key,
            previous.as_ref(),
            Some(&next),
        )?;
        self.outbox.audit(
            self.store,
            feature.project,
            Some(env),
            state_set_log(key, &feature.name),
            "FEATURE_STATE",
            next.id,
        )?;
        Ok(true)
    }

    /// `state` with `update` applied, and the fields its key needs filled in.
    fn updated(
        &mut self,
        env: u64,
        key: &StateKey,
        mut next: StateRecord,
        update: &StateUpdate,
    ) -> Result<StateRecord, WriteError> {
        if let Some(enabled) = update.enabled {
            next.enabled = enabled;
        }
        if let Some(value) = &update.value {
            next.value = value.clone();
        }
        match key {
            StateKey::Default => {}
            StateKey::Identity(identifier) => {
                if next.identity_id.is_none() {
                    next.identity_id = Some(self.identity_id(env, identifier)?);
                }
            }
            StateKey::Segment(segment) => {
                if let Some(name) = &update.segment_name {
                    next.segment_name = Some(name.clone());
                }
                // A defined segment names its overrides; an id no segment has keeps the name
                // given, as overrides were made before segments had rules.
                if let Some(defined) = self.store.segment(*segment)? {
                    if defined.project != self.environment(env)?.project {
                        return Err(WriteError::Invalid(format!(
                            "segment {segment} belongs to another project"
                        )));
                    }
                    next.segment_name = Some(defined.name);
                }
                if next.segment_name.is_none() {
                    next.segment_name = Some(format!("segment-{segment}"));
                }
                if let Some(priority) = update.priority {
                    next.priority = Some(priority);
                }
                next.priority.get_or_insert(0);
            }
        }
        Ok(next)
    }

    /// Removes an identity or segment override, with a `FLAG_DELETED` carrying its last state
    /// (Flagsmith sends nothing here; receivers need it to drop the override).
    pub fn remove_override(
        &mut self,
        env: u64,
        feature: u64,
        key: &StateKey,
        owner: Owner,
    ) -> Result<(), WriteError> {
        self.environment(env)?;
        let feature = self.feature(feature)?;
        self.check_owner(&feature, owner)?;
        let what = match key {
            StateKey::Default => {
                return Err(WriteError::Invalid(
                    "the environment default cannot be removed; delete the feature".into(),
                ));
            }
            StateKey::Identity(identifier) => format!("identity {identifier:?}"),
            StateKey::Segment(segment) => format!("segment {segment}"),
        };
        let previous = self.store.state(env, feature.id, key)?.ok_or_else(|| {
            WriteError::NoSuchOverride(format!("feature {:?} for {what}", feature.name))
        })?;
        self.store.remove_state(env, feature.id, key)?;
        self.outbox
            .flag_event(self.store, env, &feature, key, Some(&previous), None)?;
        self.outbox.audit(
            self.store,
            feature.project,
            Some(env),
            format!("Override removed for feature: {} {what}", feature.name),
            "FEATURE_STATE",
            previous.id,
        )?;
        Ok(())
    }

    fn identity_id(&mut self, env: u64, identifier: &str) -> Result<u64, WriteError> {
        if let Some(id) = self.store.identity_id(env, identifier)? {
            return Ok(id);
        }
        let id = self.store.next_id(Counter::Identity)?;
        self.store.put_identity_id(env, identifier, id)?;
        Ok(id)
    }
}

/// The audit log line of a state set at `key` of feature `name`.
fn state_set_log(key: &StateKey, name: &str) -> String {
    match key {
        StateKey::Default => {
            format!("Flag state / Remote Config value updated for feature: {name}")
        }
        StateKey::Identity(identifier) => {
            format!("Identity override set for feature: {name} identity: {identifier}")
        }
        StateKey::Segment(segment) => {
            format!("Segment override set for feature: {name} segment: {segment}")
        }
    }
}

//! State transitions: what each change does to the flag store and which events it emits.
//!
//! Every function here runs inside the writer's transaction. A function that refuses (returns a
//! [`ChangeError`]) may have written part of its change: the writer then drops the whole
//! transaction and re-runs the batch without it, so refusals never leave anything behind.
//!
//! A change that would leave the state as it is emits nothing and writes nothing.

use std::collections::BTreeMap;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::Config;
use crate::events::Outbox;
use crate::store::{
    Author, CommittedEvent, EnvironmentRecord, FeatureRecord, Owner, StateKey, StateRecord,
    StoreError, Tables,
};
use crate::wire::FlagValue;

/// Why a change was refused. Each maps to one HTTP status in the API layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChangeError {
    #[error("environment {0} does not exist")]
    UnknownEnvironment(String),
    #[error("project {0} does not exist")]
    UnknownProject(u64),
    #[error("feature {0} does not exist")]
    UnknownFeature(String),
    #[error("feature {name:?} already exists in project {project} (id {id})")]
    FeatureExists { project: u64, name: String, id: u64 },
    #[error("feature {0:?} is declared in a flag file; change the file instead")]
    ManagedByFiles(String),
    #[error("feature {0:?} was made through the API; a flag file cannot declare it")]
    ManagedByApi(String),
    #[error(
        "feature {feature:?} belongs to project {feature_project}, not to environment {environment}'s project"
    )]
    WrongProject {
        feature: String,
        feature_project: u64,
        environment: String,
    },
    #[error("{0} has no such override")]
    NoSuchOverride(String),
    #[error("Idempotency-Key was already used for a different request")]
    IdempotencyConflict,
    #[error("{0}")]
    Invalid(String),
}

/// A refusal or a storage failure, as change functions return them.
#[derive(Debug)]
pub enum Failure {
    Refused(ChangeError),
    Storage(StoreError),
}

impl<E: Into<StoreError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Storage(e.into())
    }
}

impl From<ChangeError> for Failure {
    fn from(e: ChangeError) -> Self {
        Failure::Refused(e)
    }
}

pub type ChangeResult<T> = Result<T, Failure>;

/// Splits a [`ChangeResult`] into the writer's refused/storage shape.
pub fn into_job<T>(result: ChangeResult<T>) -> crate::store::JobResult<T, ChangeError> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(Failure::Refused(refusal)) => Ok(Err(refusal)),
        Err(Failure::Storage(storage)) => Err(storage),
    }
}

/// A feature's definition, as the API and flag files give it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewFeature {
    pub project: u64,
    pub name: String,
    #[serde(default = "standard", rename = "type")]
    pub feature_type: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub initial_value: Option<FlagValue>,
    #[serde(default)]
    pub default_enabled: bool,
}

fn standard() -> String {
    "STANDARD".to_owned()
}

/// Fields of a feature that can change after creation; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureUpdate {
    #[serde(default, rename = "type")]
    pub feature_type: Option<String>,
    #[serde(default, with = "present")]
    pub description: Option<Option<String>>,
    #[serde(default, with = "present")]
    pub initial_value: Option<Option<FlagValue>>,
    #[serde(default)]
    pub default_enabled: Option<bool>,
}

/// A state to set; absent fields keep their current value (or, for a new override, the
/// environment default's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateUpdate {
    #[serde(default)]
    pub enabled: Option<bool>,
    /// `Some(None)` sets the value to null; `None` leaves it.
    #[serde(default, with = "present")]
    pub value: Option<Option<FlagValue>>,
    /// Segment overrides only.
    #[serde(default)]
    pub segment_name: Option<String>,
    #[serde(default)]
    pub priority: Option<i64>,
}

/// Tells "absent" (`None`) from "null" (`Some(None)`) in JSON bodies.
mod present {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        value: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

pub const MAX_NAME_LEN: usize = 150;
pub const MAX_IDENTIFIER_LEN: usize = 2000;

pub fn validate_feature_name(name: &str) -> Result<(), ChangeError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ChangeError::Invalid(format!(
            "feature name {name:?} must be 1 to {MAX_NAME_LEN} letters, digits, '_', '-' or '.'"
        )))
    }
}

pub fn validate_identifier(identifier: &str) -> Result<(), ChangeError> {
    if identifier.is_empty() || identifier.len() > MAX_IDENTIFIER_LEN || identifier.contains('\0') {
        return Err(ChangeError::Invalid(format!(
            "identity identifier must be 1 to {MAX_IDENTIFIER_LEN} bytes without NUL"
        )));
    }
    Ok(())
}

fn validate_value(value: &Option<FlagValue>) -> Result<(), ChangeError> {
    if let Some(FlagValue::Float(x)) = value
        && !x.is_finite()
    {
        return Err(ChangeError::Invalid(
            "a flag value must be a finite number".into(),
        ));
    }
    if let Some(FlagValue::String(s)) = value
        && s.len() > 20_000
    {
        return Err(ChangeError::Invalid(
            "a flag value string must be at most 20000 bytes".into(),
        ));
    }
    Ok(())
}

/// A change in progress: the batch's tables, the configuration it is made under, and the events
/// it has written so far.
pub struct Changes<'a, 't> {
    pub tables: &'a mut Tables<'t>,
    pub config: &'a Config,
    pub outbox: Outbox<'a>,
}

impl<'a, 't> Changes<'a, 't> {
    pub fn new(
        tables: &'a mut Tables<'t>,
        config: &'a Config,
        author: &'a Author,
        now: OffsetDateTime,
    ) -> Changes<'a, 't> {
        Changes {
            tables,
            config,
            outbox: Outbox::new(config, author, now),
        }
    }

    /// The events written, in order.
    pub fn into_events(self) -> Vec<CommittedEvent> {
        self.outbox.into_written()
    }

    // -- reads ------------------------------------------------------------------------------

    pub fn feature(&mut self, id: u64) -> ChangeResult<FeatureRecord> {
        let features = self.tables.features()?;
        let feature = features
            .get(id)?
            .map(|v| serde_json::from_str::<FeatureRecord>(v.value()))
            .transpose()?
            .filter(|f| !f.deleted)
            .ok_or_else(|| ChangeError::UnknownFeature(id.to_string()))?;
        Ok(feature)
    }

    pub fn feature_by_name(
        &mut self,
        project: u64,
        name: &str,
    ) -> ChangeResult<Option<FeatureRecord>> {
        let id = self
            .tables
            .feature_names()?
            .get((project, name))?
            .map(|v| v.value());
        id.map(|id| self.feature(id)).transpose()
    }

    pub fn environment(&self, id: u64) -> ChangeResult<EnvironmentRecord> {
        let env = self
            .config
            .environments
            .get(&id)
            .ok_or_else(|| ChangeError::UnknownEnvironment(id.to_string()))?;
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

    fn state(
        &mut self,
        env: u64,
        feature: u64,
        key: &StateKey,
    ) -> ChangeResult<Option<StateRecord>> {
        let states = self.tables.states()?;
        let state = states
            .get((env, feature, key.encode().as_str()))?
            .map(|v| serde_json::from_str(v.value()))
            .transpose()?;
        Ok(state)
    }

    /// Every state of a feature in an environment, the default first.
    pub fn states(
        &mut self,
        env: u64,
        feature: u64,
    ) -> ChangeResult<BTreeMap<StateKey, StateRecord>> {
        let states = self.tables.states()?;
        let mut found = BTreeMap::new();
        for entry in states.range((env, feature, "")..(env, feature + 1, ""))? {
            let (key, value) = entry?;
            if let Some(state_key) = StateKey::decode(key.value().2) {
                found.insert(state_key, serde_json::from_str(value.value())?);
            }
        }
        Ok(found)
    }

    fn put_state(
        &mut self,
        env: u64,
        feature: u64,
        key: &StateKey,
        state: &StateRecord,
    ) -> ChangeResult<()> {
        self.tables.states()?.insert(
            (env, feature, key.encode().as_str()),
            serde_json::to_string(state)?.as_str(),
        )?;
        Ok(())
    }

    fn put_feature(&mut self, feature: &FeatureRecord) -> ChangeResult<()> {
        self.tables
            .features()?
            .insert(feature.id, serde_json::to_string(feature)?.as_str())?;
        Ok(())
    }

    fn project_environments(&self, project: u64) -> Vec<u64> {
        self.config
            .environments
            .values()
            .filter(|e| e.project == project)
            .map(|e| e.id)
            .collect()
    }

    fn check_owner(&self, feature: &FeatureRecord, owner: Owner) -> ChangeResult<()> {
        match (feature.owner, owner) {
            (Owner::Files, Owner::Api) => {
                Err(ChangeError::ManagedByFiles(feature.name.clone()).into())
            }
            (Owner::Api, Owner::Files) => {
                Err(ChangeError::ManagedByApi(feature.name.clone()).into())
            }
            _ => Ok(()),
        }
    }

    // -- changes ----------------------------------------------------------------------------

    /// Makes environment records match configuration, giving a newly configured environment the
    /// default state of each feature of its project.
    pub fn sync_environments(&mut self) -> ChangeResult<()> {
        for env in self.config.environments.values() {
            let record = self.environment(env.id)?;
            let stored: Option<EnvironmentRecord> = self
                .tables
                .environments()?
                .get(env.id)?
                .map(|v| serde_json::from_str(v.value()))
                .transpose()?;
            if stored.as_ref() == Some(&record) {
                continue;
            }
            self.tables
                .environments()?
                .insert(env.id, serde_json::to_string(&record)?.as_str())?;
            if stored.is_some() {
                continue;
            }
            let features: Vec<FeatureRecord> = {
                let table = self.tables.features()?;
                let mut live = Vec::new();
                for entry in table.iter()? {
                    let feature: FeatureRecord = serde_json::from_str(entry?.1.value())?;
                    if !feature.deleted && feature.project == env.project {
                        live.push(feature);
                    }
                }
                live
            };
            for feature in features {
                if self
                    .state(env.id, feature.id, &StateKey::Default)?
                    .is_none()
                {
                    self.create_default_state(env.id, &feature)?;
                }
            }
        }
        Ok(())
    }

    fn create_default_state(&mut self, env: u64, feature: &FeatureRecord) -> ChangeResult<()> {
        let state = StateRecord {
            id: self.tables.next_id("next_state_id")?,
            enabled: feature.default_enabled,
            value: feature.initial_value.clone(),
            identity_id: None,
            segment_name: None,
            priority: None,
        };
        self.put_state(env, feature.id, &StateKey::Default, &state)?;
        self.outbox.flag_event(
            self.tables,
            env,
            feature,
            &StateKey::Default,
            None,
            Some(&state),
        )?;
        Ok(())
    }

    pub fn create_feature(
        &mut self,
        new: &NewFeature,
        owner: Owner,
    ) -> ChangeResult<FeatureRecord> {
        validate_feature_name(&new.name)?;
        validate_value(&new.initial_value)?;
        if !self.config.projects.contains_key(&new.project) {
            return Err(ChangeError::UnknownProject(new.project).into());
        }
        if let Some(existing) = self.feature_by_name(new.project, &new.name)? {
            return Err(ChangeError::FeatureExists {
                project: new.project,
                name: new.name.clone(),
                id: existing.id,
            }
            .into());
        }
        let feature = FeatureRecord {
            id: self.tables.next_id("next_feature_id")?,
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
        self.put_feature(&feature)?;
        self.tables
            .feature_names()?
            .insert((feature.project, feature.name.as_str()), feature.id)?;
        for env in self.project_environments(feature.project) {
            self.create_default_state(env, &feature)?;
        }
        self.outbox.audit(
            self.tables,
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
    ) -> ChangeResult<FeatureRecord> {
        let before = self.feature(id)?;
        self.check_owner(&before, owner)?;
        let mut after = before.clone();
        if let Some(feature_type) = &update.feature_type {
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
        self.put_feature(&after)?;
        // Every state embeds the feature, so each environment's default state is reported with
        // the feature as it was and as it is (the seed's example is exactly such an event).
        for env in self.project_environments(after.project) {
            if let Some(state) = self.state(env, id, &StateKey::Default)? {
                self.outbox.flag_event_with_features(
                    self.tables,
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
            self.tables,
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
    pub fn delete_feature(&mut self, id: u64, owner: Owner) -> ChangeResult<FeatureRecord> {
        let mut feature = self.feature(id)?;
        self.check_owner(&feature, owner)?;
        for env in self.project_environments(feature.project) {
            let states = self.states(env, id)?;
            {
                let table = self.tables.states()?;
                for key in states.keys() {
                    table.remove((env, id, key.encode().as_str()))?;
                }
            }
            self.tables.file_features()?.remove((env, id))?;
            if let Some(default) = states.get(&StateKey::Default) {
                self.outbox.flag_event(
                    self.tables,
                    env,
                    &feature,
                    &StateKey::Default,
                    Some(default),
                    None,
                )?;
            }
        }
        feature.deleted = true;
        self.put_feature(&feature)?;
        self.tables
            .feature_names()?
            .remove((feature.project, feature.name.as_str()))?;
        self.outbox.audit(
            self.tables,
            feature.project,
            None,
            format!("Feature deleted: {}", feature.name),
            "FEATURE",
            feature.id,
        )?;
        Ok(feature)
    }

    /// Sets the environment default or an override. Returns whether anything changed.
    pub fn set_state(
        &mut self,
        env: u64,
        feature: u64,
        key: &StateKey,
        update: &StateUpdate,
        owner: Owner,
    ) -> ChangeResult<bool> {
        let environment = self.environment(env)?;
        let feature = self.feature(feature)?;
        self.check_owner(&feature, owner)?;
        if feature.project != environment.project {
            return Err(ChangeError::WrongProject {
                feature: feature.name.clone(),
                feature_project: feature.project,
                environment: environment.name.clone(),
            }
            .into());
        }
        if let Some(value) = &update.value {
            validate_value(value)?;
        }
        if let StateKey::Identity(identifier) = key {
            validate_identifier(identifier)?;
        }
        let default = match self.state(env, feature.id, &StateKey::Default)? {
            Some(default) => default,
            None => {
                self.create_default_state(env, &feature)?;
                self.state(env, feature.id, &StateKey::Default)?
                    .expect("just written")
            }
        };
        let previous = if *key == StateKey::Default {
            Some(default.clone())
        } else {
            self.state(env, feature.id, key)?
        };
        let mut next = match &previous {
            Some(previous) => previous.clone(),
            None => StateRecord {
                id: self.tables.next_id("next_state_id")?,
                enabled: default.enabled,
                value: default.value.clone(),
                identity_id: None,
                segment_name: None,
                priority: None,
            },
        };
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
                if next.segment_name.is_none() {
                    next.segment_name = Some(format!("segment-{segment}"));
                }
                if let Some(priority) = update.priority {
                    next.priority = Some(priority);
                }
                next.priority.get_or_insert(0);
            }
        }
        if previous.as_ref() == Some(&next) {
            return Ok(false);
        }
        self.put_state(env, feature.id, key, &next)?;
        self.outbox.flag_event(
            self.tables,
            env,
            &feature,
            key,
            previous.as_ref(),
            Some(&next),
        )?;
        let log = match key {
            StateKey::Default => format!(
                "Flag state / Remote Config value updated for feature: {}",
                feature.name
            ),
            StateKey::Identity(identifier) => format!(
                "Identity override set for feature: {} identity: {identifier}",
                feature.name
            ),
            StateKey::Segment(segment) => format!(
                "Segment override set for feature: {} segment: {segment}",
                feature.name
            ),
        };
        self.outbox.audit(
            self.tables,
            feature.project,
            Some(env),
            log,
            "FEATURE_STATE",
            next.id,
        )?;
        Ok(true)
    }

    /// Removes an identity or segment override, with a `FLAG_DELETED` carrying its last state
    /// (Flagsmith sends nothing here; receivers need it to drop the override).
    pub fn remove_override(
        &mut self,
        env: u64,
        feature: u64,
        key: &StateKey,
        owner: Owner,
    ) -> ChangeResult<()> {
        self.environment(env)?;
        let feature = self.feature(feature)?;
        self.check_owner(&feature, owner)?;
        let what = match key {
            StateKey::Default => {
                return Err(ChangeError::Invalid(
                    "the environment default cannot be removed; delete the feature".into(),
                )
                .into());
            }
            StateKey::Identity(identifier) => format!("identity {identifier:?}"),
            StateKey::Segment(segment) => format!("segment {segment}"),
        };
        let previous = self.state(env, feature.id, key)?.ok_or_else(|| {
            ChangeError::NoSuchOverride(format!("feature {:?} for {what}", feature.name))
        })?;
        self.tables
            .states()?
            .remove((env, feature.id, key.encode().as_str()))?;
        self.outbox
            .flag_event(self.tables, env, &feature, key, Some(&previous), None)?;
        self.outbox.audit(
            self.tables,
            feature.project,
            Some(env),
            format!("Override removed for feature: {} {what}", feature.name),
            "FEATURE_STATE",
            previous.id,
        )?;
        Ok(())
    }

    fn identity_id(&mut self, env: u64, identifier: &str) -> ChangeResult<u64> {
        let existing = self
            .tables
            .identities()?
            .get((env, identifier))?
            .map(|v| v.value());
        if let Some(id) = existing {
            return Ok(id);
        }
        let id = self.tables.next_id("next_identity_id")?;
        self.tables.identities()?.insert((env, identifier), id)?;
        Ok(id)
    }
}

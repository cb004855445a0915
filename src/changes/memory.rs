//! An in-memory [`FlagStore`], so that the domain's rules are tested without a database.

use std::collections::{BTreeMap, BTreeSet};

use super::multivariate::MultivariateOption;
use super::port::{Counter, FlagStore, NewEvent};
use super::records::{CommittedEvent, EnvironmentRecord, FeatureRecord, StateKey, StateRecord};
use super::segments::SegmentRecord;
use crate::error::StoreError;

/// An event's body as appended, with its subscribers.
#[derive(Debug, Clone)]
pub struct AppendedEvent {
    pub body: serde_json::Value,
    pub subscribers: Vec<String>,
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    pub features: BTreeMap<u64, FeatureRecord>,
    pub names: BTreeMap<(u64, String), u64>,
    pub states: BTreeMap<(u64, u64, StateKey), StateRecord>,
    pub identities: BTreeMap<(u64, String), u64>,
    pub counters: BTreeMap<Counter, u64>,
    pub environments: BTreeMap<u64, EnvironmentRecord>,
    pub file_features: BTreeSet<(u64, u64)>,
    pub segments: BTreeMap<u64, SegmentRecord>,
    pub options: BTreeMap<u64, Vec<MultivariateOption>>,
    pub events: Vec<AppendedEvent>,
}

impl FlagStore for MemoryStore {
    fn feature(&mut self, id: u64) -> Result<Option<FeatureRecord>, StoreError> {
        Ok(self.features.get(&id).cloned())
    }

    fn feature_id(&mut self, project: u64, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.names.get(&(project, name.to_owned())).copied())
    }

    fn put_feature(&mut self, feature: &FeatureRecord) -> Result<(), StoreError> {
        let name = (feature.project, feature.name.clone());
        if feature.deleted {
            self.names.remove(&name);
        } else {
            self.names.insert(name, feature.id);
        }
        self.features.insert(feature.id, feature.clone());
        Ok(())
    }

    fn live_features(&mut self, project: u64) -> Result<Vec<FeatureRecord>, StoreError> {
        Ok(self
            .features
            .values()
            .filter(|f| f.project == project && !f.deleted)
            .cloned()
            .collect())
    }

    fn state(
        &mut self,
        env: u64,
        feature: u64,
        key: &StateKey,
    ) -> Result<Option<StateRecord>, StoreError> {
        Ok(self.states.get(&(env, feature, key.clone())).cloned())
    }

    fn states(
        &mut self,
        env: u64,
        feature: u64,
    ) -> Result<BTreeMap<StateKey, StateRecord>, StoreError> {
        Ok(self
            .states
            .iter()
            .filter(|((e, f, _), _)| (*e, *f) == (env, feature))
            .map(|((_, _, key), state)| (key.clone(), state.clone()))
            .collect())
    }

    fn put_state(
        &mut self,
        env: u64,
        feature: u64,
        key: &StateKey,
        state: &StateRecord,
    ) -> Result<(), StoreError> {
        self.states
            .insert((env, feature, key.clone()), state.clone());
        Ok(())
    }

    fn remove_state(&mut self, env: u64, feature: u64, key: &StateKey) -> Result<(), StoreError> {
        self.states.remove(&(env, feature, key.clone()));
        Ok(())
    }

    fn identity_id(&mut self, env: u64, identifier: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.identities.get(&(env, identifier.to_owned())).copied())
    }

    fn put_identity_id(&mut self, env: u64, identifier: &str, id: u64) -> Result<(), StoreError> {
        self.identities.insert((env, identifier.to_owned()), id);
        Ok(())
    }

    fn next_id(&mut self, counter: Counter) -> Result<u64, StoreError> {
        let next = self.counters.entry(counter).or_insert(1);
        *next += 1;
        Ok(*next - 1)
    }

    fn environment(&mut self, id: u64) -> Result<Option<EnvironmentRecord>, StoreError> {
        Ok(self.environments.get(&id).cloned())
    }

    fn put_environment(&mut self, record: &EnvironmentRecord) -> Result<(), StoreError> {
        self.environments.insert(record.id, record.clone());
        Ok(())
    }

    fn file_features(&mut self, env: u64) -> Result<BTreeSet<u64>, StoreError> {
        Ok(self
            .file_features
            .iter()
            .filter(|(e, _)| *e == env)
            .map(|(_, f)| *f)
            .collect())
    }

    fn is_file_feature(&mut self, env: u64, feature: u64) -> Result<bool, StoreError> {
        Ok(self.file_features.contains(&(env, feature)))
    }

    fn set_file_feature(
        &mut self,
        env: u64,
        feature: u64,
        declared: bool,
    ) -> Result<(), StoreError> {
        if declared {
            self.file_features.insert((env, feature));
        } else {
            self.file_features.remove(&(env, feature));
        }
        Ok(())
    }

    fn segment(&mut self, id: u64) -> Result<Option<SegmentRecord>, StoreError> {
        Ok(self.segments.get(&id).cloned())
    }

    fn project_segments(&mut self, project: u64) -> Result<Vec<SegmentRecord>, StoreError> {
        let segments = self.segments.values();
        Ok(segments.filter(|s| s.project == project).cloned().collect())
    }

    fn put_segment(&mut self, segment: &SegmentRecord) -> Result<(), StoreError> {
        self.segments.insert(segment.id, segment.clone());
        Ok(())
    }

    fn remove_segment(&mut self, id: u64) -> Result<(), StoreError> {
        self.segments.remove(&id);
        Ok(())
    }

    fn multivariate_options(
        &mut self,
        feature: u64,
    ) -> Result<Vec<MultivariateOption>, StoreError> {
        Ok(self.options.get(&feature).cloned().unwrap_or_default())
    }

    fn put_multivariate_options(
        &mut self,
        feature: u64,
        options: &[MultivariateOption],
    ) -> Result<(), StoreError> {
        self.options.insert(feature, options.to_vec());
        Ok(())
    }

    fn append_event(&mut self, event: &NewEvent<'_>) -> Result<CommittedEvent, StoreError> {
        let sequence = self.events.len() as u64 + 1;
        let body =
            serde_json::from_slice(event.body).map_err(|e| StoreError::new(e.to_string()))?;
        self.events.push(AppendedEvent {
            body,
            subscribers: event.subscribers.to_vec(),
        });
        Ok(CommittedEvent {
            id: format!("evt_test_{sequence}"),
            sequence,
            event_type: event.event_type.as_str().to_owned(),
        })
    }
}

//! The domain's [`FlagStore`] over one batch's [`Tables`]: features, states, identities,
//! environments and flag-file declarations, each encoded here.

use std::collections::{BTreeMap, BTreeSet};

use redb::ReadableTable;

use super::StoreError;
use super::queries::ContentScope;
use super::rows::{
    feature_of, feature_row, feature_states, state_key, state_key_of, state_of, state_row,
};
use super::tables::Tables;
use crate::changes::{
    CommittedEvent, Counter, EnvironmentRecord, FeatureRecord, FlagStore, MultivariateOption,
    MultivariateValue, NewEvent, SegmentRecord, StateKey, StateRecord,
};

impl Tables<'_> {
    /// A state's allocations, kept apart from its row so that the hot row stays a plain tuple.
    fn allocations_of(
        &mut self,
        env: u64,
        feature: u64,
        key: &[u8],
    ) -> Result<Vec<MultivariateValue>, StoreError> {
        let row = self.multivariate_values()?.get((env, feature, key))?;
        Ok(row
            .map(|v| serde_json::from_str(v.value()))
            .transpose()?
            .unwrap_or_default())
    }

    /// A state as stored, allocations included.
    fn read_state(
        &mut self,
        env: u64,
        feature: u64,
        key: &StateKey,
    ) -> Result<Option<StateRecord>, StoreError> {
        let key = state_key(key);
        let Some(mut state) = self
            .states()?
            .get((env, feature, key.as_slice()))?
            .map(|v| state_of(v.value()))
        else {
            return Ok(None);
        };
        state.multivariate = self.allocations_of(env, feature, &key)?;
        Ok(Some(state))
    }

    fn put_allocations(
        &mut self,
        env: u64,
        feature: u64,
        key: &[u8],
        values: &[MultivariateValue],
    ) -> Result<(), StoreError> {
        let table = self.multivariate_values()?;
        if values.is_empty() {
            table.remove((env, feature, key))?;
        } else {
            table.insert((env, feature, key), serde_json::to_string(values)?.as_str())?;
        }
        Ok(())
    }
}

/// The `META` row of each counter.
fn counter_key(counter: Counter) -> &'static str {
    match counter {
        Counter::Feature => "next_feature_id",
        Counter::State => "next_state_id",
        Counter::Identity => "next_identity_id",
        Counter::Segment => "next_segment_id",
        Counter::Multivariate => "next_multivariate_id",
    }
}

impl FlagStore for Tables<'_> {
    fn feature(&mut self, id: u64) -> Result<Option<FeatureRecord>, StoreError> {
        if let Some(seen) = self.features_seen.get(&id) {
            return Ok(seen.clone());
        }
        let feature = self.features()?.get(id)?.map(|v| feature_of(id, v.value()));
        self.features_seen.insert(id, feature.clone());
        Ok(feature)
    }

    fn feature_id(&mut self, project: u64, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .feature_names()?
            .get((project, name))?
            .map(|v| v.value()))
    }

    fn put_feature(&mut self, feature: &FeatureRecord) -> Result<(), StoreError> {
        self.touch(ContentScope::Project(feature.project));
        self.features()?.insert(feature.id, feature_row(feature))?;
        self.features_seen.insert(feature.id, Some(feature.clone()));
        let name = (feature.project, feature.name.as_str());
        if feature.deleted {
            self.feature_names()?.remove(name)?;
        } else {
            self.feature_names()?.insert(name, feature.id)?;
        }
        Ok(())
    }

    fn live_features(&mut self, project: u64) -> Result<Vec<FeatureRecord>, StoreError> {
        let mut live = Vec::new();
        for entry in self.features()?.iter()? {
            let (id, row) = entry?;
            let feature = feature_of(id.value(), row.value());
            if !feature.deleted && feature.project == project {
                live.push(feature);
            }
        }
        Ok(live)
    }

    fn state(
        &mut self,
        env: u64,
        feature: u64,
        key: &StateKey,
    ) -> Result<Option<StateRecord>, StoreError> {
        if *key == StateKey::Default
            && let Some(seen) = self.defaults_seen.get(&(env, feature))
        {
            return Ok(seen.clone());
        }
        let state = self.read_state(env, feature, key)?;
        if *key == StateKey::Default {
            self.defaults_seen.insert((env, feature), state.clone());
        }
        Ok(state)
    }

    fn states(
        &mut self,
        env: u64,
        feature: u64,
    ) -> Result<BTreeMap<StateKey, StateRecord>, StoreError> {
        let mut found = BTreeMap::new();
        for entry in self.states()?.range(feature_states(env, feature))? {
            let (key, value) = entry?;
            if let Some(state_key) = state_key_of(key.value().2) {
                found.insert(state_key, state_of(value.value()));
            }
        }
        for (key, state) in found.iter_mut() {
            state.multivariate = self.allocations_of(env, feature, &state_key(key))?;
        }
        Ok(found)
    }

    fn put_state(
        &mut self,
        env: u64,
        feature: u64,
        key: &StateKey,
        state: &StateRecord,
    ) -> Result<(), StoreError> {
        self.touch(ContentScope::Environment(env));
        if *key == StateKey::Default {
            self.defaults_seen
                .insert((env, feature), Some(state.clone()));
        }
        let key = state_key(key);
        let replaced = self
            .states()?
            .insert((env, feature, key.as_slice()), state_row(state))?
            .is_some();
        // Allocations exist only beside a state row (written and removed with it): a new state
        // without any has no allocation row to remove, so its lookup is saved.
        if !replaced && state.multivariate.is_empty() {
            return Ok(());
        }
        self.put_allocations(env, feature, &key, &state.multivariate)
    }

    fn remove_state(&mut self, env: u64, feature: u64, key: &StateKey) -> Result<(), StoreError> {
        self.touch(ContentScope::Environment(env));
        if *key == StateKey::Default {
            self.defaults_seen.insert((env, feature), None);
        }
        let key = state_key(key);
        self.states()?.remove((env, feature, key.as_slice()))?;
        self.put_allocations(env, feature, &key, &[])
    }

    fn identity_id(&mut self, env: u64, identifier: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .identities()?
            .get((env, identifier))?
            .map(|v| v.value()))
    }

    fn put_identity_id(&mut self, env: u64, identifier: &str, id: u64) -> Result<(), StoreError> {
        self.identities()?.insert((env, identifier), id)?;
        Ok(())
    }

    fn next_id(&mut self, counter: Counter) -> Result<u64, StoreError> {
        self.take_counter(counter_key(counter))
    }

    fn environment(&mut self, id: u64) -> Result<Option<EnvironmentRecord>, StoreError> {
        let environments = self.environments()?;
        let record = environments
            .get(id)?
            .map(|v| serde_json::from_str(v.value()))
            .transpose()?;
        Ok(record)
    }

    fn put_environment(&mut self, record: &EnvironmentRecord) -> Result<(), StoreError> {
        self.environments()?
            .insert(record.id, serde_json::to_string(record)?.as_str())?;
        Ok(())
    }

    fn file_features(&mut self, env: u64) -> Result<BTreeSet<u64>, StoreError> {
        let mut ids = BTreeSet::new();
        for entry in self.file_features()?.range((env, 0)..=(env, u64::MAX))? {
            ids.insert(entry?.0.value().1);
        }
        Ok(ids)
    }

    fn is_file_feature(&mut self, env: u64, feature: u64) -> Result<bool, StoreError> {
        Ok(self.file_features()?.get((env, feature))?.is_some())
    }

    fn set_file_feature(
        &mut self,
        env: u64,
        feature: u64,
        declared: bool,
    ) -> Result<(), StoreError> {
        if declared {
            self.file_features()?.insert((env, feature), 1)?;
        } else {
            self.file_features()?.remove((env, feature))?;
        }
        Ok(())
    }

    fn segment(&mut self, id: u64) -> Result<Option<SegmentRecord>, StoreError> {
        let row = self.segments()?.get(id)?;
        Ok(row.map(|v| serde_json::from_str(v.value())).transpose()?)
    }

    fn project_segments(&mut self, project: u64) -> Result<Vec<SegmentRecord>, StoreError> {
        let mut found = Vec::new();
        for entry in self.segments()?.iter()? {
            let segment: SegmentRecord = serde_json::from_str(entry?.1.value())?;
            if segment.project == project {
                found.push(segment);
            }
        }
        Ok(found)
    }

    fn put_segment(&mut self, segment: &SegmentRecord) -> Result<(), StoreError> {
        self.touch(ContentScope::Project(segment.project));
        let json = serde_json::to_string(segment)?;
        self.segments()?.insert(segment.id, json.as_str())?;
        Ok(())
    }

    fn remove_segment(&mut self, id: u64) -> Result<(), StoreError> {
        if let Some(segment) = self.segment(id)? {
            self.touch(ContentScope::Project(segment.project));
        }
        self.segments()?.remove(id)?;
        Ok(())
    }

    fn multivariate_options(
        &mut self,
        feature: u64,
    ) -> Result<Vec<MultivariateOption>, StoreError> {
        let row = self.multivariate_options()?.get(feature)?;
        Ok(row
            .map(|v| serde_json::from_str(v.value()))
            .transpose()?
            .unwrap_or_default())
    }

    fn put_multivariate_options(
        &mut self,
        feature: u64,
        options: &[MultivariateOption],
    ) -> Result<(), StoreError> {
        if let Some(project) = self.feature(feature)?.map(|f| f.project) {
            self.touch(ContentScope::Project(project));
        }
        let json = serde_json::to_string(options)?;
        self.multivariate_options()?
            .insert(feature, json.as_str())?;
        Ok(())
    }

    fn append_event(&mut self, event: &NewEvent<'_>) -> Result<CommittedEvent, StoreError> {
        super::events::append(self, event)
    }
}

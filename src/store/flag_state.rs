//! The domain's [`FlagStore`] over one batch's [`Tables`]: features, states, identities,
//! environments and flag-file declarations, each encoded here.

use std::collections::{BTreeMap, BTreeSet};

use redb::ReadableTable;

use super::StoreError;
use super::rows::{
    feature_of, feature_row, feature_states, state_key, state_key_of, state_of, state_row,
};
use super::tables::Tables;
use crate::changes::{
    CommittedEvent, Counter, EnvironmentRecord, FeatureRecord, FlagStore, NewEvent, StateKey,
    StateRecord,
};

/// The `META` row of each counter.
fn counter_key(counter: Counter) -> &'static str {
    match counter {
        Counter::Feature => "next_feature_id",
        Counter::State => "next_state_id",
        Counter::Identity => "next_identity_id",
    }
}

impl FlagStore for Tables<'_> {
    fn feature(&mut self, id: u64) -> Result<Option<FeatureRecord>, StoreError> {
        Ok(self.features()?.get(id)?.map(|v| feature_of(id, v.value())))
    }

    fn feature_id(&mut self, project: u64, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .feature_names()?
            .get((project, name))?
            .map(|v| v.value()))
    }

    fn put_feature(&mut self, feature: &FeatureRecord) -> Result<(), StoreError> {
        self.features()?.insert(feature.id, feature_row(feature))?;
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
        let key = state_key(key);
        Ok(self
            .states()?
            .get((env, feature, key.as_slice()))?
            .map(|v| state_of(v.value())))
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
        Ok(found)
    }

    fn put_state(
        &mut self,
        env: u64,
        feature: u64,
        key: &StateKey,
        state: &StateRecord,
    ) -> Result<(), StoreError> {
        let key = state_key(key);
        self.states()?
            .insert((env, feature, key.as_slice()), state_row(state))?;
        Ok(())
    }

    fn remove_state(&mut self, env: u64, feature: u64, key: &StateKey) -> Result<(), StoreError> {
        let key = state_key(key);
        self.states()?.remove((env, feature, key.as_slice()))?;
        Ok(())
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

    fn append_event(&mut self, event: &NewEvent<'_>) -> Result<CommittedEvent, StoreError> {
        super::events::append(self, event)
    }
}

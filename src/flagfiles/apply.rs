//! Applying a flag file: diff it against the store and make the changes, all in one transaction.
//!
//! Ownership rules: a feature a file declares belongs to the files; the API cannot change it and a
//! file cannot declare a feature made through the API. A feature dropped from a file is deleted,
//! unless another environment's file of the same project still declares it, in which case this
//! environment's state goes back to the feature's defaults and its overrides are removed.

use std::collections::BTreeSet;

use redb::ReadableTable;

use super::file::FlagFile;
use crate::changes::{
    ChangeError, ChangeResult, Changes, Failure, FeatureUpdate, NewFeature, StateUpdate,
};
use crate::store::{Owner, StateKey};

/// Makes environment `env` match `file`. Events are written through `changes`' outbox.
pub fn apply_flag_file(changes: &mut Changes, env: u64, file: &FlagFile) -> ChangeResult<()> {
    let project = changes.environment(env)?.project;
    let previously_declared = declared_features(changes, env)?;
    let mut declared = BTreeSet::new();

    for (name, desired) in &file.features {
        let feature = match changes.feature_by_name(project, name)? {
            Some(feature) if feature.owner == Owner::Api => {
                return Err(ChangeError::ManagedByApi(name.clone()).into());
            }
            Some(feature) => {
                let update = FeatureUpdate {
                    feature_type: desired
                        .feature_type
                        .clone()
                        .filter(|t| *t != feature.feature_type),
                    description: desired
                        .description
                        .clone()
                        .filter(|d| feature.description.as_ref() != Some(d))
                        .map(Some),
                    initial_value: None,
                    default_enabled: None,
                };
                changes.update_feature(feature.id, &update, Owner::Files)?
            }
            None => changes.create_feature(
                &NewFeature {
                    project,
                    name: name.clone(),
                    feature_type: desired
                        .feature_type
                        .clone()
                        .unwrap_or_else(|| "STANDARD".to_owned()),
                    description: desired.description.clone(),
                    initial_value: desired.value.clone(),
                    default_enabled: desired.enabled,
                },
                Owner::Files,
            )?,
        };
        declared.insert(feature.id);
        changes
            .tables
            .file_features()?
            .insert((env, feature.id), 1)?;

        changes.set_state(
            env,
            feature.id,
            &StateKey::Default,
            &StateUpdate {
                enabled: Some(desired.enabled),
                value: Some(desired.value.clone()),
                ..StateUpdate::default()
            },
            Owner::Files,
        )?;
        let mut wanted = BTreeSet::new();
        for (identifier, state) in &desired.identities {
            let key = StateKey::Identity(identifier.clone());
            changes.set_state(
                env,
                feature.id,
                &key,
                &StateUpdate {
                    enabled: Some(state.enabled),
                    value: Some(state.value.clone()),
                    ..StateUpdate::default()
                },
                Owner::Files,
            )?;
            wanted.insert(key);
        }
        for segment in &desired.segments {
            let key = StateKey::Segment(segment.id);
            changes.set_state(
                env,
                feature.id,
                &key,
                &StateUpdate {
                    enabled: Some(segment.enabled),
                    value: Some(segment.value.clone()),
                    segment_name: Some(segment.name.clone()),
                    priority: Some(segment.priority),
                },
                Owner::Files,
            )?;
            wanted.insert(key);
        }
        remove_overrides_except(changes, env, feature.id, &wanted)?;
    }

    for dropped in previously_declared.difference(&declared) {
        changes.tables.file_features()?.remove((env, *dropped))?;
        let feature = match changes.feature(*dropped) {
            Ok(feature) => feature,
            Err(Failure::Refused(_)) => continue, // already deleted
            Err(storage) => return Err(storage),
        };
        if declared_elsewhere(changes, env, feature.id)? {
            changes.set_state(
                env,
                feature.id,
                &StateKey::Default,
                &StateUpdate {
                    enabled: Some(feature.default_enabled),
                    value: Some(feature.initial_value.clone()),
                    ..StateUpdate::default()
                },
                Owner::Files,
            )?;
            remove_overrides_except(changes, env, feature.id, &BTreeSet::new())?;
        } else {
            changes.delete_feature(feature.id, Owner::Files)?;
        }
    }
    Ok(())
}

fn remove_overrides_except(
    changes: &mut Changes,
    env: u64,
    feature: u64,
    keep: &BTreeSet<StateKey>,
) -> ChangeResult<()> {
    let current = changes.states(env, feature)?;
    for key in current.keys() {
        if *key != StateKey::Default && !keep.contains(key) {
            changes.remove_override(env, feature, key, Owner::Files)?;
        }
    }
    Ok(())
}

fn declared_features(changes: &mut Changes, env: u64) -> ChangeResult<BTreeSet<u64>> {
    let table = changes.tables.file_features()?;
    let mut ids = BTreeSet::new();
    for entry in table.range((env, 0)..=(env, u64::MAX))? {
        ids.insert(entry?.0.value().1);
    }
    Ok(ids)
}

fn declared_elsewhere(changes: &mut Changes, env: u64, feature: u64) -> ChangeResult<bool> {
    let table = changes.tables.file_features()?;
    for other in changes.config.environments.keys().filter(|e| **e != env) {
        if table.get((*other, feature))?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

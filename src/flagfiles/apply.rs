//! Applying a flag file: diff it against the store and make the changes, all in one transaction.
//!
//! Ownership rules: a feature a file declares belongs to the files; the API cannot change it and a
//! file cannot declare a feature made through the API. A feature dropped from a file is deleted,
//! unless another environment's file of the same project still declares it, in which case this
//! environment's state goes back to the feature's defaults and its overrides are removed.

use std::collections::BTreeSet;

use super::file::{DesiredFeature, DesiredSegment, FlagFile};
use crate::changes::{
    AllocationInput, Changes, FeatureUpdate, FlagStore, NewFeature, NewOption, Owner, StateKey,
    StateUpdate,
};
use crate::error::WriteError;
use crate::wire::FlagValue;

/// Makes environment `env` match `file`. Events are written through `changes`' outbox.
pub fn apply_flag_file<S: FlagStore>(
    changes: &mut Changes<S>,
    env: u64,
    file: &FlagFile,
) -> Result<(), WriteError> {
    let project = changes.environment(env)?.project;
    let previously_declared = changes.store.file_features(env)?;
    let mut declared = BTreeSet::new();

    for (name, desired) in &file.features {
        let feature = declare_feature(changes, project, name, desired)?;
        declared.insert(feature);
        changes.store.set_file_feature(env, feature, true)?;
        apply_states(changes, env, feature, desired)?;
    }

    for dropped in previously_declared.difference(&declared) {
        changes.store.set_file_feature(env, *dropped, false)?;
        let feature = match changes.feature(*dropped) {
            Ok(feature) => feature,
            Err(WriteError::UnknownFeature(_)) => continue, // already deleted
            Err(error) => return Err(error),
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

/// Creates the feature a file declares, or updates its definition; returns its id.
fn declare_feature<S: FlagStore>(
    changes: &mut Changes<S>,
    project: u64,
    name: &str,
    desired: &DesiredFeature,
) -> Result<u64, WriteError> {
    let feature = match changes.feature_by_name(project, name)? {
        Some(feature) if feature.owner == Owner::Api => {
            return Err(WriteError::ManagedByApi(name.to_owned()));
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
                name: name.to_owned(),
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
    Ok(feature.id)
}

/// Sets the default state and the overrides a file declares for one feature, and removes the
/// overrides it no longer declares.
fn apply_states<S: FlagStore>(
    changes: &mut Changes<S>,
    env: u64,
    feature: u64,
    desired: &DesiredFeature,
) -> Result<(), WriteError> {
    let state = |enabled: bool, value: &Option<FlagValue>| StateUpdate {
        enabled: Some(enabled),
        value: Some(value.clone()),
        ..StateUpdate::default()
    };
    let default = StateUpdate {
        multivariate_feature_state_values: Some(declare_options(changes, feature, desired)?),
        ..state(desired.enabled, &desired.value)
    };
    changes.set_state(env, feature, &StateKey::Default, &default, Owner::Files)?;
    let mut wanted = BTreeSet::new();
    for (identifier, identity) in &desired.identities {
        let key = StateKey::Identity(identifier.clone());
        let update = state(identity.enabled, &identity.value);
        changes.set_state(env, feature, &key, &update, Owner::Files)?;
        wanted.insert(key);
    }
    for segment in &desired.segments {
        let key = StateKey::Segment(segment_id(changes, env, segment)?);
        let update = StateUpdate {
            segment_name: Some(segment.name.clone()),
            priority: Some(segment.priority),
            ..state(segment.enabled, &segment.value)
        };
        changes.set_state(env, feature, &key, &update, Owner::Files)?;
        wanted.insert(key);
    }
    remove_overrides_except(changes, env, feature, &wanted)
}

/// The segment an override names: its id, or the segment the project's segment file defines by
/// that name.
fn segment_id<S: FlagStore>(
    changes: &mut Changes<S>,
    env: u64,
    segment: &DesiredSegment,
) -> Result<u64, WriteError> {
    if let Some(id) = segment.id {
        return Ok(id);
    }
    let project = changes.environment(env)?.project;
    match changes.segment_by_name(project, &segment.name)? {
        Some(defined) => Ok(defined.id),
        None => Err(WriteError::Invalid(format!(
            "segment {:?} is defined nowhere: declare it in the project's {} file, or give its id",
            segment.name,
            super::segment_file::SEGMENT_FILE_SUFFIX
        ))),
    }
}

/// Adds the options a file lists that the feature lacks (at the file's allocation as their
/// default), and returns this environment's allocations.
fn declare_options<S: FlagStore>(
    changes: &mut Changes<S>,
    feature: u64,
    desired: &DesiredFeature,
) -> Result<Vec<AllocationInput>, WriteError> {
    let mut allocations = Vec::with_capacity(desired.options.len());
    for wanted in &desired.options {
        let existing = changes.store.multivariate_options(feature)?;
        let value = Some(wanted.value.clone());
        let id = match existing.iter().find(|o| o.value == value) {
            Some(option) => option.id,
            None => {
                let new = NewOption {
                    value,
                    default_percentage_allocation: wanted.allocation,
                };
                // This environment's allocations are set next; other environments' files set
                // theirs.
                changes
                    .add_option_allocating(feature, &new, Owner::Files, false)?
                    .id
            }
        };
        allocations.push(AllocationInput {
            multivariate_feature_option: id,
            percentage_allocation: wanted.allocation,
        });
    }
    Ok(allocations)
}

fn remove_overrides_except<S: FlagStore>(
    changes: &mut Changes<S>,
    env: u64,
    feature: u64,
    keep: &BTreeSet<StateKey>,
) -> Result<(), WriteError> {
    let current = changes.store.states(env, feature)?;
    for key in current.keys() {
        if *key != StateKey::Default && !keep.contains(key) {
            changes.remove_override(env, feature, key, Owner::Files)?;
        }
    }
    Ok(())
}

fn declared_elsewhere<S: FlagStore>(
    changes: &mut Changes<S>,
    env: u64,
    feature: u64,
) -> Result<bool, WriteError> {
    let others: Vec<u64> = changes
        .config
        .environments
        .keys()
        .copied()
        .filter(|e| *e != env)
        .collect();
    for other in others {
        if changes.store.is_file_feature(other, feature)? {
            return Ok(true);
        }
    }
    Ok(false)
}

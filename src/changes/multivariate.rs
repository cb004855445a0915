//! Multivariate features: a feature's options (a value and the allocation new environment states
//! give it), and each state's allocations, as Flagsmith has them.
//!
//! Allocations of one state sum to at most 100: the rest of the identities get the state's own
//! value. Adding the first option makes a `STANDARD` feature `MULTIVARIATE`, as Flagsmith does.

use serde::{Deserialize, Serialize};

use super::input::validate_value;
use super::{Changes, Counter, FeatureRecord, FlagStore, Owner, StateKey};
use crate::error::WriteError;
use crate::wire::FlagValue;

/// One option of a multivariate feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultivariateOption {
    pub id: u64,
    pub value: Option<FlagValue>,
    /// The allocation an environment's default state gets for this option when it is created.
    pub default_percentage_allocation: f64,
}

/// One allocation of a state: the share of identities (0-100) that get `option`'s value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultivariateValue {
    /// The id Flagsmith's `multivariate_feature_state_values[].id` carries.
    pub id: u64,
    pub option: u64,
    pub percentage_allocation: f64,
}

/// An option to add, as the API gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOption {
    #[serde(default)]
    pub value: Option<FlagValue>,
    #[serde(default)]
    pub default_percentage_allocation: f64,
}

/// Fields of an option to change; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionUpdate {
    /// `Some(None)` sets the value to null; `None` leaves it.
    #[serde(default, deserialize_with = "present_value")]
    pub value: Option<Option<FlagValue>>,
    #[serde(default)]
    pub default_percentage_allocation: Option<f64>,
}

/// Tells an absent value (`None`) from a null one (`Some(None)`).
fn present_value<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<FlagValue>>, D::Error> {
    Option::<FlagValue>::deserialize(d).map(Some)
}

/// An allocation to set on a state, as the API gives it (Flagsmith's field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationInput {
    pub multivariate_feature_option: u64,
    pub percentage_allocation: f64,
}

fn validate_percentage(what: &str, value: f64) -> Result<(), WriteError> {
    if value.is_finite() && (0.0..=100.0).contains(&value) {
        return Ok(());
    }
    Err(WriteError::Invalid(format!(
        "{what} must be a number from 0 to 100, not {value}"
    )))
}

fn validate_sum(what: &str, allocations: impl Iterator<Item = f64>) -> Result<(), WriteError> {
    let sum: f64 = allocations.sum();
    // A hundredth of slack: allocations such as 33.33 + 33.33 + 33.34 are given as decimals.
    if sum > 100.0 + 1e-9 {
        return Err(WriteError::Invalid(format!(
            "{what} sum to {sum}; they must sum to at most 100"
        )));
    }
    Ok(())
}

impl<S: FlagStore> Changes<'_, S> {
    /// The allocations `inputs` asks for, checked against `feature`'s options, keeping the ids
    /// of allocations the state already has.
    pub(super) fn allocations(
        &mut self,
        feature: &FeatureRecord,
        current: &[MultivariateValue],
        inputs: &[AllocationInput],
    ) -> Result<Vec<MultivariateValue>, WriteError> {
        let options = self.store.multivariate_options(feature.id)?;
        let mut values = Vec::with_capacity(inputs.len());
        for input in inputs {
            let option = input.multivariate_feature_option;
            if !options.iter().any(|o| o.id == option) {
                return Err(WriteError::UnknownOption {
                    feature: feature.id,
                    option,
                });
            }
            if values
                .iter()
                .any(|v: &MultivariateValue| v.option == option)
            {
                return Err(WriteError::Invalid(format!(
                    "multivariate option {option} is allocated twice"
                )));
            }
            validate_percentage("percentage_allocation", input.percentage_allocation)?;
            let id = match current.iter().find(|v| v.option == option) {
                Some(existing) => existing.id,
                None => self.store.next_id(Counter::Multivariate)?,
            };
            values.push(MultivariateValue {
                id,
                option,
                percentage_allocation: input.percentage_allocation,
            });
        }
        validate_sum(
            "the allocations",
            values.iter().map(|v| v.percentage_allocation),
        )?;
        Ok(values)
    }

    /// The allocations a new environment default state of `feature` starts with.
    pub(super) fn default_allocations(
        &mut self,
        feature: u64,
    ) -> Result<Vec<MultivariateValue>, WriteError> {
        let mut values = Vec::new();
        for option in self.store.multivariate_options(feature)? {
            values.push(MultivariateValue {
                id: self.store.next_id(Counter::Multivariate)?,
                option: option.id,
                percentage_allocation: option.default_percentage_allocation,
            });
        }
        Ok(values)
    }

    /// Adds an option; every environment's default state gets it at its default allocation.
    pub fn add_option(
        &mut self,
        feature_id: u64,
        new: &NewOption,
        owner: Owner,
    ) -> Result<MultivariateOption, WriteError> {
        self.add_option_allocating(feature_id, new, owner, true)
    }

    /// As [`Changes::add_option`]; with `allocate` false no state gets the option, for a flag
    /// file that sets each environment's allocations itself right after.
    pub fn add_option_allocating(
        &mut self,
        feature_id: u64,
        new: &NewOption,
        owner: Owner,
        allocate: bool,
    ) -> Result<MultivariateOption, WriteError> {
        let before = self.feature(feature_id)?;
        self.check_owner(&before, owner)?;
        validate_value(&new.value)?;
        validate_percentage(
            "default_percentage_allocation",
            new.default_percentage_allocation,
        )?;
        let mut options = self.store.multivariate_options(feature_id)?;
        let option = MultivariateOption {
            id: self.store.next_id(Counter::Multivariate)?,
            value: new.value.clone(),
            default_percentage_allocation: new.default_percentage_allocation,
        };
        options.push(option.clone());
        validate_sum(
            "the options' default allocations",
            options.iter().map(|o| o.default_percentage_allocation),
        )?;
        self.store.put_multivariate_options(feature_id, &options)?;
        let mut after = before.clone();
        if after.feature_type == "STANDARD" {
            after.feature_type = "MULTIVARIATE".into();
            self.store.put_feature(&after)?;
        }
        let environments = if allocate {
            self.project_environments(after.project)
        } else {
            Vec::new()
        };
        for env in environments {
            let Some(previous) = self.store.state(env, feature_id, &StateKey::Default)? else {
                continue;
            };
            let mut next = previous.clone();
            next.multivariate.push(MultivariateValue {
                id: self.store.next_id(Counter::Multivariate)?,
                option: option.id,
                percentage_allocation: option.default_percentage_allocation,
            });
            validate_sum(
                &format!("environment {env}'s allocations"),
                next.multivariate.iter().map(|v| v.percentage_allocation),
            )?;
            self.store
                .put_state(env, feature_id, &StateKey::Default, &next)?;
            self.outbox.flag_event_with_features(
                self.store,
                env,
                &before,
                &after,
                &StateKey::Default,
                Some(&previous),
                Some(&next),
            )?;
        }
        self.outbox.audit(
            self.store,
            after.project,
            None,
            format!("Multivariate option added to feature: {}", after.name),
            "FEATURE",
            after.id,
        )?;
        Ok(option)
    }

    /// Changes an option's value or default allocation. A new value is reported, with a
    /// `FLAG_UPDATED`, for every state that allocates the option (receivers show its value); a new
    /// default applies to states created from now on, as in Flagsmith.
    pub fn update_option(
        &mut self,
        feature_id: u64,
        option_id: u64,
        update: &OptionUpdate,
        owner: Owner,
    ) -> Result<MultivariateOption, WriteError> {
        let feature = self.feature(feature_id)?;
        self.check_owner(&feature, owner)?;
        let before = self.store.multivariate_options(feature_id)?;
        let mut options = before.clone();
        let option =
            options
                .iter_mut()
                .find(|o| o.id == option_id)
                .ok_or(WriteError::UnknownOption {
                    feature: feature_id,
                    option: option_id,
                })?;
        if let Some(value) = &update.value {
            validate_value(value)?;
            option.value = value.clone();
        }
        if let Some(default) = update.default_percentage_allocation {
            validate_percentage("default_percentage_allocation", default)?;
            option.default_percentage_allocation = default;
        }
        let updated = option.clone();
        validate_sum(
            "the options' default allocations",
            options.iter().map(|o| o.default_percentage_allocation),
        )?;
        if options == before {
            return Ok(updated);
        }
        self.store.put_multivariate_options(feature_id, &options)?;
        let value_changed = before
            .iter()
            .any(|o| o.id == option_id && o.value != updated.value);
        let environments = if value_changed {
            self.project_environments(feature.project)
        } else {
            Vec::new()
        };
        for env in environments {
            for (key, state) in self.store.states(env, feature_id)? {
                if state.multivariate.iter().any(|v| v.option == option_id) {
                    self.outbox
                        .option_event(self.store, env, &feature, &key, &state, &before, &options)?;
                }
            }
        }
        self.outbox.audit(
            self.store,
            feature.project,
            None,
            format!("Multivariate option updated for feature: {}", feature.name),
            "FEATURE",
            feature.id,
        )?;
        Ok(updated)
    }

    /// Removes an option, and its allocation from every state that has one.
    pub fn remove_option(
        &mut self,
        feature_id: u64,
        option_id: u64,
        owner: Owner,
    ) -> Result<MultivariateOption, WriteError> {
        let feature = self.feature(feature_id)?;
        self.check_owner(&feature, owner)?;
        let mut options = self.store.multivariate_options(feature_id)?;
        let position =
            options
                .iter()
                .position(|o| o.id == option_id)
                .ok_or(WriteError::UnknownOption {
                    feature: feature_id,
                    option: option_id,
                })?;
        let removed = options.remove(position);
        self.store.put_multivariate_options(feature_id, &options)?;
        for env in self.project_environments(feature.project) {
            for (key, previous) in self.store.states(env, feature_id)? {
                if !previous.multivariate.iter().any(|v| v.option == option_id) {
                    continue;
                }
                let mut next = previous.clone();
                next.multivariate.retain(|v| v.option != option_id);
                self.store.put_state(env, feature_id, &key, &next)?;
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
        self.outbox.audit(
            self.store,
            feature.project,
            None,
            format!("Multivariate option removed from feature: {}", feature.name),
            "FEATURE",
            feature.id,
        )?;
        Ok(removed)
    }
}

//! An environment document in Flagsmith's local-evaluation format (what
//! `GET /api/v1/environment-document/` returns), read and checked once, when it arrives, into what
//! evaluation needs: the engine's context for the environment, and the identity overrides apart.
//!
//! Identity overrides are read by this module, not by the engine crate: its `Identity` panics on
//! a `created_date` it cannot parse, and the engine would turn the overrides into segments whose
//! `IN` lists every identifier (a scan per request). Here they are a map by identifier.

use std::collections::HashMap;
use std::sync::Arc;

use flagsmith_flag_engine::engine_eval::{EngineEvaluationContext, environment_to_context};
use flagsmith_flag_engine::environments::Environment;
use flagsmith_flag_engine::features::FeatureState;
use flagsmith_flag_engine::types::FlagsmithValue;
use serde::Deserialize;

use crate::error::DocumentError;

/// A variant key that stands for "an option with no key": the engine answers an option's key as
/// its `variant`, and `None` both for "no split applied" and for a keyless option; this tells them
/// apart (see [`crate::evaluation::PreparedEnvironment`]).
pub(crate) const KEYLESS_OPTION: &str = "";

/// One identity override: a feature state for one identifier.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityOverride {
    pub feature_id: u64,
    pub feature_name: String,
    pub enabled: bool,
    pub value: FlagsmithValue,
    /// The feature state's id (`django_id`), when the sender told it.
    pub state_id: Option<u64>,
}

/// What the document says about one identity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdentityEntry {
    /// Flagsmith's id of the identity, when the document carries it (the hashing key when
    /// `use_identity_composite_key_for_hashing` is false).
    pub django_id: Option<u64>,
    pub overrides: Vec<IdentityOverride>,
}

/// How an environment's answers are shaped, from the document's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvaluationSettings {
    /// The environment's own `hide_disabled_flags` when set, else the project's.
    pub hide_disabled_flags: bool,
    /// `use_identity_composite_key_for_hashing`: hash `<client key>_<identifier>`, else the
    /// identity's Flagsmith id.
    pub composite_key_hashing: bool,
    /// `hide_sensitive_data`: answers leave out ids, feature details and traits.
    pub hide_sensitive_data: bool,
}

impl Default for EvaluationSettings {
    fn default() -> Self {
        EvaluationSettings {
            hide_disabled_flags: false,
            composite_key_hashing: true,
            hide_sensitive_data: false,
        }
    }
}

/// A checked environment document, ready to evaluate.
#[derive(Debug, Clone)]
pub struct EvaluationDocument {
    /// The document's `id`: Flagsmith's environment id.
    pub env_id: u64,
    /// The client-side key (`api_key`).
    pub api_key: String,
    pub name: String,
    pub updated_at: Option<String>,
    pub settings: EvaluationSettings,
    /// The environment's context without identity overrides, multivariate options in id order.
    pub context: EngineEvaluationContext,
    /// Identifier -> its overrides, as the document holds them.
    pub identities: Arc<HashMap<String, IdentityEntry>>,
    /// `use_identity_overrides_in_local_eval`: when false the document carries no identity
    /// overrides, which says nothing about whether there are any.
    pub carries_identity_overrides: bool,
}

/// The parts of a document the engine crate does not read.
#[derive(Deserialize)]
struct Settings {
    #[serde(default)]
    hide_disabled_flags: Option<bool>,
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default)]
    use_identity_composite_key_for_hashing: Option<bool>,
    #[serde(default)]
    hide_sensitive_data: Option<bool>,
    #[serde(default)]
    use_identity_overrides_in_local_eval: Option<bool>,
    #[serde(default)]
    identity_overrides: Option<Vec<DocumentIdentity>>,
}

#[derive(Deserialize)]
struct DocumentIdentity {
    identifier: String,
    #[serde(default)]
    django_id: Option<u64>,
    #[serde(default)]
    identity_features: Vec<FeatureState>,
}

impl EvaluationDocument {
    /// Reads and checks a document; anything the engine could not evaluate is refused here, so
    /// that no request ever meets it.
    pub fn parse(raw: &[u8]) -> Result<EvaluationDocument, DocumentError> {
        let mut value: serde_json::Value =
            serde_json::from_slice(raw).map_err(|e| DocumentError::NotJson(e.to_string()))?;
        let object = value.as_object_mut().ok_or(DocumentError::NotAnObject)?;
        // Taken out before the engine reads the rest: see the module's comment.
        let identities = object.remove("identity_overrides");
        let settings: Settings = serde_json::from_value(serde_json::Value::Object(
            object
                .iter()
                .filter(|(key, _)| {
                    matches!(
                        key.as_str(),
                        "hide_disabled_flags"
                            | "updated_at"
                            | "use_identity_composite_key_for_hashing"
                            | "hide_sensitive_data"
                            | "use_identity_overrides_in_local_eval"
                    )
                })
                .map(|(key, value)| (key.clone(), value.clone()))
                .chain(identities.map(|v| ("identity_overrides".to_owned(), v)))
                .collect(),
        ))
        .map_err(|e| DocumentError::Shape(e.to_string()))?;
        let mut environment: Environment =
            serde_json::from_value(value).map_err(|e| DocumentError::Shape(e.to_string()))?;
        sort_options(&mut environment);
        let hide_disabled_flags = settings
            .hide_disabled_flags
            .unwrap_or(environment.project.hide_disabled_flags);
        let identities = read_identities(settings.identity_overrides.unwrap_or_default());
        let (env_id, api_key, name) = (
            u64::from(environment.id),
            environment.api_key.clone(),
            environment.name.clone(),
        );
        let mut context = environment_to_context(environment);
        mark_keyless_options(&mut context);
        Ok(EvaluationDocument {
            env_id,
            api_key,
            name,
            updated_at: settings.updated_at,
            settings: EvaluationSettings {
                hide_disabled_flags,
                composite_key_hashing: settings
                    .use_identity_composite_key_for_hashing
                    .unwrap_or(true),
                hide_sensitive_data: settings.hide_sensitive_data.unwrap_or(false),
            },
            context,
            identities: Arc::new(identities),
            carries_identity_overrides: settings
                .use_identity_overrides_in_local_eval
                .unwrap_or(true),
        })
    }
}

/// The engine keeps options in document order and allocates buckets in that order; Flagsmith
/// allocates them by option id.
fn sort_options(environment: &mut Environment) {
    let states = environment.feature_states.iter_mut().chain(
        environment
            .project
            .segments
            .iter_mut()
            .flat_map(|segment| segment.feature_states.iter_mut()),
    );
    for state in states {
        state
            .multivariate_feature_state_values
            .sort_by_key(|value| (value.id.is_none(), value.id));
    }
}

/// Gives every keyless option the [`KEYLESS_OPTION`] key (see there).
fn mark_keyless_options(context: &mut EngineEvaluationContext) {
    let features = context.features.values_mut().chain(
        context
            .segments
            .values_mut()
            .flat_map(|segment| segment.overrides.iter_mut()),
    );
    for feature in features {
        for variant in &mut feature.variants {
            variant.key.get_or_insert_with(|| KEYLESS_OPTION.to_owned());
        }
    }
}

fn read_identities(listed: Vec<DocumentIdentity>) -> HashMap<String, IdentityEntry> {
    listed
        .into_iter()
        .map(|identity| {
            let overrides = identity
                .identity_features
                .iter()
                .map(|state| IdentityOverride {
                    feature_id: u64::from(state.feature.id),
                    feature_name: state.feature.name.clone(),
                    enabled: state.enabled,
                    value: state.get_value(None),
                    state_id: state.django_id.map(u64::from),
                })
                .collect();
            let entry = IdentityEntry {
                django_id: identity.django_id,
                overrides,
            };
            (identity.identifier, entry)
        })
        .collect()
}

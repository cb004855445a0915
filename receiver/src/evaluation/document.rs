//! An environment document in Flagsmith's local-evaluation format (what
//! `GET /api/v1/environment-document/` returns), read and checked once, when it arrives, into what
//! evaluation needs: the engine's context for the environment, and the identity overrides apart.
//!
//! Identity overrides are read by this module, not by the engine crate: its `Identity` panics on
//! a `created_date` it cannot parse, and the engine would turn the overrides into segments whose
//! `IN` lists every identifier (a scan per request). Here they are a map by identifier.

use std::collections::HashMap;
use std::sync::Arc;

use flagsmith_flag_engine::engine_eval::context::{ConditionValue, SegmentRule};
use flagsmith_flag_engine::engine_eval::{EngineEvaluationContext, environment_to_context};
use flagsmith_flag_engine::environments::Environment;
use flagsmith_flag_engine::types::FlagsmithValue;
use serde::Deserialize;
use serde_json::error::Category;
use serde_json::value::RawValue;

use crate::error::DocumentError;

/// A variant key that stands for "an option with no key": the engine answers an option's key as
/// its `variant`, and `None` both for "no split applied" and for a keyless option; this tells them
/// apart (see [`crate::evaluation::PreparedEnvironment`]).
pub(crate) const KEYLESS_OPTION: &str = "";

/// One identity override: a feature state for one identifier.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityOverride {
    pub feature_id: u64,
    /// Shared by every override of the feature.
    pub feature_name: Arc<str>,
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
    pub overrides: Box<[IdentityOverride]>,
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
}

/// The document's own fields for [`Settings`].
const SETTINGS_FIELDS: [&str; 5] = [
    "hide_disabled_flags",
    "updated_at",
    "use_identity_composite_key_for_hashing",
    "hide_sensitive_data",
    "use_identity_overrides_in_local_eval",
];

/// The document's field of identity overrides, read apart from the engine's part.
const IDENTITY_OVERRIDES_FIELD: &str = "identity_overrides";

#[derive(Deserialize)]
struct DocumentIdentity {
    identifier: String,
    #[serde(default)]
    django_id: Option<u64>,
    #[serde(default)]
    identity_features: Vec<DocumentOverride>,
}

/// An identity's feature state, only what evaluation reads of it (the engine's `FeatureState`
/// would also keep its uuid and options, a million times over). Types as the engine's.
#[derive(Deserialize)]
struct DocumentOverride {
    feature: OverriddenFeature,
    enabled: bool,
    #[serde(default)]
    django_id: Option<u32>,
    feature_state_value: FlagsmithValue,
}

#[derive(Deserialize)]
struct OverriddenFeature {
    id: u32,
    name: String,
}

impl EvaluationDocument {
    /// Reads and checks a document; anything the engine could not evaluate is refused here, so
    /// that no request ever meets it.
    ///
    /// The document is split into its top-level fields as borrowed raw JSON, and each part is read
    /// straight into its type: a parsed JSON tree of a document with a million identity overrides
    /// would take several times its size, and the allocator keeps much of that after it is freed.
    pub fn parse(raw: &[u8]) -> Result<EvaluationDocument, DocumentError> {
        let fields = top_level_fields(raw)?;
        let shape = |e: serde_json::Error| DocumentError::Shape(e.to_string());
        // Taken apart before the engine reads the rest: see the module's comment.
        let identities = fields
            .get(IDENTITY_OVERRIDES_FIELD)
            .map(|raw| parse_identity_overrides(raw.get().as_bytes()))
            .transpose()?
            .unwrap_or_default();
        let settings: Settings =
            serde_json::from_str(&object_of(&fields, |key| SETTINGS_FIELDS.contains(&key)))
                .map_err(shape)?;
        let mut environment: Environment =
            serde_json::from_str(&object_of(&fields, |key| key != IDENTITY_OVERRIDES_FIELD))
                .map_err(shape)?;
        sort_options(&mut environment);
        let hide_disabled_flags = settings
            .hide_disabled_flags
            .unwrap_or(environment.project.hide_disabled_flags);
        let (env_id, api_key, name) = (
            u64::from(environment.id),
            environment.api_key.clone(),
            environment.name.clone(),
        );
        let mut context = environment_to_context(environment);
        mark_keyless_options(&mut context);
        for segment in context.segments.values_mut() {
            read_array_values(&mut segment.rules);
        }
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

/// A document's `identity_overrides` field as it was sent (a JSON array, or `null`), when it
/// has one.
pub fn identity_overrides_json(raw: &[u8]) -> Result<Option<String>, DocumentError> {
    let fields = top_level_fields(raw)?;
    Ok(fields
        .get(IDENTITY_OVERRIDES_FIELD)
        .map(|overrides| overrides.get().to_owned()))
}

/// Reads a document's `identity_overrides` field (see [`identity_overrides_json`]) into a map by
/// identifier.
pub fn parse_identity_overrides(
    json: &[u8],
) -> Result<HashMap<String, IdentityEntry>, DocumentError> {
    let listed: Option<Vec<DocumentIdentity>> =
        serde_json::from_slice(json).map_err(|e| DocumentError::Shape(e.to_string()))?;
    Ok(read_identities(listed.unwrap_or_default()))
}

/// A document's top-level fields as borrowed raw JSON.
fn top_level_fields(raw: &[u8]) -> Result<HashMap<String, &RawValue>, DocumentError> {
    serde_json::from_slice(raw).map_err(|e| match e.classify() {
        Category::Data => DocumentError::NotAnObject,
        _ => DocumentError::NotJson(e.to_string()),
    })
}

/// A JSON object of the `fields` whose key `keep` accepts, as text.
fn object_of(fields: &HashMap<String, &RawValue>, keep: impl Fn(&str) -> bool) -> String {
    let mut object = String::from("{");
    for (key, value) in fields.iter().filter(|(key, _)| keep(key)) {
        if object.len() > 1 {
            object.push(',');
        }
        object.push_str(&serde_json::Value::from(key.as_str()).to_string());
        object.push(':');
        object.push_str(value.get());
    }
    object.push('}');
    object
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

/// Reads a condition value written as a JSON array of strings (`["a","b"]`) as that list, as
/// Flagsmith's engines do (its suite: `test_in_condition_json_array_format__should_match`). The
/// crate does so when it reads an evaluation context, but its mapping from a document keeps the
/// text whole, so an `IN` listing values that way would match nothing.
fn read_array_values(rules: &mut [SegmentRule]) {
    for rule in rules {
        for condition in &mut rule.conditions {
            if let ConditionValue::Single(text) = &condition.value
                && text.trim_start().starts_with('[')
                && let Ok(values) = serde_json::from_str::<Vec<String>>(text)
            {
                condition.value = ConditionValue::Multiple(values);
            }
        }
        read_array_values(&mut rule.rules);
    }
}

fn read_identities(listed: Vec<DocumentIdentity>) -> HashMap<String, IdentityEntry> {
    // One allocation per feature name, however many identities override the feature.
    let mut names: HashMap<String, Arc<str>> = HashMap::new();
    let mut intern = |name: String| {
        names
            .entry(name)
            .or_insert_with_key(|name| Arc::from(name.as_str()))
            .clone()
    };
    listed
        .into_iter()
        .map(|identity| {
            let overrides = identity
                .identity_features
                .into_iter()
                .map(|state| IdentityOverride {
                    feature_id: u64::from(state.feature.id),
                    feature_name: intern(state.feature.name),
                    enabled: state.enabled,
                    value: state.feature_state_value,
                    state_id: state.django_id.map(u64::from),
                })
                .collect::<Vec<_>>()
                .into_boxed_slice();
            let entry = IdentityEntry {
                django_id: identity.django_id,
                overrides,
            };
            (identity.identifier, entry)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The live environment's document at step 30 of the recorded Flagsmith run.
    fn recorded() -> serde_json::Value {
        let path = format!(
            "{}/../../shared/conformance/flagsmith-v2.265.0-live/steps/030.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let step: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        step["environment_documents"]["live"].clone()
    }

    #[test]
    fn identity_overrides_of_one_feature_share_its_name() {
        let mut doc = recorded();
        let anna = doc["identity_overrides"][0].clone();
        let mut ben = anna.clone();
        ben["identifier"] = "u-ben".into();
        ben["identity_features"][0]["feature_state_value"] = 7.into();
        doc["identity_overrides"] = serde_json::json!([anna, ben]);
        let parsed = EvaluationDocument::parse(&serde_json::to_vec(&doc).unwrap()).unwrap();
        let of = |identifier: &str| parsed.identities[identifier].overrides[0].clone();
        let (anna, ben) = (of("u-anna"), of("u-ben"));
        assert_eq!(&*anna.feature_name, "banner_text");
        assert!(Arc::ptr_eq(&anna.feature_name, &ben.feature_name));
        assert_eq!(anna.value.value, "Anna banner");
        assert_eq!(ben.value.value, "7");
        assert_eq!((anna.feature_id, anna.state_id), (107, Some(408)));
    }

    #[test]
    fn what_is_not_a_json_object_is_refused_as_such() {
        let parse = |raw: &[u8]| EvaluationDocument::parse(raw).unwrap_err();
        assert!(matches!(parse(b"[1, 2]"), DocumentError::NotAnObject));
        assert!(matches!(parse(b"{\"id\": "), DocumentError::NotJson(_)));
        assert!(matches!(parse(b"{\"id\": \"x\"}"), DocumentError::Shape(_)));
        let mut without = recorded();
        without["identity_overrides"] = serde_json::Value::Null;
        let parsed = EvaluationDocument::parse(&serde_json::to_vec(&without).unwrap()).unwrap();
        assert!(parsed.identities.is_empty());
    }
}

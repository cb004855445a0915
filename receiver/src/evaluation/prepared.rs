//! An environment prepared for evaluation: the engine's context built once per change of the
//! document or of the web-hook changes on top of it, then evaluated per request.
//!
//! Identities are evaluated by the environment compiled once per change ([`super::compiled`]);
//! the engine crate evaluates environments without identity, and identities only where a
//! condition needs it. The engine reads the identity from its context, so each such request needs
//! a context of its own: cloning it per request is what makes Flagsmith's Edge Proxy slow; here
//! each prepared environment keeps a small pool of clones, and a request borrows one, sets its
//! identity, evaluates and gives it back.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};

use flagsmith_flag_engine::engine::get_evaluation_result;
use flagsmith_flag_engine::engine_eval::context::IdentityContext;
use flagsmith_flag_engine::engine_eval::{
    EngineEvaluationContext, FeatureContext, FlagResult, SegmentResult,
    remove_identity_from_context,
};
use flagsmith_flag_engine::types::{FlagsmithValue, FlagsmithValueType};

use crate::evaluation::compiled::{CompiledEnvironment, Identity};
use crate::evaluation::document::{
    EvaluationDocument, EvaluationSettings, IdentityEntry, KEYLESS_OPTION,
};
use crate::evaluation::outcome::{FlagOutcome, OutcomeValue};

/// How many idle contexts a prepared environment keeps: a request holds one only while it
/// evaluates, which it does without awaiting, so no more are in use at once than there are
/// threads (the runtime runs one worker per core). Each is a whole copy of the environment's
/// features and segments: more would be memory never used.
fn pool_size() -> usize {
    static SIZE: OnceLock<usize> = OnceLock::new();
    *SIZE.get_or_init(|| std::thread::available_parallelism().map_or(4, NonZeroUsize::get))
}

/// The engine's reason when an identity override decides a flag.
pub const IDENTITY_OVERRIDE_REASON: &str = "IDENTITY_OVERRIDE";

/// A flag state a web hook set (`None` where it deleted the key).
#[derive(Debug, Clone, PartialEq)]
pub struct OverlayState {
    pub enabled: bool,
    pub value: FlagsmithValue,
    /// The feature state's id, when the web hook told it.
    pub state_id: Option<u64>,
}

/// The web-hook changes to one feature that apply on top of the document.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureOverlay {
    pub id: u64,
    pub name: String,
    pub feature_type: Option<String>,
    /// `Some(None)`: the environment default was deleted (the feature is gone).
    pub default: Option<Option<OverlayState>>,
    /// Segment id -> (its override, or `None` where deleted; its priority).
    pub segments: Vec<(u64, Option<OverlayState>, Option<i64>)>,
}

/// An identity override a web hook set or removed, for the identity being evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityOverlay {
    pub feature_id: u64,
    pub feature_name: String,
    pub state: Option<OverlayState>,
    /// The identity's Flagsmith id, when the web hook told it.
    pub identity_id: Option<u64>,
}

/// Who a request is for.
#[derive(Debug, Clone, Default)]
pub struct IdentityInput {
    pub identifier: String,
    /// The hashing key when the caller knows it (the engine suite gives one); else it follows the
    /// document's settings.
    pub key: Option<String>,
    pub traits: HashMap<String, FlagsmithValue>,
}

/// One flag as evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedFlag {
    pub feature_id: u64,
    pub name: String,
    /// `STANDARD` or `MULTIVARIATE`.
    pub feature_type: String,
    pub enabled: bool,
    pub value: serde_json::Value,
    /// For multivariate features: the option's key, `"control"`, or `None` for a keyless option.
    pub variant: Option<String>,
    /// What decided it, as the engine says: `DEFAULT`/`STATIC`, `TARGETING_MATCH; segment=NAME`,
    /// `SPLIT; weight=N`, or [`IDENTITY_OVERRIDE_REASON`].
    pub reason: String,
    /// The winning feature state's id (`django_id`), when known.
    pub state_id: Option<u64>,
    /// Whether an identity override decided it.
    pub identity_override: bool,
    /// Flagsmith's id of the identity whose override decided it, when the document tells it.
    pub identity_id: Option<u64>,
}

/// An evaluation's answer: flags by feature id, and the segments the identity is in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    pub flags: Vec<ResolvedFlag>,
    pub segments: Vec<String>,
}

/// An environment ready to answer.
#[derive(Debug)]
pub struct PreparedEnvironment {
    base: EngineEvaluationContext,
    /// What the environment's own flags are evaluated on: only the segments whose rules read no
    /// identity (as Flagsmith's SDKs do), so that a rule such as `IS_NOT_SET` cannot match the
    /// absence of an identity.
    environment_only: EngineEvaluationContext,
    /// The environment compiled for identities; `None` where a condition needs the engine crate
    /// (a JSONPath it alone reads, or one reading other flags).
    compiled: Option<CompiledEnvironment>,
    settings: EvaluationSettings,
    /// Shared with the document: a million identity overrides are not copied per change.
    identities: Arc<HashMap<String, IdentityEntry>>,
    /// Feature name -> whether it is multivariate (its type, as the document or web hook said).
    multivariate: HashMap<String, bool>,
    idle: Mutex<Vec<EngineEvaluationContext>>,
}

impl PreparedEnvironment {
    /// Prepares a context as the engine suite states it (no identity overrides apart).
    pub fn from_context(mut context: EngineEvaluationContext) -> PreparedEnvironment {
        context.identity = None;
        for feature in context.features.values_mut() {
            for variant in &mut feature.variants {
                variant.key.get_or_insert_with(|| KEYLESS_OPTION.to_owned());
            }
        }
        Self::new(context, EvaluationSettings::default(), Arc::default())
    }

    /// Prepares an environment from its document (if any) and the web-hook changes on top.
    pub fn build(
        document: Option<&EvaluationDocument>,
        name: &str,
        overlay: &[FeatureOverlay],
    ) -> PreparedEnvironment {
        let (mut context, settings, identities) = match document {
            Some(doc) => (doc.context.clone(), doc.settings, doc.identities.clone()),
            None => (
                serde_json::from_value(serde_json::json!({
                    "environment": {"key": "", "name": name},
                }))
                .expect("an empty context literal reads"),
                EvaluationSettings::default(),
                Arc::default(),
            ),
        };
        // A deleted feature leaves the context, so the document's identity overrides of it
        // find no flag to override.
        for feature in overlay {
            apply_overlay(&mut context, feature);
        }
        Self::new(context, settings, identities)
    }

    fn new(
        base: EngineEvaluationContext,
        settings: EvaluationSettings,
        identities: Arc<HashMap<String, IdentityEntry>>,
    ) -> PreparedEnvironment {
        let multivariate = base
            .features
            .values()
            .map(|f| (f.name.clone(), f.metadata.feature_type == "MULTIVARIATE"))
            .collect();
        PreparedEnvironment {
            environment_only: remove_identity_from_context(&base),
            compiled: CompiledEnvironment::compile(&base),
            base,
            settings,
            identities,
            multivariate,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The environment's context: features and segments, web-hook changes applied.
    pub fn context(&self) -> &EngineEvaluationContext {
        &self.base
    }

    /// The document's identity overrides, by identifier.
    pub fn document_identities(&self) -> &HashMap<String, IdentityEntry> {
        &self.identities
    }

    pub fn settings(&self) -> EvaluationSettings {
        self.settings
    }

    /// The client key the document named (empty without a document).
    pub fn api_key(&self) -> &str {
        &self.base.environment.key
    }

    /// Whether identities are evaluated by this project's compiled path (else by the crate).
    pub fn is_compiled(&self) -> bool {
        self.compiled.is_some()
    }

    /// How many distinct flags identity evaluation can give (see [`FlagOutcome::prepared`]).
    pub fn prepared_outcomes(&self) -> usize {
        self.compiled
            .as_ref()
            .map_or(0, CompiledEnvironment::outcomes)
    }

    /// Evaluates the environment for `identity` (the environment's own flags when `None`), with
    /// `overlay`: identity overrides that web hooks set or removed for this identity.
    pub fn evaluate(
        &self,
        identity: Option<&IdentityInput>,
        overlay: &[IdentityOverlay],
    ) -> Evaluation {
        match identity {
            Some(identity) => self.evaluate_identity(identity, overlay, owned),
            None => self.evaluate_with_engine(None, overlay),
        }
    }

    /// Evaluates `identity` and hands `answer` its flags (shown ones only, by feature id) and
    /// segments, borrowed: the answer is written without copying them. This is what answers
    /// identities; the engine crate evaluates only environments the compiled path cannot.
    pub fn evaluate_identity<R>(
        &self,
        identity: &IdentityInput,
        overlay: &[IdentityOverlay],
        answer: impl FnOnce(&[FlagOutcome<'_>], &[&str]) -> R,
    ) -> R {
        let Some(compiled) = &self.compiled else {
            let evaluation = self.evaluate_with_engine(Some(identity), overlay);
            let flags: Vec<FlagOutcome<'_>> = evaluation.flags.iter().map(Into::into).collect();
            let segments: Vec<&str> = evaluation.segments.iter().map(String::as_str).collect();
            return answer(&flags, &segments);
        };
        let key = match &identity.key {
            Some(key) => key.clone(),
            None => self.hashing_key(&identity.identifier),
        };
        let evaluation = compiled.evaluate(&Identity {
            identifier: &identity.identifier,
            key: &key,
            traits: &identity.traits,
        });
        let mut flags = evaluation.flags;
        self.apply_identity_overrides(&mut flags, &identity.identifier, overlay);
        self.shown(&mut flags);
        answer(&flags, &evaluation.segments)
    }

    /// The engine crate's evaluation, the reference the compiled path is held to.
    pub fn evaluate_with_engine(
        &self,
        identity: Option<&IdentityInput>,
        overlay: &[IdentityOverlay],
    ) -> Evaluation {
        let Some(identity) = identity else {
            let result = get_evaluation_result(&self.environment_only);
            let flags: Vec<ResolvedFlag> = result
                .flags
                .into_values()
                .map(|flag| self.resolved(&self.environment_only, flag, false))
                .collect();
            let mut outcomes: Vec<FlagOutcome<'_>> = flags.iter().map(Into::into).collect();
            self.shown(&mut outcomes);
            return owned(&outcomes, &segment_names(&result.segments));
        };
        let mut context = self.borrow_context();
        context.identity = Some(IdentityContext {
            identifier: identity.identifier.clone(),
            key: identity
                .key
                .clone()
                .unwrap_or_else(|| self.hashing_key(&identity.identifier)),
            traits: identity.traits.clone(),
        });
        let result = get_evaluation_result(&context);
        context.identity = None;
        let flags: Vec<ResolvedFlag> = result
            .flags
            .into_values()
            .map(|flag| self.resolved(&context, flag, true))
            .collect();
        self.give_back(context);
        let mut outcomes: Vec<FlagOutcome<'_>> = flags.iter().map(Into::into).collect();
        self.apply_identity_overrides(&mut outcomes, &identity.identifier, overlay);
        self.shown(&mut outcomes);
        owned(&outcomes, &segment_names(&result.segments))
    }

    /// Hides disabled flags where the settings say so, and orders flags by feature id (then
    /// name: contexts without ids give every feature id 0).
    fn shown(&self, flags: &mut Vec<FlagOutcome<'_>>) {
        if self.settings.hide_disabled_flags {
            flags.retain(|flag| flag.enabled);
        }
        flags.sort_by(|a, b| (a.feature_id, a.name).cmp(&(b.feature_id, b.name)));
    }

    /// Flagsmith's hashing key: `<client key>_<identifier>`, or the identity's Flagsmith id
    /// where the document turns composite keys off and knows the identity.
    fn hashing_key(&self, identifier: &str) -> String {
        let django_id = (!self.settings.composite_key_hashing)
            .then(|| self.identities.get(identifier).and_then(|e| e.django_id))
            .flatten();
        match django_id {
            Some(id) => id.to_string(),
            None => format!("{}_{}", self.base.environment.key, identifier),
        }
    }

    fn resolved(
        &self,
        context: &EngineEvaluationContext,
        flag: FlagResult,
        has_identity: bool,
    ) -> ResolvedFlag {
        let segment_name = flag.reason.strip_prefix("TARGETING_MATCH; segment=");
        let winning = segment_name
            .and_then(|segment| {
                context
                    .segments
                    .values()
                    .find(|s| s.name == segment)
                    .and_then(|s| s.overrides.iter().find(|o| o.name == flag.name))
            })
            .or_else(|| context.features.get(&flag.name));
        let multivariate = self.multivariate.get(&flag.name).copied().unwrap_or(false);
        let variant = match flag.variant {
            Some(key) if key == KEYLESS_OPTION => None,
            Some(key) => Some(key),
            // Flagsmith says "control" wherever an override supplies a multivariate value.
            None if has_identity && multivariate && segment_name.is_some() => {
                Some("control".to_owned())
            }
            None => None,
        };
        ResolvedFlag {
            feature_id: u64::from(flag.metadata.feature_id),
            name: flag.name,
            feature_type: flag.metadata.feature_type,
            enabled: flag.enabled,
            value: value_json(&flag.value),
            variant,
            reason: flag.reason,
            state_id: winning.and_then(|f| f.key.parse().ok()),
            identity_override: false,
            identity_id: None,
        }
    }

    /// The identity's overrides, the document's and the web hooks' (which replace the
    /// document's, feature by feature, removals too), applied to its flags.
    fn apply_identity_overrides<'a>(
        &'a self,
        flags: &mut [FlagOutcome<'a>],
        identifier: &str,
        overlay: &'a [IdentityOverlay],
    ) {
        let entry = self.identities.get(identifier);
        let identity_id = entry.and_then(|entry| entry.django_id);
        let from_document = entry.map(|entry| &*entry.overrides).unwrap_or_default();
        let overridden = |id: u64| overlay.iter().any(|o| o.feature_id == id);
        let document = from_document
            .iter()
            .filter(|o| !overridden(o.feature_id))
            .map(|o| (o.feature_id, o.enabled, &o.value, o.state_id, identity_id));
        let from_webhooks = overlay.iter().filter_map(|o| {
            let state = o.state.as_ref()?;
            Some((
                o.feature_id,
                state.enabled,
                &state.value,
                state.state_id,
                o.identity_id,
            ))
        });
        for (feature_id, enabled, value, state_id, identity_id) in document.chain(from_webhooks) {
            let Some(flag) = flags.iter_mut().find(|flag| flag.feature_id == feature_id) else {
                continue;
            };
            flag.enabled = enabled;
            flag.value = OutcomeValue::Raw(value);
            flag.reason = IDENTITY_OVERRIDE_REASON;
            flag.segment = None;
            flag.state_id = state_id;
            flag.identity_override = true;
            flag.identity_id = identity_id;
            flag.prepared = None;
            let multivariate = self.multivariate.get(flag.name).copied().unwrap_or(false);
            flag.variant = multivariate.then_some("control");
        }
    }

    fn borrow_context(&self) -> EngineEvaluationContext {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        idle.unwrap_or_else(|| self.base.clone())
    }

    fn give_back(&self, context: EngineEvaluationContext) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < pool_size() {
            idle.push(context);
        }
    }
}

/// An evaluation, owned.
fn owned(flags: &[FlagOutcome<'_>], segments: &[&str]) -> Evaluation {
    Evaluation {
        flags: flags.iter().map(FlagOutcome::to_resolved).collect(),
        segments: segments.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn segment_names(segments: &[SegmentResult]) -> Vec<&str> {
    segments.iter().map(|s| s.name.as_str()).collect()
}

/// Applies one feature's web-hook changes to the context.
fn apply_overlay(context: &mut EngineEvaluationContext, overlay: &FeatureOverlay) {
    if let Some(None) = overlay.default {
        // Deleted: its overrides go with it, as in Flagsmith. By id: a feature re-created under
        // the same name has a new id.
        let other = |feature: &FeatureContext| u64::from(feature.metadata.feature_id) != overlay.id;
        context.features.retain(|_, feature| other(feature));
        for segment in context.segments.values_mut() {
            segment.overrides.retain(other);
        }
        return;
    }
    // Matched by id: a web hook may name a feature otherwise than the document does.
    let is_this = |feature: &FeatureContext| u64::from(feature.metadata.feature_id) == overlay.id;
    let name = context
        .features
        .values()
        .find(|feature| is_this(feature))
        .map_or_else(|| overlay.name.clone(), |feature| feature.name.clone());
    if let Some(Some(state)) = &overlay.default {
        let feature = context
            .features
            .entry(name.clone())
            .or_insert_with(|| new_feature(overlay, &name));
        feature.enabled = state.enabled;
        feature.value = state.value.clone();
        if let Some(state_id) = state.state_id {
            feature.key = state_id.to_string();
        }
    }
    for (segment_id, state, priority) in &overlay.segments {
        // A segment the document does not hold has no rules here: nobody can match it.
        let Some(segment) = context.segments.get_mut(&segment_id.to_string()) else {
            continue;
        };
        segment.overrides.retain(|o| !is_this(o));
        if let Some(state) = state {
            let mut feature = new_feature(overlay, &name);
            feature.enabled = state.enabled;
            feature.value = state.value.clone();
            feature.priority = priority.map(|p| p as f64);
            feature.key = state.state_id.map(|id| id.to_string()).unwrap_or_default();
            segment.overrides.push(feature);
        }
    }
}

fn new_feature(overlay: &FeatureOverlay, name: &str) -> FeatureContext {
    let mut feature: FeatureContext = serde_json::from_value(serde_json::json!({
        "key": "",
        "name": name,
        "enabled": false,
        "value": null,
        "metadata": {"feature_id": overlay.id, "feature_type": overlay.feature_type.as_deref().unwrap_or("STANDARD")},
    }))
    .expect("a feature context literal reads");
    feature.metadata.feature_id = u32::try_from(overlay.id).unwrap_or(u32::MAX);
    feature
}

/// A value as JSON, without the engine's serialiser (which panics on an integer past `i64`).
pub fn value_json(value: &FlagsmithValue) -> serde_json::Value {
    let text = value.value.as_str();
    match value.value_type {
        FlagsmithValueType::None => serde_json::Value::Null,
        FlagsmithValueType::String => serde_json::Value::String(value.value.clone()),
        FlagsmithValueType::Bool => serde_json::Value::Bool(text == "true"),
        FlagsmithValueType::Integer | FlagsmithValueType::Float => text
            .parse::<serde_json::Number>()
            .map(serde_json::Value::Number)
            .unwrap_or_else(|_| serde_json::Value::String(value.value.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> EngineEvaluationContext {
        serde_json::from_value(serde_json::json!({
            "environment": {"key": "env-key", "name": "test"},
            "features": {"banner": {"key": "1", "name": "banner", "enabled": true, "value": "default",
                                    "metadata": {"feature_id": 1}}},
            "segments": {"9": {"key": "9", "name": "no_promo",
                "rules": [{"type": "ALL", "conditions": [
                    {"operator": "IS_NOT_SET", "property": "promo", "value": ""}]}],
                "overrides": [{"key": "2", "name": "banner", "enabled": true, "value": "segment",
                               "priority": 0, "metadata": {"feature_id": 1}}]}},
        }))
        .unwrap()
    }

    #[test]
    fn the_environment_flags_never_match_a_segment_on_a_missing_identity() {
        let prepared = PreparedEnvironment::from_context(context());
        let environment = prepared.evaluate(None, &[]);
        assert_eq!(environment.flags[0].value, serde_json::json!("default"));
        let identity = IdentityInput {
            identifier: "u".into(),
            ..IdentityInput::default()
        };
        let evaluation = prepared.evaluate(Some(&identity), &[]);
        assert_eq!(evaluation.flags[0].value, serde_json::json!("segment"));
        assert_eq!(evaluation.segments, vec!["no_promo".to_owned()]);
    }
}

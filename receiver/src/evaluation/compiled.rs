//! An environment compiled for identity evaluation: what Flagsmith's engine works out again on
//! every request (segment conditions, variant order, reasons, the JSON of every value) worked out
//! once per change, so that evaluating an identity allocates a few small vectors and compares.
//!
//! The result is that of `flagsmith-flag-engine`'s `get_evaluation_result`, step by step (segments
//! in their order, the lowest priority winning and the first seen winning a tie, multivariate
//! allocation by Flagsmith's hash); the crate stays the reference, and the differential tests in
//! `tests/receiver/evaluation_differential.rs` compare the two on random identities.

use std::collections::HashMap;

use flagsmith_flag_engine::engine_eval::context::{SegmentRule, SegmentRuleType};
use flagsmith_flag_engine::engine_eval::{EngineEvaluationContext, FeatureContext};
use flagsmith_flag_engine::types::FlagsmithValue;

use crate::evaluation::conditions::{
    CompiledCondition, Subject, TraitNames, compile, hashed_percentage,
};
use crate::evaluation::outcome::{FlagOutcome, OutcomeValue};
use crate::evaluation::value_json;

/// One feature state (an environment default or a segment's override), as the engine reads it.
#[derive(Debug)]
struct CompiledState {
    /// The engine's hashing key for multivariate allocation (the state's id as text).
    key: String,
    name: String,
    feature_id: u64,
    feature_type: String,
    enabled: bool,
    value: FlagsmithValue,
    value_json: Box<str>,
    /// Lower wins; none is the weakest.
    priority: f64,
    /// Multivariate options in the engine's allocation order.
    variants: Vec<CompiledVariant>,
    state_id: Option<u64>,
    /// The [`FlagOutcome::prepared`] number of this state's flag; its variants' follow it.
    outcome: u32,
}

#[derive(Debug)]
struct CompiledVariant {
    key: Option<String>,
    value: FlagsmithValue,
    value_json: Box<str>,
    weight: f64,
    /// `SPLIT; weight=N`, as the engine words it.
    reason: String,
}

#[derive(Debug)]
struct CompiledFeature {
    default: CompiledState,
    multivariate: bool,
    /// `DEFAULT` where some segment overrides the feature, else `STATIC`.
    fallback_reason: &'static str,
}

#[derive(Debug)]
struct CompiledRule {
    kind: SegmentRuleType,
    conditions: Vec<CompiledCondition>,
    rules: Vec<CompiledRule>,
}

#[derive(Debug)]
struct CompiledSegment {
    key: String,
    name: String,
    /// `TARGETING_MATCH; segment=NAME`.
    reason: String,
    rules: Vec<CompiledRule>,
    /// By feature index; overrides of no feature of the environment are left out (no flag).
    overrides: Vec<(usize, CompiledState)>,
}

/// An environment's features and segments, compiled.
#[derive(Debug)]
pub(crate) struct CompiledEnvironment {
    environment_key: String,
    environment_name: String,
    trait_names: TraitNames,
    /// In feature id order, the order of answers.
    features: Vec<CompiledFeature>,
    segments: Vec<CompiledSegment>,
    /// How many distinct flags evaluation can give (see [`FlagOutcome::prepared`]).
    outcomes: u32,
}

/// Who is evaluated, as the engine's identity context holds it.
pub(crate) struct Identity<'a> {
    pub(crate) identifier: &'a str,
    /// The context's key (may be empty: then the engine hashes `<environment key>_<identifier>`).
    pub(crate) key: &'a str,
    pub(crate) traits: &'a HashMap<String, FlagsmithValue>,
}

/// An identity's flags before identity overrides, and the segments it is in.
pub(crate) struct CompiledEvaluation<'a> {
    pub(crate) flags: Vec<FlagOutcome<'a>>,
    pub(crate) segments: Vec<&'a str>,
}

impl CompiledEnvironment {
    /// Compiles `context`, or `None` where a condition needs the engine's JSONPath or reads
    /// other flags (see [`crate::evaluation::conditions`]).
    pub(crate) fn compile(context: &EngineEvaluationContext) -> Option<CompiledEnvironment> {
        let mut feature_contexts: Vec<&FeatureContext> = context.features.values().collect();
        feature_contexts.sort_by_key(|f| f.metadata.feature_id);
        let index: HashMap<&str, usize> = feature_contexts
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.as_str(), i))
            .collect();
        let mut targeted = vec![false; feature_contexts.len()];
        let mut trait_names = TraitNames::default();
        let mut outcomes = 0;
        let mut segments = Vec::with_capacity(context.segments.len());
        for (key, segment) in &context.segments {
            let rules = compile_rules(&segment.rules, &mut trait_names)?;
            let mut overrides = Vec::new();
            for state in &segment.overrides {
                // As the engine: any override of a feature, matched or not, makes it "targeted".
                if let Some(&i) = index.get(state.name.as_str()) {
                    targeted[i] = true;
                    overrides.push((i, compile_state(state, &mut outcomes)));
                }
            }
            segments.push(CompiledSegment {
                key: key.clone(),
                name: segment.name.clone(),
                reason: format!("TARGETING_MATCH; segment={}", segment.name),
                rules,
                overrides,
            });
        }
        let features = feature_contexts
            .iter()
            .zip(targeted)
            .map(|(feature, targeted)| CompiledFeature {
                default: compile_state(feature, &mut outcomes),
                multivariate: feature.metadata.feature_type == "MULTIVARIATE",
                fallback_reason: if targeted { "DEFAULT" } else { "STATIC" },
            })
            .collect();
        Some(CompiledEnvironment {
            environment_key: context.environment.key.clone(),
            environment_name: context.environment.name.clone(),
            trait_names,
            features,
            segments,
            outcomes,
        })
    }

    /// How many distinct flags evaluation can give: [`FlagOutcome::prepared`] is below it.
    pub(crate) fn outcomes(&self) -> usize {
        self.outcomes as usize
    }

    /// Evaluates `identity`: every feature's flag in feature id order, and its segments.
    pub(crate) fn evaluate<'a>(&'a self, identity: &Identity<'_>) -> CompiledEvaluation<'a> {
        let mut traits = vec![None; self.trait_names.len()];
        for (name, value) in identity.traits {
            if let Some(i) = self.trait_names.get(name) {
                traits[i] = Some(value);
            }
        }
        let subject = Subject {
            environment_key: &self.environment_key,
            environment_name: &self.environment_name,
            identifier: identity.identifier,
            key: identity.key,
            traits: &traits,
        };
        let hashing_key = if identity.key.is_empty() {
            format!("{}_{}", self.environment_key, identity.identifier)
        } else {
            identity.key.to_owned()
        };
        // Per feature: the winning segment override so far (segment, state).
        let mut winners: Vec<Option<(&CompiledSegment, &CompiledState)>> =
            vec![None; self.features.len()];
        let mut segments = Vec::new();
        for segment in &self.segments {
            if !segment_matches(segment, &subject) {
                continue;
            }
            segments.push(segment.name.as_str());
            for (i, state) in &segment.overrides {
                let wins = winners[*i].is_none_or(|(_, held)| state.priority < held.priority);
                if wins {
                    winners[*i] = Some((segment, state));
                }
            }
        }
        let flags = self
            .features
            .iter()
            .zip(winners)
            .map(|(feature, winner)| match winner {
                Some((segment, state)) => flag_of(feature, state, Some(segment), &hashing_key),
                None => flag_of(feature, &feature.default, None, &hashing_key),
            })
            .collect();
        CompiledEvaluation { flags, segments }
    }
}

fn compile_rules(rules: &[SegmentRule], traits: &mut TraitNames) -> Option<Vec<CompiledRule>> {
    rules
        .iter()
        .map(|rule| {
            Some(CompiledRule {
                kind: rule.rule_type.clone(),
                conditions: rule
                    .conditions
                    .iter()
                    .map(|condition| compile(condition, traits))
                    .collect::<Option<_>>()?,
                rules: compile_rules(&rule.rules, traits)?,
            })
        })
        .collect()
}

/// Compiles one state; `outcomes` counts the distinct flags it can give (itself, each option).
fn compile_state(feature: &FeatureContext, outcomes: &mut u32) -> CompiledState {
    let outcome = *outcomes;
    *outcomes += 1 + feature.variants.len() as u32;
    let mut variants: Vec<_> = feature.variants.iter().collect();
    // The engine's order: by priority, none last, stable otherwise.
    variants.sort_by(|a, b| {
        let priority = |p: Option<f64>| p.unwrap_or(f64::INFINITY);
        priority(a.priority)
            .partial_cmp(&priority(b.priority))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    CompiledState {
        key: feature.key.clone(),
        name: feature.name.clone(),
        feature_id: u64::from(feature.metadata.feature_id),
        feature_type: feature.metadata.feature_type.clone(),
        enabled: feature.enabled,
        value: feature.value.clone(),
        value_json: value_json(&feature.value).to_string().into(),
        priority: feature.priority.unwrap_or(f64::INFINITY),
        variants: variants
            .into_iter()
            .map(|variant| CompiledVariant {
                key: variant.key.clone(),
                value: variant.value.clone(),
                value_json: value_json(&variant.value).to_string().into(),
                weight: variant.weight,
                reason: format!("SPLIT; weight={}", variant.weight),
            })
            .collect(),
        state_id: feature.key.parse().ok(),
        outcome,
    }
}

fn segment_matches(segment: &CompiledSegment, subject: &Subject<'_>) -> bool {
    !segment.rules.is_empty()
        && segment
            .rules
            .iter()
            .all(|rule| rule_matches(rule, subject, &segment.key))
}

fn rule_matches(rule: &CompiledRule, subject: &Subject<'_>, segment_key: &str) -> bool {
    let condition = |c: &CompiledCondition| c.matches(subject, segment_key);
    let conditions_hold = rule.conditions.is_empty()
        || match rule.kind {
            SegmentRuleType::All => rule.conditions.iter().all(condition),
            SegmentRuleType::Any => rule.conditions.iter().any(condition),
            SegmentRuleType::None => !rule.conditions.iter().any(condition),
        };
    if !conditions_hold || rule.rules.is_empty() {
        return conditions_hold;
    }
    let mut nested = rule
        .rules
        .iter()
        .map(|r| rule_matches(r, subject, segment_key));
    match rule.kind {
        SegmentRuleType::All => nested.all(|r| r),
        SegmentRuleType::Any => nested.any(|r| r),
        SegmentRuleType::None => !nested.any(|r| r),
    }
}

/// One flag from its winning state (`segment`'s override, or the default where `None`), with the
/// engine's multivariate allocation, and the variant and state id as
/// [`crate::evaluation::PreparedEnvironment`] has always read them from the engine's result.
fn flag_of<'a>(
    feature: &'a CompiledFeature,
    state: &'a CompiledState,
    segment: Option<&'a CompiledSegment>,
    hashing_key: &str,
) -> FlagOutcome<'a> {
    let mut flag = FlagOutcome {
        feature_id: state.feature_id,
        name: &state.name,
        feature_type: &state.feature_type,
        enabled: state.enabled,
        value: OutcomeValue::Prepared(&state.value, &state.value_json),
        variant: None,
        reason: segment.map_or(feature.fallback_reason, |s| s.reason.as_str()),
        segment: segment.map(|s| s.name.as_str()),
        state_id: state.state_id,
        identity_override: false,
        identity_id: None,
        prepared: Some(state.outcome),
    };
    // The engine's variant: "control" unless an option is picked (an option without key gives
    // none), and nothing at all where no allocation applies.
    let mut engine_variant = None;
    if !state.variants.is_empty() && !state.key.is_empty() {
        engine_variant = Some("control");
        let percentage = f64::from(hashed_percentage(&state.key, hashing_key));
        let mut cumulative = 0.0;
        for (n, variant) in (1..).zip(&state.variants) {
            cumulative += variant.weight;
            if percentage <= cumulative {
                flag.value = OutcomeValue::Prepared(&variant.value, &variant.value_json);
                flag.reason = &variant.reason;
                engine_variant = variant.key.as_deref();
                // The reason no longer names the segment: the state is then found as the
                // environment default's, as from the engine's result.
                flag.segment = None;
                flag.state_id = feature.default.state_id;
                flag.prepared = Some(state.outcome + n);
                break;
            }
        }
    }
    flag.variant = match engine_variant {
        Some(crate::evaluation::document::KEYLESS_OPTION) => None,
        Some(key) => Some(key),
        // Flagsmith says "control" wherever an override supplies a multivariate value.
        None if feature.multivariate && flag.segment.is_some() => Some("control"),
        None => None,
    };
    flag
}

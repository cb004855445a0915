//! Flagsmith's environment document, as `GET /api/v1/environment-document/` answers it (the
//! recorded documents in `conformance/flagsmith-v2.265.0-live/` are the reference), made from
//! flagpost's own document ([`crate::document::EnvironmentDocument`]).
//!
//! Field names, nesting and order follow Flagsmith's. What flagpost has no counterpart for is
//! written as Flagsmith writes it for a fresh environment (`hide_disabled_flags: null`, empty
//! traits, no realtime updates). flagpost adds one field, `flagpost`, with the last applied
//! sequence and the database instance so that a receiver orders events after the document
//! exactly; Flagsmith's SDKs read the document as a map and ignore fields they do not know.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::changes::{
    EnvironmentRecord, MultivariateOption, SegmentCondition, SegmentRecord, SegmentRule, StateKey,
    StateRecord,
};
use crate::store::queries::{EnvironmentContent, FeatureContent};
use crate::wire::FlagValue;

/// What the document says of its environment that flagpost's own document does not carry.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentFacts {
    /// The environment's client-side key (`api_key`); identity hashing starts from it.
    pub client_key: String,
    pub organisation_id: u64,
}

#[derive(Serialize)]
pub struct FlagsmithDocument<'a> {
    allow_client_traits: bool,
    api_key: &'a str,
    feature_states: Vec<FeatureState<'a>>,
    hide_disabled_flags: Option<bool>,
    hide_sensitive_data: bool,
    id: u64,
    identity_overrides: Vec<IdentityOverride<'a>>,
    name: &'a str,
    project: Project<'a>,
    updated_at: &'a str,
    use_identity_composite_key_for_hashing: bool,
    use_identity_overrides_in_local_eval: bool,
    flagpost: Ordering,
}

/// Where the document stands in flagpost's event order.
#[derive(Serialize)]
struct Ordering {
    /// Every event up to this sequence is reflected in the document; none after it is.
    last_sequence: u64,
    /// The database the sequence counts in, as in event ids (16 hex digits).
    instance: String,
}

#[derive(Serialize)]
struct Project<'a> {
    enable_realtime_updates: bool,
    hide_disabled_flags: bool,
    id: u64,
    name: &'a str,
    organisation: Organisation,
    segments: Vec<Segment<'a>>,
    server_key_only_feature_ids: [u64; 0],
}

#[derive(Serialize)]
struct Organisation {
    feature_analytics: bool,
    id: u64,
    name: &'static str,
    persist_trait_data: bool,
    stop_serving_flags: bool,
}

#[derive(Serialize)]
struct Segment<'a> {
    feature_states: Vec<FeatureState<'a>>,
    id: u64,
    name: &'a str,
    /// A segment only named by an override (no segment record) has none: Flagsmith's engine
    /// matches a segment without rules to nobody.
    rules: Vec<Rule<'a>>,
}

#[derive(Serialize)]
struct Rule<'a> {
    conditions: Vec<Condition<'a>>,
    rules: Vec<Rule<'a>>,
    #[serde(rename = "type")]
    rule_type: &'a str,
}

#[derive(Serialize)]
struct Condition<'a> {
    operator: &'a str,
    property_: Option<&'a str>,
    value: Option<&'a str>,
}

impl<'a> From<&'a SegmentRule> for Rule<'a> {
    fn from(rule: &'a SegmentRule) -> Self {
        Rule {
            conditions: rule.conditions.iter().map(Condition::from).collect(),
            rules: rule.rules.iter().map(Rule::from).collect(),
            rule_type: &rule.rule_type,
        }
    }
}

impl<'a> From<&'a SegmentCondition> for Condition<'a> {
    fn from(condition: &'a SegmentCondition) -> Self {
        Condition {
            operator: &condition.operator,
            property_: condition.property.as_deref(),
            value: condition.value.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct IdentityOverride<'a> {
    composite_key: String,
    created_date: &'a str,
    dashboard_alias: Option<&'a str>,
    django_id: Option<u64>,
    environment_api_key: &'a str,
    identifier: &'a str,
    identity_features: Vec<FeatureState<'a>>,
    identity_traits: [(); 0],
    identity_uuid: String,
}

#[derive(Serialize)]
struct FeatureState<'a> {
    /// The state's id (`id` in web hooks): SDKs hash multivariate buckets by it. `null` only for
    /// a default state not yet stored, which SDKs then key by `featurestate_uuid`.
    django_id: Option<u64>,
    enabled: bool,
    feature: FeatureRef<'a>,
    feature_segment: Option<FeatureSegment>,
    feature_state_value: Option<&'a FlagValue>,
    featurestate_uuid: String,
    multivariate_feature_state_values: Vec<MultivariateStateValue<'a>>,
}

#[derive(Serialize)]
struct MultivariateStateValue<'a> {
    id: u64,
    multivariate_feature_option: OptionRef<'a>,
    mv_fs_value_uuid: String,
    percentage_allocation: f64,
}

#[derive(Serialize)]
struct OptionRef<'a> {
    id: u64,
    key: Option<&'a str>,
    value: Option<&'a FlagValue>,
}

#[derive(Serialize)]
struct FeatureRef<'a> {
    id: u64,
    name: &'a str,
    #[serde(rename = "type")]
    feature_type: &'a str,
}

#[derive(Serialize)]
struct FeatureSegment {
    priority: i64,
}

/// A stable UUID for a thing the document names but flagpost gives no UUID: the same state keeps
/// the same one across rebuilds and restarts (SDKs key multivariate hashing by it).
fn stable_uuid(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let mut bytes: [u8; 16] = hasher.finalize()[..16].try_into().expect("16 of 32 bytes");
    // RFC 9562 version 8 (custom), variant 10.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn feature_type(feature: &FeatureContent) -> &str {
    match feature.feature.feature_type.as_str() {
        "" => "STANDARD",
        other => other,
    }
}

/// Writes the states of one feature: the default, identity overrides, segment overrides.
struct StateWriter<'a> {
    env: String,
    feature: &'a FeatureContent,
}

impl<'a> StateWriter<'a> {
    fn state(&self, key: &StateKey, state: Option<&'a StateRecord>) -> FeatureState<'a> {
        let feature = &self.feature.feature;
        let key_text = match key {
            StateKey::Default => "default".to_owned(),
            StateKey::Identity(identifier) => format!("identity\0{identifier}"),
            StateKey::Segment(segment) => format!("segment\0{segment}"),
        };
        let feature_id = feature.id.to_string();
        let uuid_of = |what: &str| stable_uuid(&[&self.env, &feature_id, &key_text, what]);
        let multivariate = state.map(|s| s.multivariate.as_slice()).unwrap_or_default();
        FeatureState {
            django_id: state.map(|s| s.id),
            enabled: state.map_or(feature.default_enabled, |s| s.enabled),
            feature: FeatureRef {
                id: feature.id,
                name: &feature.name,
                feature_type: feature_type(self.feature),
            },
            feature_segment: match key {
                StateKey::Segment(_) => Some(FeatureSegment {
                    priority: state.and_then(|s| s.priority).unwrap_or(0),
                }),
                _ => None,
            },
            feature_state_value: state.map_or(feature.initial_value.as_ref(), |s| s.value.as_ref()),
            featurestate_uuid: uuid_of("state"),
            multivariate_feature_state_values: multivariate
                .iter()
                .map(|v| MultivariateStateValue {
                    id: v.id,
                    multivariate_feature_option: option_ref(&self.feature.options, v.option),
                    mv_fs_value_uuid: uuid_of(&format!("mv\0{}", v.id)),
                    percentage_allocation: v.percentage_allocation,
                })
                .collect(),
        }
    }
}

fn option_ref(options: &[MultivariateOption], id: u64) -> OptionRef<'_> {
    OptionRef {
        id,
        key: None,
        value: options
            .iter()
            .find(|o| o.id == id)
            .and_then(|o| o.value.as_ref()),
    }
}

fn segment_of(record: &SegmentRecord) -> Segment<'_> {
    Segment {
        feature_states: Vec::new(),
        id: record.id,
        name: &record.name,
        rules: record.rules.iter().map(Rule::from).collect(),
    }
}

/// The states of every feature: environment defaults, and overrides by identity and by segment.
struct States<'a> {
    defaults: Vec<FeatureState<'a>>,
    identities: BTreeMap<&'a str, Vec<FeatureState<'a>>>,
    segments: BTreeMap<u64, Segment<'a>>,
}

fn states<'a>(content: &'a EnvironmentContent, env: u64) -> States<'a> {
    let mut out = States {
        defaults: Vec::new(),
        identities: BTreeMap::new(),
        segments: content
            .segments
            .iter()
            .map(|s| (s.id, segment_of(s)))
            .collect(),
    };
    for feature in &content.features {
        let writer = StateWriter {
            env: env.to_string(),
            feature,
        };
        let default = feature.states.iter().find(|(k, _)| *k == StateKey::Default);
        out.defaults
            .push(writer.state(&StateKey::Default, default.map(|(_, s)| s)));
        for (key, state) in &feature.states {
            match key {
                StateKey::Default => {}
                StateKey::Identity(identifier) => out
                    .identities
                    .entry(identifier)
                    .or_default()
                    .push(writer.state(key, Some(state))),
                StateKey::Segment(id) => out
                    .segments
                    .entry(*id)
                    .or_insert_with(|| Segment {
                        feature_states: Vec::new(),
                        id: *id,
                        name: state.segment_name.as_deref().unwrap_or_default(),
                        rules: Vec::new(),
                    })
                    .feature_states
                    .push(writer.state(key, Some(state))),
            }
        }
    }
    out
}

impl<'a> FlagsmithDocument<'a> {
    /// Flagsmith's document for `content`, last changed at `updated_at` (RFC 3339).
    pub fn new(
        environment: &'a EnvironmentRecord,
        content: &'a EnvironmentContent,
        facts: &'a EnvironmentFacts,
        instance: u64,
        updated_at: &'a str,
    ) -> FlagsmithDocument<'a> {
        let env = environment.id.to_string();
        let states = states(content, environment.id);
        let client_key = facts.client_key.as_str();
        let identity_overrides = states
            .identities
            .into_iter()
            .map(|(identifier, identity_features)| IdentityOverride {
                composite_key: format!("{client_key}_{identifier}"),
                created_date: updated_at,
                dashboard_alias: None,
                django_id: None,
                environment_api_key: client_key,
                identifier,
                identity_features,
                identity_traits: [],
                identity_uuid: stable_uuid(&[&env, "identity", identifier]),
            })
            .collect();
        FlagsmithDocument {
            allow_client_traits: true,
            api_key: client_key,
            feature_states: states.defaults,
            hide_disabled_flags: None,
            hide_sensitive_data: false,
            id: environment.id,
            identity_overrides,
            name: &environment.name,
            project: Project {
                enable_realtime_updates: false,
                hide_disabled_flags: false,
                id: environment.project,
                name: &environment.project_name,
                organisation: Organisation {
                    feature_analytics: false,
                    id: facts.organisation_id,
                    name: "",
                    persist_trait_data: true,
                    stop_serving_flags: false,
                },
                segments: states.segments.into_values().collect(),
                server_key_only_feature_ids: [],
            },
            updated_at,
            use_identity_composite_key_for_hashing: true,
            use_identity_overrides_in_local_eval: true,
            flagpost: Ordering {
                last_sequence: content.last_sequence,
                instance: format!("{instance:016x}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_uuids_are_uuid_shaped_and_differ_by_part() {
        let a = stable_uuid(&["1", "2", "default"]);
        assert_eq!(a, stable_uuid(&["1", "2", "default"]));
        assert_ne!(a, stable_uuid(&["1", "2", "identity", "x"]));
        // The separator keeps ("12", "3") apart from ("1", "23").
        assert_ne!(stable_uuid(&["12", "3"]), stable_uuid(&["1", "23"]));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }
}

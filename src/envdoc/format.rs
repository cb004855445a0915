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

use crate::document::{EnvironmentDocument, FeatureDocument};
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
    /// flagpost's segments carry no rules yet: Flagsmith's engine matches a segment without
    /// rules to nobody, as flagpost's receivers do.
    rules: [(); 0],
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
    /// Flagsmith's database id; flagpost keeps none, and the SDKs key a state by
    /// `featurestate_uuid` when it is null.
    django_id: Option<u64>,
    enabled: bool,
    feature: FeatureRef<'a>,
    feature_segment: Option<FeatureSegment>,
    feature_state_value: Option<&'a FlagValue>,
    featurestate_uuid: String,
    multivariate_feature_state_values: [(); 0],
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

fn feature_type(feature: &FeatureDocument) -> &str {
    match feature.feature.feature_type.as_str() {
        "" => "STANDARD",
        other => other,
    }
}

impl<'a> FlagsmithDocument<'a> {
    /// Flagsmith's document for `document`, last changed at `updated_at` (RFC 3339).
    pub fn new(
        document: &'a EnvironmentDocument,
        facts: &'a EnvironmentFacts,
        instance: u64,
        updated_at: &'a str,
    ) -> FlagsmithDocument<'a> {
        let env = document.environment.id.to_string();
        let mut feature_states = Vec::new();
        let mut identities: BTreeMap<&str, Vec<FeatureState>> = BTreeMap::new();
        let mut segments: BTreeMap<u64, Segment> = BTreeMap::new();
        for feature in &document.features {
            let (id, name) = (feature.feature.id, feature.feature.name.as_str());
            let feature_id = id.to_string();
            let state = |enabled, value: &'a Option<FlagValue>, segment, key: &[&str]| {
                let mut parts = vec![env.as_str(), feature_id.as_str()];
                parts.extend_from_slice(key);
                FeatureState {
                    django_id: None,
                    enabled,
                    feature: FeatureRef {
                        id,
                        name,
                        feature_type: feature_type(feature),
                    },
                    feature_segment: segment,
                    feature_state_value: value.as_ref(),
                    featurestate_uuid: stable_uuid(&parts),
                    multivariate_feature_state_values: [],
                }
            };
            feature_states.push(state(feature.enabled, &feature.value, None, &["default"]));
            for o in &feature.identity_overrides {
                let fs = state(o.enabled, &o.value, None, &["identity", &o.identifier]);
                identities.entry(&o.identifier).or_default().push(fs);
            }
            for o in &feature.segment_overrides {
                let segment_id = o.segment.id.to_string();
                let priority = Some(FeatureSegment {
                    priority: o.priority,
                });
                let fs = state(o.enabled, &o.value, priority, &["segment", &segment_id]);
                segments
                    .entry(o.segment.id)
                    .or_insert_with(|| Segment {
                        feature_states: Vec::new(),
                        id: o.segment.id,
                        name: &o.segment.name,
                        rules: [],
                    })
                    .feature_states
                    .push(fs);
            }
        }
        let client_key = facts.client_key.as_str();
        let identity_overrides = identities
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
        let environment = &document.environment;
        FlagsmithDocument {
            allow_client_traits: true,
            api_key: client_key,
            feature_states,
            hide_disabled_flags: None,
            hide_sensitive_data: false,
            id: environment.id,
            identity_overrides,
            name: &environment.name,
            project: Project {
                enable_realtime_updates: false,
                hide_disabled_flags: false,
                id: environment.project.id,
                name: &environment.project.name,
                organisation: Organisation {
                    feature_analytics: false,
                    id: facts.organisation_id,
                    name: "",
                    persist_trait_data: true,
                    stop_serving_flags: false,
                },
                segments: segments.into_values().collect(),
                server_key_only_feature_ids: [],
            },
            updated_at,
            use_identity_composite_key_for_hashing: true,
            use_identity_overrides_in_local_eval: true,
            flagpost: Ordering {
                last_sequence: document.last_sequence,
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

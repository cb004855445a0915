//! Documents from an upstream Flagsmith, and how the web-hook changes sit on top of them
//! (DESIGN.md "Ordering in the receiver", point 5).
//!
//! Flagsmith's document carries no sequence. It supersedes every change the receiver took before
//! its fetch began, so those keys are dropped when it is loaded; changes taken during the fetch
//! stay and apply on top of it. A document never replaces one whose fetch began later, nor one
//! with a later `updated_at`: a slow fetch that finishes late cannot take the cache backwards.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use flagpost::wire::FlagValue;
use flagsmith_flag_engine::types::{FlagsmithValue, FlagsmithValueType};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::documents::cache::{Dirty, EnvCache, FlagCache, Outcome};
use crate::documents::raw::DocumentBytes;
use crate::documents::state::{FeatureEntry, FlagState};
use crate::error::DocumentError;
use crate::evaluation::document::{identity_overrides_json, parse_identity_overrides};
use crate::evaluation::{
    EvaluationDocument, FeatureOverlay, IdentityOverlay, OverlayState, PreparedEnvironment,
};

/// A document fetched from an upstream Flagsmith, as the cache holds it.
#[derive(Debug, Clone)]
pub struct UpstreamDocument {
    /// The bytes as Flagsmith sent them: `GET /api/v1/environment-document/` serves them as
    /// they are.
    pub raw: DocumentBytes,
    pub parsed: EvaluationDocument,
    /// When its fetch began (unix microseconds).
    pub fetch_began_micros: i64,
    /// When it was fetched (unix seconds): the data age.
    pub fetched_at: i64,
    /// A document that carries no identity overrides keeps those of the last document that did:
    /// that document's `identity_overrides`, as it sent them, so that they are stored with this
    /// one and survive a restart.
    pub carried_overrides: Option<DocumentBytes>,
}

impl UpstreamDocument {
    /// Reads and checks a document; `expected_env` is the environment it was fetched for.
    pub fn parse(
        raw: Bytes,
        expected_env: u64,
        fetch_began_micros: i64,
        fetched_at: i64,
    ) -> Result<UpstreamDocument, DocumentError> {
        let parsed = EvaluationDocument::parse(&raw)?;
        if parsed.env_id != expected_env {
            return Err(DocumentError::OtherEnvironment {
                expected: expected_env,
                found: parsed.env_id,
            });
        }
        Ok(UpstreamDocument {
            raw: DocumentBytes::new(raw),
            parsed,
            fetch_began_micros,
            fetched_at,
            carried_overrides: None,
        })
    }

    /// Takes `overrides` (see [`UpstreamDocument::carried_overrides`]) as this document's
    /// identity overrides.
    pub fn carry_overrides(&mut self, overrides: DocumentBytes) -> Result<(), DocumentError> {
        self.parsed.identities = Arc::new(parse_identity_overrides(&overrides.bytes())?);
        self.carried_overrides = Some(overrides);
        Ok(())
    }

    /// The identity overrides a later document that carries none keeps from this one: its own,
    /// or those it keeps itself.
    fn overrides_to_carry(&self) -> Option<DocumentBytes> {
        if !self.parsed.carries_identity_overrides {
            return self.carried_overrides.clone();
        }
        // Checked when this document was read, so its field reads again.
        let json = identity_overrides_json(&self.raw.bytes()).ok().flatten()?;
        Some(DocumentBytes::new(Bytes::from(json)))
    }

    fn updated_at(&self) -> Option<OffsetDateTime> {
        let text = self.parsed.updated_at.as_deref()?;
        OffsetDateTime::parse(text, &Rfc3339).ok()
    }

    /// The document's `updated_at`, in unix microseconds, when it has a readable one.
    pub fn updated_at_micros(&self) -> Option<i64> {
        self.updated_at()
            .map(|at| (at.unix_timestamp_nanos() / 1_000) as i64)
    }

    /// Whether this document may replace `held`.
    fn is_newer_than(&self, held: &UpstreamDocument) -> bool {
        if self.fetch_began_micros <= held.fetch_began_micros {
            return false;
        }
        match (self.updated_at(), held.updated_at()) {
            (Some(new), Some(old)) => new >= old,
            _ => true,
        }
    }
}

impl FlagCache {
    /// Loads a document from an upstream Flagsmith (see the module's comment).
    pub fn apply_upstream(
        &mut self,
        doc: Arc<UpstreamDocument>,
        now_unix: i64,
        dirty: &mut Vec<Dirty>,
    ) -> Outcome {
        let env_id = doc.parsed.env_id;
        let held = self.env(env_id).and_then(|env| env.upstream.as_ref());
        if held.is_some_and(|held| !doc.is_newer_than(held)) {
            return Outcome::Superseded;
        }
        // A document that carries no identity overrides (`use_identity_overrides_in_local_eval`
        // off) says nothing about them: those held stay, the last document's and the web hooks'.
        let keep_identities = !doc.parsed.carries_identity_overrides;
        let doc = match held {
            Some(held) if keep_identities => {
                let mut carried = UpstreamDocument::clone(&doc);
                carried.parsed.identities = held.parsed.identities.clone();
                carried.carried_overrides = held.overrides_to_carry();
                Arc::new(carried)
            }
            _ => doc,
        };
        let began = doc.fetch_began_micros;
        let listed: HashSet<u64> = doc
            .parsed
            .context
            .features
            .values()
            .map(|feature| u64::from(feature.metadata.feature_id))
            .collect();
        let env = self.env_mut(env_id);
        for (id, entry) in env.features.iter_mut() {
            if drop_superseded(Arc::make_mut(entry), began, keep_identities) || !listed.contains(id)
            {
                dirty.push(Dirty::FeatureRewritten(env_id, *id));
            }
        }
        // A feature the document no longer lists and no later change holds is gone upstream.
        env.features
            .retain(|id, entry| listed.contains(id) || !entry.is_empty());
        env.name = Some(doc.parsed.name.clone());
        env.loaded_at = Some(now_unix);
        env.refreshed_at = Some(now_unix);
        env.upstream = Some(doc);
        dirty.push(Dirty::Env(env_id));
        dirty.push(Dirty::Upstream(env_id));
        Outcome::Applied
    }
}

/// Drops the keys of `entry` taken before `began`, identity overrides too unless
/// `keep_identities`; answers whether any went.
fn drop_superseded(entry: &mut FeatureEntry, began: i64, keep_identities: bool) -> bool {
    let before =
        entry.identities.len() + entry.segments.len() + usize::from(entry.default.is_some());
    if entry
        .default
        .as_ref()
        .is_some_and(|slot| slot.arrived_micros <= began)
    {
        entry.default = None;
    }
    if !keep_identities {
        entry.identities.retain(|slot| slot.arrived_micros > began);
    }
    entry.segments.retain(|_, slot| slot.arrived_micros > began);
    let after =
        entry.identities.len() + entry.segments.len() + usize::from(entry.default.is_some());
    before != after
}

impl EnvCache {
    /// This environment prepared for evaluation: built on the first request after a change.
    pub fn prepared(&self) -> Arc<PreparedEnvironment> {
        self.prepared
            .get_or_init(|| {
                let document = self.upstream.as_ref().map(|doc| &doc.parsed);
                let name = self.name.as_deref().unwrap_or_default();
                Arc::new(PreparedEnvironment::build(document, name, &self.overlay()))
            })
            .clone()
    }

    /// The changes held on top of the document, for the environment and its segments.
    fn overlay(&self) -> Vec<FeatureOverlay> {
        let deleted = self.deleted_features.iter().map(|id| FeatureOverlay {
            id: *id,
            name: String::new(),
            feature_type: None,
            default: Some(None),
            segments: Vec::new(),
        });
        let held = self.features.iter().map(|(id, entry)| FeatureOverlay {
            id: *id,
            name: entry.meta.name.clone(),
            feature_type: entry.meta.feature_type.clone(),
            default: entry
                .default
                .as_ref()
                .map(|slot| slot.state.as_ref().map(overlay_state)),
            segments: entry
                .segments
                .iter()
                .map(|(segment, slot)| {
                    let state = slot.state.as_ref().map(|state| OverlayState {
                        enabled: state.enabled,
                        value: flagsmith_value(state.value.as_ref()),
                        state_id: state.state_id,
                    });
                    let priority = slot.state.as_ref().and_then(|state| state.priority);
                    (*segment, state, priority)
                })
                .collect(),
        });
        deleted.chain(held).collect()
    }

    /// The identity overrides held on top of the document for `identifier`.
    pub fn identity_overlay(&self, identifier: &str) -> Vec<IdentityOverlay> {
        self.features
            .iter()
            .filter_map(|(id, entry)| {
                let slot = entry.identities.get(identifier)?;
                Some(IdentityOverlay {
                    feature_id: *id,
                    feature_name: entry.meta.name.clone(),
                    state: slot.state.as_ref().map(overlay_state),
                    identity_id: slot.state.as_ref().and_then(|state| state.identity_id),
                })
            })
            .collect()
    }
}

fn overlay_state(state: &FlagState) -> OverlayState {
    OverlayState {
        enabled: state.enabled,
        value: flagsmith_value(state.value.as_ref()),
        state_id: state.state_id,
    }
}

/// A web hook's value as the engine holds values.
pub fn flagsmith_value(value: Option<&FlagValue>) -> FlagsmithValue {
    let (value_type, value) = match value {
        None => (FlagsmithValueType::None, String::new()),
        Some(FlagValue::Bool(b)) => (FlagsmithValueType::Bool, b.to_string()),
        Some(FlagValue::Integer(i)) => (FlagsmithValueType::Integer, i.to_string()),
        Some(FlagValue::Float(f)) => (FlagsmithValueType::Float, f.to_string()),
        Some(FlagValue::String(s)) => (FlagsmithValueType::String, s.clone()),
    };
    FlagsmithValue { value_type, value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::{Change, Scope};

    /// Step `n`'s document for the live environment (44) of the recorded Flagsmith run.
    fn recorded(n: usize, began: i64) -> UpstreamDocument {
        let path = format!(
            "{}/../../shared/conformance/flagsmith-v2.265.0-live/steps/{n:03}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let step: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let raw = serde_json::to_vec(&step["environment_documents"]["live"]).unwrap();
        UpstreamDocument::parse(Bytes::from(raw), 44, began, 0).unwrap()
    }

    fn change(feature: u64, scope: Scope, arrived_micros: i64) -> Change {
        let name = format!("feature_{feature}");
        Change {
            scope,
            arrived_micros,
            ..Change::with_string(44, feature, &name, "from a web hook")
        }
    }

    #[test]
    fn an_older_document_fetched_late_never_replaces_a_newer_one() {
        let (older, newer) = (recorded(20, 300), recorded(21, 200));
        assert!(
            older.updated_at() < newer.updated_at(),
            "the recording moves on"
        );
        let mut cache = FlagCache::default();
        let mut dirty = Vec::new();
        let newer_updated_at = newer.parsed.updated_at.clone();
        assert_eq!(
            cache.apply_upstream(Arc::new(newer), 0, &mut dirty),
            Outcome::Applied
        );
        // Fetched later, but Flagsmith's document is older: refused.
        assert_eq!(
            cache.apply_upstream(Arc::new(older), 0, &mut dirty),
            Outcome::Superseded
        );
        // A fetch that began before the held one's: refused whatever it holds.
        assert_eq!(
            cache.apply_upstream(Arc::new(recorded(22, 100)), 0, &mut dirty),
            Outcome::Superseded
        );
        let held = cache.env(44).unwrap().upstream.as_ref().unwrap();
        assert_eq!(held.parsed.updated_at, newer_updated_at);
    }

    #[test]
    fn a_document_supersedes_the_changes_taken_before_its_fetch_began_only() {
        let mut cache = FlagCache::default();
        let mut dirty = Vec::new();
        cache.apply(&change(107, Scope::Default, 100), 0, &mut dirty);
        cache.apply(
            &change(108, Scope::Identity("u-eli".into()), 300),
            0,
            &mut dirty,
        );
        cache.apply_upstream(Arc::new(recorded(20, 200)), 0, &mut dirty);
        let env = cache.env(44).unwrap();
        assert_eq!(env.features.get(&107).unwrap().default_state(), None);
        assert!(
            env.features
                .get(&108)
                .unwrap()
                .identity_state("u-eli")
                .is_some()
        );
        // What the engine answers: the document's default, and the later override on top.
        let prepared = env.prepared();
        let input = crate::evaluation::IdentityInput {
            identifier: "u-eli".into(),
            ..Default::default()
        };
        let evaluation = prepared.evaluate(Some(&input), &env.identity_overlay("u-eli"));
        let value = |id: u64| {
            let flag = evaluation
                .flags
                .iter()
                .find(|f| f.feature_id == id)
                .unwrap();
            flag.value.clone()
        };
        assert_ne!(value(107), serde_json::json!("from a web hook"));
        assert_eq!(value(108), serde_json::json!("from a web hook"));
    }
}

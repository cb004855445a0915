//! The flag cache and its ordering rules: the receiver's domain, free of HTTP and storage.
//!
//! Each cache key (environment, feature, and the default, an identity or a segment) remembers the
//! [`Order`] of the change last applied to it, and a change is applied only if it is newer, as
//! DESIGN.md "Ordering in the receiver" says:
//!
//! - with flagpost's sequence number on both sides, iff the sequence is greater;
//! - otherwise by timestamp: later or equal applies (arrival order breaks ties), except that an
//!   update never undoes a deletion with the same timestamp;
//! - deleting an environment default removes the feature, its overrides with it, and leaves a
//!   tombstone on the feature id so that nothing for it, of any key, comes back;
//! - deleting an override leaves a tombstone on that key, ordered like any other state.
//!
//! The cache is copy-on-write at two levels (environment, feature) through `Arc::make_mut`, so the
//! writer can stage a batch on a cheap clone and publish it only after the batch has committed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use flagpost::wire::{FlagValue, IdentityRef, IncomingFlagEvent};
use serde::{Deserialize, Serialize};

/// Where a change stands in its sender's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Order {
    /// flagpost's event sequence (`x-flagpost-sequence`), exact when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The webhook's `timestamp` in unix microseconds; Flagsmith's is not a version, only a hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_micros: Option<i64>,
}

impl Order {
    /// Whether a change at `self` (a deletion when `deleting`) replaces a key last set at `held`
    /// (a tombstone when `held_deleted`).
    fn supersedes(self, held: Order, held_deleted: bool, deleting: bool) -> bool {
        if let (Some(incoming), Some(held)) = (self.seq, held.seq) {
            return incoming > held;
        }
        let undoes_deletion = held_deleted && !deleting;
        match (self.ts_micros, held.ts_micros) {
            (Some(incoming), Some(held)) if incoming != held => incoming > held,
            // Equal, or one side told no time: arrival order, but never resurrect on a tie.
            _ => !undoes_deletion,
        }
    }
}

/// A flag's state for one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagState {
    pub enabled: bool,
    pub value: Option<FlagValue>,
}

/// A segment override: the flag state plus what the segment is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentState {
    pub enabled: bool,
    pub value: Option<FlagValue>,
    pub priority: Option<i64>,
    pub name: Option<String>,
}

/// One cache key's content: `state: None` is a tombstone (the key was deleted at `order`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot<T> {
    pub order: Order,
    pub state: Option<T>,
}

impl<T> Slot<T> {
    fn admits(&self, change: &Change) -> bool {
        change
            .order
            .supersedes(self.order, self.state.is_none(), change.deleted)
    }
}

/// What a feature is, as the latest change told.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FeatureMeta {
    pub name: String,
    #[serde(default)]
    pub feature_type: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub initial_value: Option<FlagValue>,
    #[serde(default)]
    pub default_enabled: Option<bool>,
    #[serde(default)]
    pub created_date: Option<String>,
    #[serde(default)]
    pub order: Order,
}

/// A feature in one environment: its default state and its overrides.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FeatureEntry {
    pub meta: FeatureMeta,
    pub default: Option<Slot<FlagState>>,
    pub identities: HashMap<Box<str>, Slot<FlagState>>,
    pub segments: BTreeMap<u64, Slot<SegmentState>>,
}

impl FeatureEntry {
    /// The live default state, if the feature has one.
    pub fn default_state(&self) -> Option<&FlagState> {
        self.default.as_ref().and_then(|slot| slot.state.as_ref())
    }

    /// The live identity override for `identifier`.
    pub fn identity_state(&self, identifier: &str) -> Option<&FlagState> {
        self.identities
            .get(identifier)
            .and_then(|slot| slot.state.as_ref())
    }

    /// Live segment overrides, by segment id.
    pub fn segment_states(&self) -> impl Iterator<Item = (u64, &SegmentState)> {
        self.segments
            .iter()
            .filter_map(|(id, slot)| slot.state.as_ref().map(|state| (*id, state)))
    }

    fn is_empty(&self) -> bool {
        self.default.is_none() && self.identities.is_empty() && self.segments.is_empty()
    }
}

/// One environment's part of the cache.
#[derive(Debug, Default)]
pub struct EnvCache {
    pub name: Option<String>,
    /// The `last_sequence` of the newest document loaded: every sequenced change at or below it is
    /// already reflected, whatever key it touches.
    pub document_seq: Option<u64>,
    /// When a document was last loaded (unix seconds); `None` until the first bootstrap.
    pub loaded_at: Option<i64>,
    /// When this environment last took a change or a document (unix seconds).
    pub refreshed_at: Option<i64>,
    pub features: HashMap<u64, Arc<FeatureEntry>>,
    /// Deleted feature ids: nothing for them is ever applied again.
    pub deleted_features: HashSet<u64>,
    /// A rendering of this environment kept until it next changes (see [`EnvCache::rendered`]).
    rendered: OnceLock<Bytes>,
}

impl Clone for EnvCache {
    fn clone(&self) -> Self {
        EnvCache {
            name: self.name.clone(),
            document_seq: self.document_seq,
            loaded_at: self.loaded_at,
            refreshed_at: self.refreshed_at,
            features: self.features.clone(),
            deleted_features: self.deleted_features.clone(),
            // A clone is made to be changed; its rendering is rebuilt on first use.
            rendered: OnceLock::new(),
        }
    }
}

impl EnvCache {
    /// A rendering of this environment (built by `render` on first use), kept until the next
    /// change: lookups of a whole environment then cost a pointer copy.
    pub fn rendered(&self, render: impl FnOnce(&EnvCache) -> Bytes) -> Bytes {
        self.rendered.get_or_init(|| render(self)).clone()
    }

    /// Features with a live default state, by id.
    pub fn live_features(&self) -> impl Iterator<Item = (u64, &FeatureEntry)> {
        self.features
            .iter()
            .filter(|(_, entry)| entry.default_state().is_some())
            .map(|(id, entry)| (*id, entry.as_ref()))
    }
}

/// Which key of a feature a change is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Default,
    Identity(Box<str>),
    Segment(u64),
}

/// One flag change, normalised from a web hook.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub env: u64,
    pub env_name: Option<String>,
    pub feature: u64,
    pub meta: FeatureMeta,
    pub scope: Scope,
    pub deleted: bool,
    pub state: FlagState,
    /// For segment overrides.
    pub segment_priority: Option<i64>,
    pub segment_name: Option<String>,
    pub order: Order,
}

impl Change {
    /// Reads a `FLAG_UPDATED` / `FLAG_DELETED` event, with flagpost's sequence when it sent one.
    pub fn from_event(event: &IncomingFlagEvent, seq: Option<u64>) -> Change {
        let state = &event.state;
        let scope = if let Some(segment) = &state.feature_segment {
            Scope::Segment(segment.segment.id)
        } else if let Some(identifier) = &state.identity_identifier {
            Scope::Identity(identifier.as_str().into())
        } else {
            match &state.identity {
                Some(IdentityRef::Id(id)) => Scope::Identity(id.to_string().into()),
                Some(IdentityRef::Uuid(uuid)) => Scope::Identity(uuid.as_str().into()),
                None => Scope::Default,
            }
        };
        let order = Order {
            seq,
            ts_micros: event
                .timestamp
                .map(|at| (at.unix_timestamp_nanos() / 1_000) as i64),
        };
        let env_name = match &state.environment {
            flagpost::wire::IdRef::Object { name, .. } => name.clone(),
            flagpost::wire::IdRef::Id(_) => None,
        };
        let feature = &state.feature;
        Change {
            env: state.environment.id(),
            env_name,
            feature: feature.id,
            meta: FeatureMeta {
                name: feature.name.clone(),
                feature_type: feature.feature_type.clone(),
                description: feature.description.clone(),
                initial_value: feature.initial_value.clone(),
                default_enabled: feature.default_enabled,
                created_date: None,
                order,
            },
            scope,
            deleted: event.deleted,
            state: FlagState {
                enabled: state.enabled,
                value: state.feature_state_value.clone(),
            },
            segment_priority: state.feature_segment.as_ref().and_then(|s| s.priority),
            segment_name: state
                .feature_segment
                .as_ref()
                .and_then(|s| s.segment.name.clone()),
            order,
        }
    }
}

/// What applying a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Older than what the cache holds, or about a deleted feature: nothing changed.
    Superseded,
}

/// A key whose stored row must be rewritten after a batch (storage reads the new content from the
/// cache itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dirty {
    Env(u64),
    FeatureMeta(u64, u64),
    State(u64, u64, Scope),
    /// The feature was removed with all its keys: its rows go and a tombstone is written.
    FeatureDeleted(u64, u64),
    /// Every key of the feature may have changed (a document replaced it).
    FeatureRewritten(u64, u64),
}

/// A full environment document from flagpost's change API, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub env: u64,
    pub env_name: Option<String>,
    pub last_sequence: u64,
    pub features: Vec<DocumentFeature>,
    pub deleted_feature_ids: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DocumentFeature {
    pub id: u64,
    pub meta: FeatureMeta,
    pub default: FlagState,
    pub identities: Vec<(String, FlagState)>,
    pub segments: Vec<(u64, SegmentState)>,
}

/// Every environment's flags.
#[derive(Debug, Clone, Default)]
pub struct FlagCache {
    envs: HashMap<u64, Arc<EnvCache>>,
}

impl FlagCache {
    pub fn env(&self, id: u64) -> Option<&Arc<EnvCache>> {
        self.envs.get(&id)
    }

    pub fn envs(&self) -> impl Iterator<Item = (u64, &Arc<EnvCache>)> {
        self.envs.iter().map(|(id, env)| (*id, env))
    }

    /// Mutable access that un-shares only this environment.
    pub fn env_mut(&mut self, id: u64) -> &mut EnvCache {
        let env = self.envs.entry(id).or_default();
        let env = Arc::make_mut(env);
        // Anything rendered from the old content is stale now.
        env.rendered = OnceLock::new();
        env
    }

    /// Applies one change, recording in `dirty` every key whose stored row must change.
    pub fn apply(&mut self, change: &Change, now_unix: i64, dirty: &mut Vec<Dirty>) -> Outcome {
        if let Some(env) = self.envs.get(&change.env) {
            if env.deleted_features.contains(&change.feature) {
                return Outcome::Superseded;
            }
            // A document at or past this sequence already holds the change or something newer.
            if let (Some(seq), Some(doc_seq)) = (change.order.seq, env.document_seq)
                && seq <= doc_seq
            {
                return Outcome::Superseded;
            }
        }
        let env_id = change.env;
        let feature_id = change.feature;
        if change.deleted && change.scope == Scope::Default {
            // Feature ids are never reused, so the deletion is final whatever its order.
            let env = self.env_mut(env_id);
            env.features.remove(&feature_id);
            env.deleted_features.insert(feature_id);
            env.refreshed_at = Some(now_unix);
            dirty.push(Dirty::FeatureDeleted(env_id, feature_id));
            dirty.push(Dirty::Env(env_id));
            return Outcome::Applied;
        }

        let current = self
            .envs
            .get(&env_id)
            .and_then(|env| env.features.get(&feature_id));
        let admitted = match (&change.scope, current) {
            (_, None) => true,
            (Scope::Default, Some(entry)) => entry
                .default
                .as_ref()
                .is_none_or(|slot| slot.admits(change)),
            (Scope::Identity(identifier), Some(entry)) => entry
                .identities
                .get(identifier)
                .is_none_or(|slot| slot.admits(change)),
            (Scope::Segment(segment), Some(entry)) => entry
                .segments
                .get(segment)
                .is_none_or(|slot| slot.admits(change)),
        };
        if !admitted {
            return Outcome::Superseded;
        }

        let env = self.env_mut(env_id);
        if env.name.is_none() {
            env.name.clone_from(&change.env_name);
        }
        env.refreshed_at = Some(now_unix);
        let entry = Arc::make_mut(env.features.entry(feature_id).or_default());
        let meta_is_newer =
            entry.meta.name.is_empty() || change.order.supersedes(entry.meta.order, false, false);
        if meta_is_newer {
            let created_date = entry.meta.created_date.take();
            entry.meta = change.meta.clone();
            entry.meta.created_date = created_date;
            dirty.push(Dirty::FeatureMeta(env_id, feature_id));
        }
        let state = (!change.deleted).then(|| change.state.clone());
        match &change.scope {
            Scope::Default => {
                entry.default = Some(Slot {
                    order: change.order,
                    state,
                });
            }
            Scope::Identity(identifier) => {
                entry.identities.insert(
                    identifier.clone(),
                    Slot {
                        order: change.order,
                        state,
                    },
                );
            }
            Scope::Segment(segment) => {
                entry.segments.insert(
                    *segment,
                    Slot {
                        order: change.order,
                        state: state.map(|state| SegmentState {
                            enabled: state.enabled,
                            value: state.value,
                            priority: change.segment_priority,
                            name: change.segment_name.clone(),
                        }),
                    },
                );
            }
        }
        dirty.push(Dirty::State(env_id, feature_id, change.scope.clone()));
        dirty.push(Dirty::Env(env_id));
        Outcome::Applied
    }

    /// Loads a full document: every key in it counts as applied at `last_sequence`, and keys the
    /// cache holds at a greater sequence stay as they are.
    pub fn apply_document(&mut self, doc: &Document, now_unix: i64, dirty: &mut Vec<Dirty>) {
        // A document older than one already loaded adds nothing, and it could bring back an
        // override the newer one dropped (a dropped key leaves no tombstone).
        let loaded = self.envs.get(&doc.env).and_then(|env| env.document_seq);
        if loaded.is_some_and(|seq| seq > doc.last_sequence) {
            return;
        }
        let at = Order {
            seq: Some(doc.last_sequence),
            ts_micros: None,
        };
        let covered = |order: &Order| order.seq.is_none_or(|seq| seq <= doc.last_sequence);
        let env_id = doc.env;
        let env = self.env_mut(env_id);
        if doc.env_name.is_some() {
            env.name.clone_from(&doc.env_name);
        }
        for id in &doc.deleted_feature_ids {
            env.features.remove(id);
            if env.deleted_features.insert(*id) {
                dirty.push(Dirty::FeatureDeleted(env_id, *id));
            }
        }
        let listed: HashSet<u64> = doc.features.iter().map(|f| f.id).collect();
        // Keys the document does not list existed at no point up to `last_sequence` or were
        // removed by then: drop those it covers, keep anything newer.
        let unlisted: Vec<u64> = env
            .features
            .keys()
            .filter(|id| !listed.contains(id))
            .copied()
            .collect();
        for id in unlisted {
            let entry = Arc::make_mut(env.features.get_mut(&id).expect("listed above"));
            retain_newer(entry, &covered);
            if entry.is_empty() {
                env.features.remove(&id);
            }
            dirty.push(Dirty::FeatureRewritten(env_id, id));
        }
        for feature in &doc.features {
            if env.deleted_features.contains(&feature.id) {
                continue;
            }
            let entry = Arc::make_mut(env.features.entry(feature.id).or_default());
            if entry.meta.name.is_empty() || covered(&entry.meta.order) {
                entry.meta = FeatureMeta {
                    order: at,
                    ..feature.meta.clone()
                };
            }
            retain_newer(entry, &covered);
            if entry.default.is_none() {
                entry.default = Some(Slot {
                    order: at,
                    state: Some(feature.default.clone()),
                });
            }
            for (identifier, state) in &feature.identities {
                entry
                    .identities
                    .entry(identifier.as_str().into())
                    .or_insert_with(|| Slot {
                        order: at,
                        state: Some(state.clone()),
                    });
            }
            for (segment, state) in &feature.segments {
                entry.segments.entry(*segment).or_insert_with(|| Slot {
                    order: at,
                    state: Some(state.clone()),
                });
            }
            dirty.push(Dirty::FeatureRewritten(env_id, feature.id));
        }
        env.document_seq = Some(env.document_seq.unwrap_or(0).max(doc.last_sequence));
        env.loaded_at = Some(now_unix);
        env.refreshed_at = Some(now_unix);
        dirty.push(Dirty::Env(env_id));
    }

    /// Rebuilds the cache from stored parts (used when opening the database).
    pub fn insert_env(&mut self, id: u64, env: EnvCache) {
        self.envs.insert(id, Arc::new(env));
    }
}

/// Drops every key of `entry` that a document at the covering sequence replaces.
fn retain_newer(entry: &mut FeatureEntry, covered: &impl Fn(&Order) -> bool) {
    if entry
        .default
        .as_ref()
        .is_some_and(|slot| covered(&slot.order))
    {
        entry.default = None;
    }
    entry.identities.retain(|_, slot| !covered(&slot.order));
    entry.segments.retain(|_, slot| !covered(&slot.order));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(
        scope: Scope,
        seq: Option<u64>,
        ts: Option<i64>,
        deleted: bool,
        value: &str,
    ) -> Change {
        let order = Order { seq, ts_micros: ts };
        Change {
            env: 1,
            env_name: None,
            feature: 7,
            meta: FeatureMeta {
                name: "f".into(),
                order,
                ..FeatureMeta::default()
            },
            scope,
            deleted,
            state: FlagState {
                enabled: true,
                value: Some(FlagValue::String(value.into())),
            },
            segment_priority: None,
            segment_name: None,
            order,
        }
    }

    fn default_value(cache: &FlagCache) -> Option<FlagValue> {
        cache
            .env(1)?
            .features
            .get(&7)?
            .default_state()?
            .value
            .clone()
    }

    #[test]
    fn an_older_document_never_brings_back_what_a_newer_one_dropped() {
        let state = FlagState {
            enabled: true,
            value: None,
        };
        let document = |last_sequence, identities: Vec<(String, FlagState)>| Document {
            env: 1,
            env_name: None,
            last_sequence,
            features: vec![DocumentFeature {
                id: 7,
                meta: FeatureMeta {
                    name: "f".into(),
                    ..FeatureMeta::default()
                },
                default: state.clone(),
                identities,
                segments: Vec::new(),
            }],
            deleted_feature_ids: Vec::new(),
        };
        let mut cache = FlagCache::default();
        let mut dirty = Vec::new();
        cache.apply_document(&document(200, Vec::new()), 0, &mut dirty);
        let stale = document(100, vec![("u".into(), state.clone())]);
        cache.apply_document(&stale, 0, &mut dirty);
        let feature = cache.env(1).unwrap().features.get(&7).unwrap();
        assert_eq!(feature.identity_state("u"), None);
    }

    #[test]
    fn equal_timestamps_apply_in_arrival_order() {
        let mut cache = FlagCache::default();
        let mut dirty = Vec::new();
        cache.apply(
            &change(Scope::Default, None, Some(5), false, "a"),
            0,
            &mut dirty,
        );
        let outcome = cache.apply(
            &change(Scope::Default, None, Some(5), false, "b"),
            0,
            &mut dirty,
        );
        assert_eq!(outcome, Outcome::Applied);
        assert_eq!(default_value(&cache), Some(FlagValue::String("b".into())));
        let outcome = cache.apply(
            &change(Scope::Default, None, Some(4), false, "c"),
            0,
            &mut dirty,
        );
        assert_eq!(outcome, Outcome::Superseded);
    }

    #[test]
    fn an_update_never_undoes_an_override_deletion_with_the_same_timestamp() {
        let mut cache = FlagCache::default();
        let mut dirty = Vec::new();
        let key = Scope::Identity("u".into());
        cache.apply(
            &change(key.clone(), None, Some(5), true, "x"),
            0,
            &mut dirty,
        );
        let outcome = cache.apply(
            &change(key.clone(), None, Some(5), false, "y"),
            0,
            &mut dirty,
        );
        assert_eq!(outcome, Outcome::Superseded);
        let outcome = cache.apply(&change(key, None, Some(6), false, "z"), 0, &mut dirty);
        assert_eq!(outcome, Outcome::Applied);
    }

    #[test]
    fn a_deleted_feature_never_comes_back() {
        let mut cache = FlagCache::default();
        let mut dirty = Vec::new();
        cache.apply(
            &change(Scope::Default, Some(1), None, false, "a"),
            0,
            &mut dirty,
        );
        cache.apply(
            &change(Scope::Segment(3), Some(2), None, false, "s"),
            0,
            &mut dirty,
        );
        cache.apply(
            &change(Scope::Default, Some(3), None, true, "a"),
            0,
            &mut dirty,
        );
        assert!(cache.env(1).unwrap().features.is_empty());
        for scope in [
            Scope::Default,
            Scope::Identity("u".into()),
            Scope::Segment(3),
        ] {
            let outcome = cache.apply(&change(scope, Some(99), None, false, "late"), 0, &mut dirty);
            assert_eq!(outcome, Outcome::Superseded);
        }
    }

    #[test]
    fn sequences_order_exactly_when_both_sides_have_one() {
        let mut cache = FlagCache::default();
        let mut dirty = Vec::new();
        cache.apply(
            &change(Scope::Default, Some(5), Some(1), false, "new"),
            0,
            &mut dirty,
        );
        // A later timestamp does not matter once sequences are known.
        let outcome = cache.apply(
            &change(Scope::Default, Some(4), Some(9), false, "old"),
            0,
            &mut dirty,
        );
        assert_eq!(outcome, Outcome::Superseded);
        assert_eq!(default_value(&cache), Some(FlagValue::String("new".into())));
    }
}

//! The cache of every environment and how a change or a document is applied to it.
//!
//! The cache is copy-on-write at two levels (environment, feature) through `Arc::make_mut`, so the
//! writer can stage a batch on a cheap clone and publish it only after the batch has committed.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::documents::change::{Change, Scope};
use crate::documents::fold_hash::{FoldHashMap, FoldHashSet};
use crate::documents::order::Order;
use crate::documents::state::{FeatureEntry, SegmentState, Slot};
use crate::documents::upstream::UpstreamDocument;
use crate::evaluation::PreparedEnvironment;

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
    pub features: FoldHashMap<u64, Arc<FeatureEntry>>,
    /// Deleted feature ids: nothing for them is ever applied again.
    pub deleted_features: FoldHashSet<u64>,
    /// The flagpost database whose sequences this environment's keys are ordered by, and the
    /// ones it followed before (see [`crate::documents::sender`]).
    pub sender: Option<u64>,
    pub retired_senders: Vec<u64>,
    /// The last good document from an upstream Flagsmith; the keys above are then the web-hook
    /// changes taken since its fetch began, applied on top of it.
    pub upstream: Option<Arc<UpstreamDocument>>,
    /// The receiver's own count of the commits that changed this environment, stored with it:
    /// a change stream's position, so that a client can resume across a restart.
    pub revision: u64,
    /// When this environment last changed, unix microseconds: never going back, and never
    /// before its upstream document's `updated_at`, so that realtime clients that compare it
    /// with the document they hold (Flagsmith's SDKs do) see every change as newer.
    pub updated_at_micros: i64,
    /// A rendering of this environment kept until it next changes (see [`EnvCache::rendered`]).
    rendered: OnceLock<Bytes>,
    /// The environment prepared for evaluation, kept until it next changes.
    pub(crate) prepared: OnceLock<Arc<PreparedEnvironment>>,
    /// Parts of answers the API prepares from this environment (see [`EnvCache::answer_parts`]).
    answer_parts: [OnceLock<Arc<dyn Any + Send + Sync>>; ANSWER_KINDS],
}

/// How many kinds of answer parts an environment keeps (identity answers, OFREP answers, and
/// room for one more).
const ANSWER_KINDS: usize = 3;

impl Clone for EnvCache {
    fn clone(&self) -> Self {
        EnvCache {
            name: self.name.clone(),
            document_seq: self.document_seq,
            loaded_at: self.loaded_at,
            refreshed_at: self.refreshed_at,
            features: self.features.clone(),
            deleted_features: self.deleted_features.clone(),
            sender: self.sender,
            retired_senders: self.retired_senders.clone(),
            upstream: self.upstream.clone(),
            revision: self.revision,
            updated_at_micros: self.updated_at_micros,
            // A clone is made to be changed; its rendering is rebuilt on first use.
            rendered: OnceLock::new(),
            prepared: OnceLock::new(),
            answer_parts: Default::default(),
        }
    }
}

impl EnvCache {
    /// A rendering of this environment (built by `render` on first use), kept until the next
    /// change: lookups of a whole environment then cost a pointer copy.
    pub fn rendered(&self, render: impl FnOnce(&EnvCache) -> Bytes) -> Bytes {
        self.rendered.get_or_init(|| render(self)).clone()
    }

    /// Parts of answers (built by `build` on first use) kept until the next change, as
    /// [`EnvCache::rendered`] keeps a whole answer. Each kind takes the first free slot; past
    /// [`ANSWER_KINDS`] kinds, a request gets its parts built afresh, uncached.
    pub fn answer_parts<T: Any + Send + Sync>(&self, build: impl Fn(&EnvCache) -> T) -> Arc<T> {
        for slot in &self.answer_parts {
            let held = slot.get_or_init(|| Arc::new(build(self)));
            if let Ok(parts) = held.clone().downcast() {
                return parts;
            }
        }
        Arc::new(build(self))
    }

    /// Features with a live default state, by id.
    pub fn live_features(&self) -> impl Iterator<Item = (u64, &FeatureEntry)> {
        self.features
            .iter()
            .filter(|(_, entry)| entry.default_state().is_some())
            .map(|(id, entry)| (*id, entry.as_ref()))
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
    /// The feature's tombstone goes (its environment follows a new sender database, which
    /// numbers features afresh).
    Undeleted(u64, u64),
    /// The environment's upstream document changed.
    Upstream(u64),
}

/// Every environment's flags.
#[derive(Debug, Clone, Default)]
pub struct FlagCache {
    envs: FoldHashMap<u64, Arc<EnvCache>>,
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
        // Anything rendered or prepared from the old content is stale now.
        env.rendered = OnceLock::new();
        env.prepared = OnceLock::new();
        env.answer_parts = Default::default();
        env
    }

    /// Applies one change, recording in `dirty` every key whose stored row must change.
    pub fn apply(&mut self, change: &Change, now_unix: i64, dirty: &mut Vec<Dirty>) -> Outcome {
        let env_id = change.env;
        let feature_id = change.feature;
        if change.deleted && change.scope == Scope::Default {
            if self.is_settled(change) {
                return Outcome::Superseded;
            }
            // Feature ids are never reused, so the deletion is final whatever its order.
            let env = self.env_mut(env_id);
            env.features.remove(&feature_id);
            env.deleted_features.insert(feature_id);
            env.refreshed_at = Some(now_unix);
            dirty.push(Dirty::FeatureDeleted(env_id, feature_id));
            dirty.push(Dirty::Env(env_id));
            return Outcome::Applied;
        }
        if self.is_settled(change) || !self.admits(change) {
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
        write_slot(entry, change);
        dirty.push(Dirty::State(env_id, feature_id, change.scope.clone()));
        dirty.push(Dirty::Env(env_id));
        Outcome::Applied
    }

    /// Whether nothing can change `change`'s key any more: its feature is deleted, or a document
    /// at or past its sequence already holds it or something newer.
    fn is_settled(&self, change: &Change) -> bool {
        let Some(env) = self.envs.get(&change.env) else {
            return false;
        };
        env.deleted_features.contains(&change.feature)
            || matches!((change.order.seq, env.document_seq), (Some(seq), Some(doc_seq)) if seq <= doc_seq)
    }

    /// Whether `change` is newer than what its key holds.
    fn admits(&self, change: &Change) -> bool {
        let current = self
            .envs
            .get(&change.env)
            .and_then(|env| env.features.get(&change.feature));
        let Some(entry) = current else {
            return true;
        };
        let newer = |order: Order, tombstone: bool| {
            change.order.supersedes(order, tombstone, change.deleted)
        };
        match &change.scope {
            Scope::Default => entry
                .default
                .as_ref()
                .is_none_or(|slot| newer(slot.order, slot.state.is_none())),
            Scope::Identity(identifier) => entry
                .identities
                .get(identifier)
                .is_none_or(|slot| newer(slot.order, slot.state.is_none())),
            Scope::Segment(segment) => entry
                .segments
                .get(segment)
                .is_none_or(|slot| newer(slot.order, slot.state.is_none())),
        }
    }

    /// Rebuilds the cache from stored parts (used when opening the database).
    pub fn insert_env(&mut self, id: u64, env: EnvCache) {
        self.envs.insert(id, Arc::new(env));
    }
}

/// Writes `change` into its key's slot (it was admitted).
fn write_slot(entry: &mut FeatureEntry, change: &Change) {
    let order = change.order;
    let arrived_micros = change.arrived_micros;
    let state = (!change.deleted).then(|| change.state.clone());
    match &change.scope {
        Scope::Default => {
            entry.default = Some(Slot {
                order,
                state,
                arrived_micros,
            })
        }
        Scope::Identity(identifier) => {
            let slot = Slot {
                order,
                state,
                arrived_micros,
            };
            entry.identities.insert(identifier, slot);
        }
        Scope::Segment(segment) => {
            let state = state.map(|state| SegmentState {
                enabled: state.enabled,
                value: state.value,
                priority: change.segment_priority,
                name: change.segment_name.clone(),
                state_id: state.state_id,
            });
            let slot = Slot {
                order,
                state,
                arrived_micros,
            };
            entry.segments.insert(*segment, slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use flagpost::wire::FlagValue;

    use super::*;

    fn change(
        scope: Scope,
        seq: Option<u64>,
        ts: Option<i64>,
        deleted: bool,
        value: &str,
    ) -> Change {
        let order = Order { seq, ts_micros: ts };
        let mut change = Change {
            scope,
            deleted,
            order,
            ..Change::with_string(1, 7, "f", value)
        };
        change.meta.order = order;
        change
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

//! Each environment's revision and `updated_at`: moved once per batch that changes it, stored
//! with it, so that a change stream's position survives a restart and Flagsmith's realtime
//! clients (which refetch when an event's `updated_at` is newer than what they hold) see every
//! change as newer.

use crate::documents::cache::{Dirty, FlagCache};

impl Dirty {
    /// The environment the key belongs to.
    pub fn env(&self) -> u64 {
        match self {
            Dirty::Env(env)
            | Dirty::FeatureMeta(env, _)
            | Dirty::State(env, _, _)
            | Dirty::FeatureDeleted(env, _)
            | Dirty::FeatureRewritten(env, _)
            | Dirty::Undeleted(env, _)
            | Dirty::Upstream(env) => *env,
        }
    }
}

impl FlagCache {
    /// Moves the revision and `updated_at` of every environment a batch changed (named in
    /// `dirty`), once per batch, and marks their rows to be written with them.
    pub fn stamp_changed(&mut self, dirty: &mut Vec<Dirty>, now_micros: i64) {
        let mut changed: Vec<u64> = dirty.iter().map(Dirty::env).collect();
        changed.sort_unstable();
        changed.dedup();
        for id in changed {
            let env = self.env_mut(id);
            let document = env
                .upstream
                .as_ref()
                .and_then(|doc| doc.updated_at_micros());
            env.revision += 1;
            env.updated_at_micros = now_micros
                .max(env.updated_at_micros + 1)
                .max(document.unwrap_or(i64::MIN));
            dirty.push(Dirty::Env(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_moves_each_changed_environment_once_and_updated_at_never_goes_back() {
        let mut cache = FlagCache::default();
        let mut dirty = vec![Dirty::Env(1), Dirty::FeatureMeta(1, 7), Dirty::Upstream(2)];
        cache.stamp_changed(&mut dirty, 5_000_000);
        assert_eq!(cache.env(1).unwrap().revision, 1);
        assert_eq!(cache.env(2).unwrap().revision, 1);
        assert_eq!(cache.env(1).unwrap().updated_at_micros, 5_000_000);
        assert!(
            dirty.contains(&Dirty::Env(2)),
            "the row that stores them is written"
        );
        // A clock that steps back still moves updated_at forward.
        cache.stamp_changed(
            &mut vec![Dirty::State(1, 7, crate::documents::Scope::Default)],
            1,
        );
        let env = cache.env(1).unwrap();
        assert_eq!((env.revision, env.updated_at_micros), (2, 5_000_001));
        assert_eq!(cache.env(2).unwrap().revision, 1, "untouched");
    }
}

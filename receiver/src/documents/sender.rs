//! Which flagpost database an environment follows (DESIGN.md "Ordering in the receiver", point 6).
//!
//! A flagpost event id names its database (`evt_{instance}_{sequence}`), and sequences count
//! within one database only: a flagpost started on a new file counts from 1 again, so against
//! the old database's numbers every new event would look old and be answered "superseded" for
//! ever. Each environment therefore remembers the database its sequences come from:
//!
//! - the first sequenced change or document that names a database sets it;
//! - a change from that database is ordered by its sequence, as always;
//! - one from a database the environment followed before (retired) is stale: superseded;
//! - one from a database never seen means the sender started again, and the environment follows
//!   it. What it holds stays served (a sender started again usually holds much the same flags),
//!   but its sequences mean nothing any more: every key keeps only its timestamp (so the new
//!   database's changes, made later, replace it), the document's sequence and the
//!   deleted-feature tombstones go (a new database numbers features from 1 again), and the
//!   environment counts as never loaded, so that bootstrap fetches the new database's document,
//!   which replaces everything it covers.

use std::sync::Arc;

use crate::documents::cache::{Dirty, EnvCache, FlagCache};
use crate::documents::order::Order;
use crate::documents::state::{FeatureEntry, FlagState, Slot};

/// How many databases an environment remembers having followed before the current one.
const RETIRED_KEPT: usize = 16;

/// Where a change's database stands for its environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderCheck {
    /// The database the environment follows (or, having followed none, follows from now on).
    Current,
    /// A database the environment followed before: its events are stale.
    Retired,
    /// A new database: the environment follows it from now on.
    Followed,
}

impl FlagCache {
    /// Checks `sender`, the database of a sequenced change or document for `env_id`, and follows
    /// it when it is new, recording in `dirty` every key whose stored row changes.
    pub fn check_sender(
        &mut self,
        env_id: u64,
        sender: u64,
        dirty: &mut Vec<Dirty>,
    ) -> SenderCheck {
        let known = self
            .env(env_id)
            .map(|env| (env.sender, env.retired_senders.contains(&sender)));
        match known {
            Some((Some(current), _)) if current == sender => SenderCheck::Current,
            Some((_, true)) => SenderCheck::Retired,
            Some((Some(current), false)) => {
                tracing::warn!(
                    env = env_id,
                    old = format_args!("{current:016x}"),
                    new = format_args!("{sender:016x}"),
                    "events come from a new flagpost database: the sender started again; following it"
                );
                follow_new_sender(self.env_mut(env_id), env_id, current, sender, dirty);
                SenderCheck::Followed
            }
            // Never told a database (new, or stored before databases were recorded): what it
            // holds is taken as this database's.
            None | Some((None, false)) => {
                self.env_mut(env_id).sender = Some(sender);
                dirty.push(Dirty::Env(env_id));
                SenderCheck::Current
            }
        }
    }
}

fn follow_new_sender(env: &mut EnvCache, env_id: u64, old: u64, new: u64, dirty: &mut Vec<Dirty>) {
    env.retired_senders.push(old);
    if env.retired_senders.len() > RETIRED_KEPT {
        env.retired_senders.remove(0);
    }
    env.sender = Some(new);
    env.document_seq = None;
    env.loaded_at = None;
    for id in env.deleted_features.drain() {
        dirty.push(Dirty::Undeleted(env_id, id));
    }
    for (id, entry) in env.features.iter_mut() {
        forget_sequences(Arc::make_mut(entry));
        dirty.push(Dirty::FeatureRewritten(env_id, *id));
    }
    dirty.push(Dirty::Env(env_id));
}

/// Drops the sequence of every key of `entry`, keeping its timestamp.
fn forget_sequences(entry: &mut FeatureEntry) {
    let unsequenced = |order: Order| Order { seq: None, ..order };
    entry.meta.order = unsequenced(entry.meta.order);
    if let Some(slot) = &mut entry.default {
        slot.order = unsequenced(slot.order);
    }
    let sequenced: Vec<(Box<str>, Slot<FlagState>)> = entry
        .identities
        .iter()
        .filter(|(_, slot)| slot.order.seq.is_some())
        .map(|(identifier, slot)| {
            let slot = Slot {
                order: unsequenced(slot.order),
                state: slot.state.clone(),
                arrived_micros: slot.arrived_micros,
            };
            (identifier.into(), slot)
        })
        .collect();
    for (identifier, slot) in sequenced {
        entry.identities.insert(&identifier, slot);
    }
    for slot in entry.segments.values_mut() {
        slot.order = unsequenced(slot.order);
    }
}

#[cfg(test)]
mod tests {
    use flagpost::wire::FlagValue;

    use super::*;
    use crate::documents::{Change, Outcome};

    fn change(feature: u64, seq: u64, sender: u64, deleted: bool, value: &str) -> Change {
        // Each database's events are made later than the one before it.
        let order = Order {
            seq: Some(seq),
            ts_micros: Some(sender as i64 * 1_000 + seq as i64),
        };
        let mut change = Change {
            deleted,
            order,
            sender: Some(sender),
            ..Change::with_string(1, feature, &format!("f{feature}"), value)
        };
        change.meta.order = order;
        change
    }

    /// As the writer applies a change: its sender checked first.
    fn apply(cache: &mut FlagCache, change: &Change) -> Option<Outcome> {
        let mut dirty = Vec::new();
        let sender = change.sender.unwrap();
        (cache.check_sender(change.env, sender, &mut dirty) != SenderCheck::Retired)
            .then(|| cache.apply(change, 0, &mut dirty))
    }

    fn value(cache: &FlagCache, feature: u64) -> Option<FlagValue> {
        let entry = cache.env(1)?.features.get(&feature)?;
        entry.default_state()?.value.clone()
    }

    #[test]
    fn a_new_database_is_followed_and_the_old_one_is_stale() {
        let mut cache = FlagCache::default();
        apply(&mut cache, &change(1, 100, 0xa, false, "old"));
        apply(&mut cache, &change(2, 101, 0xa, true, "gone"));
        // The new database counts from 1 again, and numbers features from 1 again.
        assert_eq!(
            apply(&mut cache, &change(1, 1, 0xb, false, "new")),
            Some(Outcome::Applied)
        );
        assert_eq!(
            apply(&mut cache, &change(2, 2, 0xb, false, "back")),
            Some(Outcome::Applied)
        );
        let env = cache.env(1).unwrap();
        assert_eq!(
            (env.sender, env.retired_senders.clone()),
            (Some(0xb), vec![0xa])
        );
        assert_eq!(env.loaded_at, None, "to be bootstrapped again");
        assert_eq!(value(&cache, 1), Some(FlagValue::String("new".into())));
        assert_eq!(value(&cache, 2), Some(FlagValue::String("back".into())));
        // A late event of the old database changes nothing.
        assert_eq!(
            apply(&mut cache, &change(1, 999, 0xa, false, "stale")),
            None
        );
        assert_eq!(value(&cache, 1), Some(FlagValue::String("new".into())));
    }
}

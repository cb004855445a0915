//! A feature's identity overrides, shared copy-on-write in shards.
//!
//! The writer stages each batch on a clone of the published cache, and changing a feature copies
//! what it holds (`Arc::make_mut`). A feature can hold many thousands of identity overrides; were
//! they one map, every batch would copy all of them for each feature it touches. Split into
//! shards of about [`SHARD_TARGET`] keys, a change copies one shard and the list of shard
//! pointers, whatever the feature's size.
//!
//! Identifiers are held inline up to 24 bytes (most are: user ids, short emails), so copying a
//! shard copies its keys without allocating one each, and dropping the copy it replaced frees none;
//! a short key also takes less memory than a pointer to a copy of it would.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use compact_str::CompactString;

use crate::documents::fold_hash::FoldHashMap;

/// About how many keys a shard holds before the shards double.
const SHARD_TARGET: usize = 64;

type Shard<V> = FoldHashMap<CompactString, V>;

/// Identifier -> the identity override's slot (`V`).
#[derive(Clone)]
pub struct IdentityOverrides<V> {
    /// A power of two of them; a key's shard is picked by its hash.
    shards: Vec<Arc<Shard<V>>>,
    len: usize,
}

impl<V> Default for IdentityOverrides<V> {
    fn default() -> Self {
        IdentityOverrides {
            shards: vec![Arc::new(Shard::default())],
            len: 0,
        }
    }
}

/// A fixed hash (not the maps' random one): a key must land in the same shard in every clone.
fn key_hash(identifier: &str) -> u64 {
    foldhash::fast::FixedState::default().hash_one(identifier)
}

impl<V: Clone> IdentityOverrides<V> {
    fn shard_of(&self, identifier: &str) -> usize {
        key_hash(identifier) as usize & (self.shards.len() - 1)
    }

    pub fn get(&self, identifier: &str) -> Option<&V> {
        // Most features have no identity override: no hashing then (every identity answer asks
        // every feature).
        if self.len == 0 {
            return None;
        }
        self.shards[self.shard_of(identifier)].get(identifier)
    }

    /// Sets `identifier`'s slot, copying only its shard if that is shared.
    pub fn insert(&mut self, identifier: &str, slot: V) {
        let shard = self.shard_of(identifier);
        if Arc::make_mut(&mut self.shards[shard])
            .insert(identifier.into(), slot)
            .is_none()
        {
            self.len += 1;
            if self.len > self.shards.len() * SHARD_TARGET {
                self.reshard(self.shards.len() * 2);
            }
        }
    }

    /// Keeps the slots `keep` accepts; only shards that lose a key are copied.
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        for shard in &mut self.shards {
            if shard.values().all(&mut keep) {
                continue;
            }
            let shard = Arc::make_mut(shard);
            shard.retain(|_, slot| keep(slot));
        }
        self.len = self.shards.iter().map(|shard| shard.len()).sum();
        let wanted = self.len.div_ceil(SHARD_TARGET).next_power_of_two().max(1);
        if wanted * 4 <= self.shards.len() {
            self.reshard(wanted);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.shards
            .iter()
            .flat_map(|shard| shard.iter().map(|(id, slot)| (id.as_ref(), slot)))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Spreads every key over `count` shards (a power of two).
    fn reshard(&mut self, count: usize) {
        let mut shards: Vec<Shard<V>> = (0..count).map(|_| Shard::default()).collect();
        for shard in self.shards.drain(..) {
            let owned = Arc::try_unwrap(shard).unwrap_or_else(|shared| Shard::clone(&shared));
            for (identifier, slot) in owned {
                shards[key_hash(&identifier) as usize & (count - 1)].insert(identifier, slot);
            }
        }
        self.shards = shards.into_iter().map(Arc::new).collect();
    }
}

/// Equal when they hold the same keys and slots, however they are sharded.
impl<V: Clone + PartialEq> PartialEq for IdentityOverrides<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self
                .iter()
                .all(|(identifier, slot)| other.get(identifier) == Some(slot))
    }
}

impl<V: Clone + fmt::Debug> fmt::Debug for IdentityOverrides<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_copies_one_shard_and_the_map_reads_like_one() {
        let mut map = IdentityOverrides::default();
        for n in 0..1_000u64 {
            map.insert(&format!("user-{n}"), n);
        }
        assert_eq!(map.len(), 1_000);
        assert!(map.shards.len() >= 1_000 / SHARD_TARGET);
        let published = map.clone();
        map.insert("user-7", 70_000);
        let copied = map
            .shards
            .iter()
            .zip(&published.shards)
            .filter(|(staged, shared)| !Arc::ptr_eq(staged, shared))
            .count();
        assert_eq!(copied, 1);
        assert_eq!(map.get("user-7"), Some(&70_000));
        assert_eq!(published.get("user-7"), Some(&7));
        assert_ne!(map, published);

        map.retain(|value| *value < 10 || *value == 70_000);
        assert_eq!(map.len(), 10);
        assert_eq!(map.shards.len(), 1, "shrunk back");
        let mut rebuilt = IdentityOverrides::default();
        for n in 0..10u64 {
            rebuilt.insert(&format!("user-{n}"), if n == 7 { 70_000 } else { n });
        }
        assert_eq!(map, rebuilt);
        assert_eq!(map.iter().count(), 10);
    }
}

//! The cache's maps, keyed by what signed web hooks and fetched documents name (environment and
//! feature ids, identifiers), hashed with foldhash rather than std's SipHash: the writer hashes
//! several keys a web hook, and a lookup one identifier a feature. foldhash is seeded per process,
//! and the keys come from authenticated senders, so the DoS resistance SipHash buys is not needed
//! here.

use std::collections::{HashMap, HashSet};

pub type FoldHashMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The set of [`FoldHashMap`]'s kind (the ids of deleted features).
pub type FoldHashSet<T> = HashSet<T, foldhash::fast::RandomState>;

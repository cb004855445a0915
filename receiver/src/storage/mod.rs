//! The redb file: its tables and row encoding, loading the cache at start, and the writer's
//! transactions ([`batch`]). The only module of the receiver that names redb.
//!
//! Every call here blocks; only the writer thread (and start-up, before the server runs) calls it.

pub mod batch;
mod documents;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::documents::{EnvCache, FeatureEntry, FeatureMeta, FlagCache, FlagState, Scope};
use crate::documents::{SegmentState, Slot};
use crate::error::WriteError;

pub use batch::Batch;

/// Environment rows: what is known about each environment as a whole.
const ENVIRONMENTS: TableDefinition<u64, &str> = TableDefinition::new("environments");
/// `(environment, feature)` -> what the feature is.
const FEATURES: TableDefinition<(u64, u64), &str> = TableDefinition::new("features");
/// `(environment, feature)` of every deleted feature: the tombstones.
const DELETED_FEATURES: TableDefinition<(u64, u64), ()> = TableDefinition::new("deleted_features");
/// `(environment, feature, key)` -> the key's slot; key "" is the default, `i:<identifier>` an
/// identity override, `s:<segment id>` a segment override.
const STATES: TableDefinition<(u64, u64, &str), &[u8]> = TableDefinition::new("states");
/// Request ids already taken (`webhook-id`, else SHA-256 of the body) -> when (unix seconds).
const SEEN: TableDefinition<&str, i64> = TableDefinition::new("seen_requests");
/// `(when, id)`, so that pruning old ids is one range scan.
const SEEN_BY_TIME: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("seen_requests_by_time");

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for WriteError {
            fn from(error: $t) -> Self {
                WriteError::Database(Arc::new(redb::Error::from(error)))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

#[derive(Serialize, Deserialize)]
struct EnvRow {
    name: Option<String>,
    document_seq: Option<u64>,
    loaded_at: Option<i64>,
    refreshed_at: Option<i64>,
}

fn scope_key(scope: &Scope) -> String {
    match scope {
        Scope::Default => String::new(),
        Scope::Identity(identifier) => format!("i:{identifier}"),
        Scope::Segment(segment) => format!("s:{segment}"),
    }
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("cache rows always serialise")
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> WriteError {
    WriteError::Corrupt(format!("{what}: {error}"))
}

/// The open database; owned by the writer thread.
pub struct Storage {
    db: Database,
}

impl Storage {
    /// Opens (or creates) the database, makes sure every table exists, and reads the whole
    /// cache into memory.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<(Storage, FlagCache), WriteError> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(ENVIRONMENTS)?;
        txn.open_table(FEATURES)?;
        txn.open_table(DELETED_FEATURES)?;
        txn.open_table(STATES)?;
        txn.open_table(SEEN)?;
        txn.open_table(SEEN_BY_TIME)?;
        documents::create(&txn)?;
        txn.commit()?;
        let cache = load(&db)?;
        Ok((Storage { db }, cache))
    }

    /// Runs `work` on one write transaction with every table open, then commits durably: when
    /// this returns `Ok`, everything `work` wrote survives a crash. Also answers how long the
    /// transaction took, from its start to the end of the commit.
    pub fn write<T>(
        &self,
        work: impl FnOnce(&mut Batch<'_>) -> Result<T, WriteError>,
    ) -> Result<(T, std::time::Duration), WriteError> {
        let started = Instant::now();
        let txn = self.db.begin_write()?;
        let answer = {
            let mut batch = Batch::open(&txn)?;
            work(&mut batch)?
        };
        txn.commit()?;
        Ok((answer, started.elapsed()))
    }
}

/// Reads the whole cache into memory.
fn load(db: &Database) -> Result<FlagCache, WriteError> {
    let txn = db.begin_read()?;
    let mut envs: HashMap<u64, EnvCache> = HashMap::new();
    for row in txn.open_table(ENVIRONMENTS)?.iter()? {
        let (id, value) = row?;
        let stored: EnvRow =
            serde_json::from_str(value.value()).map_err(|e| corrupt("environment row", e))?;
        let env = envs.entry(id.value()).or_default();
        env.name = stored.name;
        env.document_seq = stored.document_seq;
        env.loaded_at = stored.loaded_at;
        env.refreshed_at = stored.refreshed_at;
    }
    for row in txn.open_table(DELETED_FEATURES)?.iter()? {
        let (key, _) = row?;
        let (env, feature) = key.value();
        envs.entry(env)
            .or_default()
            .deleted_features
            .insert(feature);
    }
    documents::load(&txn, &mut envs)?;
    let mut features: HashMap<(u64, u64), FeatureEntry> = HashMap::new();
    for row in txn.open_table(FEATURES)?.iter()? {
        let (key, value) = row?;
        let meta: FeatureMeta =
            serde_json::from_str(value.value()).map_err(|e| corrupt("feature row", e))?;
        features.entry(key.value()).or_default().meta = meta;
    }
    for row in txn.open_table(STATES)?.iter()? {
        let (key, value) = row?;
        let (env, feature, scope) = key.value();
        let entry = features.entry((env, feature)).or_default();
        let bytes = value.value();
        if scope.is_empty() {
            entry.default = Some(serde_json::from_slice(bytes).map_err(|e| corrupt("state", e))?);
        } else if let Some(identifier) = scope.strip_prefix("i:") {
            let slot: Slot<FlagState> =
                serde_json::from_slice(bytes).map_err(|e| corrupt("identity state", e))?;
            entry.identities.insert(identifier.into(), slot);
        } else if let Some(segment) = scope.strip_prefix("s:") {
            let segment: u64 = segment.parse().map_err(|e| corrupt("segment key", e))?;
            let slot: Slot<SegmentState> =
                serde_json::from_slice(bytes).map_err(|e| corrupt("segment state", e))?;
            entry.segments.insert(segment, slot);
        } else {
            return Err(corrupt("state key", scope));
        }
    }
    for ((env, feature), entry) in features {
        envs.entry(env)
            .or_default()
            .features
            .insert(feature, Arc::new(entry));
    }
    let mut cache = FlagCache::default();
    for (id, env) in envs {
        cache.insert_env(id, env);
    }
    Ok(cache)
}

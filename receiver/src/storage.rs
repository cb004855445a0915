//! The redb file: tables, row encoding, loading the cache at start, and one batch's transaction.
//!
//! Every call here blocks; only the writer thread (and start-up, before the server runs) calls it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::cache::{
    Dirty, EnvCache, FeatureEntry, FeatureMeta, FlagCache, FlagState, Scope, SegmentState, Slot,
};

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

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Database(#[from] redb::Error),
    #[error("a stored row cannot be read: {0}")]
    Corrupt(String),
    #[error("the storage writer has stopped")]
    WriterGone,
    #[error("cannot start the writer thread: {0}")]
    Thread(std::io::Error),
    #[error("the batch holding this request failed: {0}")]
    BatchFailed(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(error: $t) -> Self {
                StorageError::Database(error.into())
            }
        }
    )*};
}
from_redb!(
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

fn corrupt(what: &str, error: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("{what}: {error}"))
}

/// Opens (or creates) the database and makes sure every table exists.
pub fn open(path: &Path, cache_bytes: usize) -> Result<Database, StorageError> {
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
    txn.commit()?;
    Ok(db)
}

/// Reads the whole cache into memory.
pub fn load(db: &Database) -> Result<FlagCache, StorageError> {
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

/// A batch inside one write transaction.
pub struct Batch {
    txn: redb::WriteTransaction,
}

impl Batch {
    pub fn begin(db: &Database) -> Result<Batch, StorageError> {
        Ok(Batch {
            txn: db.begin_write()?,
        })
    }

    /// Records a request id; false when it was already taken (by this batch or an earlier one).
    pub fn remember(&mut self, request_id: &str, now_unix: i64) -> Result<bool, StorageError> {
        let mut seen = self.txn.open_table(SEEN)?;
        if seen.get(request_id)?.is_some() {
            return Ok(false);
        }
        seen.insert(request_id, now_unix)?;
        self.txn
            .open_table(SEEN_BY_TIME)?
            .insert((now_unix, request_id), ())?;
        Ok(true)
    }

    /// Forgets request ids taken before `before_unix`; returns how many.
    pub fn forget_before(&mut self, before_unix: i64) -> Result<u64, StorageError> {
        let mut by_time = self.txn.open_table(SEEN_BY_TIME)?;
        let mut seen = self.txn.open_table(SEEN)?;
        let old: Vec<(i64, String)> = by_time
            .range((i64::MIN, "")..(before_unix, ""))?
            .map(|row| {
                row.map(|(key, _)| {
                    let (at, id) = key.value();
                    (at, id.to_owned())
                })
            })
            .collect::<Result<_, _>>()?;
        for (at, id) in &old {
            by_time.remove((*at, id.as_str()))?;
            seen.remove(id.as_str())?;
        }
        Ok(old.len() as u64)
    }

    /// Writes the rows behind every dirty key, reading their new content from `cache`.
    pub fn write(&mut self, cache: &FlagCache, dirty: &mut Vec<Dirty>) -> Result<(), StorageError> {
        dirty.sort();
        dirty.dedup();
        let mut envs = self.txn.open_table(ENVIRONMENTS)?;
        let mut features = self.txn.open_table(FEATURES)?;
        let mut deleted = self.txn.open_table(DELETED_FEATURES)?;
        let mut states = self.txn.open_table(STATES)?;
        for key in dirty.iter() {
            match key {
                Dirty::Env(id) => {
                    if let Some(env) = cache.env(*id) {
                        let row = EnvRow {
                            name: env.name.clone(),
                            document_seq: env.document_seq,
                            loaded_at: env.loaded_at,
                            refreshed_at: env.refreshed_at,
                        };
                        envs.insert(
                            *id,
                            std::str::from_utf8(&json(&row)).expect("JSON is UTF-8"),
                        )?;
                    }
                }
                Dirty::FeatureMeta(env, feature) => {
                    if let Some(entry) = feature_entry(cache, *env, *feature) {
                        let row = serde_json::to_string(&entry.meta).expect("meta serialises");
                        features.insert((*env, *feature), row.as_str())?;
                    }
                }
                Dirty::State(env, feature, scope) => {
                    let key = scope_key(scope);
                    let entry = feature_entry(cache, *env, *feature);
                    let row = entry.and_then(|entry| match scope {
                        Scope::Default => entry.default.as_ref().map(json),
                        Scope::Identity(identifier) => entry.identities.get(identifier).map(json),
                        Scope::Segment(segment) => entry.segments.get(segment).map(json),
                    });
                    match row {
                        Some(row) => {
                            states.insert((*env, *feature, key.as_str()), row.as_slice())?
                        }
                        None => states.remove((*env, *feature, key.as_str()))?,
                    };
                }
                Dirty::FeatureDeleted(env, feature) => {
                    remove_feature_states(&mut states, *env, *feature)?;
                    features.remove((*env, *feature))?;
                    deleted.insert((*env, *feature), ())?;
                }
                Dirty::FeatureRewritten(env, feature) => {
                    remove_feature_states(&mut states, *env, *feature)?;
                    match feature_entry(cache, *env, *feature) {
                        None => {
                            features.remove((*env, *feature))?;
                        }
                        Some(entry) => {
                            let meta = serde_json::to_string(&entry.meta).expect("meta serialises");
                            features.insert((*env, *feature), meta.as_str())?;
                            if let Some(slot) = &entry.default {
                                states.insert((*env, *feature, ""), json(slot).as_slice())?;
                            }
                            for (identifier, slot) in &entry.identities {
                                let key = scope_key(&Scope::Identity(identifier.clone()));
                                states.insert(
                                    (*env, *feature, key.as_str()),
                                    json(slot).as_slice(),
                                )?;
                            }
                            for (segment, slot) in &entry.segments {
                                let key = scope_key(&Scope::Segment(*segment));
                                states.insert(
                                    (*env, *feature, key.as_str()),
                                    json(slot).as_slice(),
                                )?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Commits durably: when this returns `Ok`, the batch survives a crash.
    pub fn commit(self) -> Result<(), StorageError> {
        self.txn.commit()?;
        Ok(())
    }
}

fn feature_entry(cache: &FlagCache, env: u64, feature: u64) -> Option<&FeatureEntry> {
    cache
        .env(env)
        .and_then(|env| env.features.get(&feature))
        .map(|entry| entry.as_ref())
}

fn remove_feature_states(
    states: &mut redb::Table<(u64, u64, &str), &[u8]>,
    env: u64,
    feature: u64,
) -> Result<(), StorageError> {
    // Every key is "", "i:..." or "s:...", all below "t".
    states.retain_in((env, feature, "")..(env, feature, "t"), |_, _| false)?;
    Ok(())
}

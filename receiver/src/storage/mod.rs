//! The redb file: its tables and row encoding, loading the cache at start, and the writer's
//! transactions ([`batch`]). The only module of the receiver that names redb.
//!
//! Every call here blocks; only the writer thread (and start-up, before the server runs) calls it.
//!
//! The file is opened through flagpost's checked open (`flagpost::store::open`): a missing file is
//! a new cache, a 0-byte or damaged one is refused with what to do (never silently an empty
//! cache), and every durable commit is two-phase so that a damaged file is never mistaken for a
//! commit torn by a crash. Batches are made durable through flagpost's redo log
//! (`flagpost::store::redo`), beside the file as `<file>.redo`, and taken into the file by a
//! durable commit now and then; a log left by a crash is replayed before the cache is loaded.
//! Nothing reads the file once the cache is loaded, so the batches between two durable commits
//! are written into one transaction, held open, rather than each committed.

pub mod batch;
mod documents;
mod request_ids;
mod rows;
mod schema;

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flagpost::store::open::{OpenError, TWO_PHASE_COMMIT, open_checked, probe_commit};
use flagpost::store::redo::{self, LoggedTable, Redo, RedoOps, ReplayError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::documents::{EnvCache, FeatureEntry, FlagCache, Scope};
use crate::error::WriteError;

pub use batch::Batch;
pub use request_ids::RequestId;
pub use schema::SCHEMA_VERSION;

/// Environment rows: what is known about each environment as a whole.
const ENVIRONMENTS: TableDefinition<u64, &str> = TableDefinition::new("environments");
/// `(environment, feature)` -> what the feature is ([`rows::meta`]).
const FEATURES: TableDefinition<(u64, u64), rows::MetaBytes> =
    TableDefinition::new("feature_descriptions");
/// `(environment, feature)` of every deleted feature: the tombstones.
const DELETED_FEATURES: TableDefinition<(u64, u64), ()> = TableDefinition::new("deleted_features");
/// `(environment, feature, key)` -> the key's slot ([`rows::flag_slot`], [`rows::segment_slot`]);
/// key "" is the default, `i:<identifier>` an identity override, `s:<segment id>` a segment
/// override.
const STATES: TableDefinition<(u64, u64, &str), rows::SlotBytes> =
    TableDefinition::new("key_slots");

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
    /// The sender database followed, and those followed before (absent in rows written before
    /// senders were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sender: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    retired_senders: Vec<u64>,
    /// The environment's revision and `updated_at` (absent, 0, in rows written before streams).
    #[serde(default)]
    revision: u64,
    #[serde(default)]
    updated_at_micros: i64,
}

/// Each logged table's number in the redo log. A number, once given, keeps its table and its rows'
/// layout (a table of a new layout takes a new number), so that a log written before an upgrade
/// is replayed as it was written.
#[derive(Clone, Copy)]
enum LoggedAs {
    Environments = 1,
    /// Schemas 2-3's descriptions and slots, as redb tuples ([`schema::tuples`]).
    FeaturesAsTuples = 2,
    DeletedFeatures = 3,
    StatesAsTuples = 4,
    RequestIds = 5,
    RequestIdsByTime = 6,
    Features = 7,
    States = 8,
}

/// Opens `definition` in `txn` as a table whose writes the batch's redo log records.
fn logged<'txn, K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &'txn WriteTransaction,
    definition: TableDefinition<K, V>,
    number: LoggedAs,
    ops: &Rc<RefCell<RedoOps>>,
) -> Result<LoggedTable<'txn, K, V>, WriteError> {
    Ok(LoggedTable::open(
        txn,
        definition,
        number as u8,
        ops.clone(),
    )?)
}

/// Writes one op of a redo log group again, into the table its number names.
fn replay_op(
    txn: &WriteTransaction,
    table: u8,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), ReplayError> {
    use redo::replay_op as into;
    match table {
        n if n == LoggedAs::Environments as u8 => Ok(into(txn, ENVIRONMENTS, key, value)?),
        n if n == LoggedAs::Features as u8 => Ok(into(txn, FEATURES, key, value)?),
        n if n == LoggedAs::DeletedFeatures as u8 => Ok(into(txn, DELETED_FEATURES, key, value)?),
        n if n == LoggedAs::States as u8 => Ok(into(txn, STATES, key, value)?),
        n if n == LoggedAs::FeaturesAsTuples as u8 => {
            schema::tuples::replay_feature(txn, key, value)
        }
        n if n == LoggedAs::StatesAsTuples as u8 => schema::tuples::replay_state(txn, key, value),
        n if n == LoggedAs::RequestIds as u8 => {
            Ok(into(txn, request_ids::REQUEST_IDS, key, value)?)
        }
        n if n == LoggedAs::RequestIdsByTime as u8 => {
            Ok(into(txn, request_ids::REQUEST_IDS_BY_TIME, key, value)?)
        }
        _ => Err(ReplayError::Malformed("an op names no logged table")),
    }
}

fn scope_key(scope: &Scope) -> String {
    match scope {
        Scope::Default => String::new(),
        Scope::Identity(identifier) => format!("i:{identifier}"),
        Scope::Segment(segment) => format!("s:{segment}"),
    }
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> WriteError {
    WriteError::Corrupt(format!("{what}: {error}"))
}

/// The database handle, whose close never takes down the thread that drops it. redb's close
/// commits (the allocator state, or a pending commit), and on a file damaged since it was opened
/// that commit can panic: the writer must go on, failing and retrying, rather than die with it
/// (its text goes to the log through the panic hook). What the redo log holds stays for the next
/// open.
struct ClosingDatabase(Option<Database>);

impl std::ops::Deref for ClosingDatabase {
    type Target = Database;

    fn deref(&self) -> &Database {
        self.0.as_ref().expect("open until dropped")
    }
}

impl Drop for ClosingDatabase {
    fn drop(&mut self) {
        if let Some(db) = self.0.take() {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(db)));
        }
    }
}

/// The open database; owned by the writer thread, the file's only reader once the cache is
/// loaded.
pub struct Storage {
    /// The transaction every batch since the last durable commit was written into, each made
    /// durable by the redo log ([`Redo::log_and_hold`]): a page a batch touches is copied once per
    /// checkpoint, not once per batch. Nothing reads the file meanwhile. Declared before `db`, so
    /// that it ends before the database closes (redb would otherwise put the close off until the
    /// transaction's own drop, where nothing catches what the close meets).
    held: Option<WriteTransaction>,
    db: ClosingDatabase,
    redo: Redo,
    /// A failure dropped the held transaction: the log holds batches the file lacks, to be
    /// brought in ([`Redo::catch_up`]) before the file takes another.
    behind_log: bool,
    path: PathBuf,
    cache_bytes: usize,
    file_id: u64,
}

impl Storage {
    /// Opens (or, where no file exists, creates) the database, makes sure every table exists,
    /// takes in what its redo log holds, and reads the whole cache into memory. An empty or
    /// damaged file is refused.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<(Storage, FlagCache), WriteError> {
        let storage = Storage::open_file(path, cache_bytes)?;
        let cache = catch_damage(|| load(&storage.db))?;
        Ok((storage, cache))
    }

    /// Closes the file and opens it again, through the same checks as at start: what redb needs
    /// after an I/O error ("Previous I/O error occurred"), e.g. once a full disk has room again.
    /// redb reopens at its last durable commit; the redo log brings back the batches after it.
    pub fn reopen(self) -> Result<Storage, WriteError> {
        let Storage {
            db,
            mut redo,
            held,
            path,
            cache_bytes,
            ..
        } = self;
        // redb holds a lock on the file for one open handle at a time.
        drop(held);
        drop(db);
        let (db, file_id) = open_database(&path, cache_bytes)?;
        take_log(&db, &mut redo, Redo::catch_up)?;
        Ok(Storage {
            db,
            redo,
            held: None,
            behind_log: false,
            path,
            cache_bytes,
            file_id,
        })
    }

    /// Whether the handle still takes transactions: after an I/O error redb refuses each one
    /// until the file is reopened.
    pub fn is_usable(&self) -> bool {
        self.held.is_some() || self.db.begin_write().map(|txn| txn.abort()).is_ok()
    }

    /// Opens the file through its checks, makes sure every table exists and takes in what its
    /// redo log holds, without loading.
    pub fn open_file(path: &Path, cache_bytes: usize) -> Result<Storage, WriteError> {
        let new_file = !path.exists();
        let (db, file_id) = open_database(path, cache_bytes)?;
        let mut redo =
            Redo::open(path, new_file, redo::CHECKPOINT_EVERY).map_err(WriteError::DatabaseFile)?;
        take_log(&db, &mut redo, Redo::replay_into)?;
        Ok(Storage {
            db,
            redo,
            held: None,
            behind_log: false,
            path: path.to_owned(),
            cache_bytes,
            file_id,
        })
    }

    /// A random number drawn when the file was created, the same for as long as it lives:
    /// revisions count within one file, so a change stream's position names the file too.
    pub fn file_id(&self) -> u64 {
        self.file_id
    }

    /// Whether the file takes changes again after a failure (see
    /// [`flagpost::store::open::probe_commit`]). Every logged batch is taken into the file
    /// first, by a durable commit that starts the log over.
    pub fn probe(&mut self) -> Result<(), WriteError> {
        self.commit_durably()?;
        catch_damage(|| Ok(probe_commit(&self.db)?))
    }

    /// Runs `work` as one batch of the held write transaction, with every table open, then makes
    /// it durable (through the redo log, or by a durable commit): when this returns `Ok`,
    /// everything `work` wrote survives a crash; when it fails, nothing of it is kept. Also
    /// answers how long the batch took, from its start until it was durable. A panic inside redb
    /// (a page damaged since the start check) is answered as [`WriteError::DatabaseFile`].
    pub fn write<T>(
        &mut self,
        work: impl FnOnce(&mut Batch<'_>) -> Result<T, WriteError>,
    ) -> Result<(T, Duration), WriteError> {
        let started = Instant::now();
        let txn = self.begin()?;
        let redo = &mut self.redo;
        let written = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let ops = RedoOps::shared();
            let answer = {
                let mut batch = Batch::open(&txn, &ops)?;
                work(&mut batch)?
            };
            let held = redo
                .log_and_hold(txn, &ops.borrow())
                .map_err(commit_failed)?;
            Ok((answer, held))
        }));
        match written {
            Ok(Ok((answer, held))) => {
                self.held = held;
                Ok((answer, started.elapsed()))
            }
            Ok(Err(error)) => {
                self.behind_log = true;
                Err(error)
            }
            Err(_) => {
                // A group it may have logged must not be replayed: its waiters hear it failed.
                self.redo.retract_unsettled();
                self.behind_log = true;
                Err(damaged())
            }
        }
    }

    /// The transaction the next batch is written into: the one held, or a new one once the file
    /// holds every logged batch.
    fn begin(&mut self) -> Result<WriteTransaction, WriteError> {
        if let Some(txn) = self.held.take() {
            return Ok(txn);
        }
        if self.behind_log {
            take_log(&self.db, &mut self.redo, Redo::catch_up)?;
            self.behind_log = false;
        }
        Ok(self.db.begin_write()?)
    }

    /// Takes every logged batch into the file by a durable commit; the log starts over.
    fn commit_durably(&mut self) -> Result<(), WriteError> {
        let txn = self.begin()?;
        self.redo.checkpoint_held(txn).map_err(|error| {
            self.behind_log = true;
            WriteError::from(error)
        })
    }

    /// Takes the logged batches into the file once they have waited long enough
    /// ([`redo::CHECKPOINT_EVERY`]), so that a quiet writer does not keep them waiting.
    pub fn checkpoint_if_due(&mut self) -> Result<(), WriteError> {
        if self.redo.checkpoint_due() {
            self.commit_durably()?;
        }
        Ok(())
    }

    /// At a clean stop: every logged batch into the file, and the log removed.
    pub fn close(mut self) {
        let closed = self.commit_durably().and_then(|()| {
            self.redo
                .remove()
                .map_err(|e| WriteError::DatabaseFile(e.to_string()))
        });
        if let Err(error) = closed {
            tracing::warn!(%error, "the redo log is kept; the next start takes it in");
        }
    }
}

/// Opens the file through its checks and makes sure every table exists; answers it and its id.
fn open_database(path: &Path, cache_bytes: usize) -> Result<(ClosingDatabase, u64), WriteError> {
    let db = ClosingDatabase(Some(open_checked(path, cache_bytes).map_err(refused)?));
    let mut txn = db.begin_write()?;
    txn.set_two_phase_commit(TWO_PHASE_COMMIT);
    let file_id = schema::initialise(&txn, path)?;
    txn.open_table(ENVIRONMENTS)?;
    txn.open_table(FEATURES)?;
    txn.open_table(DELETED_FEATURES)?;
    txn.open_table(STATES)?;
    txn.open_table(request_ids::REQUEST_IDS)?;
    txn.open_table(request_ids::REQUEST_IDS_BY_TIME)?;
    documents::create(&txn)?;
    txn.commit()?;
    Ok((db, file_id))
}

/// Takes in the batches the redo log holds that the file does not, by `take` (after a crash,
/// [`Redo::replay_into`]; after a failure dropped the held transaction, [`Redo::catch_up`]).
fn take_log(
    db: &Database,
    redo: &mut Redo,
    take: fn(&mut Redo, &Database, ReplayOp) -> Result<u64, ReplayError>,
) -> Result<(), WriteError> {
    catch_damage(|| {
        take(redo, db, replay_op)
            .map(drop)
            .map_err(|error| match error {
                ReplayError::Storage(error) => WriteError::from(error),
                log => WriteError::DatabaseFile(format!("{}: {log}", redo.path().display())),
            })
    })
}

type ReplayOp = fn(&WriteTransaction, u8, &[u8], Option<&[u8]>) -> Result<(), ReplayError>;

fn commit_failed(failure: redo::CommitFailure) -> WriteError {
    match failure {
        redo::CommitFailure::Database(error) => error.into(),
        log @ redo::CommitFailure::Log { .. } => WriteError::Database(Arc::new(log)),
    }
}

/// Runs `work`, answering a panic inside redb as a damaged file: its text goes to the log (the
/// panic hook), never to a client.
fn catch_damage<T>(work: impl FnOnce() -> Result<T, WriteError>) -> Result<T, WriteError> {
    std::panic::catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| Err(damaged()))
}

fn damaged() -> WriteError {
    WriteError::DatabaseFile(
        "the database file is damaged: reading it failed; delete it (or restore a backup) and \
         restart, and the cache is loaded again from its sources"
            .into(),
    )
}

/// The refusal of a file that cannot be opened, with what to do about it.
fn refused(error: OpenError) -> WriteError {
    let advice = match &error {
        OpenError::Empty(_) => {
            "refusing to start on it as an empty cache; if it was reset on purpose, delete it and \
             restart (the cache is loaded again from its sources), else restore it from a backup"
        }
        OpenError::Damaged { .. } => {
            "refusing to start; delete it (or move it aside) and restart to load the cache again \
             from its sources, or restore it from a backup"
        }
        OpenError::Unavailable { .. } => return WriteError::DatabaseFile(error.to_string()),
    };
    WriteError::DatabaseFile(format!("{error}: {advice}"))
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
        env.sender = stored.sender;
        env.retired_senders = stored.retired_senders;
        env.revision = stored.revision;
        env.updated_at_micros = stored.updated_at_micros;
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
        features.entry(key.value()).or_default().meta = rows::meta_of(value.value())?;
    }
    for row in txn.open_table(STATES)?.iter()? {
        let (key, value) = row?;
        let (env, feature, scope) = key.value();
        let entry = features.entry((env, feature)).or_default();
        let slot = value.value();
        if scope.is_empty() {
            entry.default = Some(rows::flag_slot_of(slot)?);
        } else if let Some(identifier) = scope.strip_prefix("i:") {
            let slot = rows::flag_slot_of(slot)?;
            entry.identities.insert(identifier, slot);
        } else if let Some(segment) = scope.strip_prefix("s:") {
            let segment: u64 = segment.parse().map_err(|e| corrupt("segment key", e))?;
            entry.segments.insert(segment, rows::segment_slot_of(slot)?);
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

#[cfg(test)]
mod tests;

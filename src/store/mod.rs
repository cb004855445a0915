//! Storage: one redb file holding flag state, events and the outbox.
//!
//! redb is a blocking API, so no call into it ever runs on a tokio worker: writes go to the single
//! writer thread ([`writer`]) and reads run on the blocking pool ([`Store::read`]).

mod cache;
pub mod deliveries;
mod records;
pub mod tables;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot, watch};

pub use cache::Tables;
pub use records::*;
pub use writer::{JobResult, WriteError};

use tables::*;

const SCHEMA_VERSION: u64 = 1;

/// A storage failure: the disk, the file, or a record that does not decode. Cloneable so that one
/// failed commit can answer every waiter of its batch.
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage error: {message}")]
pub struct StoreError {
    message: String,
}

impl StoreError {
    pub fn new(message: impl Into<String>) -> StoreError {
        StoreError {
            message: message.into(),
        }
    }
}

macro_rules! store_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::new(e.to_string())
            }
        }
    )*};
}
store_error_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);

/// The database and its writer. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    commands: mpsc::Sender<writer::Command>,
    commits: watch::Receiver<u64>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

pub struct StoreOptions {
    pub cache_size_bytes: usize,
    /// The most jobs one commit takes.
    pub max_batch: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_size_bytes: 64 << 20,
            max_batch: 4096,
        }
    }
}

impl Store {
    /// Opens (or creates) the database and starts its writer. Blocking: call it before the runtime
    /// serves anything, or from `spawn_blocking`.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::new(format!("cannot create {}: {e}", parent.display())))?;
        }
        let db = Database::builder()
            .set_cache_size(options.cache_size_bytes)
            .create(path)
            .map_err(|e| StoreError::new(format!("cannot open {}: {e}", path.display())))?;
        initialise(&db)?;
        let db = Arc::new(db);
        let (commands_tx, commands_rx) = mpsc::channel(options.max_batch.max(1) * 4);
        let (commits_tx, commits_rx) = watch::channel(0);
        let handle = writer::spawn(
            db.clone(),
            options.max_batch.max(1),
            commands_rx,
            commits_tx,
        );
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                commands: commands_tx,
                commits: commits_rx,
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Runs `work` in the writer's next batch, through the batch's cached [`Tables`], and returns
    /// once that batch's commit is durable. `work` may run more than once (when another job of its
    /// batch refuses, the batch is re-run without it), so it must not have effects outside the
    /// transaction.
    pub async fn write<T, E, F>(&self, work: F) -> Result<T, WriteError<E>>
    where
        F: FnMut(&mut Tables<'_>) -> JobResult<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let outcome = writer::Outcome::new(reply);
        self.submit(Box::new(writer::TablesJob { work, outcome }), answer)
            .await
    }

    /// As [`Store::write`], for work that opens its tables from the transaction itself.
    pub async fn write_txn<T, E, F>(&self, work: F) -> Result<T, WriteError<E>>
    where
        F: FnMut(&WriteTransaction) -> JobResult<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let outcome = writer::Outcome::new(reply);
        self.submit(Box::new(writer::TxnJob { work, outcome }), answer)
            .await
    }

    async fn submit<T, E>(
        &self,
        job: Box<dyn writer::Job>,
        answer: oneshot::Receiver<Result<T, WriteError<E>>>,
    ) -> Result<T, WriteError<E>> {
        self.inner
            .commands
            .send(writer::Command::Run(job))
            .await
            .map_err(|_| StoreError::new("the writer has stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::new("the writer stopped before answering"))?
    }

    /// Runs `work` in a read transaction on the blocking pool.
    pub async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read()?;
            work(&txn)
        })
        .await
        .map_err(|e| StoreError::new(format!("read task failed: {e}")))?
    }

    /// Changes each time a batch commits; lanes wait on it for new outbox rows.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.inner.commits.clone()
    }

    /// Commits the jobs already queued, stops the writer and waits for it; later writes fail.
    /// The file itself closes when the last clone of the store is dropped.
    pub async fn shutdown(&self) {
        let handle = self.inner.writer.lock().expect("writer lock").take();
        let Some(handle) = handle else { return };
        let _ = self.inner.commands.send(writer::Command::Stop).await;
        let _ = tokio::task::spawn_blocking(move || handle.join()).await;
    }
}

fn initialise(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let version = meta.get("schema_version")?.map(|v| v.value());
        match version {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION)?;
                meta.insert("instance_id", fastrand::u64(..))?;
                for counter in [
                    "next_sequence",
                    "next_feature_id",
                    "next_state_id",
                    "next_identity_id",
                ] {
                    meta.insert(counter, 1)?;
                }
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(StoreError::new(format!(
                    "database schema version {other} is not {SCHEMA_VERSION}; this flagpost cannot read it"
                )));
            }
        }
        // Create every table so that readers never meet a missing one.
        txn.open_table(ENVIRONMENTS)?;
        txn.open_table(FEATURES)?;
        txn.open_table(FEATURE_NAMES)?;
        txn.open_table(STATES)?;
        txn.open_table(IDENTITIES)?;
        txn.open_table(EVENTS)?;
        txn.open_table(EVENT_BODIES)?;
        txn.open_table(OUTBOX)?;
        txn.open_table(ATTEMPTS)?;
        txn.open_table(DEAD_LETTERS)?;
        txn.open_table(IDEMPOTENCY)?;
        txn.open_table(FILE_FEATURES)?;
    }
    txn.commit()?;
    Ok(())
}

/// Reads a counter or identity value from `META`.
pub fn meta_value(
    table: &impl ReadableTable<&'static str, u64>,
    key: &str,
) -> Result<u64, StoreError> {
    table
        .get(key)?
        .map(|v| v.value())
        .ok_or_else(|| StoreError::new(format!("meta {key} is missing")))
}

/// The sequence of the last committed event (0 when there is none).
pub fn last_sequence(meta: &impl ReadableTable<&'static str, u64>) -> Result<u64, StoreError> {
    Ok(meta_value(meta, "next_sequence")? - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused job leaves nothing behind, even when it wrote before refusing and shared its
    /// batch (and the batch's cached tables and counters) with jobs that commit.
    #[tokio::test]
    async fn a_refused_job_leaves_nothing_and_its_batch_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.redb"), StoreOptions::default()).unwrap();
        let write = |key: u64, refuse: bool| {
            let store = store.clone();
            async move {
                store
                    .write(move |tables| {
                        let id = tables.next_id("next_feature_id")?;
                        tables.features()?.insert(key, "written")?;
                        Ok(if refuse { Err("refused") } else { Ok(id) })
                    })
                    .await
            }
        };
        let (a, b, c) = tokio::join!(write(10, false), write(20, true), write(30, false));
        assert!(matches!(b, Err(WriteError::Refused("refused"))));
        let ids = [a.unwrap(), c.unwrap()];
        assert_eq!(ids, [1, 2], "no id was spent on the refused job");
        let (present, next) = store
            .read(|txn| {
                let features = txn.open_table(FEATURES)?;
                let present: Vec<u64> = [10, 20, 30]
                    .into_iter()
                    .filter(|k| features.get(k).ok().flatten().is_some())
                    .collect();
                Ok((
                    present,
                    meta_value(&txn.open_table(META)?, "next_feature_id")?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(present, [10, 30]);
        assert_eq!(next, 3, "the counters reached META with the commit");
        store.shutdown().await;
    }
}

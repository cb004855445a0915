//! Storage: one redb file holding flag state, events and the outbox. Every table, key and encoding
//! of the sidecar is here and nowhere else.
//!
//! redb is a blocking API, so no call into it ever runs on a tokio worker: writes go to the single
//! writer thread ([`writer`]) and reads run on the blocking pool ([`Store::read`]).
//!
//! - [`schema`]: the tables, the schema version, and opening (or refusing) a file; [`rows`], how
//!   the hot records are laid out; `migrate`, a schema-1 file carried over to schema 2.
//! - [`tables`]: the tables of one write batch, opened once; [`flag_state`] implements the
//!   domain's [`crate::changes::FlagStore`] over them.
//! - [`events`]: event rows: appending, and reading them for the API and for delivery.
//! - [`idempotency`]: answers kept for `Idempotency-Key` retries; [`relayed`]: what the relay
//!   remembers of the bodies and keys it relayed.
//! - [`queries`]: what the API reads: features and an environment's document.
//! - [`deliveries`]: the delivery side: outbox pages, outcomes, dead letters, pruning.

pub mod deliveries;
pub mod events;
mod flag_state;
pub mod idempotency;
mod migrate;
pub mod queries;
pub mod relayed;
mod rows;
pub mod schema;
mod tables;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot, watch};

pub use crate::error::{StoreError, WriteError};
pub use events::EventRecord;
pub use tables::Tables;

macro_rules! store_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::new(e.to_string())
            }
        }
        impl From<$t> for WriteError {
            fn from(e: $t) -> Self {
                WriteError::Storage(e.into())
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
    commit_latency: Histogram,
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
        schema::initialise(&db, path)?;
        let db = Arc::new(db);
        let (commands_tx, commands_rx) = mpsc::channel(options.max_batch.max(1) * 4);
        let (commits_tx, commits_rx) = watch::channel(0);
        let commit_latency = Histogram::new(exponential_buckets(0.00005, 2.0, 18));
        let handle = writer::spawn(writer::Writer {
            db: db.clone(),
            max_batch: options.max_batch.max(1),
            commands: commands_rx,
            commits: commits_tx,
            commit_latency: commit_latency.clone(),
        });
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                commands: commands_tx,
                commits: commits_rx,
                commit_latency,
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Runs `work` in the writer's next batch, through the batch's cached [`Tables`], and returns
    /// once that batch's commit is durable. `work` may run more than once (when another job of its
    /// batch refuses, the batch is re-run without it), so it must not have effects outside the
    /// transaction. A refusal ([`WriteError::is_refusal`]) leaves this job out of the batch.
    pub async fn write<T, F>(&self, work: F) -> Result<T, WriteError>
    where
        F: FnMut(&mut Tables<'_>) -> Result<T, WriteError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let outcome = writer::Outcome::new(reply);
        self.submit(Box::new(writer::TablesJob { work, outcome }), answer)
            .await
    }

    /// As [`Store::write`], for work that opens its tables from the transaction itself.
    pub async fn write_txn<T, F>(&self, work: F) -> Result<T, WriteError>
    where
        F: FnMut(&WriteTransaction) -> Result<T, WriteError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let outcome = writer::Outcome::new(reply);
        self.submit(Box::new(writer::TxnJob { work, outcome }), answer)
            .await
    }

    async fn submit<T>(
        &self,
        job: Box<dyn writer::Job>,
        answer: oneshot::Receiver<Result<T, WriteError>>,
    ) -> Result<T, WriteError> {
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

    /// Whether the writer still takes jobs: false once it has stopped (shut down or panicked),
    /// after which no change can be acknowledged.
    pub fn is_writing(&self) -> bool {
        !self.inner.commands.is_closed()
    }

    /// Seconds from the start of each batch's transaction to the end of its durable commit.
    pub fn commit_latency(&self) -> Histogram {
        self.inner.commit_latency.clone()
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

/// Reads a counter or identity value from `META`.
pub(crate) fn meta_value(
    table: &impl ReadableTable<&'static str, u64>,
    key: &str,
) -> Result<u64, StoreError> {
    table
        .get(key)?
        .map(|v| v.value())
        .ok_or_else(|| StoreError::new(format!("meta {key} is missing")))
}

/// The sequence of the last committed event (0 when there is none).
pub(crate) fn last_sequence(
    meta: &impl ReadableTable<&'static str, u64>,
) -> Result<u64, StoreError> {
    Ok(meta_value(meta, "next_sequence")? - 1)
}

#[cfg(test)]
mod tests;

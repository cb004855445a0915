//! Storage: one redb file holding flag state, events and the outbox, and its redo log beside it.
//! Every table, key and encoding of the sidecar is here and nowhere else.
//!
//! redb is a blocking API, so no call into it ever runs on a tokio worker: writes go to the single
//! writer thread ([`writer`]) and reads run on the blocking pool ([`Store::read`]).
//!
//! - [`open`]: opening a file through its integrity check, refusing an empty or damaged one;
//!   `database`: the open handle, which the writer reopens after an I/O error, and its health.
//! - [`redo`]: the redo log that makes each batch durable with one small sync, and replays what
//!   the file lacks after a crash (the receiver's storage uses it too).
//! - [`schema`]: the tables, the schema version, and opening (or refusing) a file; [`rows`], how
//!   the hot records are laid out; `migrate`, a schema-1 file carried over to schema 2.
//! - [`tables`]: the tables of one write batch, opened once; [`flag_state`] implements the
//!   domain's [`crate::changes::FlagStore`] over them.
//! - [`events`]: event rows: appending, and reading them for the API and for delivery.
//! - [`idempotency`]: answers kept for `Idempotency-Key` retries; [`relayed`]: what the relay
//!   remembers of the bodies and keys it relayed.
//! - [`queries`]: what the API reads: features and an environment's document.
//! - [`segments`]: what the API reads of segments and multivariate options.
//! - [`deliveries`]: the delivery side: outbox pages, outcomes, dead letters, pruning.

mod database;
pub mod deliveries;
pub mod events;
mod flag_state;
pub mod idempotency;
mod migrate;
pub mod open;
pub mod queries;
pub mod redo;
pub mod relayed;
mod rows;
pub mod schema;
pub mod segments;
mod tables;
mod tuple;
pub mod upstream;
mod writer;

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use redb::{ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot, watch};

pub use crate::error::{StoreError, WriteError};
use database::SharedDatabase;
pub use events::EventRecord;
pub use open::OpenError;
pub use tables::Tables;

macro_rules! store_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                redb::Error::from(e).into()
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
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            // The file or the disk: redb refuses every later transaction ("Previous I/O error")
            // until the file is reopened, and damage must be found by the integrity check.
            redb::Error::Io(_)
            | redb::Error::PreviousIo
            | redb::Error::Corrupted(_)
            | redb::Error::LockPoisoned(_) => StoreError::file_failed(e.to_string()),
            e => StoreError::new(e.to_string()),
        }
    }
}

impl From<redb::Error> for WriteError {
    fn from(e: redb::Error) -> Self {
        WriteError::Storage(e.into())
    }
}

impl From<redo::CommitFailure> for StoreError {
    fn from(failure: redo::CommitFailure) -> Self {
        match failure {
            redo::CommitFailure::Database(error) => error.into(),
            // The file is untouched; the writer fails until a durable commit succeeds.
            log @ redo::CommitFailure::Log { .. } => StoreError::new(log.to_string()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::new(e.to_string())
    }
}

impl From<serde_json::Error> for WriteError {
    fn from(e: serde_json::Error) -> Self {
        WriteError::Storage(e.into())
    }
}

/// The database and its writer. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<SharedDatabase>,
    commands: mpsc::Sender<writer::Command>,
    commits: watch::Receiver<u64>,
    sequence: watch::Receiver<u64>,
    commit_latency: Histogram,
    writer: Mutex<Option<JoinHandle<()>>>,
}

pub struct StoreOptions {
    pub cache_size_bytes: usize,
    /// The most jobs one commit takes.
    pub max_batch: usize,
    /// What to do with a file that is there but holds no usable database.
    pub unusable_file: UnusableFile,
    /// The longest a batch made durable by the redo log waits for a durable commit of the file
    /// ([`redo`]).
    pub checkpoint_every: std::time::Duration,
}

/// What [`Store::open`] does with an empty (0-byte), truncated or damaged file. A missing file is
/// always a new database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnusableFile {
    /// Refuse to start, saying what to do (the default: a new database restarts the event
    /// sequences that receivers order by).
    #[default]
    Refuse,
    /// Move it aside and start a new database (`flagpost serve --new-database`).
    StartNew,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_size_bytes: 64 << 20,
            max_batch: 4096,
            unusable_file: UnusableFile::Refuse,
            checkpoint_every: redo::CHECKPOINT_EVERY,
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
        let (db, new_file) = open_or_start_new(path, &options)?;
        let mut redo = redo::Redo::open(path, new_file, options.checkpoint_every)
            .map_err(|e| StoreError::new(e.to_string()))?;
        writer::replay_log(&db, &mut redo)?;
        schema::initialise(&db, path)?;
        let sequence = last_sequence(&db.begin_read()?.open_table(schema::META)?)?;
        let db = Arc::new(SharedDatabase::new(
            db,
            path.to_owned(),
            options.cache_size_bytes,
        ));
        let (commands_tx, commands_rx) = mpsc::channel(options.max_batch.max(1) * 4);
        let (commits_tx, commits_rx) = watch::channel(0);
        let (sequence_tx, sequence_rx) = watch::channel(sequence);
        let commit_latency = Histogram::new(exponential_buckets(0.00005, 2.0, 18));
        let handle = writer::spawn(writer::Writer {
            db: db.clone(),
            redo,
            max_batch: options.max_batch.max(1),
            commands: commands_rx,
            commits: commits_tx,
            sequence: sequence_tx,
            commit_latency: commit_latency.clone(),
            held: writer::Held::default(),
        });
        redo::spawn_checkpoint_ticker(
            "flagpost-checkpoints",
            commands_tx.downgrade(),
            options.checkpoint_every,
            || writer::Command::Checkpoint,
        );
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                commands: commands_tx,
                commits: commits_rx,
                sequence: sequence_rx,
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
        answer.await.map_err(|_| {
            StoreError::new("the database failed while writing this change; it was not committed")
        })?
    }

    /// Runs `work` in a read transaction on the blocking pool, which sees every write
    /// acknowledged before it was called. redb may panic on a page damaged after the start
    /// check: the panic stays here (its text goes to the log, never to a client), the read
    /// answers a storage error, and the writer refuses every write until the file passes its
    /// integrity check again.
    pub async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        if self.inner.db.is_unpublished() {
            self.publish().await?;
        }
        let shared = self.inner.db.clone();
        tokio::task::spawn_blocking(move || {
            let db = shared.current()?;
            let read = std::panic::catch_unwind(AssertUnwindSafe(|| work(&db.begin_read()?)))
                .unwrap_or_else(|_| {
                    Err(StoreError::file_failed(
                        "the database file is damaged: a read failed; restore it from a backup",
                    ))
                });
            if let Err(error) = &read
                && error.is_file_failure()
            {
                // No write is acknowledged until the file is reopened and passes its check.
                shared.failed(error, true);
            }
            read
        })
        .await
        .map_err(|_| StoreError::new("the read did not complete"))?
    }

    /// Asks the writer to commit the batches it holds, so that a read sees them (see
    /// `writer::held`). A writer that has stopped committed them as it stopped, or, had its
    /// thread died, left them in the redo log: reads then miss them until the next start replays
    /// it, and `/healthz` fails meanwhile ([`Store::is_writing`]).
    async fn publish(&self) -> Result<(), StoreError> {
        let (reply, published) = oneshot::channel();
        let asked = self
            .inner
            .commands
            .send(writer::Command::Publish(reply))
            .await;
        match asked {
            Ok(()) => published.await.unwrap_or(Ok(())),
            Err(_) => Ok(()),
        }
    }

    /// Moves with every batch acknowledged, held or committed: a read made after it moved sees
    /// that batch (the prepared environment documents are rebuilt by it).
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.inner.commits.clone()
    }

    /// The sequence of the last event committed: lanes wait on it for new outbox rows.
    pub fn event_sequence(&self) -> watch::Receiver<u64> {
        self.inner.sequence.clone()
    }

    /// Whether the writer still takes jobs: false once it has stopped (shut down or panicked),
    /// after which no change can be acknowledged.
    pub fn is_writing(&self) -> bool {
        !self.inner.commands.is_closed()
    }

    /// Why the writer cannot commit (a full disk, a damaged file), while it cannot: it retries on
    /// its own and this turns `None` with its next durable commit.
    pub fn commit_failure(&self) -> Option<String> {
        self.inner.db.failure()
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

/// Opens the file, or (with [`UnusableFile::StartNew`]) moves an empty or damaged one aside and
/// starts a new database; otherwise an unusable file is refused with what to do. True with a
/// database that starts new.
fn open_or_start_new(
    path: &Path,
    options: &StoreOptions,
) -> Result<(redb::Database, bool), StoreError> {
    let new_file = !path.exists();
    let refused = match open::open_checked(path, options.cache_size_bytes) {
        Ok(db) => return Ok((db, new_file)),
        Err(error) if error.is_unusable_file() => error,
        Err(error) => return Err(StoreError::new(error.to_string())),
    };
    if options.unusable_file == UnusableFile::Refuse {
        return Err(StoreError::new(format!(
            "{refused}: refusing to start, since a new database would restart the event sequences \
             that receivers order by. Restore the file from a backup, or start a new database on \
             purpose with `flagpost serve --new-database` (the file is moved aside, not deleted)"
        )));
    }
    let aside = open::move_aside(path)
        .map_err(|e| StoreError::new(format!("{refused}, and cannot move it aside: {e}")))?;
    tracing::warn!(file = %path.display(), moved_to = %aside.display(), reason = %refused, "unusable database moved aside; starting a new database");
    let db = open::open_checked(path, options.cache_size_bytes)
        .map_err(|e| StoreError::new(e.to_string()))?;
    Ok((db, true))
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
    Ok(meta_value(meta, schema::NEXT_SEQUENCE)? - 1)
}

#[cfg(test)]
mod tests;

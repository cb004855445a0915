//! The single writer thread and its group commit.
//!
//! A durable commit costs a sync of the disk, so one commit per change would cap the sidecar at a
//! few thousand changes/s. Instead one thread owns every write transaction: it takes whatever jobs
//! are waiting, runs them all in one transaction, makes it durable once, and only then answers
//! each waiter. Under load batches grow by themselves, so throughput rises with concurrency while
//! a lone change still commits at once. A batch is made durable through the redo log
//! ([`super::redo`]) when it can, and by a durable redb commit otherwise ([`batch`]).
//!
//! A job may *refuse* (a domain error such as an unknown feature). A refused job may already have
//! written part of its change, so the writer aborts the transaction and runs the batch again without
//! it: every job's effects are all-or-nothing, and no job needs to order its checks before its
//! writes. Refusals are rare (most bad input is caught before it reaches the writer), so the
//! re-run costs nothing in the common case.
//!
//! Between durable commits the writer holds one transaction open across batches, committed only
//! when a read asks to see it ([`held`]).
//!
//! A batch that cannot commit (a full disk, a damaged file) answers every waiter with the cause and
//! leaves the writer *failing*: it then closes and reopens the file where redb needs it (after an
//! I/O error, or a panic inside redb), tries an empty commit every [`RETRY_EVERY`] until one is
//! durable, and refuses each batch that arrives before. So it recovers on its own once space is
//! freed, and nothing is acknowledged that did not commit.

mod batch;
mod held;
mod jobs;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use redb::Database;
use tokio::sync::{mpsc, watch};

use super::StoreError;
use super::database::SharedDatabase;
use super::redo::{Redo, ReplayError};
use crate::process::ERROR_LOG;
pub(super) use held::Held;
use held::Reader;
pub(super) use jobs::{Job, Outcome, TablesJob, TxnJob};

/// How often a failing writer tries to commit again without being asked to.
const RETRY_EVERY: Duration = Duration::from_secs(1);

pub(super) enum Command {
    Run(Box<dyn Job>),
    /// Take the redo log's groups into the file if they have waited `checkpoint_every`: sent by
    /// [`super::redo::spawn_checkpoint_ticker`], so that a quiet writer does not keep them waiting.
    Checkpoint,
    /// Make every batch acknowledged so far visible to reads, then answer ([`held`]).
    Publish(Reader),
    /// Commit what is queued before this, take the log into the file, then stop.
    Stop,
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) db: Arc<SharedDatabase>,
    pub(super) redo: Redo,
    pub(super) max_batch: usize,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) commits: watch::Sender<u64>,
    /// The sequence of the last event committed, which lanes follow for new outbox rows.
    pub(super) sequence: watch::Sender<u64>,
    pub(super) commit_latency: Histogram,
    pub(super) held: Held,
}

pub(super) fn spawn(mut writer: Writer) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("flagpost-writer".to_owned())
        .spawn(move || {
            let mut stopping = false;
            while !stopping {
                let first = match writer.next_command() {
                    Some(Command::Run(job)) => job,
                    Some(Command::Checkpoint) => {
                        writer.checkpoint_if_due();
                        continue;
                    }
                    Some(Command::Publish(reader)) => {
                        writer.publish(vec![reader]);
                        continue;
                    }
                    Some(Command::Stop) | None => break,
                };
                let mut batch = vec![first];
                let mut readers = Vec::new();
                while batch.len() < writer.max_batch {
                    match writer.commands.try_recv() {
                        Ok(Command::Run(job)) => batch.push(job),
                        // The batch itself commits durably when one is due.
                        Ok(Command::Checkpoint) => {}
                        // The read waits for this batch, which is committed for it rather than
                        // held; the batch goes on gathering, as it would without the read.
                        Ok(Command::Publish(reader)) => readers.push(reader),
                        Ok(Command::Stop) => {
                            stopping = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                writer.take(batch, readers);
            }
            writer.close_log();
        })
        .expect("the writer thread starts")
}

impl Writer {
    /// The next command; while the writer is failing, it wakes every [`RETRY_EVERY`] to try to
    /// commit again, so that health recovers without waiting for a change.
    fn next_command(&mut self) -> Option<Command> {
        let mut waited = Duration::ZERO;
        let step = Duration::from_millis(50);
        while self.db.failure().is_some() {
            match self.commands.try_recv() {
                Ok(command) => return Some(command),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            std::thread::sleep(step);
            waited += step;
            if waited >= RETRY_EVERY {
                waited = Duration::ZERO;
                let _ = self.recover();
            }
        }
        self.commands.blocking_recv()
    }

    /// Commits `batch` (or refuses it while the store cannot commit), then answers its waiters,
    /// then `readers` (whose wait made this batch commit rather than be held).
    fn take(&mut self, batch: Vec<Box<dyn Job>>, readers: Vec<Reader>) {
        self.run_or_fail(batch, !readers.is_empty());
        self.note_visibility();
        if !readers.is_empty() {
            self.publish(readers);
        }
    }

    /// Runs `batch` once the store can commit, catching a panic inside redb, and records a
    /// failure: the batches a held transaction had are then in the redo log alone.
    fn run_or_fail(&mut self, batch: Vec<Box<dyn Job>>, publish: bool) {
        if let Err(error) = self.recover() {
            return fail(batch, error);
        }
        let db = match self.db.current() {
            Ok(db) => db,
            Err(error) => return fail(batch, error),
        };
        let ran =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.run_batch(&db, batch, publish)));
        match ran {
            Ok(Ok(())) => self.db.committed(),
            Ok(Err(error)) => {
                // The transaction went with the batch, and any batches it held.
                self.lost_held();
                // After an I/O error redb answers every transaction "Previous I/O error" until
                // the file is reopened; damage must be found by the integrity check of a reopen.
                self.db.failed(&error, error.is_file_failure());
            }
            Err(_) => {
                // The batch's waiters were dropped with it, and are answered "not committed": a
                // group it may have logged must not be replayed.
                self.redo.retract_unsettled();
                self.lost_held();
                let error =
                    StoreError::file_failed("the database failed while writing (damaged file?)");
                log_failure(&error, 0);
                self.db.failed(&error, true);
            }
        }
    }

    /// Reopens the file where needed and, while the writer is failing, takes in the batches the
    /// file lacks (redb reopens at its last durable commit) and tries a probe commit
    /// ([`super::open::probe_commit`]): `Ok` once the store commits again.
    fn recover(&mut self) -> Result<(), StoreError> {
        let Some(failure) = self.db.failure() else {
            return Ok(());
        };
        if self.db.needs_reopen() {
            // redb's lock on the file is let go only once the held transaction has ended.
            self.lost_held();
            if let Err(error) = self.db.reopen() {
                self.db.failed(&error, true);
                return Err(error);
            }
        }
        let probe = self.db.current().and_then(|db| {
            self.catch_up(&db)?;
            Ok(super::open::probe_commit(&db)?)
        });
        match probe {
            Ok(()) => {
                self.redo.took_log();
                self.db.committed();
                Ok(())
            }
            Err(error) => {
                self.db.failed(&error, error.is_file_failure());
                tracing::debug!(%error, previous = %failure, "the store still cannot commit");
                Err(error)
            }
        }
    }

    /// Takes waiting groups into the file once they have waited `checkpoint_every`.
    fn checkpoint_if_due(&mut self) {
        if !self.redo.checkpoint_due() {
            return;
        }
        // A failing writer's own retries commit durably. Checked under the health lock, so that
        // a read meeting damage meanwhile is answered only after this commit, never before it.
        if let Some(Err(error)) = self.checkpoint() {
            let error = StoreError::from(error);
            log_failure(&error, 0);
            self.db.failed(&error, error.is_file_failure());
        }
    }

    /// At a clean stop: every group into the file, then the log file removed, so that nothing is
    /// left for a replay (nor for an older flagpost that would not read it). A failing writer
    /// leaves the log for the next start rather than write a file it could not commit to.
    fn close_log(&mut self) {
        let closed = match self.checkpoint() {
            None => Err(StoreError::new("the writer is failing")),
            Some(checkpoint) => checkpoint.map_err(StoreError::from).and_then(|()| {
                self.redo
                    .remove()
                    .map_err(|e| StoreError::new(format!("cannot remove the redo log: {e}")))
            }),
        };
        if let Err(error) = closed {
            tracing::warn!(%error, "the redo log is kept; the next start takes it in");
        }
    }
}

/// Writes the log's groups that `db` does not hold into it (see [`Redo::replay_into`]).
pub(super) fn replay_log(db: &Database, redo: &mut Redo) -> Result<(), StoreError> {
    redo.replay_into(db, super::tables::replay_op)
        .map(drop)
        .map_err(|error| replay_failure(error, redo))
}

/// A replay's failure as the store answers it: a log it cannot read is a damaged file.
fn replay_failure(error: ReplayError, redo: &Redo) -> StoreError {
    match error {
        ReplayError::Storage(error) => StoreError::from(error),
        log => StoreError::file_failed(format!("{}: {log}", redo.path().display())),
    }
}

/// Answers every job of a batch that did not commit.
fn fail(batch: Vec<Box<dyn Job>>, error: StoreError) {
    log_failure(&error, batch.len());
    batch
        .into_iter()
        .for_each(|job| job.finish(Err(error.clone())));
}

/// One line per kind of failure per interval, however many batches fail.
fn log_failure(error: &StoreError, jobs: usize) {
    if let Some(suppressed) = ERROR_LOG.admit("write batch failed", &error.to_string()) {
        tracing::error!(%error, jobs, suppressed, "write batch failed; nothing acknowledged");
    }
}

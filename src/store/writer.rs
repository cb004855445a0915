//! The single writer thread and its group commit.
//!
//! A durable redb commit costs an fsync (about 3 ms here), so one commit per change would cap the
//! sidecar near 300 changes/s. Instead one thread owns every write transaction: it takes whatever
//! jobs are waiting, runs them all in one transaction, commits once, and only then answers each
//! waiter. Under load batches grow by themselves, so throughput rises with concurrency while a lone
//! change still commits at once.
//!
//! A job may *refuse* (a domain error such as an unknown feature). A refused job may already have
//! written part of its change, so the writer aborts the transaction and runs the batch again without
//! it: every job's effects are all-or-nothing, and no job needs to order its checks before its
//! writes. Refusals are rare (most bad input is caught before it reaches the writer), so the
//! re-run costs nothing in the common case.
//!
//! A batch that cannot commit (a full disk, a damaged file) answers every waiter with the cause and
//! leaves the writer *failing*: it then closes and reopens the file where redb needs it (after an
//! I/O error, or a panic inside redb), tries an empty commit every [`RETRY_EVERY`] until one is
//! durable, and refuses each batch that arrives before. So it recovers on its own once space is
//! freed, and nothing is acknowledged that did not commit.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use redb::{Database, WriteTransaction};
use tokio::sync::{mpsc, oneshot, watch};

use super::database::SharedDatabase;
use super::tables::Tables;
use super::{StoreError, WriteError};
use crate::process::ERROR_LOG;

/// How often a failing writer tries to commit again without being asked to.
const RETRY_EVERY: Duration = Duration::from_secs(1);

pub(super) trait Job: Send {
    /// Runs against the batch's transaction. `Ok(false)`: refused.
    fn run<'t>(
        &mut self,
        txn: &'t WriteTransaction,
        tables: &mut Option<Tables<'t>>,
    ) -> Result<bool, StoreError>;
    /// Answers the waiter once the outcome is known.
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

/// A job that works through the batch's cached [`Tables`].
pub(super) struct TablesJob<F, T> {
    pub(super) work: F,
    pub(super) outcome: Outcome<T>,
}

/// A job that opens what it needs from the transaction itself; the batch's cached tables are
/// closed before it runs (a table cannot be open twice).
pub(super) struct TxnJob<F, T> {
    pub(super) work: F,
    pub(super) outcome: Outcome<T>,
}

pub(super) struct Outcome<T> {
    /// `Some(Ok)`: ran and will commit with its batch; `Some(Err)`: refused.
    result: Option<Result<T, WriteError>>,
    reply: oneshot::Sender<Result<T, WriteError>>,
}

impl<T> Outcome<T> {
    pub(super) fn new(reply: oneshot::Sender<Result<T, WriteError>>) -> Outcome<T> {
        Outcome {
            result: None,
            reply,
        }
    }

    /// Keeps a job's result: true when it may commit, false when it refused, and a storage error
    /// (which fails the whole batch) passed on.
    fn record(&mut self, result: Result<T, WriteError>) -> Result<bool, StoreError> {
        match result {
            Err(WriteError::Storage(error)) => Err(error),
            result => {
                let accepted = result.is_ok();
                self.result = Some(result);
                Ok(accepted)
            }
        }
    }

    fn finish(self, committed: Result<(), StoreError>) {
        let answer = match (self.result, committed) {
            (Some(Err(refusal)), _) => Err(refusal),
            (_, Err(storage)) => Err(WriteError::Storage(storage)),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (None, Ok(())) => unreachable!("a committed job has run"),
        };
        // The waiter may have gone (client disconnected); its change stands all the same.
        let _ = self.reply.send(answer);
    }
}

impl<F, T> Job for TablesJob<F, T>
where
    F: FnMut(&mut Tables<'_>) -> Result<T, WriteError> + Send,
    T: Send,
{
    fn run<'t>(
        &mut self,
        txn: &'t WriteTransaction,
        tables: &mut Option<Tables<'t>>,
    ) -> Result<bool, StoreError> {
        let tables = tables.get_or_insert_with(|| Tables::new(txn));
        self.outcome.record((self.work)(tables))
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        self.outcome.finish(committed)
    }
}

impl<F, T> Job for TxnJob<F, T>
where
    F: FnMut(&WriteTransaction) -> Result<T, WriteError> + Send,
    T: Send,
{
    fn run<'t>(
        &mut self,
        txn: &'t WriteTransaction,
        tables: &mut Option<Tables<'t>>,
    ) -> Result<bool, StoreError> {
        if let Some(open) = tables.take() {
            open.close()?;
        }
        self.outcome.record((self.work)(txn))
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        self.outcome.finish(committed)
    }
}

pub(super) enum Command {
    Run(Box<dyn Job>),
    /// Commit what is queued before this, then stop.
    Stop,
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) db: Arc<SharedDatabase>,
    pub(super) max_batch: usize,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) commits: watch::Sender<u64>,
    pub(super) commit_latency: Histogram,
}

pub(super) fn spawn(mut writer: Writer) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("flagpost-writer".to_owned())
        .spawn(move || {
            let mut stopping = false;
            while !stopping {
                let Some(Command::Run(first)) = writer.next_command() else {
                    break;
                };
                let mut batch = vec![first];
                while batch.len() < writer.max_batch {
                    match writer.commands.try_recv() {
                        Ok(Command::Run(job)) => batch.push(job),
                        Ok(Command::Stop) => {
                            stopping = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                writer.take(batch);
            }
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

    /// Commits `batch` (or refuses it while the store cannot commit), then answers its waiters.
    fn take(&mut self, batch: Vec<Box<dyn Job>>) {
        if let Err(error) = self.recover() {
            return fail(batch, error);
        }
        let db = match self.db.current() {
            Ok(db) => db,
            Err(error) => return fail(batch, error),
        };
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_batch(&db, batch, &self.commit_latency, &self.commits)
        }));
        match ran {
            Ok(Ok(())) => self.db.committed(),
            Ok(Err(error)) => {
                // After an I/O error redb answers every transaction "Previous I/O error" until
                // the file is reopened; damage must be found by the integrity check of a reopen.
                self.db.failed(&error, error.is_file_failure());
            }
            Err(_) => {
                // The batch's waiters were dropped with it, and are answered "not committed".
                let error =
                    StoreError::file_failed("the database failed while writing (damaged file?)");
                log_failure(&error, 0);
                self.db.failed(&error, true);
            }
        }
    }

    /// Reopens the file where needed and, while the writer is failing, tries a probe commit
    /// ([`super::open::probe_commit`]): `Ok` once the store commits again.
    fn recover(&self) -> Result<(), StoreError> {
        let Some(failure) = self.db.failure() else {
            return Ok(());
        };
        if self.db.needs_reopen()
            && let Err(error) = self.db.reopen()
        {
            self.db.failed(&error, true);
            return Err(error);
        }
        let probe = self
            .db
            .current()
            .and_then(|db| Ok(super::open::probe_commit(&db)?));
        match probe {
            Ok(()) => {
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

/// Runs one batch to its end, counting each commit in `commits`; an error (every waiter already
/// answered with it) when the batch could not commit.
fn run_batch(
    db: &Database,
    mut batch: Vec<Box<dyn Job>>,
    commit_latency: &Histogram,
    commits: &watch::Sender<u64>,
) -> Result<(), StoreError> {
    let failed = |batch: Vec<Box<dyn Job>>, error: StoreError| {
        fail(batch, error.clone());
        Err(error)
    };
    'attempt: loop {
        if batch.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => return failed(batch, e.into()),
        };
        txn.set_two_phase_commit(super::open::TWO_PHASE_COMMIT);
        let mut tables = None;
        for i in 0..batch.len() {
            match batch[i].run(&txn, &mut tables) {
                Ok(true) => {}
                Ok(false) => {
                    // Its partial writes (and the batch's cached counters) go with the abort.
                    drop(tables);
                    let _ = txn.abort();
                    batch.remove(i).finish(Ok(()));
                    continue 'attempt;
                }
                Err(error) => {
                    drop(tables);
                    let _ = txn.abort();
                    return failed(batch, error);
                }
            }
        }
        if let Some(Err(error)) = tables.map(Tables::close) {
            let _ = txn.abort();
            return failed(batch, error);
        }
        if let Err(error) = txn.commit() {
            return failed(batch, error.into());
        }
        commit_latency.observe(started.elapsed().as_secs_f64());
        // Counted before anyone is answered: a reader that saw its change acknowledged must find
        // the count moved (the prepared environment documents are rebuilt by it).
        commits.send_modify(|n| *n += 1);
        batch.into_iter().for_each(|job| job.finish(Ok(())));
        return Ok(());
    }
}

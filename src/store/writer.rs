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

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use redb::{Database, WriteTransaction};
use tokio::sync::{mpsc, oneshot, watch};

use super::tables::Tables;
use super::{StoreError, WriteError};

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
    pub(super) db: Arc<Database>,
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
                let Some(Command::Run(first)) = writer.commands.blocking_recv() else {
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
                if run_batch(&writer.db, batch, &writer.commit_latency) {
                    writer.commits.send_modify(|n| *n += 1);
                }
            }
        })
        .expect("the writer thread starts")
}

/// Runs one batch to its end; true when something was committed.
fn run_batch(db: &Database, mut batch: Vec<Box<dyn Job>>, commit_latency: &Histogram) -> bool {
    let fail = |batch: Vec<Box<dyn Job>>, error: StoreError| {
        tracing::error!(%error, jobs = batch.len(), "write batch failed; nothing acknowledged");
        batch
            .into_iter()
            .for_each(|job| job.finish(Err(error.clone())));
        false
    };
    'attempt: loop {
        if batch.is_empty() {
            return false;
        }
        let started = Instant::now();
        let txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => return fail(batch, e.into()),
        };
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
                    return fail(batch, error);
                }
            }
        }
        if let Some(Err(error)) = tables.map(Tables::close) {
            let _ = txn.abort();
            return fail(batch, error);
        }
        if let Err(error) = txn.commit() {
            return fail(batch, error.into());
        }
        commit_latency.observe(started.elapsed().as_secs_f64());
        batch.into_iter().for_each(|job| job.finish(Ok(())));
        return true;
    }
}

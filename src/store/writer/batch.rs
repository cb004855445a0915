//! One batch: its jobs run in one transaction, which is then made durable through the redo log or
//! by a durable commit.

use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use redb::{Database, Durability, WriteTransaction};
use tokio::sync::watch;

use super::fail;
use super::jobs::{Attempt, Job};
use crate::store::StoreError;
use crate::store::open::TWO_PHASE_COMMIT;
use crate::store::redo::{self, RedoLog, RedoOps};

/// How a batch became durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Committed {
    /// Every job refused: nothing to commit.
    Nothing,
    /// Its writes are a group of the redo log; the file has them in memory only.
    Logged,
    /// A durable commit: the file now holds every group logged before it.
    Durably,
}

/// Runs one batch to its end, counting each commit in `commits`; an error (every waiter already
/// answered with it) when the batch could not commit. Without a `log` (a durable commit is due)
/// it commits durably.
pub(super) fn run_batch(
    db: &Database,
    mut batch: Vec<Box<dyn Job>>,
    mut log: Option<&mut RedoLog>,
    commit_latency: &Histogram,
    commits: &watch::Sender<u64>,
) -> Result<Committed, StoreError> {
    let failed = |batch: Vec<Box<dyn Job>>, error: StoreError| {
        fail(batch, error.clone());
        Err(error)
    };
    'attempt: loop {
        if batch.is_empty() {
            return Ok(Committed::Nothing);
        }
        let started = Instant::now();
        let txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => return failed(batch, e.into()),
        };
        let mut attempt = Attempt::new(&txn);
        for i in 0..batch.len() {
            match batch[i].run(&mut attempt) {
                Ok(true) => {}
                Ok(false) => {
                    // Its partial writes (and the batch's cached counters) go with the abort.
                    drop(attempt);
                    let _ = txn.abort();
                    batch.remove(i).finish(Ok(()));
                    continue 'attempt;
                }
                Err(error) => {
                    drop(attempt);
                    let _ = txn.abort();
                    return failed(batch, error);
                }
            }
        }
        let ops = match attempt.close() {
            Ok(ops) => ops,
            Err(error) => {
                let _ = txn.abort();
                return failed(batch, error);
            }
        };
        let ops = ops.borrow();
        let committed = match commit(txn, &ops, log.as_deref_mut()) {
            Ok(committed) => committed,
            Err(error) => return failed(batch, error),
        };
        commit_latency.observe(started.elapsed().as_secs_f64());
        // Counted before anyone is answered: a reader that saw its change acknowledged must find
        // the count moved (the prepared environment documents are rebuilt by it).
        commits.send_modify(|n| *n += 1);
        batch.into_iter().for_each(|job| job.finish(Ok(())));
        return Ok(committed);
    }
}

/// Makes `txn` durable: as the log's next group when the batch's writes are all logged and fit,
/// or by a durable commit. Nothing is visible to readers before it is durable.
fn commit(
    mut txn: WriteTransaction,
    ops: &RedoOps,
    log: Option<&mut RedoLog>,
) -> Result<Committed, StoreError> {
    let logged = ops
        .payload()
        .zip(log)
        .filter(|(ops, log)| log.fits(ops.len()));
    let Some((payload, log)) = logged else {
        txn.set_two_phase_commit(TWO_PHASE_COMMIT);
        txn.commit()?;
        return Ok(Committed::Durably);
    };
    txn.set_durability(Durability::None)
        .map_err(redb::Error::from)?;
    if payload.is_empty() {
        // Nothing written (an idempotent retry, say): nothing to make durable.
        txn.commit()?;
        return Ok(Committed::Logged);
    }
    let group = log.next_group();
    redo::set_position(&txn, group)?;
    if let Err(error) = log.append(group, payload) {
        let _ = txn.abort();
        return Err(StoreError::new(format!(
            "cannot write the redo log {}: {error}",
            log.path().display()
        )));
    }
    if let Err(error) = txn.commit() {
        // Its waiters are told it did not commit, so it must not be replayed either.
        if let Err(retract) = log.retract_last() {
            return Err(StoreError::file_failed(format!(
                "{error}; and the redo log cannot take the batch back: {retract}"
            )));
        }
        return Err(error.into());
    }
    log.settle();
    Ok(Committed::Logged)
}

//! One batch: its jobs run in one transaction, which the redo log then makes durable.

use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use redb::Database;
use tokio::sync::watch;

use super::fail;
use super::jobs::{Attempt, Job};
use crate::store::StoreError;
use crate::store::redo::Redo;

/// Runs one batch to its end, counting each commit in `commits`; an error (every waiter already
/// answered with it) when the batch could not commit. `redo` decides how it is made durable.
pub(super) fn run_batch(
    db: &Database,
    mut batch: Vec<Box<dyn Job>>,
    redo: &mut Redo,
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
        if let Err(error) = redo.commit(txn, &ops) {
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

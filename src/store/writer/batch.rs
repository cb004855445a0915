//! One batch: its jobs run in one transaction, which the redo log then makes durable.

use std::time::Instant;

use redb::Database;

use super::jobs::{Attempt, Job};
use super::{Writer, fail};
use crate::store::StoreError;

impl Writer {
    /// Runs one batch to its end, counting each commit in `commits`; an error (every waiter
    /// already answered with it) when the batch could not commit. With `publish` a read waits for
    /// it, so it is committed rather than held ([`super::held`]).
    pub(super) fn run_batch(
        &mut self,
        db: &Database,
        mut batch: Vec<Box<dyn Job>>,
        publish: bool,
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
            let (txn, holds_earlier) = match self.begin(db) {
                Ok(begun) => begun,
                Err(error) => return failed(batch, error),
            };
            let mut attempt = Attempt::new(&txn);
            for i in 0..batch.len() {
                match batch[i].run(&mut attempt) {
                    Ok(true) => {}
                    Ok(false) => {
                        // Its partial writes (and the batch's cached counters) go with the abort,
                        // and so do the batches the transaction held, which the log still has.
                        drop(attempt);
                        let _ = txn.abort();
                        if holds_earlier {
                            self.refused_while_holding();
                        }
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
            let (ops, last_sequence) = match attempt.close() {
                Ok(closed) => closed,
                Err(error) => {
                    let _ = txn.abort();
                    return failed(batch, error);
                }
            };
            if let Err(error) = self.finish(txn, &ops.borrow(), publish) {
                return failed(batch, error.into());
            }
            self.commit_latency.observe(started.elapsed().as_secs_f64());
            // All before anyone is answered: a reader that saw its change acknowledged must find
            // it readable, the count moved (the prepared environment documents are rebuilt by
            // it) and the sequence its lanes follow.
            self.note_visibility();
            self.commits.send_modify(|n| *n += 1);
            if let Some(last) = last_sequence {
                self.sequence.send_if_modified(|seen| {
                    let newer = last > *seen;
                    *seen = (*seen).max(last);
                    newer
                });
            }
            batch.into_iter().for_each(|job| job.finish(Ok(())));
            return Ok(());
        }
    }
}

//! What the writer runs: jobs, each answered once its batch's outcome is known.

use std::cell::RefCell;
use std::rc::Rc;

use redb::WriteTransaction;
use tokio::sync::oneshot;

use crate::store::redo::RedoOps;
use crate::store::tables::Tables;
use crate::store::{StoreError, WriteError};

/// What the jobs of one run of a batch share: its transaction, its cached tables, and the writes
/// the redo log is to hold.
pub(in crate::store) struct Attempt<'t> {
    pub(super) txn: &'t WriteTransaction,
    pub(super) tables: Option<Tables<'t>>,
    pub(super) ops: Rc<RefCell<RedoOps>>,
    /// The sequence of the last event the batch appended, once its tables are closed.
    last_sequence: Option<u64>,
}

impl<'t> Attempt<'t> {
    pub(super) fn new(txn: &'t WriteTransaction) -> Attempt<'t> {
        Attempt {
            txn,
            tables: None,
            ops: RedoOps::shared(),
            last_sequence: None,
        }
    }

    /// Closes the batch's cached tables (writing their counters back), for a job that opens
    /// tables from the transaction itself or for the end of the batch.
    fn close_tables(&mut self) -> Result<(), StoreError> {
        if let Some(tables) = self.tables.take() {
            // Sequences only grow: a later close's is the batch's last.
            self.last_sequence = tables.close()?.or(self.last_sequence);
        }
        Ok(())
    }

    /// Ends the batch's writes: answers what the redo log is to hold and the sequence of the last
    /// event the batch appended, if it appended one.
    pub(super) fn close(mut self) -> Result<(Rc<RefCell<RedoOps>>, Option<u64>), StoreError> {
        self.close_tables()?;
        Ok((self.ops, self.last_sequence))
    }
}

pub(in crate::store) trait Job: Send {
    /// Runs in the batch's transaction. `Ok(false)`: refused.
    fn run(&mut self, attempt: &mut Attempt<'_>) -> Result<bool, StoreError>;
    /// Answers the waiter once the outcome is known.
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

/// A job that works through the batch's cached [`Tables`].
pub(in crate::store) struct TablesJob<F, T> {
    pub(in crate::store) work: F,
    pub(in crate::store) outcome: Outcome<T>,
}

/// A job that opens what it needs from the transaction itself; the batch's cached tables are
/// closed before it runs (a table cannot be open twice). Its batch commits durably (its writes
/// are not in the redo log): these are the rarer jobs, administration, pruning and an upstream
/// document.
pub(in crate::store) struct TxnJob<F, T> {
    pub(in crate::store) work: F,
    pub(in crate::store) outcome: Outcome<T>,
}

pub(in crate::store) struct Outcome<T> {
    /// `Some(Ok)`: ran and will commit with its batch; `Some(Err)`: refused.
    result: Option<Result<T, WriteError>>,
    reply: oneshot::Sender<Result<T, WriteError>>,
}

impl<T> Outcome<T> {
    pub(in crate::store) fn new(reply: oneshot::Sender<Result<T, WriteError>>) -> Outcome<T> {
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
    fn run(&mut self, attempt: &mut Attempt<'_>) -> Result<bool, StoreError> {
        let (txn, ops) = (attempt.txn, &attempt.ops);
        let tables = attempt
            .tables
            .get_or_insert_with(|| Tables::new(txn, ops.clone()));
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
    fn run(&mut self, attempt: &mut Attempt<'_>) -> Result<bool, StoreError> {
        attempt.close_tables()?;
        // Its writes are not recorded: the batch commits durably.
        attempt.ops.borrow_mut().mark_unlogged();
        self.outcome.record((self.work)(attempt.txn))
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        self.outcome.finish(committed)
    }
}

//! The transaction the writer holds open between durable commits, and what reads see of it.
//!
//! A commit, even without a sync, copies and checksums every page its batch touched, and a batch
//! of changes touches the same few pages as the one before it (the feature's states, the events'
//! last leaf, the outbox's). So the writer writes batch after batch into one transaction, each
//! made durable by the redo log alone ([`crate::store::redo::Redo::log_and_hold`]), and commits that transaction only
//! when a durable commit is due or when a read asks to see it: while it holds acknowledged
//! batches the shared database is marked unpublished, and [`crate::store::Store::read`] first
//! sends [`super::Command::Publish`], answered once they are committed (without a sync). A
//! writer nobody reads from commits once a checkpoint; one whose lanes read after every batch
//! commits about as often as before.
//!
//! A held transaction can only be dropped with everything in it: when a batch fails, and when a
//! job refuses (its partial writes are undone by an abort). The batches it held are then in the
//! redo log alone, and `Redo::catch_up` writes them into the file before it takes anything
//! else, and before a read is answered. After a refusal the writer holds nothing for one
//! checkpoint interval, so that a client sending refused changes costs a catch-up at most once
//! an interval, and each refusal otherwise no more than before.

use std::time::Instant;

use redb::{Database, WriteTransaction};
use tokio::sync::oneshot;

use super::Writer;
use crate::store::StoreError;
use crate::store::redo::{CommitFailure, RedoOps};

/// A read waiting for the acknowledged batches to be visible.
pub(in crate::store) type Reader = oneshot::Sender<Result<(), StoreError>>;

/// What the writer holds between durable commits.
pub(in crate::store) struct Held {
    txn: Option<WriteTransaction>,
    /// A transaction was dropped with batches in it: the redo log holds batches the file lacks.
    behind_log: bool,
    /// No batch is held before then (a refusal dropped held batches).
    hold_after: Instant,
}

impl Default for Held {
    fn default() -> Held {
        Held {
            txn: None,
            behind_log: false,
            hold_after: Instant::now(),
        }
    }
}

impl Writer {
    /// The transaction the next batch is written into, and whether it holds batches already:
    /// the held one, or a new one once the file holds every logged batch.
    pub(super) fn begin(&mut self, db: &Database) -> Result<(WriteTransaction, bool), StoreError> {
        if let Some(txn) = self.held.txn.take() {
            return Ok((txn, true));
        }
        self.catch_up(db)?;
        Ok((db.begin_write()?, false))
    }

    /// Makes the batch written into `txn` durable: held for the next batch, or committed when
    /// `publish` (a read waits for it) or while holding is paused. On a failure the batches
    /// `txn` held are lost to the file, which `Writer::run_or_fail` notes.
    pub(super) fn finish(
        &mut self,
        txn: WriteTransaction,
        ops: &RedoOps,
        publish: bool,
    ) -> Result<(), CommitFailure> {
        if publish || Instant::now() < self.held.hold_after {
            return self.redo.commit(txn, ops);
        }
        self.held.txn = self.redo.log_and_hold(txn, ops)?;
        Ok(())
    }

    /// A job refused in a transaction that held earlier batches, which went with its abort.
    pub(super) fn refused_while_holding(&mut self) {
        self.held.behind_log = true;
        self.held.hold_after = Instant::now() + self.redo.checkpoint_every();
    }

    /// The file lacks what the held transaction had, if there was one (after a failure).
    pub(super) fn lost_held(&mut self) {
        self.held.txn = None;
        self.held.behind_log = true;
    }

    /// Tells reads whether they must ask for acknowledged batches first. Run before a batch's
    /// waiters are answered.
    pub(super) fn note_visibility(&self) {
        let unpublished = self.held.txn.is_some() || self.held.behind_log;
        self.db.set_unpublished(unpublished);
    }

    /// Makes every acknowledged batch visible to reads and answers the reads waiting for it.
    pub(super) fn publish(&mut self, readers: Vec<Reader>) {
        let published = self.make_visible();
        self.note_visibility();
        for reader in readers {
            // A read that went away needs no answer.
            let _ = reader.send(published.clone());
        }
    }

    fn make_visible(&mut self) -> Result<(), StoreError> {
        self.recover()?;
        let db = self.db.current()?;
        if let Some(txn) = self.held.txn.take()
            && let Err(error) = self.redo.publish(txn)
        {
            self.held.behind_log = true;
            let error = StoreError::from(error);
            self.db.failed(&error, error.is_file_failure());
            return Err(error);
        }
        self.catch_up(&db)
    }

    /// Writes into the file the batches it lost with a dropped transaction, from the redo log.
    pub(super) fn catch_up(&mut self, db: &Database) -> Result<(), StoreError> {
        if self.held.behind_log {
            self.redo
                .catch_up(db, crate::store::tables::replay_op)
                .map_err(|error| super::replay_failure(error, &self.redo))?;
            self.held.behind_log = false;
        }
        Ok(())
    }

    /// Takes every logged group into the file by a durable commit of the held transaction, or
    /// of an empty one. A checkpoint that cannot be made (the writer is failing) or fails leaves
    /// the held batches in the log alone.
    pub(super) fn checkpoint(&mut self) -> Option<Result<(), redb::Error>> {
        let held = self.held.txn.take();
        let had_held = held.is_some();
        let redo = &mut self.redo;
        let checkpoint = self.db.unless_failing(|db| match held {
            Some(txn) => redo.checkpoint_held(txn),
            None => redo.checkpoint(db),
        });
        if had_held && !matches!(checkpoint, Some(Ok(()))) {
            self.held.behind_log = true;
        }
        self.note_visibility();
        checkpoint
    }
}

//! [`Redo`]: the redo log as a writer thread uses it. Both programs' writers hold one: it decides
//! how each batch is made durable, when the file must take the log in, and replays the log into a
//! file opened after a crash.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::{Duration, Instant};

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::mpsc;

use super::file::{Group, RedoLog};
use super::ops::RedoOps;
use super::{LOG_CAPACITY, ReplayError, position, replay, set_position};
use crate::store::open::TWO_PHASE_COMMIT;

/// Why a batch did not commit.
#[derive(Debug, thiserror::Error)]
pub enum CommitFailure {
    #[error(transparent)]
    Database(#[from] redb::Error),
    #[error("cannot write the redo log {path}: {error}")]
    Log { path: String, error: std::io::Error },
}

/// The log and when the file last took it in.
pub struct Redo {
    log: RedoLog,
    last_durable: Instant,
    checkpoint_every: Duration,
}

impl Redo {
    /// Opens `database`'s log (creating it where there is none). A log found beside a database
    /// that starts new (`new_file`) belongs to the file that was there before: it is moved aside,
    /// never replayed into the new one. Blocking.
    pub fn open(
        database: &Path,
        new_file: bool,
        checkpoint_every: Duration,
    ) -> Result<Redo, String> {
        let path = RedoLog::path_for(database);
        if new_file && path.exists() {
            let aside = crate::store::open::move_aside(&path)
                .map_err(|e| format!("cannot move {} aside: {e}", path.display()))?;
            tracing::warn!(log = %path.display(), moved_to = %aside.display(), "a redo log without its database moved aside");
        }
        let log = RedoLog::open(database, LOG_CAPACITY)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(Redo {
            log,
            last_durable: Instant::now(),
            checkpoint_every,
        })
    }

    pub fn path(&self) -> &Path {
        self.log.path()
    }

    /// Writes the log's groups that `db` does not hold into it through `apply` (the program's
    /// map from table number to table), commits them durably, and starts the log over. Answers
    /// how many groups were replayed. Run on a file just opened, before it serves anything.
    pub fn replay_into(
        &mut self,
        db: &Database,
        apply: impl FnMut(&WriteTransaction, u8, &[u8], Option<&[u8]>) -> Result<(), ReplayError>,
    ) -> Result<u64, ReplayError> {
        self.take_into(db, apply, |_| true)
    }

    /// Brings into `db` the groups this process logged and settled that the file lost with the
    /// transaction holding them (see [`Redo::log_and_hold`]), commits them durably and starts
    /// the log over. A record after them, whose append failed and whose waiters heard so, is not
    /// taken even where its bytes reached the disk.
    pub fn catch_up(
        &mut self,
        db: &Database,
        apply: impl FnMut(&WriteTransaction, u8, &[u8], Option<&[u8]>) -> Result<(), ReplayError>,
    ) -> Result<u64, ReplayError> {
        let next = self.log.next_group();
        self.take_into(db, apply, |group| group.number < next)
    }

    fn take_into(
        &mut self,
        db: &Database,
        apply: impl FnMut(&WriteTransaction, u8, &[u8], Option<&[u8]>) -> Result<(), ReplayError>,
        settled: impl Fn(&Group) -> bool,
    ) -> Result<u64, ReplayError> {
        let mut groups = self.log.groups().map_err(ReplayError::Log)?;
        groups.retain(settled);
        let mut txn = db.begin_write().map_err(redb::Error::from)?;
        txn.set_two_phase_commit(TWO_PHASE_COMMIT);
        let before = position(&txn)?;
        let held = replay(&txn, &groups, apply)?;
        if held > before {
            txn.commit().map_err(redb::Error::from)?;
        } else {
            // Nothing the file lacks: no commit (nor a write the disk may have no room for).
            txn.abort().map_err(redb::Error::from)?;
        }
        self.log.continue_after(held);
        self.took_log();
        if held > before {
            tracing::info!(batches = held - before, log = %self.path().display(), "batches the file lacked written again from the redo log");
        }
        Ok(held - before)
    }

    /// Makes `txn` durable: as the log's next group when its writes (`ops`) are all logged and
    /// fit and no durable commit is due, else by a durable commit. Nothing is visible to readers
    /// before it is durable. A failure leaves nothing of the batch, in the file or in the log.
    pub fn commit(
        &mut self,
        mut txn: WriteTransaction,
        ops: &RedoOps,
    ) -> Result<(), CommitFailure> {
        let Some(payload) = self.loggable(ops) else {
            self.commit_durably(txn)?;
            return Ok(());
        };
        txn.set_durability(Durability::None)
            .map_err(redb::Error::from)?;
        if payload.is_empty() {
            // Nothing written (an idempotent retry, say): nothing to make durable.
            txn.commit().map_err(redb::Error::from)?;
            return Ok(());
        }
        if let Err(error) = self.append(&txn, payload) {
            let _ = txn.abort();
            return Err(error);
        }
        if let Err(error) = txn.commit() {
            // Its waiters are told it did not commit, so it must not be replayed either.
            self.retract_unsettled();
            return Err(redb::Error::from(error).into());
        }
        self.log.settle();
        Ok(())
    }

    /// Makes a batch written into `txn` durable and answers `txn` still open, for the next batch
    /// to be written into. A writer that holds one transaction across batches copies each page
    /// they touch once per durable commit rather than once per batch, and commits nothing in
    /// between: readers see none of it until then, or until [`Redo::publish`]. As
    /// [`Redo::commit`] otherwise: when a durable commit is due, or the batch wrote something
    /// unlogged or too large for the log, `txn` commits durably with every batch it holds, and
    /// `None` is answered. On a failure `txn` is dropped, and the batches it held are in the log
    /// alone: [`Redo::catch_up`] brings them into the file before it is used again.
    pub fn log_and_hold(
        &mut self,
        txn: WriteTransaction,
        ops: &RedoOps,
    ) -> Result<Option<WriteTransaction>, CommitFailure> {
        let Some(payload) = self.loggable(ops) else {
            self.commit_durably(txn)?;
            return Ok(None);
        };
        if payload.is_empty() {
            return Ok(Some(txn)); // nothing written: nothing to make durable
        }
        self.append(&txn, payload)?;
        self.log.settle();
        Ok(Some(txn))
    }

    /// Commits a transaction held by [`Redo::log_and_hold`] without a sync, so that readers see
    /// the batches it holds: each is durable in the log already. On a failure they are in the log
    /// alone, and [`Redo::catch_up`] brings them into the file.
    pub fn publish(&self, mut txn: WriteTransaction) -> Result<(), redb::Error> {
        txn.set_durability(Durability::None)?;
        txn.commit()?;
        Ok(())
    }

    /// How long a logged batch waits at most for a durable commit of the file.
    pub fn checkpoint_every(&self) -> Duration {
        self.checkpoint_every
    }

    /// What of `ops` goes into the log as a group: `None` when the batch must commit durably
    /// instead (a durable commit is due, or it wrote something unlogged or too large).
    fn loggable<'a>(&self, ops: &'a RedoOps) -> Option<&'a [u8]> {
        let due = self.last_durable.elapsed() >= self.checkpoint_every;
        ops.payload().filter(|p| !due && self.log.fits(p.len()))
    }

    /// Appends `payload` as the log's next group, recorded in `txn` as the group it holds, and
    /// syncs it.
    fn append(&mut self, txn: &WriteTransaction, payload: &[u8]) -> Result<(), CommitFailure> {
        let group = self.log.next_group();
        set_position(txn, group)?;
        self.log
            .append(group, payload)
            .map_err(|error| CommitFailure::Log {
                path: self.log.path().display().to_string(),
                error,
            })
    }

    /// A durable commit of nothing, which takes every logged group into the file; the log then
    /// starts over.
    pub fn checkpoint(&mut self, db: &Database) -> Result<(), redb::Error> {
        self.checkpoint_held(db.begin_write()?)
    }

    /// Commits `txn` durably, taking every logged group it holds into the file; the log then
    /// starts over. A panic inside redb (a damaged page) is answered as damage.
    pub fn checkpoint_held(&mut self, txn: WriteTransaction) -> Result<(), redb::Error> {
        std::panic::catch_unwind(AssertUnwindSafe(|| self.commit_durably(txn)))
            .unwrap_or_else(|_| Err(redb::Error::Corrupted("a page failed its read".into())))
    }

    fn commit_durably(&mut self, mut txn: WriteTransaction) -> Result<(), redb::Error> {
        txn.set_two_phase_commit(TWO_PHASE_COMMIT);
        txn.commit()?;
        self.took_log();
        Ok(())
    }

    /// Whether logged groups have waited long enough for a durable commit of the file.
    pub fn checkpoint_due(&self) -> bool {
        !self.log.is_empty() && self.last_durable.elapsed() >= self.checkpoint_every
    }

    /// A durable commit (a checkpoint, a probe) has taken every logged group into the file.
    pub fn took_log(&mut self) {
        self.log.restart();
        self.last_durable = Instant::now();
    }

    /// Takes back a group appended for a batch that then failed to commit (a panic between the
    /// two), so that a replay never applies what its waiters were told did not commit.
    pub fn retract_unsettled(&mut self) {
        if let Err(error) = self.log.retract_last() {
            tracing::error!(%error, log = %self.log.path().display(), "cannot take back a redo log group that did not commit");
        }
    }

    /// At a clean stop, once a durable commit has taken every group in: removes the log file, so
    /// that nothing is left for a replay (nor for an older program that would not read it).
    pub fn remove(&self) -> std::io::Result<()> {
        std::fs::remove_file(self.log.path())
    }
}

/// Sends `tick()` to a writer every `every`, so that a quiet writer takes its logged groups into
/// the file without waiting for a batch; ends with the writer (the queue's last sender).
pub fn spawn_checkpoint_ticker<T: Send + 'static>(
    name: &str,
    writer: mpsc::WeakSender<T>,
    every: Duration,
    tick: fn() -> T,
) {
    let ticker = move || {
        loop {
            std::thread::sleep(every);
            let Some(queue) = writer.upgrade() else {
                return;
            };
            // A full queue has a batch coming, which is made durable when a checkpoint is due.
            if let Err(mpsc::error::TrySendError::Closed(_)) = queue.try_send(tick()) {
                return;
            }
        }
    };
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(ticker)
        .expect("the checkpoint thread starts");
}

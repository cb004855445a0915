//! The redo log: how a write batch becomes durable with one small `fdatasync` instead of a
//! two-phase redb commit.
//!
//! A durable redb commit writes every B-tree page the batch touched (7–9 KB per change here) and
//! syncs twice. Most batches are changes whose writes are a few hundred bytes of rows, so both
//! writers do this instead:
//!
//! 1. The batch runs in a redb write transaction as before. Every row it writes goes through a
//!    [`LoggedTable`], which also records the write (table, key bytes, value bytes) in [`RedoOps`].
//! 2. Those writes are appended to the log file as one *group* and the log is synced.
//! 3. The transaction commits with `Durability::None` (no sync: readers see it from here on), and
//!    the batch's waiters are answered. Nothing is visible or acknowledged before step 2.
//!    Both writers mostly commit nothing here: they keep the transaction open and write the next
//!    batch into it ([`Redo::log_and_hold`]), so that a page many batches touch is copied and
//!    checksummed once per durable commit, not once per batch. The receiver's file has no other
//!    reader; flagpost's readers ask its writer to commit what it holds first
//!    ([`Redo::publish`]). Should a batch fail, that transaction goes with it, and the batches
//!    it held are brought back from the log ([`Redo::catch_up`]).
//! 4. Now and then (every [`CHECKPOINT_EVERY`] by default, when the log is full, when a batch wrote through
//!    something that is not logged, and at shutdown) the writer commits durably instead. That
//!    commit makes every earlier group part of the file, so the log starts over.
//!
//! After a crash redb comes back at its last durable commit. The log's groups after it (each
//! group's transaction records its number in [`REDO_POSITION`]) are written again, in order, and
//! committed durably before the file serves anything: [`replay`]. Each group is the physical
//! writes of its batch, so replaying it needs no domain logic and gives the same rows.
//!
//! The log file is allocated (and zero-filled) once, so syncing an append writes data only, never
//! the file's size. Records are written from the start again after each durable commit; a record
//! is taken only when its checksum holds and its group is the next one, so the end of the newest
//! records (a torn write, or an older record further on) is always found.

mod file;
mod ops;
mod writer;

use std::time::Duration;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

pub use file::{Group, RedoLog};
pub use ops::{LoggedTable, RedoOps, replay_op};
pub use writer::{CommitFailure, Redo, spawn_checkpoint_ticker};

/// The newest group whose writes this file holds (absent: none yet). Written by every logged batch
/// in its own transaction; a durable commit carries it with everything before.
pub const REDO_POSITION: TableDefinition<(), u64> = TableDefinition::new("redo_position");

/// The longest a logged group waits for the durable commit that takes it into the file, unless
/// the store is opened with another `checkpoint_every`.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The log file's size. A batch that does not fit commits durably instead.
pub const LOG_CAPACITY: u64 = 4 << 20;

/// The group a transaction's file holds: what a replay starts after.
pub fn position(txn: &WriteTransaction) -> Result<u64, redb::Error> {
    let table = txn.open_table(REDO_POSITION)?;
    Ok(table.get(())?.map_or(0, |v| v.value()))
}

/// Records that this transaction holds `group`.
pub fn set_position(txn: &WriteTransaction, group: u64) -> Result<(), redb::Error> {
    txn.open_table(REDO_POSITION)?.insert((), group)?;
    Ok(())
}

/// Writes the log's groups after `txn`'s position into `txn`, through `apply` (the program's map
/// from table number to table), and answers the newest group now held (the position when there
/// were none). A gap (a group missing between the position and a newer one) is damage, refused:
/// replaying around it would drop an acknowledged batch.
pub fn replay(
    txn: &WriteTransaction,
    groups: &[Group],
    mut apply: impl FnMut(&WriteTransaction, u8, &[u8], Option<&[u8]>) -> Result<(), ReplayError>,
) -> Result<u64, ReplayError> {
    let mut held = position(txn)?;
    for group in groups {
        if group.number <= held {
            continue; // already in the file
        }
        if group.number != held + 1 {
            return Err(ReplayError::Gap {
                held,
                found: group.number,
            });
        }
        for op in ops::decode(&group.payload) {
            let op = op.map_err(ReplayError::Malformed)?;
            apply(txn, op.table, op.key, op.value)?;
        }
        held = group.number;
    }
    set_position(txn, held)?;
    Ok(held)
}

/// Why a log could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "the redo log skips from group {held} to {found}: the log or the database file is damaged"
    )]
    Gap { held: u64, found: u64 },
    #[error("a redo log group is malformed: {0}")]
    Malformed(&'static str),
    #[error("cannot read the redo log: {0}")]
    Log(std::io::Error),
    #[error(transparent)]
    Storage(#[from] redb::Error),
}

#[cfg(test)]
mod tests;

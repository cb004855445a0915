//! Opening a redb file so that nothing damaged is ever taken for a good or a new database. Both
//! programs open their file through [`open_checked`]; each words the advice in its own errors.
//!
//! - A missing file is a new database.
//! - A 0-byte file is refused: redb would silently start a new database in it, and a reset
//!   database restarts its sequences (flagpost's receivers would refuse every new change) or, in
//!   the receiver, serves an empty cache as if it were current.
//! - Any other file is opened with redb's integrity check, which verifies the checksum of every
//!   page of the committed trees (measured: about a second per 300 MB file, see the README), so a
//!   truncated or altered file is refused at start instead of panicking on a later read.
//!
//! Every commit is two-phase ([`TWO_PHASE_COMMIT`]), so that a primary commit slot which fails the
//! check is always damage, never a commit torn by a crash: redb then refuses the file instead of
//! quietly falling back to the commit before, which would lose one that was acknowledged.

use std::panic::AssertUnwindSafe;
use std::path::Path;

use redb::{Database, DatabaseError, StorageError};

/// Every write transaction of both programs commits in two phases (one more fsync per commit,
/// shared by every change of a batch): see the module's notes.
pub const TWO_PHASE_COMMIT: bool = true;

/// Why a file was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{} is empty (0 bytes)", .0.display())]
    Empty(std::path::PathBuf),
    /// Truncated, altered, or not a redb file: the integrity check or the open refused it.
    #[error("{} is damaged ({reason})", path.display())]
    Damaged {
        path: std::path::PathBuf,
        reason: String,
    },
    /// Anything else (permissions, another process holding the file, a full disk): the file
    /// itself may be fine.
    #[error("cannot open {}: {reason}", path.display())]
    Unavailable {
        path: std::path::PathBuf,
        reason: String,
    },
}

impl OpenError {
    /// A file that is there but holds no usable database (empty or damaged).
    pub fn is_unusable_file(&self) -> bool {
        !matches!(self, OpenError::Unavailable { .. })
    }
}

/// Opens `path` (creating a new database only where no file exists), checking an existing file's
/// integrity first. Blocking.
pub fn open_checked(path: &Path, cache_size_bytes: usize) -> Result<Database, OpenError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == 0 => return Err(OpenError::Empty(path.to_owned())),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(OpenError::Unavailable {
                path: path.to_owned(),
                reason: error.to_string(),
            });
        }
    }
    // redb may panic on a file altered outside it; the check should report instead, and any
    // panic that gets through is the same finding.
    let opened = std::panic::catch_unwind(AssertUnwindSafe(|| {
        Database::builder()
            .set_cache_size(cache_size_bytes)
            .set_check_integrity_on_open(true)
            .create(path)
    }));
    let damaged = |reason: String| OpenError::Damaged {
        path: path.to_owned(),
        reason,
    };
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(error)) if is_damage(&error) => Err(damaged(error.to_string())),
        Ok(Err(error)) => Err(OpenError::Unavailable {
            path: path.to_owned(),
            reason: error.to_string(),
        }),
        Err(_) => Err(damaged("redb could not read its structure".into())),
    }
}

/// Whether an open failed on the file's content rather than on access to it.
fn is_damage(error: &DatabaseError) -> bool {
    match error {
        DatabaseError::RepairAborted => true,
        DatabaseError::Storage(StorageError::Corrupted(_)) => true,
        DatabaseError::Storage(StorageError::Io(io)) => matches!(
            io.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
        ),
        _ => false,
    }
}

/// Moves an unusable file aside (to `<name>.unusable-<unix seconds>`, next to it) so that a new
/// database can start in its place while the old bytes stay for an operator. Answers where.
pub fn move_aside(path: &Path) -> std::io::Result<std::path::PathBuf> {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".unusable-{seconds}"));
    let aside = path.with_file_name(name);
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

/// What a recovering writer writes to learn whether the file takes changes again: about a batch's
/// worth of new pages. An empty commit is no test: on a full disk it can succeed (it rewrites the
/// header in place), which would report a writer ready that cannot commit one change.
const PROBE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("writer_probe");
const PROBE_BYTES: usize = 64 * 1024;

/// Commits a probe value durably, then removes it in a second commit: `Ok` once the file takes
/// changes again. Blocking.
pub fn probe_commit(db: &Database) -> Result<(), redb::Error> {
    let value = vec![0x5a_u8; PROBE_BYTES];
    let mut txn = db.begin_write()?;
    txn.set_two_phase_commit(TWO_PHASE_COMMIT);
    txn.open_table(PROBE)?.insert("probe", value.as_slice())?;
    txn.commit()?;
    let mut txn = db.begin_write()?;
    txn.set_two_phase_commit(TWO_PHASE_COMMIT);
    txn.open_table(PROBE)?.remove("probe")?;
    txn.commit()?;
    Ok(())
}

//! The open database, shared by the writer and the readers, which the writer closes and opens
//! again after a failure, and what the writer's health is.
//!
//! After an I/O error (a full disk, most often) redb refuses every later transaction with
//! "Previous I/O error occurred. Please close and re-open the database." until the file is closed
//! and opened again. redb locks the file for one open handle at a time, so the reopen waits until
//! no reader holds the old handle, then opens the file through the same integrity check as at
//! start: a file damaged meanwhile is found and stays refused.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::Database;

use super::StoreError;
use super::open::open_checked;

/// How long a reopen waits for reads in flight to let go of the old handle.
const READERS_GRACE: Duration = Duration::from_secs(10);

pub(super) struct SharedDatabase {
    current: RwLock<Option<Arc<Database>>>,
    path: PathBuf,
    cache_size_bytes: usize,
    health: Mutex<Health>,
    /// The file as a read sees it lacks batches the writer has acknowledged (they are in its
    /// held transaction, or in the redo log alone after a failure): a read asks the writer to
    /// make them visible first.
    unpublished: AtomicBool,
}

#[derive(Default)]
struct Health {
    /// Why the last commit failed; `None` once one succeeded.
    failure: Option<String>,
    /// The handle must be closed and opened again before the next transaction.
    reopen: bool,
}

impl SharedDatabase {
    pub(super) fn new(db: Database, path: PathBuf, cache_size_bytes: usize) -> SharedDatabase {
        SharedDatabase {
            current: RwLock::new(Some(Arc::new(db))),
            path,
            cache_size_bytes,
            health: Mutex::new(Health::default()),
            unpublished: AtomicBool::new(false),
        }
    }

    /// Whether a read must ask the writer to make acknowledged batches visible first.
    pub(super) fn is_unpublished(&self) -> bool {
        // Acquire, paired with the writer's Release before it acknowledges a batch.
        self.unpublished.load(Ordering::Acquire)
    }

    /// Set by the writer before it acknowledges anything that a read would not see.
    pub(super) fn set_unpublished(&self, unpublished: bool) {
        self.unpublished.store(unpublished, Ordering::Release);
    }

    /// The open handle; an error while the writer is reopening the file or could not.
    pub(super) fn current(&self) -> Result<Arc<Database>, StoreError> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or_else(|| StoreError::new(self.failure().unwrap_or_else(reopening)))
    }

    /// Runs `work` on the open handle unless the writer is failing, holding the health lock
    /// throughout: a failure recorded meanwhile (a read meeting damage) waits until it is done.
    pub(super) fn unless_failing<T>(&self, work: impl FnOnce(&Database) -> T) -> Option<T> {
        let health = self.health();
        if health.failure.is_some() {
            return None;
        }
        let db = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()?;
        let done = work(&db);
        drop(health);
        Some(done)
    }

    /// Why the writer cannot commit, while it cannot.
    pub(super) fn failure(&self) -> Option<String> {
        self.health().failure.clone()
    }

    pub(super) fn needs_reopen(&self) -> bool {
        self.health().reopen
    }

    /// Records a failed commit; with `reopen`, the handle is unusable until reopened (after an
    /// I/O error, or a panic inside redb).
    pub(super) fn failed(&self, error: &StoreError, reopen: bool) {
        let mut health = self.health();
        health.failure = Some(error.to_string());
        health.reopen |= reopen;
    }

    pub(super) fn committed(&self) {
        let mut health = self.health();
        if health.failure.take().is_some() {
            tracing::info!("the store commits again");
        }
    }

    /// Closes the handle and opens the file again (with its integrity check). Blocking.
    pub(super) fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(mut old) = slot.take() {
            let deadline = Instant::now() + READERS_GRACE;
            // Reads in flight hold clones; redb's file lock allows one handle at a time.
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(shared) if Instant::now() < deadline => {
                        old = shared;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(shared) => {
                        *slot = Some(shared);
                        return Err(StoreError::new("reads still hold the database"));
                    }
                }
            }
        }
        let db = open_checked(&self.path, self.cache_size_bytes)
            .map_err(|e| StoreError::new(format!("cannot reopen the database: {e}")))?;
        *slot = Some(Arc::new(db));
        self.health().reopen = false;
        tracing::info!(file = %self.path.display(), "database reopened");
        Ok(())
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn reopening() -> String {
    "the database is being reopened".into()
}

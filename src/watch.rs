//! Watching a directory for changes, for hot-reloaded configuration and flag files.
//!
//! The directory is watched, never the file: editors save by writing a temporary file and renaming
//! it over the old one, and Kubernetes swaps a `..data` symlink, and in both cases a watch on the
//! file itself would follow the old inode and go quiet. Every event in the directory wakes the
//! watcher; bursts are debounced into one wake-up; and a periodic wake-up backs up the
//! notifications, which some filesystems (network mounts, some container overlays) never send.
//!
//! A wake-up means "look again", not "something changed": callers re-read what they care about and
//! compare it with what they last applied, so spurious wake-ups cost a read and nothing else.
//! A watch for one file ([`DirWatch::for_file`]) still watches the directory but wakes only for
//! events that name that file or a Kubernetes `..`-prefixed entry: the database and snapshot files
//! often sit beside the configuration, and their writes would otherwise wake it on every commit.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

pub struct DirWatch {
    dir: PathBuf,
    events: mpsc::Receiver<()>,
    debounce: Duration,
    poll_every: Duration,
    // Dropping the watcher stops its notifications; it lives as long as the `DirWatch`.
    _watcher: Option<RecommendedWatcher>,
}

impl DirWatch {
    /// Starts watching `dir`. When the directory cannot be watched (it does not exist yet, or the
    /// platform refuses) the watch falls back to the periodic check alone and says so in the log.
    pub fn new(dir: &Path, debounce: Duration, poll_every: Duration) -> DirWatch {
        DirWatch::start(dir, None, debounce, poll_every)
    }

    /// Watches the directory of `file`, waking only for events that name `file` itself or an
    /// entry whose name starts with `..` (Kubernetes' `..data` swap).
    pub fn for_file(file: &Path, debounce: Duration, poll_every: Duration) -> DirWatch {
        let dir = match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        DirWatch::start(
            &dir,
            file.file_name().map(OsString::from),
            debounce,
            poll_every,
        )
    }

    fn start(
        dir: &Path,
        only: Option<OsString>,
        debounce: Duration,
        poll_every: Duration,
    ) -> DirWatch {
        let (tx, events) = mpsc::channel(1);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Reads are not changes. Passing them on would make every watcher that reads its
            // directory (or a folder inside it) wake itself, and the others, for ever.
            let wakes = event.is_ok_and(|e| {
                !matches!(e.kind, EventKind::Access(_)) && names_watched(&e.paths, only.as_ref())
            });
            if wakes {
                // A full channel already holds a wake-up, which is all a burst needs.
                let _ = tx.try_send(());
            }
        })
        .and_then(|mut watcher| {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
            Ok(watcher)
        });
        let watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error,
                    "cannot watch directory; relying on the periodic check");
                None
            }
        };
        DirWatch {
            dir: dir.to_path_buf(),
            events,
            debounce,
            poll_every,
            _watcher: watcher,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits until the directory may have changed: a notification followed by `debounce` of quiet,
    /// or `poll_every` since the call, whichever comes first.
    pub async fn changed(&mut self) {
        let poll_deadline = Instant::now() + self.poll_every;
        tokio::select! {
            _ = sleep_until(poll_deadline) => return,
            received = self.events.recv() => {
                if received.is_none() {
                    // The notifier is gone; only the periodic check is left.
                    sleep_until(poll_deadline).await;
                    return;
                }
            }
        }
        // Let the burst settle: each further event restarts the quiet period, up to a limit, so
        // that a directory that never goes quiet (a database file beside the configuration, under
        // load) still gets looked at.
        let settle_by = Instant::now() + (self.debounce * 10).max(Duration::from_secs(1));
        loop {
            let quiet_until = (Instant::now() + self.debounce).min(settle_by);
            tokio::select! {
                _ = sleep_until(quiet_until) => return,
                received = self.events.recv() => if received.is_none() { return },
            }
        }
    }
}

/// Whether an event naming `paths` concerns the watched file (every event does without a filter).
/// An event with no path is let through: it may be an overflow, after which anything may have changed.
fn names_watched(paths: &[PathBuf], only: Option<&OsString>) -> bool {
    let Some(only) = only else { return true };
    paths.is_empty()
        || paths
            .iter()
            .filter_map(|p| p.file_name())
            .any(|name| name == only.as_os_str() || name.as_encoded_bytes().starts_with(b".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rename_into_the_directory_wakes_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let mut watch = DirWatch::new(
            dir.path(),
            Duration::from_millis(20),
            Duration::from_secs(3600),
        );
        let tmp = dir.path().join(".config.toml.tmp");
        std::fs::write(&tmp, "a = 1").unwrap();
        std::fs::rename(&tmp, dir.path().join("config.toml")).unwrap();
        // The periodic check is an hour away, so only the notification can end this wait.
        tokio::time::timeout(Duration::from_secs(60), watch.changed())
            .await
            .expect("a rename in the directory wakes the watch");
    }

    #[test]
    fn a_file_watch_ignores_its_neighbours_but_not_kubernetes_swaps() {
        let only = OsString::from("flagpost.toml");
        let wakes = |name: &str| names_watched(&[PathBuf::from("/etc/x").join(name)], Some(&only));
        assert!(wakes("flagpost.toml"));
        assert!(wakes("..data"));
        assert!(wakes("..2026_12_02_04_00_00.123"));
        assert!(!wakes("flagpost.redb"));
        assert!(!wakes("flagpost-receiver.snapshot.json"));
        assert!(names_watched(&[], Some(&only)), "an overflow event wakes");
    }
}

//! Watching a directory for changes, for hot-reloaded configuration and flag files.
//!
//! The directory is watched, never the file: editors save by writing a temporary file and renaming
//! it over the old one, and Kubernetes swaps a `..data` symlink, and in both cases a watch on the
//! file itself would follow the old inode and go quiet. Every event in the directory that can
//! complete a file wakes the watcher (on Linux, where `inotify_watch` asks the kernel for those
//! alone: a close after writing, a create, delete, rename or touch; elsewhere, whatever notify
//! reports but reads); bursts are debounced into one wake-up; and a periodic wake-up backs up the
//! notifications, which some filesystems (network mounts, some container overlays) never send,
//! and sees a file written in place by a program that does not close it.
//!
//! A wake-up means "look again", not "something changed": callers re-read what they care about and
//! compare it with what they last applied, so spurious wake-ups cost a read and nothing else.
//! A watch for one file ([`DirWatch::for_file`]) still watches the directory but wakes only for
//! events that name that file or a Kubernetes `..`-prefixed entry: the database and snapshot files
//! often sit beside the configuration, and the snapshot's renames (and, where notify reports them,
//! the database's writes) would otherwise wake it on every commit.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

#[cfg(target_os = "linux")]
mod inotify_watch;
#[cfg(target_os = "linux")]
use inotify_watch::Notifications;
#[cfg(not(target_os = "linux"))]
type Notifications = notify::RecommendedWatcher;

pub struct DirWatch {
    dir: PathBuf,
    events: mpsc::Receiver<()>,
    debounce: Duration,
    poll_every: Duration,
    // Dropping it stops the notifications; it lives as long as the `DirWatch`.
    _notifications: Option<Notifications>,
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
        let wake = move |name: Option<&OsStr>| {
            if names_watched(name, only.as_ref()) {
                // A full channel already holds a wake-up, which is all a burst needs.
                let _ = tx.try_send(());
            }
        };
        let notifications = match notifications(dir, wake) {
            Ok(notifications) => Some(notifications),
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
            _notifications: notifications,
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

/// The directory's notifications, read straight from inotify ([`inotify_watch`]: notify's backend
/// asks for every write and open in the directory).
#[cfg(target_os = "linux")]
fn notifications(
    dir: &Path,
    wake: impl FnMut(Option<&OsStr>) + Send + 'static,
) -> Result<Notifications, String> {
    inotify_watch::watch(dir, wake).map_err(|e| e.to_string())
}

/// The directory's notifications through notify, where there is no inotify.
#[cfg(not(target_os = "linux"))]
fn notifications(
    dir: &Path,
    mut wake: impl FnMut(Option<&OsStr>) + Send + 'static,
) -> Result<Notifications, String> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reads are not changes. Passing them on would make every watcher that reads its
        // directory (or a folder inside it) wake itself, and the others, for ever.
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        if event.paths.is_empty() {
            wake(None);
        }
        for path in &event.paths {
            wake(path.file_name());
        }
    })
    .map_err(|e| e.to_string())?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| e.to_string())?;
    Ok(watcher)
}

/// Whether an event naming `name` concerns the watched file (every event does without a filter).
/// An event with no name is let through: it may be an overflow, after which anything may have
/// changed.
fn names_watched(name: Option<&OsStr>, only: Option<&OsString>) -> bool {
    match (name, only) {
        (Some(name), Some(only)) => {
            name == only.as_os_str() || name.as_encoded_bytes().starts_with(b"..")
        }
        _ => true,
    }
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

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn writes_to_an_open_file_do_not_wake_the_watch_but_closing_it_does() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        // A database beside the watched file: open for the program's life, written every commit.
        let mut database = std::fs::File::create(dir.path().join("flagpost.redb")).unwrap();
        let mut watch = DirWatch::new(
            dir.path(),
            Duration::from_millis(20),
            Duration::from_secs(3600),
        );
        for _ in 0..1_000 {
            database.write_all(b"a page").unwrap();
        }
        database.sync_data().unwrap();
        // Notifications arrive within microseconds of the writes; none is due here.
        let woken = tokio::time::timeout(Duration::from_secs(1), watch.changed()).await;
        assert!(woken.is_err(), "writes to an open file woke the watch");
        drop(database);
        tokio::time::timeout(Duration::from_secs(60), watch.changed())
            .await
            .expect("a file closed after writing wakes the watch");
    }

    #[test]
    fn a_file_watch_ignores_its_neighbours_but_not_kubernetes_swaps() {
        let only = OsString::from("flagpost.toml");
        let wakes = |name: &str| names_watched(Some(OsStr::new(name)), Some(&only));
        assert!(wakes("flagpost.toml"));
        assert!(wakes("..data"));
        assert!(wakes("..2026_12_02_04_00_00.123"));
        assert!(!wakes("flagpost.redb"));
        assert!(!wakes("flagpost-receiver.snapshot.json"));
        assert!(names_watched(None, Some(&only)), "an overflow event wakes");
    }
}

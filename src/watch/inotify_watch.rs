//! A directory's notifications on Linux, read from inotify with a mask of our own.
//!
//! notify's inotify backend asks the kernel for every kind of event, writes (`IN_MODIFY`) and
//! opens among them, and a database and its redo log beside the watched file are written on every
//! commit: at 20,000 changes/s its thread took 2.6% of flagpost's CPU reading events that were
//! then thrown away. Here the kernel reports only what can complete a change of a file we read:
//! one closed after writing, created, deleted, renamed in or out, or touched (`IN_ATTRIB`), and
//! the directory itself deleted or moved. An overflow of the kernel's queue is reported too.

use std::ffi::OsStr;
use std::path::Path;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};

/// Keeps the notifications coming; dropping it removes the watch, which ends the reading thread.
pub struct Notifications {
    watches: Watches,
    watch: WatchDescriptor,
}

impl Drop for Notifications {
    fn drop(&mut self) {
        // Fails only when the kernel removed the watch already (the directory was deleted).
        let _ = self.watches.remove(self.watch.clone());
    }
}

/// Calls `wake` with the name in `dir` each event concerns (`None`: the directory itself, or
/// an overflow, after which anything may have changed), on a thread of its own.
pub fn watch(
    dir: &Path,
    mut wake: impl FnMut(Option<&OsStr>) + Send + 'static,
) -> std::io::Result<Notifications> {
    let mut inotify = Inotify::init()?;
    let mask = WatchMask::CLOSE_WRITE
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF;
    let mut watches = inotify.watches();
    let watch = watches.add(dir, mask)?;
    let read_events = move || {
        let mut buffer = [0u8; 4096];
        loop {
            let events = match inotify.read_events_blocking(&mut buffer) {
                Ok(events) => events,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::warn!(%error, "cannot read directory notifications; relying on the periodic check");
                    return;
                }
            };
            for event in events {
                if event.mask.contains(EventMask::IGNORED) {
                    return; // the watch is gone: its `Notifications` was dropped, or the directory
                }
                wake(event.name);
            }
        }
    };
    std::thread::Builder::new()
        .name("dir-watch".into())
        .spawn(read_events)?;
    Ok(Notifications { watches, watch })
}

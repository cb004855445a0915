//! Hot reload of the configuration file.
//!
//! The file's directory is watched ([`flagpost::watch::DirWatch`]); on each wake-up the file is
//! re-read and validated. An invalid file keeps the last good configuration in force and says why.
//! The live part (secrets, environment keys, limits, bootstrap) is swapped in atomically; fields
//! that only take effect at start (listen address, paths) are reported as needing a restart and
//! keep their running values.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flagpost::watch::DirWatch;

use crate::app::Shared;
use crate::config::{Config, Fixed};

const DEBOUNCE: Duration = Duration::from_millis(100);
const POLL_EVERY: Duration = Duration::from_secs(10);

/// Names of the start-only fields that differ.
fn needs_restart(running: &Fixed, wanted: &Fixed) -> Vec<&'static str> {
    [
        ("listen", running.listen != wanted.listen),
        ("webhook_path", running.webhook_path != wanted.webhook_path),
        ("storage_path", running.storage_path != wanted.storage_path),
        (
            "redb_cache_mib",
            running.storage_cache_bytes != wanted.storage_cache_bytes,
        ),
        (
            "snapshot_path",
            running.snapshot_path != wanted.snapshot_path,
        ),
        (
            "snapshot_debounce_ms",
            running.snapshot_debounce != wanted.snapshot_debounce,
        ),
    ]
    .into_iter()
    .filter_map(|(field, differs)| differs.then_some(field))
    .collect()
}

/// Watches `path` for the life of the task.
pub async fn watch_config(path: PathBuf, running: Fixed, shared: Arc<Shared>) {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut watch = DirWatch::new(&dir, DEBOUNCE, POLL_EVERY);
    let mut last_text = std::fs::read_to_string(&path).ok();
    loop {
        watch.changed().await;
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => {
                if last_text.take().is_some() {
                    shared.metrics.config_reload("invalid");
                    tracing::warn!(path = %path.display(), %error,
                        "configuration unreadable; keeping the last good one");
                }
                continue;
            }
        };
        if last_text.as_deref() == Some(text.as_str()) {
            continue;
        }
        last_text = Some(text.clone());
        let config = match Config::parse(&text, &path.display().to_string()) {
            Ok(config) => config,
            Err(error) => {
                shared.metrics.config_reload("invalid");
                tracing::warn!(%error, "configuration invalid; keeping the last good one");
                continue;
            }
        };
        let pending = needs_restart(&running, &config.fixed);
        if !pending.is_empty() {
            shared.metrics.config_reload("needs_restart");
            tracing::warn!(fields = ?pending,
                "these settings change only on restart; running with the old values");
        }
        if **shared.live.load() != config.live {
            shared.live.store(Arc::new(config.live));
            shared.metrics.config_reload("applied");
            tracing::info!(path = %path.display(), "configuration reloaded");
        }
    }
}

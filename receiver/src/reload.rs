//! Hot reload of the configuration file, with the helper both programs share
//! ([`flagpost::reload`]): the file's directory is watched, the file re-read and validated off the
//! runtime, and an invalid file keeps the last good configuration in force. The live part
//! (secrets, environment keys, limits, bootstrap) is swapped in atomically; fields that only take
//! effect at start (listen address, paths) are reported as needing a restart and keep their
//! running values.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flagpost::reload::{ConfigWatch, LoadedFile, ReloadTiming, Reloadable};

use crate::app::Shared;
use crate::config::{Config, ConfigError, Fixed, Live};

const TIMING: ReloadTiming = ReloadTiming {
    debounce: Duration::from_millis(100),
    poll_every: Duration::from_secs(10),
};

impl Reloadable for Config {
    type Fixed = Fixed;
    type Live = Live;
    type Error = ConfigError;

    fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse(text, &path.display().to_string())
    }

    /// Names of the start-only fields that differ, as written in the file.
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
            ("server", running.server != wanted.server),
        ]
        .into_iter()
        .filter_map(|(field, differs)| differs.then_some(field))
        .collect()
    }

    fn into_parts(self) -> (Fixed, Live) {
        (self.fixed, self.live)
    }
}

/// Watches `path` for the life of the task, swapping in each new live part that differs from the
/// one in force.
pub async fn watch_config(file: LoadedFile, running: Fixed, shared: Arc<Shared>) {
    let reloads = shared.metrics.reloads().clone();
    let path = file.path.clone();
    let mut watch = ConfigWatch::<Config>::start(file, running, TIMING, reloads);
    loop {
        let live = watch.next_live().await;
        if **shared.live.load() != live {
            shared.live.store(Arc::new(live));
            shared.metrics.reloads().applied();
            tracing::info!(path = %path.display(), "configuration reloaded");
        }
    }
}

//! Hot reload of a configuration file, for both programs.
//!
//! The file's directory is watched ([`DirWatch`]: editors save by rename, Kubernetes swaps a
//! symlink). On each wake-up the file is read and validated off the runtime (validation reads
//! secret files too), compared with the last text seen, and then:
//!
//! - an unreadable or invalid file is counted and logged, and the last good configuration stays;
//!   an empty or whitespace-only file is invalid ([`refuse_empty`]), never the built-in defaults;
//! - a change to a restart-only ("fixed") setting is counted and logged by name, and the running
//!   values stay: the caller gets only the live part, never a half-applied fixed part;
//! - the live part goes to the caller, which swaps it in and counts it as applied.

use std::path::{Path, PathBuf};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::watch::DirWatch;

/// A configuration split as both programs split theirs: a fixed part, read only at start, and a
/// live part, which a reload replaces.
pub trait Reloadable: Sized + Send + 'static {
    type Fixed: Send + 'static;
    type Live: Send + 'static;
    type Error: std::fmt::Display + Send + 'static;

    /// Parses and validates the file's text; `path` names it in errors. Blocking: secrets may be
    /// read from files.
    fn parse(text: &str, path: &Path) -> Result<Self, Self::Error>;

    /// The names of the fixed settings that differ between `running` and `wanted`.
    fn needs_restart(running: &Self::Fixed, wanted: &Self::Fixed) -> Vec<&'static str>;

    fn into_parts(self) -> (Self::Fixed, Self::Live);
}

/// Refuses a configuration file that is empty or only whitespace, in both programs, at start and
/// on reload. Editors and sync tools truncate a file before writing it, so an empty file is far
/// more often a save caught half-way than a wish for the built-in defaults (which running with no
/// file at all still gives).
pub fn refuse_empty(text: &str, path: &Path) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err(format!(
            "{} is empty; an empty file is refused because editors and sync tools truncate \
             before writing (run with no file at all for the built-in defaults)",
            path.display()
        ));
    }
    Ok(())
}

/// The label value of `config_reloads_total{result}`; the variants are spelled as the metric
/// shows them.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
enum ReloadResult {
    applied,
    invalid,
    needs_restart,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: ReloadResult,
}

/// `config_reloads_total`, by result: registered by each program in its own registry.
#[derive(Debug, Clone, Default)]
pub struct ReloadMetrics {
    results: Family<ReloadLabels, Counter>,
}

impl ReloadMetrics {
    pub fn register(registry: &mut Registry) -> ReloadMetrics {
        let metrics = ReloadMetrics::default();
        registry.register(
            "config_reloads",
            "Configuration reloads, by result (applied, invalid, needs_restart)",
            metrics.results.clone(),
        );
        metrics
    }

    /// Counts a reload whose live part the program has swapped in.
    pub fn applied(&self) {
        self.count(ReloadResult::applied);
    }

    fn count(&self, result: ReloadResult) {
        self.results.get_or_create(&ReloadLabels { result }).inc();
    }
}

/// How often the directory is looked at: notifications are debounced by `debounce`, and
/// `poll_every` backs them up where they never come.
#[derive(Debug, Clone, Copy)]
pub struct ReloadTiming {
    pub debounce: Duration,
    pub poll_every: Duration,
}

/// The configuration file a program was started with, and the very text its running
/// configuration was loaded from: the reload watch's baseline. Taking the baseline from the file
/// when the watch is armed instead would miss an edit made between loading and arming.
#[derive(Debug, Clone)]
pub struct LoadedFile {
    pub path: PathBuf,
    pub text: Vec<u8>,
}

/// A watched configuration file, yielding each new valid version's live part.
pub struct ConfigWatch<C: Reloadable> {
    path: PathBuf,
    running: C::Fixed,
    dir_watch: DirWatch,
    last_text: Option<Vec<u8>>,
    /// Set at start: the file is compared with the loaded text once without waiting for a
    /// wake-up, so an edit made before the watch was armed is applied at once.
    check_now: bool,
    metrics: ReloadMetrics,
}

impl<C: Reloadable> ConfigWatch<C> {
    /// Starts watching `file`, whose running fixed part is `running`. Every edit made after the
    /// file was loaded is seen, including one made before this call.
    pub fn start(
        file: LoadedFile,
        running: C::Fixed,
        timing: ReloadTiming,
        metrics: ReloadMetrics,
    ) -> ConfigWatch<C> {
        let dir_watch = DirWatch::for_file(&file.path, timing.debounce, timing.poll_every);
        ConfigWatch {
            path: file.path,
            running,
            dir_watch,
            last_text: Some(file.text),
            check_now: true,
            metrics,
        }
    }

    /// Waits for the next valid version of the file and returns its live part. Versions that are
    /// unreadable or invalid are counted, logged and waited past; a change to the fixed part is
    /// counted and logged, and its running values stay.
    pub async fn next_live(&mut self) -> C::Live {
        loop {
            if !std::mem::take(&mut self.check_now) {
                self.dir_watch.changed().await;
            }
            let text = match tokio::fs::read(&self.path).await {
                Ok(text) => text,
                Err(error) => {
                    // Reported once when the file goes, not on every wake-up while it is gone.
                    if self.last_text.take().is_some() {
                        self.metrics.count(ReloadResult::invalid);
                        tracing::error!(path = %self.path.display(), %error,
                            "configuration unreadable; the last good one stays in force");
                    }
                    continue;
                }
            };
            let changed = self.last_text.as_ref() != Some(&text);
            tracing::debug!(changed, "configuration directory woke");
            if !changed {
                continue;
            }
            self.last_text = Some(text.clone());
            match self.validate(text).await {
                Ok(config) => return self.live_part(config),
                Err(error) => {
                    self.metrics.count(ReloadResult::invalid);
                    tracing::error!(%error,
                        "configuration not reloaded; the last good one stays in force");
                }
            }
        }
    }

    /// Parses on the blocking pool: validation reads secret files and environment variables.
    async fn validate(&self, text: Vec<u8>) -> Result<C, String> {
        let path = self.path.clone();
        let parsed = tokio::task::spawn_blocking(move || match String::from_utf8(text) {
            Ok(text) => refuse_empty(&text, &path)
                .and_then(|()| C::parse(&text, &path).map_err(|e| e.to_string())),
            Err(_) => Err(format!("{}: not UTF-8 text", path.display())),
        })
        .await;
        parsed.unwrap_or_else(|e| Err(format!("validation task failed: {e}")))
    }

    fn live_part(&self, config: C) -> C::Live {
        let (wanted, live) = config.into_parts();
        let fields = C::needs_restart(&self.running, &wanted);
        if !fields.is_empty() {
            self.metrics.count(ReloadResult::needs_restart);
            tracing::warn!(
                ?fields,
                "these settings change only on restart; the running values stay"
            );
        }
        live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration of two numbers, `"fixed live"`.
    struct Pair {
        fixed: u32,
        live: u32,
    }

    impl Reloadable for Pair {
        type Fixed = u32;
        type Live = u32;
        type Error = String;

        fn parse(text: &str, _: &Path) -> Result<Pair, String> {
            let numbers: Vec<u32> = text
                .split_whitespace()
                .map(|n| n.parse().map_err(|_| format!("{n:?} is not a number")))
                .collect::<Result<_, _>>()?;
            match numbers[..] {
                [fixed, live] => Ok(Pair { fixed, live }),
                _ => Err("two numbers, please".to_owned()),
            }
        }

        fn needs_restart(running: &u32, wanted: &u32) -> Vec<&'static str> {
            if running == wanted {
                vec![]
            } else {
                vec!["fixed"]
            }
        }

        fn into_parts(self) -> (u32, u32) {
            (self.fixed, self.live)
        }
    }

    fn loaded(path: &Path) -> LoadedFile {
        LoadedFile {
            path: path.to_owned(),
            text: std::fs::read(path).unwrap(),
        }
    }

    fn test_timing() -> ReloadTiming {
        ReloadTiming {
            debounce: Duration::from_millis(10),
            poll_every: Duration::from_secs(3600),
        }
    }

    #[tokio::test]
    async fn an_edit_made_between_loading_and_arming_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "1 1").unwrap();
        let file = loaded(&path);
        // Edited after loading, before the watch exists: no wake-up will ever report it, and the
        // poll is an hour away.
        std::fs::write(&path, "1 2").unwrap();
        let metrics = ReloadMetrics::register(&mut Registry::default());
        let mut watch = ConfigWatch::<Pair>::start(file, 1, test_timing(), metrics);
        let live = tokio::time::timeout(Duration::from_secs(60), watch.next_live())
            .await
            .expect("the edit is handed over without another wake-up");
        assert_eq!(live, 2);
    }

    #[tokio::test]
    async fn an_unchanged_file_is_not_handed_over_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "1 1").unwrap();
        let metrics = ReloadMetrics::register(&mut Registry::default());
        let mut watch = ConfigWatch::<Pair>::start(loaded(&path), 1, test_timing(), metrics);
        let handed = tokio::time::timeout(Duration::from_millis(300), watch.next_live()).await;
        assert!(
            handed.is_err(),
            "nothing changed, so nothing is handed over"
        );
    }

    fn counted(registry: &Registry, result: &str) -> bool {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text.contains(&format!("config_reloads_total{{result=\"{result}\"}} 1"))
    }

    #[tokio::test]
    async fn invalid_files_are_waited_past_and_fixed_settings_keep_their_running_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "1 1").unwrap();
        let mut registry = Registry::default();
        let metrics = ReloadMetrics::register(&mut registry);
        let timing = ReloadTiming {
            debounce: Duration::from_millis(10),
            poll_every: Duration::from_millis(50),
        };
        let mut watch = ConfigWatch::<Pair>::start(loaded(&path), 1, timing, metrics);
        std::fs::write(&path, "1 x").unwrap();
        let edits = async {
            while !counted(&registry, "invalid") {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            std::fs::write(&path, "2 3").unwrap();
        };
        let (live, ()) = tokio::time::timeout(Duration::from_secs(60), async {
            tokio::join!(watch.next_live(), edits)
        })
        .await
        .expect("the valid file is handed over");
        assert_eq!(live, 3);
        assert!(counted(&registry, "needs_restart"));
        assert!(!counted(&registry, "applied"));
    }
}

//! Flag files: `<flag_files.dir>/<environment>.toml`, watched and applied to the store, and
//! segment files, `<flag_files.dir>/<project>.segments.toml` ([`segment_file`]), applied before
//! them on each pass so that overrides can name the segments they define.
//!
//! On every wake-up of the directory watch (a notification, debounced, or the periodic check)
//! each file is read; a file whose bytes are what was last seen is skipped, any other is parsed,
//! validated and applied in one transaction whose events name the file as `changed_by`. An invalid
//! file applies nothing and is reported with its line and reason once per content. A file that is
//! deleted or declares no features deletes nothing: losing a file is more often an accident (a bad
//! deploy, a half-synced volume) than an intent to delete every flag in an environment.

mod apply;
pub mod file;
pub mod segment_file;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::watch;

pub use apply::apply_flag_file;
pub use file::{FlagFile, FlagFileError, environment_of, parse};
pub use segment_file::{SegmentFile, apply_segment_file, parse_segment_file};

use crate::changes::{Author, Changes, CommittedEvent};
use crate::config::Config;
use crate::error::WriteError;
use crate::metrics::ChangeSource;
use crate::metrics::Metrics;
use crate::store::{Store, Tables};
use crate::watch::DirWatch;

/// What became of one file on one pass.
#[derive(Debug)]
pub enum FileOutcome {
    Applied {
        path: PathBuf,
        events: Vec<CommittedEvent>,
    },
    Unchanged {
        path: PathBuf,
    },
    Invalid(FlagFileError),
    /// Deleted or empty: nothing was deleted.
    Ignored {
        path: PathBuf,
        why: &'static str,
    },
    /// The file is valid but the store refused it (a feature owned by the API), or could not
    /// commit; it is tried again on the next pass.
    NotApplied {
        path: PathBuf,
        error: String,
    },
}

impl FileOutcome {
    /// Every name [`FileOutcome::name`] gives, shown at zero on `/metrics` from start.
    pub const NAMES: [&'static str; 5] =
        ["applied", "unchanged", "invalid", "ignored", "not_applied"];

    /// A short name for metrics: one of [`FileOutcome::NAMES`].
    pub fn name(&self) -> &'static str {
        match self {
            FileOutcome::Applied { .. } => "applied",
            FileOutcome::Unchanged { .. } => "unchanged",
            FileOutcome::Invalid(_) => "invalid",
            FileOutcome::Ignored { .. } => "ignored",
            FileOutcome::NotApplied { .. } => "not_applied",
        }
    }
}

/// Reads every flag file and segment file in `dir` and checks each against `config`, without
/// touching the store.
pub fn check_dir(dir: &Path, config: &Config) -> Vec<FlagFileError> {
    let mut errors = Vec::new();
    for path in segment_file_paths(dir) {
        match read_segment_file(&path, None, config) {
            ReadFile::Read {
                parsed: Err(error), ..
            }
            | ReadFile::Unreadable(error) => errors.push(error),
            ReadFile::Read { parsed: Ok(_), .. } | ReadFile::Unchanged => {}
        }
    }
    for path in flag_file_paths(dir) {
        let checked = std::fs::read_to_string(&path)
            .map_err(|e| FlagFileError {
                path: path.clone(),
                line: None,
                message: format!("cannot read: {e}"),
            })
            .and_then(|text| parse(&path, &text))
            .and_then(|file| environment_for(&file, config).map(|_| ()));
        if let Err(error) = checked {
            errors.push(error);
        }
    }
    errors
}

fn flag_file_paths(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| environment_of(p).is_some() && p.is_file())
        .collect();
    paths.sort();
    paths
}

fn segment_file_paths(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| segment_file::project_of(p).is_some() && p.is_file())
        .collect();
    paths.sort();
    paths
}

fn environment_for(file: &FlagFile, config: &Config) -> Result<u64, FlagFileError> {
    config
        .environment_by_name(&file.environment)
        .map(|e| e.id)
        .ok_or_else(|| FlagFileError {
            path: file.path.clone(),
            line: None,
            message: format!(
                "no environment named {:?} in the configuration",
                file.environment
            ),
        })
}

/// What reading one flag file found.
enum ReadFile<T> {
    /// The same bytes as last time.
    Unchanged,
    Read {
        digest: [u8; 32],
        parsed: Result<T, FlagFileError>,
    },
    Unreadable(FlagFileError),
}

/// Reads and hashes one file and, unless its bytes are `last_seen`, parses it as UTF-8 text.
fn read_file<T>(
    path: &Path,
    last_seen: Option<[u8; 32]>,
    parse: impl FnOnce(&str) -> Result<T, FlagFileError>,
) -> ReadFile<T> {
    let error = |message: String| FlagFileError {
        path: path.to_path_buf(),
        line: None,
        message,
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => return ReadFile::Unreadable(error(format!("cannot read: {e}"))),
    };
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    if last_seen == Some(digest) {
        return ReadFile::Unchanged;
    }
    let parsed = std::str::from_utf8(&bytes)
        .map_err(|_| error("not UTF-8".into()))
        .and_then(parse);
    ReadFile::Read { digest, parsed }
}

/// Reads one file of a kind unless its bytes are the digest last seen: its contents and the
/// environment or project they are for.
type FileReader<T> = fn(&Path, Option<[u8; 32]>, &Config) -> ReadFile<(T, u64)>;

/// What tells one kind of file from the other (flags by environment, segments by project): how
/// it is read into its contents and scope, when it declares nothing, and how it is applied.
struct FileKind<T> {
    read: FileReader<T>,
    declares_nothing: fn(&T) -> bool,
    apply: fn(&mut Changes<'_, Tables<'_>>, u64, &T) -> Result<(), WriteError>,
}

/// Reads, hashes and (unless its bytes are `last_seen`) parses and checks one flag file.
fn read_flag_file(
    path: &Path,
    last_seen: Option<[u8; 32]>,
    config: &Config,
) -> ReadFile<(FlagFile, u64)> {
    read_file(path, last_seen, |text| {
        let file = parse(path, text)?;
        environment_for(&file, config).map(|env| (file, env))
    })
}

/// Reads, hashes and (unless its bytes are `last_seen`) parses one segment file, with the id of
/// the project it names.
fn read_segment_file(
    path: &Path,
    last_seen: Option<[u8; 32]>,
    config: &Config,
) -> ReadFile<(SegmentFile, u64)> {
    read_file(path, last_seen, |text| {
        let file = parse_segment_file(path, text)?;
        let project = config
            .projects
            .values()
            .find(|p| p.name == file.project)
            .map(|p| p.id)
            .ok_or_else(|| FlagFileError {
                path: path.to_path_buf(),
                line: None,
                message: format!("no project named {:?} in the configuration", file.project),
            })?;
        Ok((file, project))
    })
}

/// Applies the flag files of one directory, remembering what it last saw of each.
pub struct FlagFiles {
    dir: PathBuf,
    store: Store,
    config: Arc<ArcSwap<Config>>,
    metrics: Metrics,
    seen: HashMap<PathBuf, [u8; 32]>,
}

impl FlagFiles {
    pub fn new(
        dir: PathBuf,
        store: Store,
        config: Arc<ArcSwap<Config>>,
        metrics: Metrics,
    ) -> FlagFiles {
        FlagFiles {
            dir,
            store,
            config,
            metrics,
            seen: HashMap::new(),
        }
    }

    /// Watches the directory and applies changes until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let (debounce, poll_every) = {
            let config = self.config.load();
            (
                config.fixed.flag_files.debounce,
                config.fixed.flag_files.poll_every,
            )
        };
        let mut dir_watch = DirWatch::new(&self.dir, debounce, poll_every);
        loop {
            self.apply_changed().await;
            tokio::select! {
                _ = dir_watch.changed() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// One pass over the directory.
    pub async fn apply_changed(&mut self) -> Vec<FileOutcome> {
        let paths = flag_file_paths(&self.dir);
        let mut outcomes = Vec::new();
        let gone: Vec<PathBuf> = self
            .seen
            .keys()
            .filter(|p| !paths.contains(p) && !p.is_file())
            .cloned()
            .collect();
        for path in gone {
            self.seen.remove(&path);
            tracing::warn!(file = %path.display(), "flag file removed; deleting nothing");
            self.metrics.flag_file("ignored");
            outcomes.push(FileOutcome::Ignored {
                path,
                why: "removed",
            });
        }
        let segment_paths = segment_file_paths(&self.dir);
        let paths = segment_paths.into_iter().chain(paths);
        for path in paths {
            let outcome = if segment_file::project_of(&path).is_some() {
                self.take_in_segment_file(&path).await
            } else {
                self.take_in_flag_file(&path).await
            };
            self.metrics.flag_file(outcome.name());
            match &outcome {
                FileOutcome::Applied { path, events } => tracing::info!(
                    file = %path.display(), events = events.len(), "flag file applied"),
                FileOutcome::Invalid(error) => {
                    self.metrics.refused("file", "invalid");
                    tracing::error!(%error, "flag file not applied")
                }
                FileOutcome::NotApplied { path, error } => {
                    self.metrics.refused("file", "refused");
                    tracing::error!(file = %path.display(), %error, "flag file not applied")
                }
                FileOutcome::Ignored { path, why } => tracing::warn!(
                    file = %path.display(), why, "flag file declares no features; deleting nothing"),
                FileOutcome::Unchanged { .. } => {}
            }
            outcomes.push(outcome);
        }
        outcomes
    }

    /// Reads a flag file and, when its bytes are new, applies it in one transaction.
    async fn take_in_flag_file(&mut self, path: &Path) -> FileOutcome {
        let kind = FileKind {
            read: read_flag_file,
            declares_nothing: |file| file.features.is_empty(),
            apply: |changes, env, file| apply_flag_file(changes, env, file),
        };
        self.take_in(path, kind).await
    }

    /// Reads a segment file and, when its bytes are new, applies it in one transaction.
    async fn take_in_segment_file(&mut self, path: &Path) -> FileOutcome {
        let kind = FileKind {
            read: read_segment_file,
            declares_nothing: |file| file.segments.is_empty(),
            apply: |changes, project, file| apply_segment_file(changes, project, file),
        };
        self.take_in(path, kind).await
    }

    /// Reads a file of `kind` off the runtime and, when its bytes are new and it declares
    /// something, applies it in one transaction whose events name the file as their author.
    async fn take_in<T: Send + 'static>(&mut self, path: &Path, kind: FileKind<T>) -> FileOutcome {
        // Reading, hashing and parsing a large file is seconds of blocking work: off the runtime.
        let config = self.config.load_full();
        let last_seen = self.seen.get(path).copied();
        let (owned_path, read_config) = (path.to_path_buf(), config.clone());
        let read =
            tokio::task::spawn_blocking(move || (kind.read)(&owned_path, last_seen, &read_config))
                .await;
        let (file, scope) = match self.remember(path, read) {
            Ok(read) => read,
            Err(outcome) => return outcome,
        };
        if (kind.declares_nothing)(&file) {
            return FileOutcome::Ignored {
                path: path.to_path_buf(),
                why: "empty",
            };
        }
        let author = Author::system(path.display().to_string());
        let result = self
            .store
            .write(move |tables| {
                let now = OffsetDateTime::now_utc();
                let mut changes = Changes::new(tables, &config, &author, now);
                (kind.apply)(&mut changes, scope, &file)?;
                Ok(changes.into_events())
            })
            .await;
        self.written(path, result)
    }

    /// What a file read off the runtime holds, its bytes remembered before anything is applied
    /// (so an invalid file is reported once per content, not on every pass); otherwise why
    /// there is nothing to apply.
    fn remember<T>(
        &mut self,
        path: &Path,
        read: Result<ReadFile<T>, tokio::task::JoinError>,
    ) -> Result<T, FileOutcome> {
        let (digest, parsed) = match read {
            Ok(ReadFile::Unchanged) => {
                return Err(FileOutcome::Unchanged {
                    path: path.to_path_buf(),
                });
            }
            Ok(ReadFile::Read { digest, parsed }) => (digest, parsed),
            Ok(ReadFile::Unreadable(error)) => return Err(FileOutcome::Invalid(error)),
            Err(panicked) => {
                return Err(FileOutcome::NotApplied {
                    path: path.to_path_buf(),
                    error: format!("reading the file failed: {panicked}"),
                });
            }
        };
        self.seen.insert(path.to_path_buf(), digest);
        parsed.map_err(FileOutcome::Invalid)
    }

    /// What became of a file's transaction.
    fn written(
        &mut self,
        path: &Path,
        result: Result<Vec<CommittedEvent>, WriteError>,
    ) -> FileOutcome {
        match result {
            Ok(events) => {
                if !events.is_empty() {
                    self.metrics.change_committed(ChangeSource::File, &events);
                }
                FileOutcome::Applied {
                    path: path.to_path_buf(),
                    events,
                }
            }
            Err(error) => {
                if let WriteError::Storage(_) = error {
                    // The store, not the file, failed: the next pass tries again.
                    self.seen.remove(path);
                }
                let error = match error {
                    WriteError::Storage(storage) => storage.to_string(),
                    refusal => refusal.to_string(),
                };
                FileOutcome::NotApplied {
                    path: path.to_path_buf(),
                    error,
                }
            }
        }
    }
}

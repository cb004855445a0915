//! The snapshot file: the whole cache as JSON, for apps that would rather read a local file than
//! call HTTP, with each environment's Flagsmith document. Rewritten shortly after each commit that changed the cache (bursts are debounced),
//! atomically: a temporary file beside it is written and fsynced, then renamed over it, so a
//! reader sees the old file or the new one, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::api::native::{EnvironmentFlags, environment_flags};
use crate::clock::now_unix;
use crate::documents::FlagCache;

#[derive(Serialize)]
struct SnapshotFile<'a> {
    generated_at: i64,
    environments: Vec<EnvironmentFlags<'a>>,
    /// Each environment's document from its upstream Flagsmith, as Flagsmith sent it (what
    /// `GET /api/v1/environment-document/` serves), for apps and SDKs that evaluate locally.
    documents: Vec<DocumentEntry<'a>>,
}

#[derive(Serialize)]
struct DocumentEntry<'a> {
    environment: u64,
    fetched_at: i64,
    document: &'a RawValue,
}

/// Renders the whole cache, identity overrides included, environments by id.
pub fn render(cache: &FlagCache, now_unix: i64) -> Vec<u8> {
    let mut environments: Vec<_> = cache
        .envs()
        .map(|(id, env)| environment_flags(id, env, true))
        .collect();
    environments.sort_by_key(|env| env.environment.id);
    // A large document is held compressed (see `DocumentBytes`): its bytes are read back first.
    let held: Vec<_> = cache
        .envs()
        .filter_map(|(environment, env)| {
            let doc = env.upstream.as_ref()?;
            Some((environment, doc.fetched_at, doc.raw.bytes()))
        })
        .collect();
    let mut documents: Vec<DocumentEntry<'_>> = held
        .iter()
        .filter_map(|(environment, fetched_at, raw)| {
            Some(DocumentEntry {
                environment: *environment,
                fetched_at: *fetched_at,
                // Checked when it was fetched: it is JSON.
                document: serde_json::from_slice(raw).ok()?,
            })
        })
        .collect();
    documents.sort_by_key(|entry| entry.environment);
    serde_json::to_vec(&SnapshotFile {
        generated_at: now_unix,
        environments,
        documents,
    })
    .expect("the snapshot serialises")
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync of the directory).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("snapshot path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename itself is durable once the directory is synced.
    std::fs::File::open(&dir)?.sync_all()
}

/// Writes the snapshot now, then again after each commit, waiting `debounce` for a burst to end.
pub async fn keep_written(
    path: PathBuf,
    debounce: Duration,
    cache: Arc<ArcSwap<FlagCache>>,
    mut commits: watch::Receiver<u64>,
) {
    loop {
        let current = cache.load_full();
        let path_for_write = path.clone();
        let written = tokio::task::spawn_blocking(move || {
            let bytes = render(&current, now_unix());
            write_atomically(&path_for_write, &bytes)
        })
        .await;
        match written {
            Ok(Ok(())) => tracing::debug!(path = %path.display(), "snapshot written"),
            Ok(Err(error)) => {
                tracing::warn!(path = %path.display(), %error, "cannot write the snapshot")
            }
            Err(error) => tracing::warn!(%error, "snapshot task failed"),
        }
        if commits.changed().await.is_err() {
            return;
        }
        tokio::time::sleep(debounce).await;
        commits.mark_unchanged();
    }
}

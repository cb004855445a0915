//! flagpost-receiver: takes signed `FLAG_UPDATED` / `FLAG_DELETED` web hooks (from flagpost or from
//! Flagsmith), keeps a persisted flag cache that never goes backwards, and serves it from memory.
//!
//! Modules, by concern:
//! - [`config`]: the TOML file, defaults, validation; [`reload`]: watching it.
//! - [`intake`]: content type, size, signature and body checks of one web hook.
//! - [`cache`]: the cache and its ordering rules (the domain).
//! - [`storage`]: redb tables and rows; [`writer`]: the one writer thread and its group commit.
//! - [`lookup`]: the native JSON API; [`sdk`]: the Flagsmith-SDK-compatible API.
//! - [`snapshot`]: the snapshot file; [`bootstrap`]: loading documents from flagpost.
//! - [`metrics`]; [`error`]: domain errors mapped to HTTP statuses; [`routes`]: HTTP routes and handlers.
//! - [`app`]: state shared by handlers and background tasks.

pub mod app;
pub mod bootstrap;
pub mod cache;
pub mod config;
pub mod error;
pub mod intake;
pub mod lookup;
pub mod metrics;
pub mod reload;
pub mod routes;
pub mod sdk;
pub mod snapshot;
pub mod storage;
pub mod writer;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use crate::app::Shared;
use crate::config::Config;

/// Now, in unix seconds: the clock of signatures, retention and data age.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("storage: {0}")]
    Storage(#[from] storage::StorageError),
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}

/// Runs the receiver on `listener` until `shutdown` completes, then closes the database cleanly.
/// With `config_path`, the file is watched and reloaded.
pub async fn run(
    listener: TcpListener,
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let fixed = config.fixed.clone();
    if config.live.secrets.is_empty() && !config.live.allow_unsigned {
        tracing::warn!(
            "no intake secrets configured and unsigned senders refused: every web hook will be refused"
        );
    }
    let storage_path = fixed.storage_path.clone();
    let cache_bytes = fixed.redb_cache_bytes;
    // Opening and loading read the whole file: never on a runtime worker.
    let (writer, published, writer_thread) =
        tokio::task::spawn_blocking(move || writer::start(&storage_path, cache_bytes))
            .await
            .expect("the storage start-up task does not panic")?;
    let registry = metrics::registry();
    // The writer's durable-commit latency registers here, once the writer has it
    // (`flagpost::metrics::register_commit_latency`): `flagpost_receiver_store_commit_duration_seconds`.
    let shared = Arc::new(Shared {
        live: ArcSwap::from_pointee(config.live),
        cache: published.cache.clone(),
        writer,
        metrics: metrics::Metrics::new(registry),
        documents: bootstrap::DocumentClient::default(),
    });
    tracing::info!(listen = %fixed.listen, storage = %fixed.storage_path.display(), "receiver started");

    let mut tasks = vec![
        tokio::spawn(shared.clone().bootstrap_loop()),
        tokio::spawn(shared.clone().prune_loop()),
    ];
    if let Some(path) = fixed.snapshot_path.clone() {
        tasks.push(tokio::spawn(snapshot::keep_written(
            path,
            fixed.snapshot_debounce,
            published.cache.clone(),
            published.commits.clone(),
        )));
    }
    if let Some(path) = config_path {
        tasks.push(tokio::spawn(reload::watch_config(
            path,
            fixed.clone(),
            shared.clone(),
        )));
    }

    let router = routes::router(shared.clone(), &fixed.webhook_path);
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await;

    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    if let Some(path) = &fixed.snapshot_path {
        let cache = published.cache.load_full();
        let path = path.clone();
        let _ = tokio::task::spawn_blocking(move || {
            snapshot::write_atomically(&path, &snapshot::render(&cache, now_unix()))
        })
        .await;
    }
    // The last writer handle goes with `shared`; the thread then drains and closes the database.
    drop(shared);
    drop(published);
    let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
    served.map_err(RunError::Serve)
}

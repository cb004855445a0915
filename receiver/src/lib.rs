//! flagpost-receiver: takes signed `FLAG_UPDATED` / `FLAG_DELETED` web hooks (from flagpost or from
//! Flagsmith), keeps a persisted flag cache that never goes backwards, and serves it from memory.
//!
//! Modules, by concern (each uses only those listed before it; `app` and `api` the ones above
//! them):
//! - [`config`]: the TOML file, defaults, validation; [`error`]: every domain error, and the one
//!   mapping to HTTP statuses; [`clock`]: now, in unix seconds.
//! - [`evaluation`]: Flagsmith's engine behind one seam: documents read, prepared, evaluated.
//! - [`documents`]: each environment's flags and the ordering rules (the domain: pure).
//! - [`storage`]: the redb tables, rows and transactions; the only module that names redb.
//! - [`intake`]: a web hook's checks, and the one writer thread (dedupe, group commit).
//! - [`sources`]: documents fetched from flagpost (bootstrap) or an upstream Flagsmith, and
//!   events consumed from NATS JetStream.
//! - [`metrics`]; [`app`]: state shared by handlers and background tasks.
//! - [`api`]: HTTP routes and thin handlers (web hooks, native lookups, the Flagsmith SDK API,
//!   status), and the snapshot file.
//! - [`streams`]: the change streams' hub: notices after each commit, limits, counts.
//! - [`reload`]: watching the configuration file.

pub mod api;
pub mod app;
pub mod clock;
pub mod config;
pub mod documents;
pub mod error;
pub mod evaluation;
pub mod intake;
pub mod metrics;
pub mod reload;
pub mod sources;
pub mod storage;
pub mod streams;

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use flagpost::reload::LoadedFile;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::snapshot;
use crate::app::Shared;
use crate::clock::now_unix;
use crate::config::Config;
use crate::error::WriteError;
use crate::intake::writer;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("storage: {0}")]
    Storage(#[from] WriteError),
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}

/// Gives back to the system what this thread freed and still holds. The binary allocates with
/// mimalloc (`main.rs`), which keeps a thread's freed pages for that thread to use again. Loading
/// the cache frees much of what it allocates (every row read, every stored document decompressed
/// and parsed) on a blocking thread that then idles: those pages stayed resident, 125-190 MiB of
/// them with a million identity overrides (`receiver_bench -- memory`: 338-405 MiB of RSS after
/// start-up, 213 MiB with this). Without mimalloc as the allocator (tests, benches) it finds
/// nothing to give.
fn return_freed_memory() {
    // SAFETY: `mi_collect` takes a flag and touches only mimalloc's own state for this thread.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Runs the receiver on `listener` until `shutdown` completes, then closes the database cleanly.
/// With `config_file`, the file is watched and reloaded, every edit since it was loaded included.
pub async fn run(
    listener: TcpListener,
    config: Config,
    config_file: Option<LoadedFile>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let fixed = config.fixed.clone();
    if config.live.secrets.is_empty() && !config.live.allow_unsigned {
        tracing::warn!(
            "no intake secrets configured and unsigned senders refused: every web hook will be refused"
        );
    }
    let storage_path = fixed.storage_path.clone();
    let cache_bytes = fixed.storage_cache_bytes;
    // Opening and loading read the whole file: never on a runtime worker.
    let (writer, published, writer_thread) = tokio::task::spawn_blocking(move || {
        let started = writer::start(&storage_path, cache_bytes);
        return_freed_memory();
        started
    })
    .await
    .expect("the storage start-up task does not panic")?;
    let shared = share(config, writer, &published);
    tracing::info!(listen = %fixed.listen, storage = %fixed.storage_path.display(), "receiver started");
    let tasks = spawn_background(&shared, &published, &fixed, config_file);

    let router = api::router(shared.clone(), &fixed.webhook_path);
    // Streams never end by themselves: the server's graceful stop waits for open answers.
    let streams = shared.streams.clone();
    let shutdown = async move {
        shutdown.await;
        streams.shut_down();
    };
    flagpost::process::notify_ready();
    let served = flagpost::serve::serve(listener, router, &fixed.server, shutdown).await;

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

/// The state handlers and background tasks share, with every metric registered in one registry.
fn share(config: Config, writer: writer::Writer, published: &writer::Published) -> Arc<Shared> {
    let mut registry = metrics::registry();
    // `flagpost_receiver_store_commit_duration_seconds`: what every acknowledgement waits for.
    flagpost::metrics::register_commit_latency(&mut registry, writer.commit_latency());
    let jetstream = config
        .fixed
        .jetstream
        .as_ref()
        .map(|_| sources::jetstream::JetStreamStatus::new(&mut registry));
    let streams =
        streams::StreamHub::new(&mut registry, published.cache.clone(), published.file_id);
    let metrics = metrics::Metrics::new(registry);
    metrics.show_environments(&config.live);
    Arc::new(Shared {
        live: ArcSwap::from_pointee(config.live),
        cache: published.cache.clone(),
        writer,
        metrics,
        documents: sources::DocumentClient::default(),
        upstreams: sources::upstream::Upstreams::default(),
        recent_webhooks: Default::default(),
        rereading: Default::default(),
        streams,
        jetstream,
        file_id: published.file_id,
    })
}

/// Bootstrap, pruning, upstream fetches, the streams' hub, and what `fixed` asks for besides:
/// the JetStream intake, the snapshot file, the configuration watch.
fn spawn_background(
    shared: &Arc<Shared>,
    published: &writer::Published,
    fixed: &config::Fixed,
    config_file: Option<LoadedFile>,
) -> Vec<JoinHandle<()>> {
    let streams = &shared.streams;
    let mut tasks = vec![
        tokio::spawn(shared.clone().bootstrap_loop()),
        tokio::spawn(shared.clone().prune_loop()),
        tokio::spawn(sources::upstream::supervise(shared.clone())),
        tokio::spawn(streams.clone().follow(published.commits.clone())),
        tokio::spawn(streams.clone().heartbeats({
            let shared = shared.clone();
            move || shared.live.load().streams.heartbeat
        })),
    ];
    if let (Some(settings), Some(status)) = (fixed.jetstream.clone(), shared.jetstream.clone()) {
        let consume = sources::jetstream::consume(shared.clone(), settings, status);
        tasks.push(tokio::spawn(consume));
    }
    if let Some(path) = fixed.snapshot_path.clone() {
        tasks.push(tokio::spawn(snapshot::keep_written(
            path,
            fixed.snapshot_debounce,
            published.cache.clone(),
            published.commits.clone(),
        )));
    }
    if let Some(file) = config_file {
        let watch = reload::watch_config(file, fixed.clone(), shared.clone());
        tasks.push(tokio::spawn(watch));
    }
    tasks
}

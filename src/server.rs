//! The sidecar assembled: store, change API, flag files and configuration reload, started on a
//! listener the caller binds (so that tests run the real server on port 0) and stopped by a future.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::admin;
use crate::api::{self, AppState};
use crate::changes::{Author, Changes};
use crate::config::{Config, Fixed, Live};
use crate::delivery::{DeliveryMetrics, Dispatcher};
use crate::envdoc;
use crate::flagfiles::FlagFiles;
use crate::metrics::{self, Metrics};
use crate::reload::{ConfigWatch, LoadedFile, ReloadTiming};
use crate::store::{Store, StoreError, StoreOptions, UnusableFile};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot sync environments from configuration: {0}")]
    Sync(String),
    #[error(transparent)]
    Delivery(#[from] crate::delivery::DeliveryError),
    #[error("serving HTTP failed: {0}")]
    Http(#[from] std::io::Error),
}

/// Opens the store named by the configuration (blocking work, off the runtime's workers).
pub async fn open_store(config: &Fixed, unusable_file: UnusableFile) -> Result<Store, StoreError> {
    let path = config.storage.path.clone();
    let options = StoreOptions {
        cache_size_bytes: config.storage.cache_size_mib << 20,
        max_batch: config.storage.max_batch,
        unusable_file,
        ..StoreOptions::default()
    };
    tokio::task::spawn_blocking(move || Store::open(&path, options))
        .await
        .map_err(|e| StoreError::new(format!("open task failed: {e}")))?
}

/// Runs the sidecar until `shutdown` completes, then stops taking changes, finishes what is in
/// flight and closes the database. An empty or damaged database file is refused.
pub async fn run(
    listener: TcpListener,
    config: Config,
    config_file: Option<LoadedFile>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    run_with(
        listener,
        config,
        config_file,
        UnusableFile::Refuse,
        shutdown,
    )
    .await
}

/// As [`run`], choosing what happens to an empty or damaged database file
/// (`serve --new-database` moves it aside and starts a new one).
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    config_file: Option<LoadedFile>,
    unusable_file: UnusableFile,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let store = open_store(&config.fixed, unusable_file).await?;
    let config = Arc::new(ArcSwap::from_pointee(config));
    sync_environments(&store, &config.load_full())
        .await
        .map_err(ServeError::Sync)?;
    let mut registry = metrics::registry();
    let delivery_metrics = DeliveryMetrics::register(metrics::subsystem(&mut registry));
    // `flagpost_store_commit_duration_seconds`: what every acknowledgement waits for.
    metrics::register_commit_latency(&mut registry, store.commit_latency());
    let metrics = Metrics::new(registry);
    let state = Arc::new(AppState {
        store: store.clone(),
        config: config.clone(),
        metrics: metrics.clone(),
        documents: Default::default(),
        upstream: Default::default(),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut background = JoinSet::new();
    let initial = config.load_full();
    let (delivery_config, delivery_config_rx) = watch::channel(initial.clone());
    let dispatcher = Arc::new(
        Dispatcher::start(
            store.clone(),
            delivery_config_rx,
            initial.fixed.delivery.clone(),
            Arc::new(delivery_metrics),
        )
        .await?,
    );
    spawn_background(
        &mut background,
        &state,
        config_file,
        delivery_config,
        &stop_rx,
    );

    tracing::info!(listen = %listener.local_addr()?, "flagpost serving");
    crate::process::notify_ready();
    let app = api::router(state)
        .nest("/api/v1/admin", admin::router(dispatcher.clone()))
        .layer(axum::middleware::map_response(api::error::json_errors));
    let served = crate::serve::serve(listener, app, &initial.fixed.server, shutdown).await;
    let _ = stop_tx.send(true);
    while background.join_next().await.is_some() {}
    dispatcher.shutdown().await;
    drop(dispatcher);
    store.shutdown().await;
    // The last handle closes the file, which flushes and syncs it: blocking work, so it is
    // dropped on the blocking pool, and awaited so that the file is closed before `run` returns.
    let _ = tokio::task::spawn_blocking(move || drop(store)).await;
    tracing::info!("flagpost stopped; database closed");
    served.map_err(ServeError::Http)
}

/// The flag files' watch, the configuration's, idempotency pruning, and one document fetcher per
/// relay source with an upstream at start (a source given one by a reload is fetched from the next
/// start); each ends once `stop` turns true.
fn spawn_background(
    background: &mut JoinSet<()>,
    state: &Arc<AppState>,
    config_file: Option<LoadedFile>,
    delivery_config: watch::Sender<Arc<Config>>,
    stop: &watch::Receiver<bool>,
) {
    let initial = state.config.load_full();
    if initial.fixed.flag_files.enabled {
        let files = FlagFiles::new(
            initial.fixed.flag_files.dir.clone(),
            state.store.clone(),
            state.config.clone(),
            state.metrics.clone(),
        );
        background.spawn(files.run(stop.clone()));
    }
    if let Some(file) = config_file.filter(|_| initial.fixed.reload.enabled) {
        let watch = watch_config(file, &initial.fixed, &state.metrics);
        let reload = reload_config(watch, state.clone(), delivery_config, stop.clone());
        background.spawn(reload);
    }
    background.spawn(prune_idempotency(state.clone(), stop.clone()));
    for (name, _) in initial
        .relay_sources
        .iter()
        .filter(|(_, s)| s.upstream.is_some())
    {
        background.spawn(envdoc::upstream::fetch_loop(
            name.clone(),
            state.store.clone(),
            state.config.clone(),
            state.upstream.clone(),
            stop.clone(),
        ));
    }
}

/// Brings environment records in line with configuration (a new environment gets each feature's
/// default state, with its events).
async fn sync_environments(store: &Store, config: &Arc<Config>) -> Result<(), String> {
    let config = config.clone();
    let author = Author::system("configuration");
    store
        .write(move |tables| {
            let now = OffsetDateTime::now_utc();
            Changes::new(tables, &config, &author, now).sync_environments()
        })
        .await
        .map_err(|e| e.to_string())
}

fn watch_config(file: LoadedFile, running: &Fixed, metrics: &Metrics) -> ConfigWatch<Config> {
    let timing = ReloadTiming {
        debounce: running.reload.debounce,
        poll_every: running.reload.poll_every,
    };
    ConfigWatch::start(file, running.clone(), timing, metrics.reloads().clone())
}

/// Swaps in the live part of each valid new configuration (the fixed part keeps its running
/// values), hands it to the dispatcher, and brings environments in line with it.
async fn reload_config(
    mut watch: ConfigWatch<Config>,
    state: Arc<AppState>,
    lanes: watch::Sender<Arc<Config>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let live: Live = tokio::select! {
            live = watch.next_live() => live,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let next = Arc::new(Config {
            fixed: state.config.load().fixed.clone(),
            live,
        });
        state.config.store(next.clone());
        // The dispatcher starts, stops and reconfigures lanes from this.
        lanes.send_replace(next.clone());
        match sync_environments(&state.store, &next).await {
            Ok(()) => {
                state.metrics.reloads().applied();
                tracing::info!("configuration reloaded");
            }
            Err(error) => tracing::error!(%error, "environments not synced after reload"),
        }
    }
}

/// Drops stored `Idempotency-Key` answers past their retention, hourly.
async fn prune_idempotency(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let retention = state.config.load().idempotency_retention;
        match api::request::prune_idempotency(&state, retention.as_millis() as u64).await {
            Ok(pruned) => tracing::debug!(pruned, "idempotency answers pruned"),
            Err(error) => tracing::warn!(%error, "idempotency answers not pruned"),
        }
    }
}

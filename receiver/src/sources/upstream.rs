//! An upstream Flagsmith as a source: each environment that names one has its document fetched
//! (`GET {url}/api/v1/environment-document/` with the server key) at start, after each web hook
//! for it, and on its poll interval.
//!
//! - Coalesced: one fetch in flight and one queued per environment, however many web hooks come
//!   (a [`Notify`] holds at most one permit).
//! - A failed fetch keeps the last good document: it is counted, logged with its cause, and
//!   retried with backoff (1 s doubling, up to the poll interval); its age shows in `/readyz` and
//!   `/metrics`.
//! - No conditional requests: Flagsmith answers `If-Modified-Since`, but from an environment it
//!   caches for 60 s, so it answers `304` for a document that has changed (see
//!   `flagsmith-v2.265.0-live/probes.json`). A full fetch is the only fresh one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use tokio::sync::Notify;

use super::{SourceClient, source_client};
use crate::app::Shared;
use crate::clock::{now_micros, now_unix};
use crate::config::Upstream;
use crate::documents::{Outcome, UpstreamDocument};
use crate::error::UpstreamError;

/// The largest document read: a bigger answer is refused, the last good document kept.
pub const MAX_DOCUMENT_BYTES: usize = 32 * 1024 * 1024;

/// The first retry after a failed fetch; it doubles up to the poll interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// How often the set of environments with an upstream is compared with the configuration.
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);

/// What the receiver knows about one environment's fetches (shown by `/readyz`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FetchStatus {
    /// Fetches that failed since the last good one.
    pub failures_in_a_row: u64,
    /// The last failure's cause.
    pub last_error: Option<String>,
    /// Good fetches so far (a fetch whose document the cache already had counts too).
    pub fetched: u64,
}

/// The fetch workers' shared state: one trigger and one status per environment.
#[derive(Default)]
pub struct Upstreams {
    client: UpstreamClient,
    /// Read by every web hook on both request threads, changed only when a worker starts or
    /// ends: swapped whole rather than locked, so that a web hook writes nothing here.
    triggers: ArcSwap<HashMap<u64, Arc<Notify>>>,
    status: Mutex<HashMap<u64, FetchStatus>>,
}

impl Upstreams {
    /// A web hook was taken: fetch `env`'s document again (every upstream environment's when the
    /// web hook names none, as an audit-log event does).
    pub fn webhook_taken(&self, env: Option<u64>) {
        let triggers = self.triggers.load();
        match env {
            Some(env) => {
                if let Some(trigger) = triggers.get(&env) {
                    trigger.notify_one();
                }
            }
            None => triggers.values().for_each(|trigger| trigger.notify_one()),
        }
    }

    pub fn status(&self) -> HashMap<u64, FetchStatus> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }

    fn record(&self, env: u64, result: &Result<Outcome, UpstreamError>) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let status = status.entry(env).or_default();
        match result {
            Ok(_) => {
                status.failures_in_a_row = 0;
                status.fetched += 1;
            }
            Err(error) => {
                status.failures_in_a_row += 1;
                status.last_error = Some(error.to_string());
            }
        }
    }
}

/// Starts a fetch worker for each environment with an upstream, now and after each reload. The
/// workers end when this task ends (their set is dropped with it), so they never outlive `run`.
pub async fn supervise(shared: Arc<Shared>) {
    let mut workers = tokio::task::JoinSet::new();
    loop {
        // Reap the workers that ended (their environment lost its upstream).
        while workers.try_join_next().is_some() {}
        let configured: Vec<u64> = shared.live.load().upstreams.keys().copied().collect();
        for env in configured {
            let triggers = &shared.upstreams.triggers;
            if triggers.load().contains_key(&env) {
                continue;
            }
            let trigger = Arc::new(Notify::new());
            triggers.rcu(|current| {
                let mut next = HashMap::clone(current);
                next.insert(env, trigger.clone());
                next
            });
            workers.spawn(fetch_loop(shared.clone(), env, trigger));
        }
        tokio::time::sleep(SUPERVISE_EVERY).await;
    }
}

/// Fetches `env`'s document now, then on each trigger and poll, until the configuration drops its
/// upstream.
async fn fetch_loop(shared: Arc<Shared>, env: u64, trigger: Arc<Notify>) {
    let mut retry = FIRST_RETRY;
    loop {
        let Some(settings) = shared.live.load().upstreams.get(&env).cloned() else {
            shared.upstreams.triggers.rcu(|current| {
                let mut next = HashMap::clone(current);
                next.remove(&env);
                next
            });
            return;
        };
        let result = fetch_and_load(&shared, env, &settings).await;
        shared.upstreams.record(env, &result);
        let wait = match &result {
            Ok(outcome) => {
                shared.metrics.upstream_fetch(env, outcome_label(*outcome));
                retry = FIRST_RETRY;
                settings.poll_interval
            }
            Err(error) => {
                shared.metrics.upstream_fetch(env, error.label());
                tracing::warn!(env, %error, "upstream document refused; the last good one stays");
                let wait = retry.min(settings.poll_interval);
                retry = (retry * 2).min(settings.poll_interval);
                wait
            }
        };
        // A trigger that came during the fetch is kept by `Notify`: the next fetch starts at once.
        let _ = tokio::time::timeout(wait, trigger.notified()).await;
    }
}

fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Applied => "loaded",
        Outcome::Superseded => "superseded",
    }
}

async fn fetch_and_load(
    shared: &Shared,
    env: u64,
    settings: &Upstream,
) -> Result<Outcome, UpstreamError> {
    let began = now_micros();
    let raw = shared.upstreams.client.fetch_document(settings).await?;
    let doc = UpstreamDocument::parse(raw, env, began, now_unix())?;
    Ok(shared.writer.load_upstream(doc).await?)
}

/// An HTTP(S) client for an upstream Flagsmith.
#[derive(Clone)]
pub struct UpstreamClient {
    client: SourceClient<Full<Bytes>>,
}

impl Default for UpstreamClient {
    fn default() -> Self {
        UpstreamClient {
            client: source_client(),
        }
    }
}

impl UpstreamClient {
    /// Fetches the document's bytes (checked by the caller).
    pub async fn fetch_document(&self, settings: &Upstream) -> Result<Bytes, UpstreamError> {
        let url = format!("{}/api/v1/environment-document/", settings.url);
        let request = self.request(http::Method::GET, &url, settings, Bytes::new())?;
        let fetch = async {
            let response = self.client.request(request).await.map_err(transport)?;
            if !response.status().is_success() {
                return Err(UpstreamError::Status(response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|error| {
                    if error.is::<http_body_util::LengthLimitError>() {
                        UpstreamError::TooLarge(MAX_DOCUMENT_BYTES)
                    } else {
                        UpstreamError::Transport(error.to_string())
                    }
                })?;
            Ok(body.to_bytes())
        };
        tokio::time::timeout(settings.timeout, fetch)
            .await
            .map_err(|_| UpstreamError::Timeout(settings.timeout))?
    }

    /// Forwards an SDK's flag analytics to the upstream, as the SDK sent them.
    pub async fn forward_analytics(
        &self,
        settings: &Upstream,
        body: Bytes,
    ) -> Result<(), UpstreamError> {
        let url = format!("{}/api/v1/analytics/flags/", settings.url);
        let request = self.request(http::Method::POST, &url, settings, body)?;
        let send = async {
            let response = self.client.request(request).await.map_err(transport)?;
            match response.status() {
                status if status.is_success() => Ok(()),
                status => Err(UpstreamError::Status(status)),
            }
        };
        tokio::time::timeout(settings.timeout, send)
            .await
            .map_err(|_| UpstreamError::Timeout(settings.timeout))?
    }

    fn request(
        &self,
        method: http::Method,
        url: &str,
        settings: &Upstream,
        body: Bytes,
    ) -> Result<http::Request<Full<Bytes>>, UpstreamError> {
        let mut key = http::HeaderValue::try_from(settings.server_key.0.as_str())
            .map_err(|_| UpstreamError::Transport("the server key cannot go in a header".into()))?;
        // Kept out of any debug output of the request.
        key.set_sensitive(true);
        http::Request::builder()
            .method(method)
            .uri(url)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-environment-key", key)
            .body(Full::new(body))
            .map_err(|e| UpstreamError::Transport(e.to_string()))
    }
}

fn transport(error: hyper_util::client::legacy::Error) -> UpstreamError {
    UpstreamError::Transport(error.to_string())
}

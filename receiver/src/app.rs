//! What the handlers and background tasks share, and the tasks that keep the cache current:
//! bootstrap of configured environments and pruning of remembered request ids.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderMap;

use crate::clock::now_unix;
use crate::config::Live;
use crate::documents::FlagCache;
use crate::error::{BootstrapError, WriteError};
use crate::intake::recent::RecentWebhooks;
use crate::intake::{IntakeOutcome, Writer, request};
use crate::metrics::Metrics;
use crate::sources::DocumentClient;
use crate::sources::jetstream::JetStreamStatus;
use crate::sources::upstream::Upstreams;
use crate::streams::StreamHub;

/// How often remembered request ids older than the retention are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub struct Shared {
    pub live: ArcSwap<Live>,
    pub cache: Arc<ArcSwap<FlagCache>>,
    pub writer: Writer,
    pub metrics: Metrics,
    pub documents: DocumentClient,
    pub upstreams: Upstreams,
    /// The latest web hooks and why any were refused, for the status page.
    pub recent_webhooks: RecentWebhooks,
    /// Environments whose document is being read again from flagpost after an event, each with
    /// whether another read is wanted when this one ends (an event taken during a read may be
    /// newer than the document it brings).
    pub rereading: Mutex<HashMap<u64, bool>>,
    /// The change streams' notices, limits and counts.
    pub streams: Arc<StreamHub>,
    /// The JetStream intake's connection and lag, when `[jetstream]` is configured.
    pub jetstream: Option<Arc<JetStreamStatus>>,
    /// The cache file's id ([`crate::storage::Storage::file_id`]): stream positions and OFREP
    /// tags name it, as revisions count within one file.
    pub file_id: u64,
}

impl Shared {
    /// Verifies, reads and applies one web hook whose body is read, whichever way it came (HTTP,
    /// JetStream), answering after the durable commit. `signed_at_or_near` is the time its
    /// `webhook-timestamp` must be within the tolerance of: now for HTTP, the time the stream
    /// stored the message for JetStream (a receiver catching up takes old messages). `about` is
    /// set to its environment and feature once it is verified, for the status page.
    pub async fn take_verified(
        self: &Arc<Self>,
        headers: &HeaderMap,
        body: &[u8],
        signed_at_or_near: i64,
        about: &mut (Option<u64>, Option<String>),
    ) -> Result<IntakeOutcome, WriteError> {
        // A guard, not a count of the shared settings: both request threads take every web hook
        // through here, and it is dropped before the commit is awaited.
        let accepted = {
            let live = self.live.load();
            if body.len() > live.max_body_bytes {
                return Err(WriteError::TooLarge {
                    limit: live.max_body_bytes,
                });
            }
            let verified = request::verify(headers, body, &live, signed_at_or_near)?;
            request::read(headers, body, verified)?
        };
        let env = accepted.change.as_ref().map(|change| change.env);
        if let Some(change) = &accepted.change {
            *about = (Some(change.env), Some(change.meta.name.clone()));
        }
        let document_wanted = accepted.document_wanted;
        let outcome = self
            .writer
            .intake(accepted.request_id, accepted.change)
            .await?;
        // Web hooks are triggers too: an upstream document is fetched again after each.
        self.upstreams.webhook_taken(env);
        // An event flagpost's document must bring (segment rules, multivariate options).
        if let Some(env) = document_wanted {
            self.document_wanted(env);
        }
        Ok(outcome)
    }

    /// Configured environments that have never had a document loaded.
    pub fn environments_waiting(&self) -> Vec<u64> {
        let cache = self.cache.load();
        self.live
            .load()
            .environments
            .iter()
            .copied()
            .filter(|id| cache.env(*id).is_none_or(|env| env.loaded_at.is_none()))
            .collect()
    }

    /// Configured environments whose documents come from flagpost and were never loaded (an
    /// environment with an upstream Flagsmith gets its document from there).
    fn flagpost_environments_waiting(&self) -> Vec<u64> {
        let live = self.live.load();
        let mut waiting = self.environments_waiting();
        waiting.retain(|env| !live.upstreams.contains_key(env));
        waiting
    }

    /// Fetches one environment's document and applies it; returns its `last_sequence`.
    pub async fn load_environment(&self, env: u64) -> Result<u64, BootstrapError> {
        let live = self.live.load_full();
        let settings = live
            .bootstrap
            .as_ref()
            .ok_or(BootstrapError::NotConfigured)?;
        if !live.environments.contains(&env) {
            return Err(BootstrapError::NotConfiguredEnvironment(env));
        }
        let result = async {
            let key = settings
                .server_keys
                .get(&env)
                .ok_or(BootstrapError::NoServerKey(env))?;
            let fetched = self.documents.fetch(settings, env, key).await?;
            let last_sequence = fetched.last_sequence;
            self.writer.load_flagpost_document(fetched).await?;
            Ok(last_sequence)
        }
        .await;
        match &result {
            Ok(seq) => {
                self.metrics.bootstrap("loaded");
                tracing::info!(env, last_sequence = seq, "environment document loaded");
            }
            Err(error) => {
                self.metrics.bootstrap("failed");
                tracing::warn!(env, %error, "environment document not loaded");
            }
        }
        result
    }

    /// An event made `env`'s document stale (a segment's rules, multivariate options): read it
    /// again from flagpost, without waiting for any poll. Coalesced: one read at a time per
    /// environment and at most one more after it, however many events come; a read that fails
    /// is retried every `bootstrap.retry_secs` until one succeeds.
    pub fn document_wanted(self: &Arc<Self>, env: u64) {
        let live = self.live.load();
        if live.bootstrap.is_none() || live.upstreams.contains_key(&env) {
            return;
        }
        {
            let mut rereading = self.rereading.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(again) = rereading.get_mut(&env) {
                *again = true;
                return;
            }
            rereading.insert(env, false);
        }
        let shared = self.clone();
        tokio::spawn(async move {
            loop {
                let retry = match shared.load_environment(env).await {
                    Ok(_) => false,
                    Err(error) => error.is_transient(),
                };
                if retry {
                    let wait = shared.live.load().bootstrap.as_ref().map(|b| b.retry);
                    tokio::time::sleep(wait.unwrap_or(Duration::from_secs(5))).await;
                    continue;
                }
                let mut rereading = shared.rereading.lock().unwrap_or_else(|e| e.into_inner());
                if rereading.insert(env, false) != Some(true) {
                    rereading.remove(&env);
                    return;
                }
            }
        });
    }

    /// Loads every configured environment that has never been loaded, retrying until each has;
    /// environments added by a reload are picked up on the next round.
    pub async fn bootstrap_loop(self: Arc<Self>) {
        loop {
            let retry = match &self.live.load().bootstrap {
                Some(settings) => settings.retry,
                None => Duration::from_secs(5),
            };
            if self.live.load().bootstrap.is_some() {
                for env in self.flagpost_environments_waiting() {
                    let _ = self.load_environment(env).await;
                }
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Forgets remembered request ids older than the retention, now and then.
    pub async fn prune_loop(self: Arc<Self>) {
        loop {
            let retention = self.live.load().dedupe_retention_secs;
            let before = now_unix().saturating_sub(retention as i64);
            match self.writer.forget_requests_before(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(forgotten = n, "old request ids forgotten"),
                Err(error) => tracing::warn!(%error, "cannot prune request ids"),
            }
            tokio::time::sleep(PRUNE_EVERY).await;
        }
    }
}

//! A relayed environment's document, fetched from its upstream Flagsmith (`[[relay]]` `upstream`)
//! after each relayed web hook and on a poll, checked, and stored through the store.
//!
//! Fetches are coalesced per source: one in flight and one queued. A web hook relayed while a
//! fetch runs queues one more (it may have been saved after the fetch read the document); any
//! number of them queue only that one. An answer that is not a Flagsmith environment document is
//! refused, logged, and the last good document stays.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HeaderValue, USER_AGENT};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{Notify, watch};

use crate::config::{Config, Upstream};
use crate::error::{StoreError, WriteError};
use crate::store::Store;
use crate::store::upstream::{UpstreamDocument, committed_sequence, store_upstream_document};

/// The largest document accepted (Flagsmith's for a large project are a few MiB).
const MAX_DOCUMENT_BYTES: usize = 64 << 20;
/// How long one fetch may take, connect to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("no answer: {0}")]
    Unreachable(String),
    #[error("no complete answer within {0:?}")]
    TimedOut(Duration),
    #[error("answered {0}, not 200")]
    Status(u16),
    #[error("not a Flagsmith environment document: {0}")]
    NotADocument(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Wakes a source's fetcher: one per relay source name, made by whichever side asks first.
#[derive(Clone, Default)]
pub struct UpstreamTriggers {
    triggers: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
}

impl UpstreamTriggers {
    fn trigger(&self, source: &str) -> Arc<Notify> {
        let mut triggers = self.triggers.lock().expect("upstream triggers lock");
        triggers.entry(source.to_owned()).or_default().clone()
    }

    /// Asks for a fetch of `source`'s document: at most one waits behind the one in flight.
    pub fn wake(&self, source: &str) {
        self.trigger(source).notify_one();
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

fn http_client() -> Result<HttpClient, UpstreamError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(FETCH_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| UpstreamError::Client(e.to_string()))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// Fetches `source`'s upstream document now, after each [`UpstreamTriggers::wake`], and every
/// `poll_every`, until `stop`. The source is looked up in the live configuration each time, so
/// a reload's new URL, key or interval applies from the next fetch.
pub async fn fetch_loop(
    source: String,
    store: Store,
    config: Arc<ArcSwap<Config>>,
    triggers: UpstreamTriggers,
    mut stop: watch::Receiver<bool>,
) {
    let wake = triggers.trigger(&source);
    let client = match http_client() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%source, %error, "upstream documents are not fetched");
            return;
        }
    };
    loop {
        let live = config.load_full();
        let target = live
            .relay_sources
            .get(&source)
            .and_then(|s| Some((s.environment, s.upstream.clone()?)));
        let poll_every = match target {
            Some((environment, upstream)) => {
                match fetch_once(&client, &store, environment, &upstream).await {
                    Ok(true) => tracing::info!(%source, environment, "upstream document stored"),
                    Ok(false) => {
                        tracing::debug!(%source, environment, "upstream document unchanged")
                    }
                    Err(error) => tracing::warn!(
                        %source, %error, "upstream document refused; the last good one stays"
                    ),
                }
                upstream.poll_every
            }
            None => Duration::from_secs(60),
        };
        tokio::select! {
            _ = tokio::time::sleep(poll_every) => {}
            _ = wake.notified() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// One fetch: stamped with the sequence committed before it started, checked, and stored unless
/// the stored one is newer. Returns whether it was stored.
pub async fn fetch_once(
    client: &HttpClient,
    store: &Store,
    environment: u64,
    upstream: &Upstream,
) -> Result<bool, UpstreamError> {
    let sequence = store.read(committed_sequence).await?;
    let bytes = tokio::time::timeout(FETCH_TIMEOUT, get(client, upstream))
        .await
        .map_err(|_| UpstreamError::TimedOut(FETCH_TIMEOUT))??;
    let updated_at_us = check_document(&bytes)?;
    let document = UpstreamDocument {
        sequence,
        updated_at_us,
        bytes: bytes.to_vec(),
    };
    let stored = store
        .write_txn(move |txn| store_upstream_document(txn, environment, &document))
        .await?;
    Ok(stored)
}

async fn get(client: &HttpClient, upstream: &Upstream) -> Result<Bytes, UpstreamError> {
    let url = format!("{}environment-document/", upstream.url);
    let key = HeaderValue::from_str(&upstream.server_key)
        .map_err(|_| UpstreamError::Client("the server key is not a valid header value".into()))?;
    let request = hyper::Request::get(url)
        .header("x-environment-key", key)
        .header(USER_AGENT, concat!("flagpost/", env!("CARGO_PKG_VERSION")))
        .body(Empty::new())
        .map_err(|e| UpstreamError::Client(e.to_string()))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
    if response.status() != hyper::StatusCode::OK {
        return Err(UpstreamError::Status(response.status().as_u16()));
    }
    let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES);
    let collected = body
        .collect()
        .await
        .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
    Ok(collected.to_bytes())
}

/// Checks that `bytes` is a Flagsmith environment document, as far as SDKs and receivers read
/// it, and returns its `updated_at` in unix µs.
pub fn check_document(bytes: &[u8]) -> Result<i64, UpstreamError> {
    let refuse = |what: &str| UpstreamError::NotADocument(what.to_owned());
    let document: Value =
        serde_json::from_slice(bytes).map_err(|e| UpstreamError::NotADocument(e.to_string()))?;
    let object = document
        .as_object()
        .ok_or_else(|| refuse("not a JSON object"))?;
    let has = |field: &str, check: fn(&Value) -> bool| object.get(field).is_some_and(check);
    if !has("id", Value::is_u64) || !has("api_key", Value::is_string) {
        return Err(refuse("no id or api_key"));
    }
    if !has("feature_states", Value::is_array) || !has("identity_overrides", Value::is_array) {
        return Err(refuse("no feature_states or identity_overrides list"));
    }
    if !object["project"]["segments"].is_array() {
        return Err(refuse("no project.segments list"));
    }
    if object.contains_key("flagpost") {
        return Err(refuse("it already has the flagpost field"));
    }
    let updated_at = object["updated_at"]
        .as_str()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .ok_or_else(|| refuse("no RFC 3339 updated_at"))?;
    Ok((updated_at.unix_timestamp_nanos() / 1000) as i64)
}

//! Bootstrap: loading an environment's full document from flagpost's change API.
//!
//! `GET {flagpost_url}/api/v1/environments/{id}/document` with `Authorization: Bearer <token>`.
//! The writer applies the document as of its `last_sequence`, so webhooks that arrived meanwhile
//! with a greater sequence stay (see [`crate::cache::FlagCache::apply_document`]).

use std::time::Duration;

use bytes::Bytes;
use flagpost::wire::FlagValue;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::cache::{Document, DocumentFeature, FeatureMeta, FlagState, SegmentState};
use crate::config::Bootstrap;

/// The largest document read; a bigger answer is refused rather than exhausting memory.
const MAX_DOCUMENT_BYTES: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("bootstrap is not configured (bootstrap.flagpost_url is empty)")]
    NotConfigured,
    #[error("environment {0} is not in the configuration")]
    NotConfiguredEnvironment(u64),
    #[error("cannot reach flagpost: {0}")]
    Transport(String),
    #[error("flagpost answered {0}")]
    Status(http::StatusCode),
    #[error("flagpost did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the document is not valid: {0}")]
    Invalid(String),
    #[error("{0}")]
    Storage(#[from] crate::storage::StorageError),
}

#[derive(Deserialize)]
struct RawDocument {
    environment: RawEnvironment,
    last_sequence: u64,
    #[serde(default)]
    features: Vec<RawFeatureState>,
    #[serde(default)]
    deleted_feature_ids: Vec<u64>,
}

#[derive(Deserialize)]
struct RawEnvironment {
    id: u64,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct RawFeatureState {
    feature: RawFeature,
    enabled: bool,
    #[serde(default)]
    value: Option<FlagValue>,
    #[serde(default)]
    identity_overrides: Vec<RawIdentityOverride>,
    #[serde(default)]
    segment_overrides: Vec<RawSegmentOverride>,
}

#[derive(Deserialize)]
struct RawFeature {
    id: u64,
    name: String,
    #[serde(default, rename = "type")]
    feature_type: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    initial_value: Option<FlagValue>,
    #[serde(default)]
    default_enabled: Option<bool>,
    #[serde(default)]
    created_date: Option<String>,
}

#[derive(Deserialize)]
struct RawIdentityOverride {
    identifier: String,
    enabled: bool,
    #[serde(default)]
    value: Option<FlagValue>,
}

#[derive(Deserialize)]
struct RawSegmentOverride {
    segment: RawSegment,
    #[serde(default)]
    priority: Option<i64>,
    enabled: bool,
    #[serde(default)]
    value: Option<FlagValue>,
}

#[derive(Deserialize)]
struct RawSegment {
    id: u64,
    #[serde(default)]
    name: Option<String>,
}

/// Reads a document body; `expected_env` is the environment it was asked for.
pub fn parse_document(body: &[u8], expected_env: u64) -> Result<Document, BootstrapError> {
    let raw: RawDocument =
        serde_json::from_slice(body).map_err(|e| BootstrapError::Invalid(e.to_string()))?;
    if raw.environment.id != expected_env {
        return Err(BootstrapError::Invalid(format!(
            "asked for environment {expected_env}, got environment {}",
            raw.environment.id
        )));
    }
    let features = raw
        .features
        .into_iter()
        .map(|state| DocumentFeature {
            id: state.feature.id,
            meta: FeatureMeta {
                name: state.feature.name,
                feature_type: state.feature.feature_type,
                description: state.feature.description,
                initial_value: state.feature.initial_value,
                default_enabled: state.feature.default_enabled,
                created_date: state.feature.created_date,
                order: Default::default(),
            },
            default: FlagState {
                enabled: state.enabled,
                value: state.value,
            },
            identities: state
                .identity_overrides
                .into_iter()
                .map(|o| {
                    (
                        o.identifier,
                        FlagState {
                            enabled: o.enabled,
                            value: o.value,
                        },
                    )
                })
                .collect(),
            segments: state
                .segment_overrides
                .into_iter()
                .map(|o| {
                    (
                        o.segment.id,
                        SegmentState {
                            enabled: o.enabled,
                            value: o.value,
                            priority: o.priority,
                            name: o.segment.name,
                        },
                    )
                })
                .collect(),
        })
        .collect();
    Ok(Document {
        env: raw.environment.id,
        env_name: raw.environment.name,
        last_sequence: raw.last_sequence,
        features,
        deleted_feature_ids: raw.deleted_feature_ids,
    })
}

/// An HTTP(S) client for flagpost's change API.
#[derive(Clone)]
pub struct DocumentClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Default for DocumentClient {
    fn default() -> Self {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        DocumentClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

impl DocumentClient {
    /// Fetches and parses one environment's document.
    pub async fn fetch(&self, settings: &Bootstrap, env: u64) -> Result<Document, BootstrapError> {
        let url = format!(
            "{}/api/v1/environments/{env}/document",
            settings.flagpost_url
        );
        let mut request = http::Request::get(url).header(http::header::ACCEPT, "application/json");
        if let Some(token) = &settings.token {
            let mut value = http::HeaderValue::try_from(format!("Bearer {}", token.0))
                .map_err(|_| BootstrapError::Transport("the token cannot go in a header".into()))?;
            // Kept out of any debug output of the request.
            value.set_sensitive(true);
            request = request.header(http::header::AUTHORIZATION, value);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| BootstrapError::Transport(e.to_string()))?;
        let fetch = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| BootstrapError::Transport(e.to_string()))?;
            if !response.status().is_success() {
                return Err(BootstrapError::Status(response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|e| BootstrapError::Transport(e.to_string()))?;
            Ok(body.to_bytes())
        };
        let body = tokio::time::timeout(settings.timeout, fetch)
            .await
            .map_err(|_| BootstrapError::Timeout(settings.timeout))??;
        parse_document(&body, env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_shape_parses() {
        let body = br#"{"environment": {"id": 1, "name": "Development", "project": {"id": 1, "name": "Shop"}}, "last_sequence": 123, "features": [{"feature": {"id": 7, "name": "dark_mode", "type": "STANDARD", "description": null, "initial_value": null, "default_enabled": false, "created_date": "2026-01-01T00:00:00Z"}, "enabled": true, "value": "v2", "identity_overrides": [{"identifier": "user-42", "enabled": false, "value": "x"}], "segment_overrides": [{"segment": {"id": 9, "name": "beta"}, "priority": 0, "enabled": true, "value": "seg"}]}], "deleted_feature_ids": [3, 4]}"#;
        let doc = parse_document(body, 1).unwrap();
        assert_eq!(doc.last_sequence, 123);
        assert_eq!(doc.deleted_feature_ids, vec![3, 4]);
        assert_eq!(doc.features[0].identities[0].0, "user-42");
        assert_eq!(doc.features[0].segments[0].1.priority, Some(0));
        assert!(matches!(
            parse_document(body, 2),
            Err(BootstrapError::Invalid(_))
        ));
    }
}

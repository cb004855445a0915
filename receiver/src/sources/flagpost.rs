//! Bootstrap: loading an environment's full document from flagpost's change API.
//!
//! `GET {flagpost_url}/api/v1/environments/{id}/document` with `Authorization: Bearer <token>`.
//! The document is read with flagpost's own types ([`flagpost::document`]): one contract, written
//! and read by the same code. The writer applies it as of its `last_sequence`, so webhooks that
//! arrived meanwhile with a greater sequence stay (see
//! [`crate::documents::FlagCache::apply_document`]). flagpost names, beside the document, the
//! database its `last_sequence` counts in (`"instance"`, as in event ids), so that a document of
//! a database that started again is followed, and one of a database left behind is dropped
//! ([`crate::documents::sender`]).

use bytes::Bytes;
use flagpost::document::EnvironmentDocument;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::Bootstrap;
use crate::error::BootstrapError;

/// The largest document read; a bigger answer is refused rather than exhausting memory.
const MAX_DOCUMENT_BYTES: usize = 1 << 30;

/// Reads a document body with flagpost's own types; `expected_env` is the environment it was
/// asked for.
pub fn parse_document(
    body: &[u8],
    expected_env: u64,
) -> Result<EnvironmentDocument, BootstrapError> {
    let doc: EnvironmentDocument =
        serde_json::from_slice(body).map_err(|e| BootstrapError::Invalid(e.to_string()))?;
    if doc.environment.id != expected_env {
        return Err(BootstrapError::Invalid(format!(
            "asked for environment {expected_env}, got environment {}",
            doc.environment.id
        )));
    }
    Ok(doc)
}

/// A document as flagpost serves it, with the database it was read from (`None` from a flagpost
/// that does not name it).
#[derive(Debug, Clone, PartialEq)]
pub struct FlagpostDocument {
    pub document: EnvironmentDocument,
    pub sender: Option<u64>,
}

/// The `"instance"` flagpost adds beside its document: 16 lower-case hex digits, the database
/// part of its event ids.
#[derive(serde::Deserialize)]
struct DocumentInstance {
    #[serde(default)]
    instance: Option<String>,
}

/// Reads a document body and the database it names; `expected_env` is the environment it was
/// asked for.
pub fn parse_flagpost_document(
    body: &[u8],
    expected_env: u64,
) -> Result<FlagpostDocument, BootstrapError> {
    let document = parse_document(body, expected_env)?;
    let named: DocumentInstance =
        serde_json::from_slice(body).map_err(|e| BootstrapError::Invalid(e.to_string()))?;
    let sender = match named.instance {
        None => None,
        Some(hex) => Some(
            Some(&hex)
                .filter(|hex| hex.len() == 16)
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                .ok_or_else(|| {
                    BootstrapError::Invalid(format!(
                        "instance {hex:?} is not 16 hex digits (a flagpost database id)"
                    ))
                })?,
        ),
    };
    Ok(FlagpostDocument { document, sender })
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
    pub async fn fetch(
        &self,
        settings: &Bootstrap,
        env: u64,
    ) -> Result<FlagpostDocument, BootstrapError> {
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
        parse_flagpost_document(&body, env)
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
        assert_eq!(doc.features[0].identity_overrides[0].identifier, "user-42");
        assert_eq!(doc.features[0].segment_overrides[0].priority, 0);
        assert!(matches!(
            parse_document(body, 2),
            Err(BootstrapError::Invalid(_))
        ));
        assert_eq!(parse_flagpost_document(body, 1).unwrap().sender, None);
    }

    #[test]
    fn the_database_a_document_names_is_read_and_a_bad_one_refused() {
        let named = |instance: &str| {
            format!(r#"{{"environment": {{"id": 1}}, "last_sequence": 5, "instance": {instance}}}"#)
        };
        let read = parse_flagpost_document(named("\"00000000000000ff\"").as_bytes(), 1).unwrap();
        assert_eq!((read.sender, read.document.last_sequence), (Some(255), 5));
        for bad in ["\"ff\"", "\"zz00000000000000\"", "17"] {
            assert!(
                matches!(
                    parse_flagpost_document(named(bad).as_bytes(), 1),
                    Err(BootstrapError::Invalid(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_document_written_by_flagpost_reads_back_equal() {
        use flagpost::document::{
            EnvironmentInfo, FeatureDocument, FeatureInfo, IdentityOverride, ProjectInfo,
            SegmentInfo, SegmentOverride,
        };
        use flagpost::wire::FlagValue;

        let feature = |id: u64, value: Option<FlagValue>| FeatureDocument {
            feature: FeatureInfo {
                id,
                name: format!("feature_{id}"),
                feature_type: "STANDARD".into(),
                description: Some("what it does".into()),
                initial_value: Some(FlagValue::Integer(3)),
                default_enabled: true,
                created_date: "2026-01-01T00:00:00.000000Z".into(),
            },
            enabled: id.is_multiple_of(2),
            value,
            identity_overrides: vec![IdentityOverride {
                identifier: "user-42".into(),
                enabled: false,
                value: Some(FlagValue::Bool(true)),
            }],
            segment_overrides: vec![SegmentOverride {
                segment: SegmentInfo {
                    id: 9,
                    name: String::new(),
                },
                priority: 2,
                enabled: true,
                value: Some(FlagValue::Float(0.5)),
            }],
        };
        let written = EnvironmentDocument {
            environment: EnvironmentInfo {
                id: 4,
                name: "Production".into(),
                project: ProjectInfo {
                    id: 2,
                    name: "Shop".into(),
                },
            },
            last_sequence: 77,
            features: vec![
                feature(7, Some(FlagValue::String("v".into()))),
                feature(8, None),
            ],
            deleted_feature_ids: vec![3],
        };
        let body = serde_json::to_vec(&written).unwrap();
        assert_eq!(parse_document(&body, 4).unwrap(), written);
    }
}

//! Bootstrap: loading an environment's document from flagpost.
//!
//! `GET {flagpost_url}/api/v1/environment-document/` with `X-Environment-Key` set to the
//! environment's server-side key in flagpost (`flagpost_server_key`): Flagsmith's environment
//! document, the one contract flagpost serves to Flagsmith's SDKs and to receivers alike, so
//! segment rules and multivariate options reach the receiver as they reach an SDK. flagpost adds
//! `"flagpost": {"last_sequence", "instance"}`: the document reflects every event of that
//! database up to `last_sequence`, so the writer applies it exactly as of that sequence
//! ([`crate::documents::flagpost`]), and a document of a database that started again is followed,
//! one of a database left behind dropped ([`crate::documents::sender`]).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};

use super::{SourceClient, source_client};
use crate::clock::{now_micros, now_unix};
use crate::config::{Bootstrap, Redacted};
use crate::documents::{FlagpostDocument, UpstreamDocument};
use crate::error::BootstrapError;

/// The largest document read; a bigger answer is refused rather than exhausting memory.
const MAX_DOCUMENT_BYTES: usize = 1 << 30;

/// Where a document stands in flagpost's event order: the `flagpost` field it adds.
#[derive(serde::Deserialize)]
struct Ordering {
    last_sequence: u64,
    /// 16 lower-case hex digits, the database part of flagpost's event ids.
    instance: String,
}

#[derive(serde::Deserialize)]
struct WithOrdering {
    flagpost: Option<Ordering>,
}

/// Reads a document body as flagpost serves it; `expected_env` is the environment it was asked
/// for, `began_micros` when its fetch began.
pub fn parse_flagpost_document(
    body: Bytes,
    expected_env: u64,
    began_micros: i64,
) -> Result<FlagpostDocument, BootstrapError> {
    let invalid = |e: &dyn std::fmt::Display| BootstrapError::Invalid(e.to_string());
    let named: WithOrdering = serde_json::from_slice(&body).map_err(|e| invalid(&e))?;
    let ordering = named.flagpost.ok_or_else(|| {
        BootstrapError::Invalid(
            "no \"flagpost\" field (last_sequence, instance): is bootstrap.flagpost_url a flagpost?"
                .into(),
        )
    })?;
    let sender = Some(&ordering.instance)
        .filter(|hex| hex.len() == 16)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or_else(|| {
            BootstrapError::Invalid(format!(
                "flagpost.instance {:?} is not 16 hex digits (a flagpost database id)",
                ordering.instance
            ))
        })?;
    let document = UpstreamDocument::parse(body, expected_env, began_micros, now_unix())
        .map_err(|e| invalid(&e))?;
    Ok(FlagpostDocument {
        document: Arc::new(document),
        last_sequence: ordering.last_sequence,
        sender,
    })
}

/// An HTTP(S) client for flagpost's change API.
#[derive(Clone)]
pub struct DocumentClient {
    client: SourceClient<Empty<Bytes>>,
}

impl Default for DocumentClient {
    fn default() -> Self {
        DocumentClient {
            client: source_client(),
        }
    }
}

impl DocumentClient {
    /// Fetches and parses one environment's document, read with its `server_key`.
    pub async fn fetch(
        &self,
        settings: &Bootstrap,
        env: u64,
        server_key: &Redacted,
    ) -> Result<FlagpostDocument, BootstrapError> {
        let url = format!("{}/api/v1/environment-document/", settings.flagpost_url);
        let secret = |text: String| {
            let mut value = http::HeaderValue::try_from(text)
                .map_err(|_| BootstrapError::Transport("a key cannot go in a header".into()))?;
            // Kept out of any debug output of the request.
            value.set_sensitive(true);
            Ok::<_, BootstrapError>(value)
        };
        let mut request = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .header("x-environment-key", secret(server_key.0.clone())?);
        if let Some(token) = &settings.token {
            request = request.header(
                http::header::AUTHORIZATION,
                secret(format!("Bearer {}", token.0))?,
            );
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| BootstrapError::Transport(e.to_string()))?;
        let began_micros = now_micros();
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
        parse_flagpost_document(body, env, began_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(ordering: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"id": 1, "api_key": "k", "name": "Development", "feature_states": [],
               "project": {{"id": 1, "name": "Shop", "segments": [],
                 "organisation": {{"id": 1, "name": "", "feature_analytics": false,
                   "persist_trait_data": true, "stop_serving_flags": false}},
                 "hide_disabled_flags": false}}{ordering}}}"#
        ))
    }

    #[test]
    fn the_ordering_flagpost_adds_is_read_and_a_bad_or_missing_one_refused() {
        let read = parse_flagpost_document(
            body(r#", "flagpost": {"last_sequence": 5, "instance": "00000000000000ff"}"#),
            1,
            0,
        )
        .unwrap();
        assert_eq!((read.sender, read.last_sequence), (255, 5));
        assert_eq!(read.document.parsed.env_id, 1);
        let ordering = r#", "flagpost": {"last_sequence": 5, "instance": "00000000000000ff"}"#;
        assert!(matches!(
            parse_flagpost_document(body(ordering), 2, 0),
            Err(BootstrapError::Invalid(_))
        ));
        for bad in [
            "",
            r#", "flagpost": {"last_sequence": 5, "instance": "ff"}"#,
            r#", "flagpost": {"last_sequence": 5, "instance": "zz00000000000000"}"#,
            r#", "flagpost": {"last_sequence": -1, "instance": "00000000000000ff"}"#,
        ] {
            assert!(
                matches!(
                    parse_flagpost_document(body(bad), 1, 0),
                    Err(BootstrapError::Invalid(_))
                ),
                "{bad}"
            );
        }
    }
}

//! The HTTP client that makes one signed delivery attempt: what every endpoint shares, the
//! attempt's outcome, and the headers that sign it. Each endpoint's requests and connections are
//! in [`super::http_target`]. Redirects are never followed: a 3xx is a failed attempt, so an
//! endpoint cannot bounce signed bodies to an address nobody configured.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use super::http_target::HttpTarget;
use crate::config::split_credentials;
use crate::signing::{
    FLAGSMITH_SIGNATURE_HEADER, SEQUENCE_HEADER, Secret, SigningKey, WEBHOOK_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER, standard_signature_header_with,
};

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// The headers every attempt sends, named once: a name parsed from a string is copied each time.
static WEBHOOK_ID: HeaderName = HeaderName::from_static(WEBHOOK_ID_HEADER);
static WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static(WEBHOOK_TIMESTAMP_HEADER);
static WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static(WEBHOOK_SIGNATURE_HEADER);
static FLAGSMITH_SIGNATURE: HeaderName = HeaderName::from_static(FLAGSMITH_SIGNATURE_HEADER);
static SEQUENCE: HeaderName = HeaderName::from_static(SEQUENCE_HEADER);

/// What one attempt is to send.
pub struct SignedDelivery<'a> {
    /// Userinfo in it is sent as `Authorization: Basic`, never as part of the URL.
    pub url: &'a Uri,
    /// Newest first: the first signs `X-Flagsmith-Signature` (which has room for one), every one
    /// signs `webhook-signature`.
    pub secrets: &'a [Secret],
    /// The event id: `webhook-id`, the same on every attempt.
    pub event_id: &'a str,
    pub sequence: u64,
    pub body: Bytes,
}

/// A [`SignedDelivery`] whose secrets' keys are prepared: what a lane sends, keeping the keys of
/// its endpoint's secrets from one configuration to the next. Where it goes is the transport's.
pub(crate) struct KeyedDelivery<'a> {
    /// As [`SignedDelivery::secrets`], newest first.
    pub keys: &'a [SigningKey],
    pub event_id: &'a str,
    pub sequence: u64,
    pub body: Bytes,
}

/// What one attempt came to. It never holds a secret or the URL (which may carry credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    /// When the attempt started, unix milliseconds.
    pub started_at_ms: u64,
    pub latency: Duration,
    /// The response status, when there was a response.
    pub status: Option<u16>,
    /// Why there was no usable response: connection, timeout, or body error.
    pub error: Option<String>,
    /// The response's `Retry-After` as a delay from now, when it had a readable one.
    pub retry_after: Option<Duration>,
}

impl AttemptOutcome {
    /// Success is a 2xx over HTTP, its body read (or longer than what is read); over JetStream
    /// (no status), the stream's acknowledgement. An HTTP attempt without an error always has a
    /// status.
    pub fn delivered(&self) -> bool {
        self.error.is_none() && self.status.is_none_or(|s| (200..300).contains(&s))
    }

    /// A one-line description for attempt records and logs.
    pub fn describe(&self) -> String {
        match (&self.status, &self.error) {
            (_, Some(error)) => error.clone(),
            (Some(status), None) => format!("HTTP {status}"),
            (None, None) => "acknowledged".to_owned(),
        }
    }

    /// Runs `attempt`, answering a panic inside it (a bug) as a failed attempt. The lane hands
    /// its row to the attempt, so without this a panic would leave the row held, retried only
    /// after a restart; this way it is retried on the schedule like any failure.
    pub async fn caught(attempt: impl Future<Output = AttemptOutcome>) -> AttemptOutcome {
        let started_at = SystemTime::now();
        let started = Instant::now();
        match AssertUnwindSafe(attempt).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(_) => AttemptOutcome {
                started_at_ms: unix_millis(started_at),
                latency: started.elapsed(),
                status: None,
                error: Some("the attempt failed inside flagpost (a panic, logged)".to_owned()),
                retry_after: None,
            },
        }
    }
}

/// What every endpoint's HTTP deliveries share: how connections are opened (TLS or not), the
/// attempt's time limit and the `User-Agent`. Each endpoint keeps its own connections (see
/// [`super::http_target`]).
#[derive(Clone)]
pub struct DeliveryClient {
    connector: HttpsConnector<HttpConnector>,
    timeout: Duration,
    user_agent: HeaderValue,
}

impl DeliveryClient {
    /// `timeout` bounds the whole attempt, from connecting to the last byte of the answer.
    pub fn new(timeout: Duration) -> Result<DeliveryClient, ClientError> {
        let mut http = HttpConnector::new();
        // The TLS layer decides per URL; plain HTTP stays allowed for private receivers.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(DeliveryClient {
            connector,
            timeout,
            user_agent: HeaderValue::from_static(concat!("flagpost/", env!("CARGO_PKG_VERSION"))),
        })
    }

    pub(crate) fn connector(&self) -> &HttpsConnector<HttpConnector> {
        &self.connector
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn user_agent(&self) -> &HeaderValue {
        &self.user_agent
    }

    /// Signs `delivery` with this attempt's timestamp and posts it, on a connection of its own.
    /// Never fails: every way an attempt can go wrong is an outcome to record.
    pub async fn attempt(&self, delivery: SignedDelivery<'_>) -> AttemptOutcome {
        let keys: Vec<SigningKey> = delivery.secrets.iter().map(Secret::prepare).collect();
        let (url, credentials) = split_credentials(delivery.url);
        HttpTarget::new(self, &url, credentials.as_ref())
            .attempt(&KeyedDelivery {
                keys: &keys,
                event_id: delivery.event_id,
                sequence: delivery.sequence,
                body: delivery.body,
            })
            .await
    }
}

/// Adds the headers that identify and sign `delivery`, timestamped `now`, to `headers`.
pub(super) fn signed_headers(
    headers: &mut HeaderMap,
    delivery: &KeyedDelivery<'_>,
    now: SystemTime,
) -> Result<(), String> {
    let timestamp = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // Only the event id can make a header invalid; the message names the header, not a value.
    let event_id = HeaderValue::from_str(delivery.event_id)
        .map_err(|e| format!("cannot build the request: {e}"))?;
    headers.insert(WEBHOOK_ID.clone(), event_id);
    headers.insert(WEBHOOK_TIMESTAMP.clone(), HeaderValue::from(timestamp));
    headers.insert(SEQUENCE.clone(), HeaderValue::from(delivery.sequence));
    if let Some(newest) = delivery.keys.first() {
        let signature = standard_signature_header_with(
            delivery.keys,
            delivery.event_id,
            &timestamp.to_string(),
            &delivery.body,
        );
        headers.insert(
            FLAGSMITH_SIGNATURE.clone(),
            signed_value(newest.flagsmith_signature(&delivery.body))?,
        );
        headers.insert(WEBHOOK_SIGNATURE.clone(), signed_value(signature)?);
    }
    Ok(())
}

/// A signature as a header value: hex or base64, always valid, taken without a copy.
fn signed_value(signature: String) -> Result<HeaderValue, String> {
    HeaderValue::try_from(signature).map_err(|e| format!("cannot build the request: {e}"))
}

/// The error and its causes on one line ("client error (Connect): tcp connect error: Connection
/// refused"), since hyper's top-level message alone says little.
pub(super) fn describe_error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

pub fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub fn now_millis() -> u64 {
    unix_millis(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_inside_an_attempt_is_a_failed_attempt_and_anything_else_passes_through() {
        let panicked = AttemptOutcome::caught(async { panic!("a bug inside an attempt") }).await;
        assert!(!panicked.delivered());
        assert_eq!(panicked.status, None);
        assert!(panicked.describe().contains("panic"), "{panicked:?}");

        let answered = AttemptOutcome {
            started_at_ms: 7,
            latency: Duration::from_millis(3),
            status: Some(204),
            error: None,
            retry_after: None,
        };
        let passed = AttemptOutcome::caught(async { answered.clone() }).await;
        assert_eq!(passed, answered);
    }
}

//! The HTTP client that makes one signed delivery attempt.
//!
//! One client for every lane: hyper-util's pooled client keeps connections alive per host, so a
//! lane with eight requests in flight reuses eight connections instead of paying a handshake per
//! delivery. Redirects are never followed (hyper's client does not): a 3xx is a failed attempt, so
//! an endpoint cannot bounce signed bodies to an address nobody configured.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::retry::parse_retry_after;
use crate::signing::{
    FLAGSMITH_SIGNATURE_HEADER, SEQUENCE_HEADER, Secret, WEBHOOK_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER, standard_signature_header,
};

/// The most of a response body that is read; the rest is dropped with the connection. Endpoints
/// answer a web hook with a few bytes; a huge answer must not cost memory.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// What one attempt is to send.
pub struct SignedDelivery<'a> {
    pub url: &'a Uri,
    /// Newest first: the first signs `X-Flagsmith-Signature` (which has room for one), every one
    /// signs `webhook-signature`.
    pub secrets: &'a [Secret],
    /// The event id: `webhook-id`, the same on every attempt.
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
    /// 2xx, fully read, is the only success.
    pub fn delivered(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// A one-line description for attempt records and logs.
    pub fn describe(&self) -> String {
        match (&self.status, &self.error) {
            (_, Some(error)) => error.clone(),
            (Some(status), None) => format!("HTTP {status}"),
            (None, None) => "no response".to_owned(),
        }
    }
}

#[derive(Clone)]
pub struct DeliveryClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
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
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            // Many endpoints may share one host (receivers behind one address, told apart by
            // path): every lane's connections must stay pooled, or requests pay a new
            // connection each. Idle ones are closed after the timeout above.
            .pool_max_idle_per_host(4096)
            .build(https);
        Ok(DeliveryClient {
            http: client,
            timeout,
            user_agent: HeaderValue::from_static(concat!("flagpost/", env!("CARGO_PKG_VERSION"))),
        })
    }

    /// Signs `delivery` with this attempt's timestamp and posts it. Never fails: every way an
    /// attempt can go wrong is an outcome to record.
    pub async fn attempt(&self, delivery: SignedDelivery<'_>) -> AttemptOutcome {
        let now = SystemTime::now();
        let started_at_ms = unix_millis(now);
        let started = Instant::now();
        let request = match self.signed_request(&delivery, now) {
            Ok(request) => request,
            Err(error) => {
                return AttemptOutcome {
                    started_at_ms,
                    latency: started.elapsed(),
                    status: None,
                    error: Some(error),
                    retry_after: None,
                };
            }
        };
        let exchange = async {
            let response = self.http.request(request).await.map_err(describe_error)?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            // Read the answer to its end so that the connection goes back to the pool.
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BODY);
            let read =
                body.collect().await.map(|_| ()).map_err(|e| {
                    format!("reading the response: {}", describe_error_chain(e.as_ref()))
                });
            Ok::<_, String>((status, retry_after, read.err()))
        };
        let (status, retry_after, error) = match tokio::time::timeout(self.timeout, exchange).await
        {
            Ok(Ok((status, retry_after, body_error))) => (Some(status), retry_after, body_error),
            Ok(Err(error)) => (None, None, Some(error)),
            Err(_) => (
                None,
                None,
                Some(format!("timed out after {} ms", self.timeout.as_millis())),
            ),
        };
        AttemptOutcome {
            started_at_ms,
            latency: started.elapsed(),
            status,
            error,
            retry_after,
        }
    }

    fn signed_request(
        &self,
        delivery: &SignedDelivery<'_>,
        now: SystemTime,
    ) -> Result<Request<Full<Bytes>>, String> {
        let timestamp = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string();
        let mut builder = Request::post(delivery.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, self.user_agent.clone())
            .header(WEBHOOK_ID_HEADER, delivery.event_id)
            .header(WEBHOOK_TIMESTAMP_HEADER, &timestamp)
            .header(SEQUENCE_HEADER, delivery.sequence);
        if let Some(newest) = delivery.secrets.first() {
            builder = builder
                .header(
                    FLAGSMITH_SIGNATURE_HEADER,
                    newest.flagsmith_signature(&delivery.body),
                )
                .header(
                    WEBHOOK_SIGNATURE_HEADER,
                    standard_signature_header(
                        delivery.secrets,
                        delivery.event_id,
                        &timestamp,
                        &delivery.body,
                    ),
                );
        }
        // Only the event id can make a header invalid; the message names the header, not a value.
        builder
            .body(Full::new(delivery.body.clone()))
            .map_err(|e| format!("cannot build the request: {e}"))
    }
}

/// The error and its causes on one line ("client error (Connect): tcp connect error: Connection
/// refused"), since hyper's top-level message alone says little.
fn describe_error(error: hyper_util::client::legacy::Error) -> String {
    describe_error_chain(&error)
}

fn describe_error_chain(error: &(dyn std::error::Error + 'static)) -> String {
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

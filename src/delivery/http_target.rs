//! One endpoint as HTTP deliveries see it: its request parts prepared once, and its own open
//! connections, at most one per request in flight, each driven directly by hyper's HTTP/1
//! connection.
//!
//! A lane sends every request to one address, so a shared pool buys it nothing and costs every
//! request a locked lookup by host, a rewritten URI and (in hyper-util's pooled client) a task
//! spawned to hand the connection back. Here a request takes the last connection put back (a
//! lock only this endpoint's requests take), or opens one; a connection goes back once its
//! answer has been read to the end. There are never more connections than requests in flight,
//! so an endpoint holds at most its `max_in_flight` connections; they close when the endpoint is
//! removed or its URL changes, when the endpoint closes them, or when one is next taken after
//! idling longer than [`MAX_IDLE`].

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use tower_service::Service;

use super::client::{
    AttemptOutcome, DeliveryClient, KeyedDelivery, describe_error_chain, signed_headers,
    unix_millis,
};
use super::retry::parse_retry_after;
use crate::config::Credentials;

/// The most of a response body that is read; the rest is dropped with the connection, and the
/// status alone is the answer. Endpoints answer a web hook with a few bytes; a huge answer must
/// not cost memory, nor turn a delivery the endpoint accepted into a retry.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// How long a connection may idle and still be used, as hyper-util's pooled client kept them
/// before. A firewall or NAT between here and the endpoint may forget a quiet connection without
/// closing it; a request sent on one would wait out the whole attempt timeout and fail.
const MAX_IDLE: Duration = Duration::from_secs(60);

type Connection = SendRequest<Full<Bytes>>;

/// Where an endpoint's requests go and what each carries whatever its body.
pub(crate) struct HttpTarget {
    client: DeliveryClient,
    /// The URL without userinfo: what a connection is opened to.
    url: Uri,
    /// The path and query, as an HTTP/1 request line names them.
    path: Uri,
    /// `None` when the URL names no host: every attempt fails, saying so.
    host: Option<HeaderValue>,
    authorization: Option<HeaderValue>,
    /// Connections whose last answer was read to the end, with when they were put back, most
    /// recently used last.
    idle: Mutex<Vec<(Instant, Connection)>>,
    /// [`MAX_IDLE`], shorter in tests.
    max_idle: Duration,
}

impl HttpTarget {
    /// `url` without userinfo; [`Credentials`] carry it.
    pub(crate) fn new(
        client: &DeliveryClient,
        url: &Uri,
        credentials: Option<&Credentials>,
    ) -> HttpTarget {
        let path = url
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |p| Uri::from(p.clone()));
        HttpTarget {
            client: client.clone(),
            url: url.clone(),
            path,
            host: host_header(url),
            authorization: credentials.map(|c| c.header().clone()),
            idle: Mutex::new(Vec::new()),
            max_idle: MAX_IDLE,
        }
    }

    /// Whether requests to `url` with `credentials` are the ones this target sends, so that a
    /// configuration reload which changed something else keeps the open connections.
    pub(crate) fn sends_to(&self, url: &Uri, credentials: Option<&Credentials>) -> bool {
        self.url == *url && self.authorization.as_ref() == credentials.map(|c| c.header())
    }

    /// Signs `delivery` with this attempt's timestamp and posts it. Never fails: every way an
    /// attempt can go wrong is an outcome to record.
    pub(crate) async fn attempt(&self, delivery: &KeyedDelivery<'_>) -> AttemptOutcome {
        let now = SystemTime::now();
        let started = Instant::now();
        let timeout = self.client.timeout();
        let (status, retry_after, error) = match self.request(delivery, now) {
            Err(error) => (None, None, Some(error)),
            Ok(request) => match tokio::time::timeout(timeout, self.exchange(request)).await {
                Ok(Ok((status, retry_after, body_error))) => {
                    (Some(status), retry_after, body_error)
                }
                Ok(Err(error)) => (None, None, Some(error)),
                Err(_) => (
                    None,
                    None,
                    Some(format!("timed out after {} ms", timeout.as_millis())),
                ),
            },
        };
        AttemptOutcome {
            started_at_ms: unix_millis(now),
            latency: started.elapsed(),
            status,
            error,
            retry_after,
        }
    }

    fn request(
        &self,
        delivery: &KeyedDelivery<'_>,
        now: SystemTime,
    ) -> Result<Request<Full<Bytes>>, String> {
        let host = self
            .host
            .clone()
            .ok_or_else(|| "cannot build the request: the URL names no host".to_owned())?;
        let mut headers = HeaderMap::with_capacity(12);
        headers.insert(HOST, host);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, self.client.user_agent().clone());
        if let Some(authorization) = &self.authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        signed_headers(&mut headers, delivery, now)?;
        let mut request = Request::new(Full::new(delivery.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.path.clone();
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// Sends `request` and reads the answer: its status, its `Retry-After`, and why its body
    /// could not be read, if it could not (one longer than [`MAX_RESPONSE_BODY`] is not an
    /// error). The connection is kept only after a whole answer.
    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(u16, Option<Duration>, Option<String>), String> {
        let (connection, response) = self.send(request).await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BODY);
        let read = match body.collect().await {
            Ok(_) => {
                self.put_back(connection);
                None
            }
            Err(e) if e.is::<LengthLimitError>() => None,
            Err(e) => Some(format!(
                "reading the response: {}",
                describe_error_chain(e.as_ref())
            )),
        };
        Ok((status, retry_after, read))
    }

    /// Sends on an idle connection, or a new one. An idle connection may have been closed by
    /// the endpoint since its last answer: a request it gave back unsent goes on the next one.
    async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Connection, Response<Incoming>), String> {
        while let Some(mut connection) = self.take_idle() {
            if connection.ready().await.is_err() {
                continue;
            }
            match connection.try_send_request(request).await {
                Ok(response) => return Ok((connection, response)),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(describe_hyper_error(failed.into_error())),
                },
            }
        }
        // Boxed: opening a connection is rare, and its state (TLS included) would otherwise
        // make every attempt's future, copied about as a task, several times larger.
        let mut connection = Box::pin(self.connect()).await?;
        let response = connection
            .send_request(request)
            .await
            .map_err(describe_hyper_error)?;
        Ok((connection, response))
    }

    /// The most recently used idle connection. Those idle too long are dropped (closing them):
    /// they are the oldest, at the bottom of the stack.
    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let fresh_from = idle.partition_point(|(since, _)| since.elapsed() > self.max_idle);
        idle.drain(..fresh_from);
        idle.pop().map(|(_, connection)| connection)
    }

    fn put_back(&self, connection: Connection) {
        if !connection.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((Instant::now(), connection));
        }
    }

    /// Opens a connection (TLS when the URL says https) and drives it on a task of its own,
    /// which ends when the connection closes or its last handle is dropped.
    async fn connect(&self) -> Result<Connection, String> {
        let mut connector = self.client.connector().clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| format!("client error (Connect): {}", describe_error_chain(&*e)))?;
        let stream = connector
            .call(self.url.clone())
            .await
            .map_err(|e| format!("client error (Connect): {}", describe_error_chain(&*e)))?;
        let (connection, driver) = http1::handshake(stream)
            .await
            .map_err(describe_hyper_error)?;
        tokio::spawn(async move {
            // An error here is the connection's end; the request on it already reported it.
            let _ = driver.await;
        });
        Ok(connection)
    }
}

/// `Host` as hyper-util's client writes it: the host, and the port when it is not the scheme's.
fn host_header(url: &Uri) -> Option<HeaderValue> {
    let host = url.host()?;
    let default_port = if url.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let value = match url.port_u16() {
        Some(port) if port != default_port => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    HeaderValue::try_from(value).ok()
}

fn describe_hyper_error(error: hyper::Error) -> String {
    describe_error_chain(&error)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::Response;
    use hyper_util::rt::TokioIo;

    use super::*;
    use crate::signing::{Secret, SigningKey};

    /// A real HTTP/1 endpoint on 127.0.0.1 that answers 200 (with `Connection: close` when
    /// `close` is set) and counts the connections it accepted.
    async fn endpoint(close: bool) -> (Uri, Arc<AtomicUsize>) {
        endpoint_answering(close, 200, Bytes::from_static(b"ok")).await
    }

    /// The same, answering `status` with `body`.
    async fn endpoint_answering(close: bool, status: u16, body: Bytes) -> (Uri, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let body = body.clone();
                    async move {
                        let _ = request.into_body().collect().await;
                        let mut answer = Response::new(Full::new(body));
                        *answer.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        if close {
                            answer.headers_mut().insert(
                                http::header::CONNECTION,
                                HeaderValue::from_static("close"),
                            );
                        }
                        Ok::<_, Infallible>(answer)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (url.parse().unwrap(), accepted)
    }

    async fn attempt(target: &HttpTarget, keys: &[SigningKey], sequence: u64) -> AttemptOutcome {
        target
            .attempt(&KeyedDelivery {
                keys,
                event_id: "evt_1",
                sequence,
                body: Bytes::from_static(b"{}"),
            })
            .await
    }

    fn target(url: &Uri) -> HttpTarget {
        let client = DeliveryClient::new(Duration::from_secs(10)).unwrap();
        HttpTarget::new(&client, url, None)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_are_kept_and_never_outnumber_the_requests_in_flight() {
        let (url, accepted) = endpoint(false).await;
        let target = Arc::new(target(&url));
        let keys = [Secret::new("s").unwrap().prepare()];
        for sequence in 0..20 {
            let outcome = attempt(&target, &keys, sequence).await;
            assert!(outcome.delivered(), "{outcome:?}");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one at a time: one connection"
        );
        for round in 0..10 {
            let mut attempts = tokio::task::JoinSet::new();
            for n in 0..8 {
                let (target, keys) = (target.clone(), keys.clone());
                attempts.spawn(async move { attempt(&target, &keys, round * 8 + n).await });
            }
            while let Some(outcome) = attempts.join_next().await {
                let outcome = outcome.unwrap();
                assert!(outcome.delivered(), "{outcome:?}");
            }
        }
        let opened = accepted.load(Ordering::SeqCst);
        assert!(opened <= 8, "8 in flight opened {opened} connections");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_endpoint_that_closes_every_connection_still_takes_every_attempt() {
        let (url, accepted) = endpoint(true).await;
        let target = target(&url);
        let keys = [Secret::new("s").unwrap().prepare()];
        for sequence in 0..5 {
            let outcome = attempt(&target, &keys, sequence).await;
            assert!(outcome.delivered(), "{outcome:?}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_idle_longer_than_the_limit_is_not_used_again() {
        let (url, accepted) = endpoint(false).await;
        let mut target = target(&url);
        target.max_idle = Duration::from_millis(50);
        let keys = [Secret::new("s").unwrap().prepare()];
        // Reuse within the limit is shown (with the real limit) by the test above; here only
        // the sleep's lower bound matters, so the test cannot fail on a slow machine.
        let outcome = attempt(&target, &keys, 0).await;
        assert!(outcome.delivered(), "{outcome:?}");
        assert_eq!(
            target.idle.lock().unwrap().len(),
            1,
            "kept after its answer"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let outcome = attempt(&target, &keys, 1).await;
        assert!(outcome.delivered(), "{outcome:?}");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "a new one past the limit"
        );
        assert_eq!(target.idle.lock().unwrap().len(), 1, "the old one dropped");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_too_long_to_read_is_decided_by_its_status() {
        let long = Bytes::from(vec![b'x'; MAX_RESPONSE_BODY * 4]);
        let keys = [Secret::new("s").unwrap().prepare()];
        for (status, delivered) in [(200, true), (503, false)] {
            let (url, _) = endpoint_answering(false, status, long.clone()).await;
            let target = target(&url);
            let outcome = attempt(&target, &keys, 0).await;
            assert_eq!(outcome.delivered(), delivered, "{outcome:?}");
            assert_eq!((outcome.status, outcome.error), (Some(status), None));
            assert!(
                target.idle.lock().unwrap().is_empty(),
                "the unread rest goes with its connection"
            );
        }
    }

    #[test]
    fn host_names_the_port_only_when_it_is_not_the_schemes() {
        let host = |url: &str| host_header(&url.parse().unwrap()).unwrap();
        assert_eq!(host("http://example.com/hook"), "example.com");
        assert_eq!(host("http://example.com:80/hook"), "example.com");
        assert_eq!(host("http://127.0.0.1:8080/hook"), "127.0.0.1:8080");
        assert_eq!(host("https://example.com:443/"), "example.com");
        assert_eq!(host("https://example.com:80/"), "example.com:80");
        assert_eq!(host("http://[::1]:9000/"), "[::1]:9000");
    }
}

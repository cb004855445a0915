//! A real HTTP server on 127.0.0.1 that records every request it gets and answers from a script:
//! the receiving end of delivery tests. No mock: flagpost's client talks to it over TCP.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// How the sink answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16),
    /// A status with extra headers, e.g. `Retry-After` or `Location`.
    WithHeaders(u16, Vec<(&'static str, String)>),
    /// Never answers: the request hangs until the client gives up.
    Hang,
}

/// What the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status it was answered with; `None` when it was left hanging.
    pub answered: Option<u16>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct State {
    script: Mutex<VecDeque<Answer>>,
    /// Answer once the script is spent.
    then: Mutex<Answer>,
    received: Mutex<Vec<Received>>,
    arrived: Notify,
}

pub struct Sink {
    pub addr: SocketAddr,
    state: Arc<State>,
    tasks: JoinSet<()>,
}

impl Sink {
    /// Starts on a free port, answering from `script`, then `then` for ever.
    pub async fn start(script: Vec<Answer>, then: Answer) -> Sink {
        Sink::start_on("127.0.0.1:0".parse().unwrap(), script, then).await
    }

    /// Starts on `addr`: used to bring back a sink that was stopped, on its old port.
    pub async fn start_on(addr: SocketAddr, script: Vec<Answer>, then: Answer) -> Sink {
        let listener = TcpListener::bind(addr).await.expect("bind the sink");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            script: Mutex::new(script.into()),
            then: Mutex::new(then),
            received: Mutex::new(Vec::new()),
            arrived: Notify::new(),
        });
        let mut tasks = JoinSet::new();
        let accept_state = state.clone();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = accept_state.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| answer(state.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                // Reap finished connections so that a long test does not accumulate them.
                while connections.try_join_next().is_some() {}
            }
        });
        Sink { addr, state, tasks }
    }

    /// A port that refuses connections: bound once to find a free one, then released.
    pub async fn closed_port() -> SocketAddr {
        super::process::free_addr()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops listening and drops every open connection: from now on connections are refused.
    pub async fn stop(mut self) -> SocketAddr {
        self.tasks.shutdown().await;
        self.addr
    }

    pub fn set_answer(&self, then: Answer) {
        *self.state.then.lock().unwrap() = then;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what was received. The generous bound only keeps a broken
    /// test from hanging for ever; no test asserts on how long anything took.
    pub async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let wait = async {
            loop {
                let arrived = self.state.arrived.notified();
                {
                    let received = self.state.received.lock().unwrap();
                    if done(&received) {
                        return received.clone();
                    }
                }
                arrived.await;
            }
        };
        match tokio::time::timeout(Duration::from_secs(120), wait).await {
            Ok(received) => received,
            Err(_) => panic!(
                "gave up waiting for {what}; received {} requests",
                self.received().len()
            ),
        }
    }
}

async fn answer(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let next = state.script.lock().unwrap().pop_front();
    let answer = next.unwrap_or_else(|| state.then.lock().unwrap().clone());
    let (status, headers) = match answer {
        Answer::Status(status) => (Some(status), Vec::new()),
        Answer::WithHeaders(status, headers) => (Some(status), headers),
        Answer::Hang => (None, Vec::new()),
    };
    state.received.lock().unwrap().push(Received {
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
        answered: status,
    });
    state.arrived.notify_waiters();
    let Some(status) = status else {
        std::future::pending::<()>().await;
        unreachable!()
    };
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    Ok(response)
}

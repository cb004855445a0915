//! A stand-in for an upstream Flagsmith: a real HTTP server on 127.0.0.1 that serves the
//! environment documents a test hands it, as Flagsmith v2.265.0 does (`X-Environment-Key` with a
//! server key, `Last-Modified` and `X-Flagsmith-Document-Updated-At` as recorded, 304 to a
//! conditional request that is not older than `Last-Modified`, 403 to an unknown key), and takes
//! `POST /api/v1/analytics/flags/` (answered 200, not kept).
//!
//! A test can close the gate: document requests then wait (their fetch stays in flight) until it
//! opens again, so that what the receiver answers from web hooks alone can be observed before any
//! document arrives. Every document request is recorded with when it arrived and what it got.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One environment document as Flagsmith served it.
#[derive(Clone)]
pub struct Document {
    /// Which version this is (the live replay's step number), recorded with each fetch.
    pub version: usize,
    pub body: Bytes,
    /// `Last-Modified`, as recorded (whole seconds, often older than the body's `updated_at`).
    pub last_modified: String,
    /// `X-Flagsmith-Document-Updated-At`, as recorded.
    pub updated_at: String,
}

/// One document request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Fetch {
    pub server_key: String,
    pub arrived: Instant,
    pub version: usize,
    pub status: u16,
}

#[derive(Default)]
struct Served {
    documents: Mutex<HashMap<String, Document>>,
    fetches: Mutex<Vec<Fetch>>,
}

struct Shared {
    served: Served,
    gate: watch::Sender<bool>,
}

pub struct StandIn {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandIn {
    /// Starts on a port of the system's choosing, with the gate open and no document.
    pub async fn start() -> StandIn {
        let shared = Arc::new(Shared {
            served: Served::default(),
            gate: watch::Sender::new(true),
        });
        let app = Router::new()
            .route("/api/v1/environment-document/", get(environment_document))
            .route("/api/v1/analytics/flags/", post(analytics))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        StandIn { addr, shared, task }
    }

    /// The API base a receiver's `[environments.upstream] url` names.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, `server_key` gets `document`.
    pub fn serve(&self, server_key: &str, document: Document) {
        let mut documents = self.shared.served.documents.lock().unwrap();
        documents.insert(server_key.to_owned(), document);
    }

    /// Document requests wait, in flight, until [`StandIn::open_gate`].
    pub fn close_gate(&self) {
        self.shared.gate.send_replace(false);
    }

    pub fn open_gate(&self) {
        self.shared.gate.send_replace(true);
    }

    pub fn fetches(&self) -> Vec<Fetch> {
        self.shared.served.fetches.lock().unwrap().clone()
    }

    /// Waits for a document request for `server_key` that arrived at or after `since` and was
    /// answered with `version` (200 or 304); answers how many requests for `server_key` had been
    /// answered so far, that one included (a receiver fetches one environment's document at a
    /// time, so once it counts that many fetches, it has taken this one). The deadline only turns
    /// a hang into a failure with a message.
    pub async fn fetched(&self, server_key: &str, since: Instant, version: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answered: Vec<Fetch> = self
                .fetches()
                .into_iter()
                .filter(|fetch| fetch.server_key == server_key && matches!(fetch.status, 200 | 304))
                .collect();
            let found = answered
                .iter()
                .position(|fetch| fetch.arrived >= since && fetch.version == version);
            if let Some(index) = found {
                return index + 1;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver never fetched version {version} for {server_key} within a minute; \
                 fetches seen: {:?}",
                self.fetches()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn environment_document(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let arrived = Instant::now();
    let key = headers
        .get("x-environment-key")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut gate = shared.gate.subscribe();
    let _ = gate.wait_for(|open| *open).await;
    let document = shared.served.documents.lock().unwrap().get(&key).cloned();
    let Some(document) = document else {
        // Flagsmith's own answer to a key it does not know as a server key.
        let body = r#"{"detail": "Invalid or missing Environment Key"}"#;
        return (StatusCode::FORBIDDEN, body).into_response();
    };
    let not_modified = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|value| value.to_str().ok())
        .and_then(http_date)
        .zip(http_date(&document.last_modified))
        .is_some_and(|(since, modified)| modified <= since);
    let status = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    shared.served.fetches.lock().unwrap().push(Fetch {
        server_key: key,
        arrived,
        version: document.version,
        status: status.as_u16(),
    });
    let headers = [
        (header::LAST_MODIFIED, document.last_modified),
        (
            header::HeaderName::from_static("x-flagsmith-document-updated-at"),
            document.updated_at,
        ),
        (header::CONTENT_TYPE, "application/json".to_owned()),
    ];
    if not_modified {
        (status, headers).into_response()
    } else {
        (status, headers, document.body).into_response()
    }
}

/// Taken and dropped: the receiver forwards SDK analytics upstream, and Flagsmith answers 200.
async fn analytics() -> Response {
    (StatusCode::OK, "{}").into_response()
}

/// An HTTP date in the IMF-fixdate form Flagsmith writes (`Wed, 02 Dec 2026 02:21:53 GMT`).
fn http_date(text: &str) -> Option<time::PrimitiveDateTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(text.trim(), &format).ok()
}

/// Standard base64 (with padding), for the recorded web hook bodies; the receiver's crate has no
/// base64 dependency of its own, and the test needs only this one decoding.
pub fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for symbol in text.bytes().filter(|b| *b != b'=') {
        let value = ALPHABET
            .iter()
            .position(|a| *a == symbol)
            .unwrap_or_else(|| panic!("not base64: {symbol}")) as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    bytes
}

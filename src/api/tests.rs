//! `/healthz` on the real router and a real socket.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::store::StoreOptions;

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn healthz_fails_once_the_writer_has_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.redb"), StoreOptions::default()).unwrap();
    let state = Arc::new(AppState {
        store: store.clone(),
        config: Arc::new(ArcSwap::from_pointee(Config::parse("").unwrap())),
        metrics: Metrics::new(crate::metrics::registry()),
        documents: Default::default(),
        upstream: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await });

    let healthy = get(addr, "/healthz").await;
    assert!(healthy.starts_with("HTTP/1.1 200"), "{healthy}");
    store.shutdown().await;
    let stopped = get(addr, "/healthz").await;
    assert!(stopped.starts_with("HTTP/1.1 503"), "{stopped}");
    assert!(
        stopped.contains(r#"{"error":"the store's writer has stopped"}"#),
        "{stopped}"
    );
}

//! Secrets leave the process only as signatures: logs captured at TRACE, metrics, admin answers
//! and stored records never hold one.

use std::sync::Arc;

use flagpost::delivery::{DeliveryMetrics, Dispatcher};
use flagpost::store::{Store, StoreOptions};
use tokio::sync::watch;

use crate::dispatcher::{Harness, Hook, admin_request, config, fast_settings, serve_admin};
use crate::support::sink::{Answer, Sink};

/// Everything logged by this test binary, at every level.
fn captured_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: Arc<std::sync::Mutex<Vec<u8>>> = Arc::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .init();
        logs
    })
    .clone()
}

struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_appear_in_no_log_line_error_metric_or_api_response() {
    const CANARY: &str = "canary-secret-must-not-leak";
    let logs = captured_logs();
    let failing = Sink::start(Vec::new(), Answer::Status(500)).await;
    let mut hook = Hook::new("failing", failing.url("/"));
    hook.secrets = vec![CANARY];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flagpost.redb");
    let store = tokio::task::spawn_blocking(move || Store::open(&path, StoreOptions::default()))
        .await
        .unwrap()
        .unwrap();
    let mut registry = prometheus_client::registry::Registry::with_prefix("flagpost");
    let metrics = Arc::new(DeliveryMetrics::register(&mut registry));
    let (config_tx, config_rx) = watch::channel(config(&[hook]));
    let dispatcher = Arc::new(
        Dispatcher::start(store.clone(), config_rx, fast_settings(2), metrics)
            .await
            .unwrap(),
    );
    let h = Harness {
        _dir: dir,
        store,
        config: config_tx,
        dispatcher,
    };
    let sequence = h.commit_event("{}").await;
    h.eventually("the dead letter", || async {
        !h.dead_letters("failing").await.is_empty()
    })
    .await;

    let admin = serve_admin(&h).await;
    let mut exposed = Vec::new();
    for path in [
        "/deliveries/pending".to_owned(),
        "/deliveries/pending?endpoint=failing".to_owned(),
        format!("/attempts?sequence={sequence}"),
        "/attempts?endpoint=failing".to_owned(),
        "/dead-letters".to_owned(),
    ] {
        let (status, body) = admin_request(admin, "GET", &path, "").await;
        assert_eq!(status, 200, "{path}: {body}");
        exposed.push(body);
    }
    let (status, body) = admin_request(admin, "POST", "/dead-letters/replay", "{}").await;
    assert_eq!(status, 200, "{body}");
    exposed.push(body);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("flagpost_dead_letters_total{endpoint=\"failing\"} 1"),
        "{text}"
    );
    exposed.push(text);
    exposed.push(format!("{:?}", h.dead_letters("failing").await));
    exposed.push(format!("{:?}", h.attempts(sequence).await));
    exposed.push(format!("{:?}", h.config.borrow()));
    exposed.push(String::from_utf8_lossy(&logs.lock().unwrap()).into_owned());

    assert!(
        exposed[exposed.len() - 1].contains("dead-lettered"),
        "the dead letter was logged"
    );
    for text in &exposed {
        assert!(!text.contains(CANARY), "secret leaked in: {text}");
    }
    h.stop().await;
}

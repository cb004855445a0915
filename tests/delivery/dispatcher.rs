//! Lanes on a real store: a redb file in a temp dir, the real dispatcher, real sinks. The `Harness`
//! that starts them, and the admin API helpers the other areas share, live here too.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flagpost::changes::{Author, Outbox};
use flagpost::config::Config;
use flagpost::delivery::{DeliveryConfig, DeliveryMetrics, Dispatcher, Jitter};
use flagpost::signing::Secret;
use flagpost::store::deliveries::{
    AttemptRecord, DeadLetter, attempts_for_event, count_pending, list_dead_letters,
};
use flagpost::store::{Store, StoreOptions};
use flagpost::wire::EventType;
use serde_json::Value;
use tokio::sync::watch;

use crate::support::sink::{Answer, Sink};
use crate::{sequences, signature_count, verify};

pub const ADMIN_TOKEN: &str = "admin-token-0123456789";

pub struct Hook {
    pub name: &'static str,
    pub url: String,
    pub secrets: Vec<&'static str>,
    pub enabled: bool,
    pub ordered: bool,
    pub max_in_flight: Option<usize>,
}

impl Hook {
    pub fn new(name: &'static str, url: String) -> Hook {
        Hook {
            name,
            url,
            secrets: vec!["endpoint-secret-do-not-leak"],
            enabled: true,
            ordered: false,
            max_in_flight: None,
        }
    }
}

pub fn config(hooks: &[Hook]) -> Arc<Config> {
    let mut text = format!(
        "[api]\ntokens = [{{ name = \"ops\", token = {{ value = {ADMIN_TOKEN:?} }} }}]\n\
         [[environments]]\nid = 1\nname = \"Development\"\napi_key = \"k\"\nproject = 1\n",
    );
    for h in hooks {
        text.push_str(&format!(
            "[[environments.webhooks]]\nname = {:?}\nurl = {:?}\nenabled = {}\nordered = {}\n",
            h.name, h.url, h.enabled, h.ordered
        ));
        let secrets: Vec<String> = h
            .secrets
            .iter()
            .map(|s| format!("{{ value = {s:?} }}"))
            .collect();
        text.push_str(&format!("secrets = [{}]\n", secrets.join(", ")));
        if let Some(n) = h.max_in_flight {
            text.push_str(&format!("max_in_flight = {n}\n"));
        }
    }
    Arc::new(Config::parse(&text).unwrap())
}

/// Short schedules so that tests end quickly; nothing asserts on how long anything took.
pub fn fast_settings(retries: usize) -> DeliveryConfig {
    DeliveryConfig {
        retry_schedule: vec![Duration::from_millis(50); retries],
        jitter: Jitter::None,
        request_timeout: Duration::from_secs(10),
        lane_backoff_initial: Duration::from_millis(20),
        lane_backoff_max: Duration::from_millis(100),
        shutdown_deadline: Duration::from_secs(1),
        ..DeliveryConfig::default()
    }
}

pub struct Harness {
    pub _dir: tempfile::TempDir,
    pub store: Store,
    pub config: watch::Sender<Arc<Config>>,
    pub dispatcher: Arc<Dispatcher>,
}

impl Harness {
    pub async fn start(hooks: &[Hook], settings: DeliveryConfig) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flagpost.redb");
        let store =
            tokio::task::spawn_blocking(move || Store::open(&path, StoreOptions::default()))
                .await
                .unwrap()
                .unwrap();
        let (config, config_rx) = watch::channel(config(hooks));
        let metrics = Arc::new(DeliveryMetrics::default());
        let dispatcher = Dispatcher::start(store.clone(), config_rx, settings, metrics)
            .await
            .unwrap();
        Harness {
            _dir: dir,
            store,
            config,
            dispatcher: Arc::new(dispatcher),
        }
    }

    pub fn reconfigure(&self, hooks: &[Hook]) {
        self.config.send_replace(config(hooks));
    }

    /// Commits one event through the change path's outbox: a row for every subscribed endpoint.
    pub async fn commit_event(&self, body: &str) -> u64 {
        let config = self.config.borrow().clone();
        let body = body.as_bytes().to_vec();
        self.store
            .write(move |tables| {
                let author = Author::system("tests");
                let mut outbox = Outbox::new(&config, &author, time::OffsetDateTime::now_utc());
                outbox.push(tables, EventType::FlagUpdated, Some(1), &body)?;
                Ok(outbox.into_written()[0].sequence)
            })
            .await
            .unwrap()
    }

    pub async fn pending(&self, endpoint: &'static str) -> u64 {
        self.store
            .read(move |txn| count_pending(txn, endpoint, 0))
            .await
            .unwrap()
    }

    pub async fn dead_letters(&self, endpoint: &'static str) -> Vec<DeadLetter> {
        self.store
            .read(move |txn| list_dead_letters(txn, Some(endpoint), None, 1000))
            .await
            .unwrap()
    }

    pub async fn attempts(&self, sequence: u64) -> Vec<AttemptRecord> {
        self.store
            .read(move |txn| attempts_for_event(txn, sequence))
            .await
            .unwrap()
    }

    /// Polls the store until `done` holds; the bound only keeps a broken test from hanging.
    pub async fn eventually<F, Fut>(&self, what: &str, done: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..6000 {
            if done().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("gave up waiting for {what}");
    }

    pub async fn stop(self) {
        self.dispatcher.shutdown().await;
        self.store.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoints_end_delivered_or_dead_lettered_as_the_schedule_says() {
    let flaky = Sink::start(
        vec![Answer::Status(500), Answer::Status(500)],
        Answer::Status(200),
    )
    .await;
    let limited = Sink::start(
        vec![Answer::WithHeaders(429, vec![("retry-after", "1".into())])],
        Answer::Status(200),
    )
    .await;
    let broken = Sink::start(Vec::new(), Answer::Status(500)).await;
    let comes_back = Sink::closed_port().await;
    let hooks = [
        Hook::new("flaky", flaky.url("/")),
        Hook::new("limited", limited.url("/")),
        Hook::new("broken", broken.url("/")),
        Hook::new("comes-back", format!("http://{comes_back}/")),
    ];
    // Retries far enough apart that the sink comes back (right after the second refused attempt
    // is seen) well before the fourth and last attempt, however loaded the machine.
    let settings = DeliveryConfig {
        retry_schedule: vec![Duration::from_millis(400); 3],
        ..fast_settings(3)
    };
    let h = Harness::start(&hooks, settings).await;
    let first = h.commit_event(r#"{"n":1}"#).await;

    // Refused connections count as failed attempts; the endpoint comes back before its schedule
    // is spent (it has four attempts, and the sink starts after the second failure).
    h.eventually("two refused attempts", || async {
        h.attempts(first)
            .await
            .iter()
            .filter(|a| a.endpoint == "comes-back")
            .count()
            >= 2
    })
    .await;
    let back = Sink::start_on(comes_back, Vec::new(), Answer::Status(200)).await;

    for endpoint in ["flaky", "limited", "comes-back"] {
        h.eventually(endpoint, || async { h.pending(endpoint).await == 0 })
            .await;
        assert!(h.dead_letters(endpoint).await.is_empty(), "{endpoint}");
    }
    h.eventually("broken dead-lettered", || async {
        !h.dead_letters("broken").await.is_empty()
    })
    .await;

    let flaky_seen: Vec<Option<u16>> = flaky.received().iter().map(|r| r.answered).collect();
    assert_eq!(flaky_seen, [Some(500), Some(500), Some(200)]);
    assert_eq!(back.received().len(), 1);

    let attempts = h.attempts(first).await;
    let of = |endpoint: &str| -> Vec<&AttemptRecord> {
        attempts.iter().filter(|a| a.endpoint == endpoint).collect()
    };
    // Retry-After: 1 outweighs the 50 ms step of the schedule.
    let limited_attempts = of("limited");
    assert_eq!(limited_attempts[0].status, Some(429));
    let asked = limited_attempts[0].next_attempt_at_ms.unwrap() - limited_attempts[0].at_ms;
    assert!(asked >= 1000, "retry planned {asked} ms later");
    assert_eq!(limited_attempts[1].status, Some(200));

    let broken_attempts = of("broken");
    assert_eq!(
        broken_attempts.len(),
        4,
        "the first attempt and three retries"
    );
    let letter = &h.dead_letters("broken").await[0];
    assert_eq!(letter.reason, "retry schedule spent after 4 attempts");
    assert_eq!(letter.last_status, Some(500));
    assert_eq!(broken.received().len(), 4);

    // Every attempt carried the same webhook-id.
    let ids: std::collections::BTreeSet<String> = flaky
        .received()
        .iter()
        .chain(broken.received().iter())
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_never_answers_does_not_delay_a_healthy_one() {
    let silent = Sink::start(Vec::new(), Answer::Hang).await;
    let healthy = Sink::start(Vec::new(), Answer::Status(200)).await;
    let mut slow = Hook::new("silent", silent.url("/"));
    slow.max_in_flight = Some(1);
    let hooks = [slow, Hook::new("healthy", healthy.url("/"))];
    let h = Harness::start(&hooks, fast_settings(3)).await;
    for n in 0..50 {
        h.commit_event(&format!(r#"{{"n":{n}}}"#)).await;
    }
    let received = healthy
        .wait_until("every event at the healthy endpoint", |r| r.len() == 50)
        .await;
    let mut seen = sequences(&received);
    seen.sort();
    assert_eq!(seen, (1..=50).collect::<Vec<_>>());
    // Meanwhile the silent endpoint still holds its first request (timeout 10 s): it got one
    // request, and all 50 deliveries are still pending.
    assert_eq!(silent.received().len(), 1);
    assert_eq!(h.pending("silent").await, 50);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_never_answers_is_dead_lettered_after_its_timeouts() {
    let silent = Sink::start(Vec::new(), Answer::Hang).await;
    let settings = DeliveryConfig {
        request_timeout: Duration::from_millis(200),
        ..fast_settings(2)
    };
    let h = Harness::start(&[Hook::new("silent", silent.url("/"))], settings).await;
    let sequence = h.commit_event("{}").await;
    h.eventually("the dead letter", || async {
        !h.dead_letters("silent").await.is_empty()
    })
    .await;
    let letter = &h.dead_letters("silent").await[0];
    assert_eq!(letter.sequence, sequence);
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.last_status, None);
    assert!(letter.last_error.as_deref().unwrap().contains("timed out"));
    assert_eq!(silent.received().len(), 3);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_rotation_and_a_new_url_apply_live_without_losing_a_delivery() {
    let first_sink = Sink::start(Vec::new(), Answer::Status(200)).await;
    let second_sink = Sink::start(Vec::new(), Answer::Status(200)).await;
    let mut hook = Hook::new("rotating", first_sink.url("/"));
    hook.secrets = vec!["old-secret"];
    let h = Harness::start(std::slice::from_ref(&hook), fast_settings(3)).await;
    h.commit_event(r#"{"n":1}"#).await;
    first_sink.wait_until("event 1", |r| r.len() == 1).await;

    hook.secrets = vec!["new-secret", "old-secret"];
    h.reconfigure(std::slice::from_ref(&hook));
    // A config swap is picked up before the next event's row is read: wait for the lane to see
    // it by committing until a request carries two signatures.
    let during = loop {
        h.commit_event(r#"{"n":2}"#).await;
        let received = first_sink
            .wait_until("another event", |r| r.len() >= 2)
            .await;
        let last = received.last().unwrap().clone();
        if signature_count(&last) == 2 {
            break last;
        }
    };
    let old = Secret::new("old-secret").unwrap();
    let new = Secret::new("new-secret").unwrap();
    verify(&during, &old).unwrap();
    verify(&during, &new).unwrap();

    // Rotation done, and the endpoint moved: pending deliveries follow it.
    hook.secrets = vec!["new-secret"];
    hook.url = second_sink.url("/moved");
    hook.enabled = false;
    h.reconfigure(std::slice::from_ref(&hook));
    let moved = h.commit_event(r#"{"n":3}"#).await;
    hook.enabled = true;
    h.reconfigure(std::slice::from_ref(&hook));
    let received = second_sink
        .wait_until("the event after the move", |r| {
            sequences(r).contains(&moved)
        })
        .await;
    let after = received.last().unwrap();
    assert_eq!(after.path, "/moved");
    assert_eq!(signature_count(after), 1);
    verify(after, &new).unwrap();
    verify(after, &old).unwrap_err();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_endpoint_waits_and_resumes_when_enabled() {
    let paused = Sink::start(Vec::new(), Answer::Status(200)).await;
    let healthy = Sink::start(Vec::new(), Answer::Status(200)).await;
    let mut hook = Hook::new("paused", paused.url("/"));
    hook.enabled = false;
    let other = Hook::new("healthy", healthy.url("/"));
    let h = Harness::start(&[hook, other], fast_settings(3)).await;
    for n in 0..5 {
        h.commit_event(&format!(r#"{{"n":{n}}}"#)).await;
    }
    healthy.wait_until("five events", |r| r.len() == 5).await;
    assert!(paused.received().is_empty());
    assert_eq!(h.pending("paused").await, 5);
    let gauge = |endpoint: &str| {
        h.dispatcher
            .metrics()
            .pending
            .get_or_create(&DeliveryMetrics::endpoint(endpoint))
            .get()
    };
    // The gauge follows commits a moment later.
    h.eventually("the pending gauge at five", || async {
        gauge("paused") == 5
    })
    .await;

    let mut hook = Hook::new("paused", paused.url("/"));
    hook.enabled = true;
    h.reconfigure(&[hook, Hook::new("healthy", healthy.url("/"))]);
    let received = paused.wait_until("five events", |r| r.len() == 5).await;
    // Eight in flight: they start in order but may arrive in any order.
    let mut seen = sequences(&received);
    seen.sort();
    assert_eq!(seen, [1, 2, 3, 4, 5]);
    h.eventually("the pending gauge at zero", || async {
        gauge("paused") == 0 && gauge("healthy") == 0
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_endpoint_retries_the_head_of_the_line_first() {
    let sink = Sink::start(
        vec![Answer::Status(503), Answer::Status(500)],
        Answer::Status(200),
    )
    .await;
    let mut hook = Hook::new("ordered", sink.url("/"));
    hook.ordered = true;
    // Commit all five before the lane can start, so that the order is the lane's doing.
    hook.enabled = false;
    let h = Harness::start(std::slice::from_ref(&hook), fast_settings(5)).await;
    for n in 0..5 {
        h.commit_event(&format!(r#"{{"n":{n}}}"#)).await;
    }
    hook.enabled = true;
    h.reconfigure(&[hook]);
    let received = sink
        .wait_until("five deliveries", |r| {
            r.iter().filter(|r| r.answered == Some(200)).count() == 5
        })
        .await;
    assert_eq!(sequences(&received), [1, 1, 1, 2, 3, 4, 5]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_endpoint_has_its_pending_deliveries_dead_lettered_and_they_can_be_replayed() {
    let sink = Sink::start(Vec::new(), Answer::Status(200)).await;
    let mut hook = Hook::new("leaving", sink.url("/"));
    hook.enabled = false;
    // No grace: this test is about what follows it (tests/sidecar/removed_endpoints.rs: the grace).
    let settings = DeliveryConfig {
        removed_endpoint_grace: Duration::ZERO,
        ..fast_settings(3)
    };
    let h = Harness::start(&[hook], settings).await;
    for n in 0..3 {
        h.commit_event(&format!(r#"{{"n":{n}}}"#)).await;
    }
    h.reconfigure(&[]);
    h.eventually("three dead letters", || async {
        h.dead_letters("leaving").await.len() == 3
    })
    .await;
    assert_eq!(h.pending("leaving").await, 0);
    for letter in h.dead_letters("leaving").await {
        assert_eq!(letter.reason, "endpoint removed");
    }

    // Back in the configuration, and replayed through the admin API over real HTTP.
    h.reconfigure(&[Hook::new("leaving", sink.url("/"))]);
    let admin = serve_admin(&h).await;
    let answer = admin_request(
        admin,
        "POST",
        "/dead-letters/replay",
        r#"{"endpoint":"leaving"}"#,
    )
    .await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    let body: Value = serde_json::from_str(&answer.1).unwrap();
    assert_eq!(body["replayed"], 3);
    let received = sink
        .wait_until("three replayed events", |r| r.len() == 3)
        .await;
    let mut seen = sequences(&received);
    seen.sort();
    assert_eq!(seen, [1, 2, 3]);
    h.eventually("nothing pending", || async {
        h.pending("leaving").await == 0
    })
    .await;
    assert!(h.dead_letters("leaving").await.is_empty());
    h.stop().await;
}

/// Serves the admin router on 127.0.0.1 and returns its address.
pub async fn serve_admin(h: &Harness) -> std::net::SocketAddr {
    let router = flagpost::api::admin::router(h.dispatcher.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// One request to the admin API: status and body.
pub async fn admin_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[test]
fn a_changed_delivery_section_is_reported_as_needing_a_restart() {
    let before = Config::parse("").unwrap();
    let after = Config::parse("[delivery]\nretry_schedule = [\"1s\"]\n").unwrap();
    assert_eq!(before.needs_restart(&after), ["delivery"]);
    assert!(before.needs_restart(&before.clone()).is_empty());
    let err = Config::parse("[delivery]\nmax_in_flight = 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("delivery.max_in_flight"), "{err}");
}

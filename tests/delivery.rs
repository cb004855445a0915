//! Delivery against a real HTTP sink on 127.0.0.1: signing, rotation, redirects, timeouts, and
//! (with the store) lanes, retries and dead letters.

mod support;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use flagpost::delivery::{AttemptOutcome, DeliveryClient, SignedDelivery};
use flagpost::signing::{Secret, VerifyError, verify_flagsmith, verify_standard};
use serde_json::Value;
use support::sink::{Answer, Sink};

fn conformance(file: &str) -> Vec<u8> {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/conformance"
    ))
    .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The seed body and the secrets its reference signatures were made with.
fn seed_vector() -> (Vec<u8>, Secret, Secret) {
    let doc: Value = serde_json::from_slice(&conformance("signatures.json")).unwrap();
    let v = doc["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["body_file"] == "flag_updated_seed.json")
        .unwrap();
    let flagsmith = Secret::new(v["flagsmith"]["secret"].as_str().unwrap()).unwrap();
    let standard = Secret::new(v["standard"]["secret"].as_str().unwrap()).unwrap();
    (conformance("flag_updated_seed.json"), flagsmith, standard)
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn client() -> DeliveryClient {
    DeliveryClient::new(Duration::from_secs(10)).unwrap()
}

/// Checks a received request's Standard Webhooks signature with one secret.
fn verify(r: &support::sink::Received, secret: &Secret) -> Result<(), VerifyError> {
    verify_standard(
        std::slice::from_ref(secret),
        r.header("webhook-id").unwrap(),
        r.header("webhook-timestamp").unwrap(),
        r.header("webhook-signature").unwrap(),
        &r.body,
        now_unix(),
        300,
    )
}

/// How many `v1,` entries a request's `webhook-signature` carries.
fn signature_count(r: &support::sink::Received) -> usize {
    r.header("webhook-signature").unwrap().split(' ').count()
}

/// One unsigned attempt with an empty JSON body.
async fn attempt_unsigned(client: &DeliveryClient, url: &str, event_id: &str) -> AttemptOutcome {
    let url = url.parse().unwrap();
    client
        .attempt(SignedDelivery {
            url: &url,
            secrets: &[],
            event_id,
            sequence: 1,
            body: Bytes::from_static(b"{}"),
        })
        .await
}

#[tokio::test]
async fn a_delivery_carries_the_exact_body_and_signatures_that_verify() {
    let sink = Sink::start(Vec::new(), Answer::Status(200)).await;
    let (body, flagsmith_secret, standard_secret) = seed_vector();
    let url = sink.url("/hook").parse().unwrap();
    let secrets = [flagsmith_secret.clone(), standard_secret.clone()];
    let outcome = client()
        .attempt(SignedDelivery {
            url: &url,
            secrets: &secrets,
            event_id: "evt_000001",
            sequence: 42,
            body: Bytes::from(body.clone()),
        })
        .await;
    assert!(outcome.delivered(), "{outcome:?}");
    assert_eq!(outcome.status, Some(200));

    let received = sink.received();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert_eq!(r.body, body, "the body is sent byte for byte");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.header("user-agent"),
        Some(concat!("flagpost/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(r.header("x-flagpost-sequence"), Some("42"));
    assert_eq!(r.header("webhook-id"), Some("evt_000001"));
    verify_flagsmith(
        std::slice::from_ref(&flagsmith_secret),
        &r.body,
        r.header("x-flagsmith-signature").unwrap(),
    )
    .unwrap();
    for secret in &secrets {
        verify(r, secret).unwrap();
    }
}

#[tokio::test]
async fn during_a_rotation_both_secrets_sign_and_afterwards_only_the_new_one() {
    let sink = Sink::start(Vec::new(), Answer::Status(204)).await;
    let url = sink.url("/").parse().unwrap();
    let old = Secret::new("old-secret-value").unwrap();
    let new = Secret::new("whsec_bmV3LXNlY3JldC1rZXktYnl0ZXM=").unwrap();
    let body = Bytes::from(conformance("flag_created_flagsmith.json"));
    let client = client();
    for secrets in [vec![new.clone(), old.clone()], vec![new.clone()]] {
        let outcome = client
            .attempt(SignedDelivery {
                url: &url,
                secrets: &secrets,
                event_id: "evt_rotation",
                sequence: 1,
                body: body.clone(),
            })
            .await;
        assert!(outcome.delivered(), "{outcome:?}");
    }
    let received = sink.received();
    let during = &received[0];
    assert_eq!(signature_count(during), 2);
    verify(during, &old).unwrap();
    verify(during, &new).unwrap();
    // X-Flagsmith-Signature has room for one: the newest.
    let flagsmith = during.header("x-flagsmith-signature").unwrap();
    verify_flagsmith(std::slice::from_ref(&new), &during.body, flagsmith).unwrap();
    verify_flagsmith(std::slice::from_ref(&old), &during.body, flagsmith).unwrap_err();

    let after = &received[1];
    assert_eq!(signature_count(after), 1);
    verify(after, &new).unwrap();
    verify(after, &old).unwrap_err();
}

#[tokio::test]
async fn a_redirect_is_a_failed_attempt_and_is_not_followed() {
    let sink = Sink::start(Vec::new(), Answer::Status(200)).await;
    sink.set_answer(Answer::WithHeaders(
        307,
        vec![("location", sink.url("/elsewhere"))],
    ));
    let outcome = attempt_unsigned(&client(), &sink.url("/hook"), "evt_redirect").await;
    assert!(!outcome.delivered());
    assert_eq!(outcome.status, Some(307));
    let paths: Vec<String> = sink.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/hook"]);
}

#[tokio::test]
async fn an_endpoint_that_never_answers_is_a_timed_out_attempt() {
    let sink = Sink::start(Vec::new(), Answer::Hang).await;
    let outcome = attempt_unsigned(
        &DeliveryClient::new(Duration::from_millis(300)).unwrap(),
        &sink.url("/"),
        "evt_hang",
    )
    .await;
    assert!(!outcome.delivered());
    assert_eq!(outcome.status, None);
    assert!(
        outcome.error.as_deref().unwrap().contains("timed out"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_refused_connection_and_a_retry_after_are_reported() {
    let closed = Sink::closed_port().await;
    let client = client();
    let refused = attempt_unsigned(&client, &format!("http://{closed}/"), "evt_refused").await;
    assert!(!refused.delivered());
    assert!(
        refused.error.as_deref().unwrap().contains("onnect"),
        "{refused:?}"
    );

    let sink = Sink::start(
        vec![Answer::WithHeaders(429, vec![("retry-after", "7".into())])],
        Answer::Status(200),
    )
    .await;
    let limited = attempt_unsigned(&client, &sink.url("/"), "evt_limited").await;
    assert_eq!(limited.status, Some(429));
    assert_eq!(limited.retry_after, Some(Duration::from_secs(7)));
    assert!(!limited.delivered());
}

// ---------------------------------------------------------------------------------------------
// Lanes on a real store: a redb file in a temp dir, the real dispatcher, real sinks.
// ---------------------------------------------------------------------------------------------

use std::sync::Arc;

use flagpost::changes::{Author, Outbox};
use flagpost::config::Config;
use flagpost::delivery::{DeliveryConfig, DeliveryMetrics, Dispatcher, Jitter};
use flagpost::store::deliveries::{
    AttemptRecord, DeadLetter, attempts_for_event, count_pending, list_dead_letters,
};
use flagpost::store::{Store, StoreOptions};
use flagpost::wire::EventType;
use tokio::sync::watch;

const ADMIN_TOKEN: &str = "admin-token-0123456789";

struct Hook {
    name: &'static str,
    url: String,
    secrets: Vec<&'static str>,
    enabled: bool,
    ordered: bool,
    max_in_flight: Option<usize>,
}

impl Hook {
    fn new(name: &'static str, url: String) -> Hook {
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

fn config(hooks: &[Hook]) -> Arc<Config> {
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
fn fast_settings(retries: usize) -> DeliveryConfig {
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

struct Harness {
    _dir: tempfile::TempDir,
    store: Store,
    config: watch::Sender<Arc<Config>>,
    dispatcher: Arc<Dispatcher>,
}

impl Harness {
    async fn start(hooks: &[Hook], settings: DeliveryConfig) -> Harness {
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

    fn reconfigure(&self, hooks: &[Hook]) {
        self.config.send_replace(config(hooks));
    }

    /// Commits one event through the change path's outbox: a row for every subscribed endpoint.
    async fn commit_event(&self, body: &str) -> u64 {
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

    async fn pending(&self, endpoint: &'static str) -> u64 {
        self.store
            .read(move |txn| count_pending(txn, endpoint, 0))
            .await
            .unwrap()
    }

    async fn dead_letters(&self, endpoint: &'static str) -> Vec<DeadLetter> {
        self.store
            .read(move |txn| list_dead_letters(txn, Some(endpoint), None, 1000))
            .await
            .unwrap()
    }

    async fn attempts(&self, sequence: u64) -> Vec<AttemptRecord> {
        self.store
            .read(move |txn| attempts_for_event(txn, sequence))
            .await
            .unwrap()
    }

    /// Polls the store until `done` holds; the bound only keeps a broken test from hanging.
    async fn eventually<F, Fut>(&self, what: &str, done: F)
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

    async fn stop(self) {
        self.dispatcher.shutdown().await;
        self.store.shutdown().await;
    }
}

fn sequences(received: &[support::sink::Received]) -> Vec<u64> {
    received
        .iter()
        .map(|r| r.header("x-flagpost-sequence").unwrap().parse().unwrap())
        .collect()
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
async fn serve_admin(h: &Harness) -> std::net::SocketAddr {
    let router = flagpost::api::admin::router(h.dispatcher.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// One request to the admin API: status and body.
async fn admin_request(
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

// ---------------------------------------------------------------------------------------------
// The real binary, killed with SIGKILL while changes stream in and deliveries go out.
// ---------------------------------------------------------------------------------------------

#[path = "sidecar/common.rs"]
#[allow(dead_code)]
mod sidecar;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_stream_of_changes_delivers_every_acknowledged_event_with_stable_ids() {
    use hyper::{Method, StatusCode};
    use serde_json::json;
    use sidecar::{Process, call, config_toml, free_addr};
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    const CLIENTS: usize = 8;
    const ACKS_PER_ROUND: usize = 120;

    let sink = Sink::start(Vec::new(), Answer::Status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let config_path = dir.path().join("flagpost.toml");
    let extra = format!(
        r#"
[[environments.webhooks]]
name = "sink"
url = "{}"
secrets = [{{ value = "kill-test-secret" }}]
[delivery]
retry_schedule = ["50ms", "50ms", "50ms", "50ms", "50ms"]
jitter = "none"
"#,
        sink.url("/hook")
    );
    std::fs::write(&config_path, config_toml(dir.path(), addr, &extra)).unwrap();

    let process = Process::start(&config_path, addr);
    process.wait_ready().await;
    let (status, body) = call(
        Method::POST,
        &process.url("/api/v1/features"),
        Some(json!({"project": 1, "name": "stream"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let feature = body["feature"]["id"].as_u64().unwrap();

    // Every acknowledged event that the sink subscribes to: sequence -> event id.
    let acked: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
    let record = |acked: &Mutex<BTreeMap<u64, String>>, answer: &Value| {
        for event in answer["events"].as_array().unwrap() {
            if event["event_type"] != "AUDIT_LOG_CREATED" {
                acked.lock().unwrap().insert(
                    event["sequence"].as_u64().unwrap(),
                    event["id"].as_str().unwrap().to_owned(),
                );
            }
        }
    };
    record(&acked, &body);

    for acknowledged in
        sidecar::stream_changes_and_kill(process, &config_path, feature, CLIENTS, 3, ACKS_PER_ROUND)
            .await
    {
        record(&acked, &acknowledged.answer);
    }

    // Restarted once more: delivery resumes from the outbox.
    let mut process = Process::start(&config_path, addr);
    process.wait_ready().await;
    let acked = acked.lock().unwrap().clone();
    let received = sink
        .wait_until("every acknowledged event at the sink", |received| {
            let seen: BTreeSet<u64> = sequences(received).into_iter().collect();
            acked.keys().all(|s| seen.contains(s))
        })
        .await;
    let mut ids: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for r in &received {
        let sequence: u64 = r.header("x-flagpost-sequence").unwrap().parse().unwrap();
        ids.entry(sequence)
            .or_default()
            .insert(r.header("webhook-id").unwrap().to_owned());
    }
    for (sequence, id) in &acked {
        let seen = &ids[sequence];
        assert_eq!(seen.len(), 1, "event {sequence} arrived with ids {seen:?}");
        assert!(
            seen.contains(id),
            "event {sequence}: {seen:?}, acknowledged as {id}"
        );
    }
    // Duplicates are allowed (at-least-once) and carry the same id, checked above for all.
    process.terminate();
}

// ---------------------------------------------------------------------------------------------
// Secrets leave the process only as signatures.
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Retention: attempt records and delivered events are pruned; pending and dead-lettered stay.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn retention_prunes_delivered_events_and_old_attempts_only() {
    use flagpost::store::deliveries::{
        AttemptResult, DeliveryOutcome, prune_attempts, prune_delivered_events, record_outcomes,
    };
    use flagpost::store::schema::{ATTEMPTS, EVENTS};
    use redb::ReadableTableMetadata;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flagpost.redb");
    let store = tokio::task::spawn_blocking(move || Store::open(&path, StoreOptions::default()))
        .await
        .unwrap()
        .unwrap();
    let attempt = |sequence: u64, result: AttemptResult| AttemptRecord {
        endpoint: "a".into(),
        sequence,
        attempt: 1,
        at_ms: 1_000,
        latency_ms: 1.0,
        status: Some(200),
        error: None,
        result,
        next_attempt_at_ms: None,
    };
    let outcomes = vec![
        DeliveryOutcome::Delivered(attempt(1, AttemptResult::Delivered)),
        DeliveryOutcome::DeadLettered {
            attempt: attempt(2, AttemptResult::DeadLettered),
            letter: DeadLetter {
                endpoint: "a".into(),
                sequence: 2,
                event_id: "evt".into(),
                reason: "retry schedule spent after 1 attempts".into(),
                attempts: 1,
                last_status: Some(500),
                last_error: None,
                dead_lettered_at_ms: 1_000,
            },
        },
    ];
    // 1 delivered, 2 dead-lettered, 3 pending, 4 for no endpoint but after a pending one; all
    // committed at 1,000 ms.
    let config = config(&[Hook::new("a", "http://127.0.0.1:9/".into())]);
    store
        .write(move |tables| {
            let author = Author::system("tests");
            let then = time::OffsetDateTime::from_unix_timestamp(1).unwrap();
            let mut outbox = Outbox::new(&config, &author, then);
            for event_type in [
                EventType::FlagUpdated,
                EventType::FlagUpdated,
                EventType::FlagUpdated,
            ] {
                outbox.push(tables, event_type, Some(1), b"{}")?;
            }
            outbox.push(tables, EventType::AuditLogCreated, None, b"{}")?;
            Ok(())
        })
        .await
        .unwrap();
    store
        .write_txn(move |txn| {
            record_outcomes(txn, &outcomes)?;
            Ok(())
        })
        .await
        .unwrap();
    let count = |table: &'static str| {
        let store = store.clone();
        async move {
            store
                .read(move |txn| {
                    Ok(match table {
                        "events" => txn.open_table(EVENTS)?.len()?,
                        _ => txn.open_table(ATTEMPTS)?.len()?,
                    })
                })
                .await
                .unwrap()
        }
    };
    let prune = |cutoff: u64| {
        let store = store.clone();
        async move {
            store
                .write_txn(move |txn| {
                    let attempts = prune_attempts(txn, cutoff, 0, 100)?.1;
                    let events = prune_delivered_events(txn, cutoff, 0, 100)?.1;
                    Ok((attempts, events))
                })
                .await
                .unwrap()
        }
    };
    // Nothing is past a retention that ends before the records were made.
    assert_eq!(prune(500).await, (0, 0));
    assert_eq!((count("events").await, count("attempts").await), (4, 2));
    // Past it: both attempts go, but of the events only the delivered one.
    assert_eq!(prune(2_000).await, (2, 1));
    assert_eq!((count("events").await, count("attempts").await), (3, 0));
    let remaining: Vec<u64> = store
        .read(|txn| {
            let events = txn.open_table(EVENTS)?;
            let mut sequences = Vec::new();
            for entry in redb::ReadableTable::range::<u64>(&events, ..)? {
                sequences.push(entry?.0.value());
            }
            Ok(sequences)
        })
        .await
        .unwrap();
    assert_eq!(remaining, [2, 3, 4]);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_bad_requests_with_a_clear_error_and_changes_nothing() {
    let sink = Sink::start(Vec::new(), Answer::Status(200)).await;
    let mut hook = Hook::new("held", sink.url("/"));
    hook.enabled = false;
    let h = Harness::start(&[hook], fast_settings(3)).await;
    h.commit_event("{}").await;
    let admin = serve_admin(&h).await;
    for (method, path, body, status, says) in [
        ("GET", "/attempts", "", 400, "give sequence"),
        (
            "GET",
            "/deliveries/pending?endpoint=held&limit=0",
            "",
            400,
            "limit 0",
        ),
        (
            "GET",
            "/deliveries/pending?after=3",
            "",
            400,
            "after needs an endpoint",
        ),
        (
            "GET",
            "/dead-letters?after=3",
            "",
            400,
            "after needs an endpoint",
        ),
        (
            "POST",
            "/dead-letters/replay",
            r#"{"endpoint":"nowhere"}"#,
            404,
            "not configured",
        ),
        (
            "POST",
            "/dead-letters/replay",
            r#"{"sequence":1}"#,
            400,
            "sequence needs an endpoint",
        ),
        (
            "POST",
            "/dead-letters/replay",
            r#"{"endpoint":"held","sequence":1}"#,
            404,
            "no dead letter",
        ),
        (
            "POST",
            "/dead-letters/replay",
            r#"{"endpont":"held"}"#,
            // As in the change API: an unknown field is a malformed request.
            400,
            "endpont",
        ),
    ] {
        let (got, answer) = admin_request(admin, method, path, body).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert!(answer.contains(says), "{method} {path}: {answer}");
    }
    // Without the token nothing is listed.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    let response = client
        .get(
            format!("http://{admin}/deliveries/pending")
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // The pending row is untouched.
    assert_eq!(h.pending("held").await, 1);
    let (status, listed) =
        admin_request(admin, "GET", "/deliveries/pending?endpoint=held", "").await;
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["deliveries"][0]["sequence"], 1);
    assert_eq!(listed["deliveries"][0]["attempts"], 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_replays_through_the_running_sidecar() {
    use flagpost::cli::deliveries::{CliError, DeliveriesArgs, DeliveriesCommand, run};
    let mut hook = Hook::new("held", "http://127.0.0.1:9/".into());
    hook.enabled = false;
    let h = Harness::start(&[hook], fast_settings(3)).await;
    h.commit_event("{}").await;
    let router = axum::Router::new().nest(
        "/api/v1/admin",
        flagpost::api::admin::router(h.dispatcher.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let args = |token: &str, command| DeliveriesArgs {
        url: url.clone(),
        token: token.to_owned(),
        command,
    };

    let listed = run(args(
        ADMIN_TOKEN,
        DeliveriesCommand::Pending {
            endpoint: Some("held".into()),
            after: None,
            limit: None,
        },
    ))
    .await
    .unwrap();
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["deliveries"][0]["endpoint"], "held");
    assert_eq!(listed["deliveries"][0]["sequence"], 1);

    let nothing_chosen = run(args(
        ADMIN_TOKEN,
        DeliveriesCommand::Replay {
            endpoint: None,
            sequence: None,
            all: false,
        },
    ))
    .await;
    assert!(matches!(nothing_chosen, Err(CliError::ReplayWhat)));

    let refused = run(args(
        "not-a-token",
        DeliveriesCommand::DeadLetters {
            endpoint: None,
            limit: None,
        },
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(refused, CliError::Refused { status: 401, .. }),
        "{refused}"
    );
    h.stop().await;
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

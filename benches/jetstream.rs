//! NATS JetStream, measured against a real `nats-server` on 127.0.0.1 (Debian's, as the tests use).
//!
//! Run with `cargo bench --bench jetstream`. Figures print as Markdown table rows.
//!
//! - `fanout`: one change through the real flagpost binary's API to 1,000 consumers, simulated in
//!   this process (1,000 durable pull consumers on one connection, each acknowledging), against
//!   the same change to 1,000 HTTP endpoints (one minimal hyper sink in this process, a path per
//!   endpoint), each flagpost started fresh in the same run. Time from sending the change to the
//!   1,000th receipt (median of `FLAGPOST_BENCH_CHANGES`, default 20, after 3 to warm up), and
//!   flagpost's CPU time per change from `/proc/<pid>/stat`.
//! - `rate`: a backlog of `FLAGPOST_BENCH_BACKLOG` events (default 50,000) published by flagpost's
//!   dispatcher (this process, a JetStream endpoint, 64 in flight), against `async-nats`
//!   publishing the same bodies with the same headers and 64 acknowledgements outstanding, with
//!   no flagpost. Both wait for every PubAck.
//!
//! `FLAGPOST_BENCH_ONLY=fanout|rate` runs one phase.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream;
use bytes::Bytes;
use flagpost::changes::{Author, Outbox};
use flagpost::config::Config;
use flagpost::delivery::{DeliveryConfig, DeliveryMetrics, Dispatcher};
use flagpost::store::{Store, StoreOptions};
use flagpost::wire::EventType;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use tokio::sync::watch;

#[path = "../tests/support/config.rs"]
#[allow(dead_code)]
mod config;
#[path = "../tests/support/nats.rs"]
#[allow(dead_code)]
mod nats;
#[path = "../tests/support/process.rs"]
#[allow(dead_code)]
mod process;
#[allow(dead_code)]
mod support;
use config::SidecarConfig;
use nats::NatsServer;
use process::{Running, free_addr};
use support::{Arrivals, arrivals_sink, env_number, http_get, ms, note_arrival, row};

const TOKEN: &str = "bench-token-0123456789";
const SECRET: &str = "whsec_YmVuY2ggamV0c3RyZWFtIHNoYXJlZCBzZWNyZXQ=";
const CONSUMERS: usize = 1000;
const STREAM: &str = "FLAGS";
const SUBJECT: &str = "flagpost.Development";
const WARM_UP: usize = 3;
const IN_FLIGHT: usize = 64;

fn main() {
    flagpost::serve::raise_open_files_limit();
    let only = std::env::var("FLAGPOST_BENCH_ONLY").ok();
    let runs = |phase: &str| only.as_deref().is_none_or(|o| o == phase);
    let work = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("| measurement | result |\n| --- | --- |");
    runtime.block_on(async {
        let nats = NatsServer::single(work.path());
        nats.wait_ready().await;
        if runs("fanout") {
            fanout(work.path(), &nats).await;
        }
        if runs("rate") {
            rate(work.path(), &nats).await;
        }
    });
}

/// 1,000 HTTP endpoints and 1,000 consumers hold 2,000 sockets in this process.
async fn fanout(work: &Path, nats: &NatsServer) {
    let changes = env_number("FLAGPOST_BENCH_CHANGES", 20) as usize;
    // HTTP: 1,000 endpoints on one sink, a path each.
    let arrivals: Arrivals = Arc::default();
    let sink = arrivals_sink("127.0.0.1:0".parse().unwrap(), arrivals.clone());
    let mut endpoints = String::new();
    for n in 0..CONSUMERS {
        endpoints.push_str(&format!(
            "name = \"http-{n}\"\nurl = \"http://{sink}/e{n}\"\nsecrets = [{{ value = {SECRET:?} }}]\n"
        ));
        if n + 1 < CONSUMERS {
            endpoints.push_str("[[environments.webhooks]]\n");
        }
    }
    let (time, cpu) = fanout_through(&work.join("http"), &endpoints, &arrivals, changes).await;
    row(
        "one change to 1,000 HTTP endpoints: time to the 1,000th receipt (median) / flagpost CPU per change",
        format!("{} / {}", ms(time), ms(cpu)),
    );

    // JetStream: one endpoint, 1,000 consumers.
    let arrivals: Arrivals = Arc::default();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let context = async_nats::jetstream::new(client.clone());
    let stream = context
        .get_or_create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![SUBJECT.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    for n in 0..CONSUMERS {
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(format!("consumer-{n}")),
                deliver_policy: DeliverPolicy::New,
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .unwrap();
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            let mut messages = consumer.messages().await.unwrap();
            while let Some(Ok(message)) = messages.next().await {
                let sequence = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("x-flagpost-sequence"))
                    .and_then(|v| v.as_str().parse::<u64>().ok());
                if let Some(sequence) = sequence {
                    note_arrival(&arrivals, sequence);
                }
                let _ = message.ack().await;
            }
        });
    }
    let endpoint = format!(
        "name = \"fleet\"\nsecrets = [{{ value = {SECRET:?} }}]\n\
         [environments.webhooks.jetstream]\nsubject = {SUBJECT:?}\n\
         connection = {{ servers = [{:?}] }}\nstream = {{ name = {STREAM:?} }}\n",
        nats.url()
    );
    let (time, cpu) = fanout_through(&work.join("jetstream"), &endpoint, &arrivals, changes).await;
    row(
        "one change to 1,000 JetStream consumers: time to the 1,000th receipt (median) / flagpost CPU per change",
        format!("{} / {}", ms(time), ms(cpu)),
    );
}

/// Starts flagpost with `webhooks` (the lines of its environment's endpoints), makes changes one
/// at a time, each timed to its 1,000th receipt; answers the median time and flagpost's CPU time
/// per timed change.
async fn fanout_through(
    dir: &Path,
    webhooks: &str,
    arrivals: &Arrivals,
    changes: usize,
) -> (Duration, Duration) {
    std::fs::create_dir_all(dir).unwrap();
    let addr = free_addr();
    let config = SidecarConfig::new(dir, addr)
        .flag_files(None, "3600s")
        .token("bench", None, TOKEN)
        .raw_webhook(webhooks)
        .write();
    let binary = Path::new(env!("CARGO_BIN_EXE_flagpost"));
    let flagpost = Running::serve(binary, &config, "warn", false);
    while http_get(addr, "/healthz").is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let base = format!("http://{addr}");
    let created = put(
        &base,
        "POST",
        "/api/v1/features",
        r#"{"project":1,"name":"fan"}"#,
    )
    .await;
    let feature = created["feature"]["id"].as_u64().unwrap();
    let mut times = Vec::new();
    let mut cpu_before = Duration::ZERO;
    for n in 0..WARM_UP + changes {
        if n == WARM_UP {
            cpu_before = support::cpu_time(flagpost.id());
        }
        let started = Instant::now();
        let path = format!("/api/v1/environments/1/features/{feature}/state");
        let answer = put(
            &base,
            "PUT",
            &path,
            &format!(r#"{{"value": {n}, "enabled": true}}"#),
        )
        .await;
        let sequences: Vec<u64> = answer["events"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"))
            .iter()
            .filter_map(|e| e["sequence"].as_u64())
            .collect();
        let last = loop {
            let received = arrivals.lock().unwrap().clone();
            let copies: Vec<Instant> = sequences
                .iter()
                .flat_map(|s| received.get(s).cloned().unwrap_or_default())
                .collect();
            if copies.len() >= CONSUMERS {
                break copies.into_iter().max().unwrap();
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        };
        if n >= WARM_UP {
            times.push(last.duration_since(started));
        }
    }
    let cpu = (support::cpu_time(flagpost.id()) - cpu_before) / changes as u32;
    drop(flagpost);
    times.sort();
    (times[times.len() / 2], cpu)
}

/// A request with the bench token; answers the JSON body.
async fn put(base: &str, method: &str, path: &str, body: &str) -> serde_json::Value {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let request = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or_default()
}

async fn rate(work: &Path, nats: &NatsServer) {
    let backlog = env_number("FLAGPOST_BENCH_BACKLOG", 50_000);
    let body = Bytes::from(
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/conformance/flag_updated_seed.json"
        ))
        .unwrap_or_else(|_| vec![b'x'; 1000]),
    );
    let client = async_nats::connect(nats.url()).await.unwrap();
    let context = async_nats::jetstream::new(client);
    context
        .get_or_create_stream(stream::Config {
            name: "RATE".into(),
            subjects: vec!["rate.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();

    // Without flagpost: the same bodies, with a message id and a header set of the same size.
    let started = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    for n in 0..backlog {
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(body.clone())
            .message_id(format!("evt_0000000000000001_{n:012}"))
            .header("webhook-id", format!("evt_0000000000000001_{n:012}"))
            .header("webhook-timestamp", "1764633600")
            .header(
                "webhook-signature",
                "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            )
            .header("x-flagsmith-signature", "0".repeat(64))
            .header("x-flagpost-sequence", n.to_string());
        acks.push_back(context.send_publish("rate.raw", message).await.unwrap());
        if acks.len() >= IN_FLIGHT {
            acks.pop_front().unwrap().await.unwrap();
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
    let raw = backlog as f64 / started.elapsed().as_secs_f64();
    row(
        &format!("async-nats alone: {backlog} publishes, {IN_FLIGHT} acknowledgements outstanding"),
        format!("{raw:.0} messages/s"),
    );

    let through = through_flagpost(work, nats, backlog, &body).await;
    row(
        &format!(
            "through flagpost's dispatcher: {backlog} outbox rows, {IN_FLIGHT} in flight, each outcome durably recorded"
        ),
        format!(
            "{through:.0} messages/s, **{:.0}% of async-nats alone**",
            100.0 * through / raw
        ),
    );
}

/// Fills an outbox with `backlog` events for one JetStream endpoint, then starts delivery and
/// times it until the last outcome is recorded; answers deliveries a second.
async fn through_flagpost(work: &Path, nats: &NatsServer, backlog: u64, body: &Bytes) -> f64 {
    let toml = format!(
        "[[environments]]\nid = 1\nname = \"Development\"\napi_key = \"k\"\nproject = 1\n\
         [[environments.webhooks]]\nname = \"rate\"\nsecrets = [{{ value = {SECRET:?} }}]\n\
         [environments.webhooks.jetstream]\nsubject = \"rate.flagpost\"\n\
         connection = {{ servers = [{:?}] }}\nstream = {{ name = \"RATE\", create = false }}\n",
        nats.url()
    );
    let config = Arc::new(Config::parse(&toml).unwrap());
    let path = work.join("rate.redb");
    let store = tokio::task::spawn_blocking(move || Store::open(&path, StoreOptions::default()))
        .await
        .unwrap()
        .unwrap();
    let mut left = backlog;
    while left > 0 {
        let n = left.min(10_000);
        let (body, config) = (body.clone(), config.clone());
        store
            .write(move |tables| {
                let author = Author::system("bench");
                let mut outbox = Outbox::new(&config, &author, time::OffsetDateTime::now_utc());
                for _ in 0..n {
                    outbox.push(tables, EventType::FlagUpdated, Some(1), &body)?;
                }
                Ok(())
            })
            .await
            .unwrap();
        left -= n;
    }
    let _ = std::process::Command::new("sync").status();
    let started = Instant::now();
    let dispatcher = Dispatcher::start(
        store.clone(),
        watch::channel(config).1,
        DeliveryConfig {
            max_in_flight: IN_FLIGHT,
            ..DeliveryConfig::default()
        },
        Arc::new(DeliveryMetrics::default()),
    )
    .await
    .unwrap();
    // Done when the stream holds every message flagpost published (each one acknowledged by
    // then), beside the ones published without flagpost.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream("RATE")
        .await
        .unwrap();
    while stream.info().await.unwrap().state.messages < 2 * backlog {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = backlog as f64 / started.elapsed().as_secs_f64();
    dispatcher.shutdown().await;
    store.shutdown().await;
    rate
}

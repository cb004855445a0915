//! Delivery, measured against a minimal local HTTP sink that answers 200, whose own ceiling is
//! measured in the same run by `wrk` POSTing the same body over the same number of connections.
//!
//! Run with `cargo bench --bench delivery` (needs `wrk`: `apt-get install wrk`). Figures print as
//! Markdown table rows. `FLAGPOST_BENCH_SECONDS` sets the length of each timed phase (default 10),
//! `FLAGPOST_BENCH_BACKLOG` the pending deliveries of the recovery phase (default 1,000,000).
//!
//! Everything but the recovery phase runs the real dispatcher and store in this process (the
//! acknowledgement is the store's durable commit, which is what the change API waits for); the
//! sink runs on a runtime and thread of its own. Recovery runs in a child process, so that its
//! peak memory is its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flagpost::changes::{Author, Outbox};
use flagpost::config::Config;
use flagpost::delivery::{DeliveryConfig, DeliveryMetrics, Dispatcher};
use flagpost::store::deliveries::count_pending;
use flagpost::store::{Store, StoreOptions, Tables};
use flagpost::wire::EventType;
use tokio::sync::watch;

#[allow(dead_code)]
mod support;
use support::{Arrivals, CommitHistogram, Wrk, commit_note, env_number, ms, percentile, row};

const RECOVERY_MODE: &str = "FLAGPOST_BENCH_RECOVERY_DB";

// The dispatcher runs in this process, as it runs in the `flagpost` binary: with the binary's
// allocator (see `src/main.rs`), so that what is measured is what ships. glibc's malloc and free
// were about a twentieth of this bench's instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if let Ok(db) = std::env::var(RECOVERY_MODE) {
        recovery_child(PathBuf::from(db));
        return;
    }
    let seconds: u64 = env_number("FLAGPOST_BENCH_SECONDS", 10);
    let backlog: u64 = env_number("FLAGPOST_BENCH_BACKLOG", 1_000_000);
    // Requests in flight in the throughput phase; the target is set for 8.
    let in_flight = env_number("FLAGPOST_BENCH_IN_FLIGHT", 8) as usize;
    support::require_wrk();
    let body = Bytes::from(
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/conformance/flag_updated_seed.json"
        ))
        .unwrap_or_else(|_| vec![b'x'; 1000]),
    );
    let work = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let sink = Sink::start();
    let only = std::env::var("FLAGPOST_BENCH_ONLY").ok();
    let runs = |phase: &str| only.as_deref().is_none_or(|o| o == phase);
    println!("| measurement | result |\n| --- | --- |");

    let ceiling = Wrk::new(in_flight, seconds)
        .script(&support::post_script(work.path(), &body))
        .run(&format!("http://{}/ceiling", sink.addr));
    row(
        &format!(
            "sink ceiling: minimal hyper server, wrk POSTing the same body, {in_flight} connections"
        ),
        format!("{ceiling:.0} req/s"),
    );

    runtime.block_on(async {
        let work = work.path();
        if runs("latency") {
            latency_phase(work, &sink, seconds, &body).await;
        }
        if runs("fanout") {
            fanout_phase(work, &sink, seconds, &body).await;
        }
        if runs("throughput") {
            throughput_phase(work, &sink, (seconds, ceiling, in_flight), &body).await;
        }
        if runs("recovery") {
            recovery_phase(work, &sink, backlog, &body).await;
        }
    });
}

/// Latency from acknowledgement (durable commit) to the sink's receipt at 1,000 changes/s.
async fn latency_phase(work: &Path, sink: &Sink, seconds: u64, body: &Bytes) {
    let bench = Bench::open(work, "latency", sink, 1).await;
    let dispatcher = bench.start(DeliveryConfig::default()).await;
    let what = "acknowledgement to sink receipt at 1,000 changes/s, 1 endpoint (p50 / p99)";
    bench.latency_row(what, 1000, seconds, body).await;
    bench.finish(dispatcher).await;
}

/// Fan-out to 100 endpoints: one change, then a steady 100 changes/s.
async fn fanout_phase(work: &Path, sink: &Sink, seconds: u64, body: &Bytes) {
    let bench = Bench::open(work, "fanout", sink, 100).await;
    let dispatcher = bench.start(DeliveryConfig::default()).await;
    let sequence = bench.commit(body).await;
    let acked = Instant::now();
    sink.wait_for(sequence, 100).await;
    row(
        "fan-out: one change to 100 endpoints, acknowledgement to the 100th receipt",
        ms(acked.elapsed()),
    );
    let what = "fan-out: steady 100 changes/s to 100 endpoints (10,000 deliveries/s), acknowledgement to receipt (p50 / p99)";
    bench.latency_row(what, 100, seconds, body).await;
    bench.finish(dispatcher).await;
}

/// One endpoint, `in_flight` requests in flight, a backlog big enough to last the phase.
async fn throughput_phase(
    work: &Path,
    sink: &Sink,
    (seconds, ceiling, in_flight): (u64, f64, usize),
    body: &Bytes,
) {
    let count = (ceiling as u64 * seconds / 2).max(10_000);
    let bench = Bench::open(work, "throughput", sink, 1).await;
    bench.fill(count, body).await;
    // The backlog's own writeback is not part of delivering it.
    flush_writeback();
    // What `benches/callgrind/delivery.sh` waits for before it counts.
    eprintln!("throughput phase: backlog of {count} filled");
    let started = Instant::now();
    let settings = DeliveryConfig {
        max_in_flight: in_flight,
        ..DeliveryConfig::default()
    };
    let commits = bench.commits();
    let dispatcher = bench.start(settings).await;
    bench.wait_until_recorded(&dispatcher).await;
    let elapsed = started.elapsed();
    let rate = count as f64 / elapsed.as_secs_f64();
    row(
        &format!(
            "flagpost signed deliveries, 1 endpoint, {in_flight} in flight, every outcome durably recorded"
        ),
        format!(
            "{rate:.0} deliveries/s ({count} in {:.1} s; {:.0}% of the sink ceiling; {}: no bound, \
             as lanes never wait for the recorder's commits)",
            elapsed.as_secs_f64(),
            100.0 * rate / ceiling,
            bench.commit_note(commits.as_ref(), None)
        ),
    );
    bench.finish(dispatcher).await;
}

/// Recovery: a backlog written here, delivered by a fresh process.
async fn recovery_phase(work: &Path, sink: &Sink, backlog: u64, body: &Bytes) {
    let bench = Bench::open(work, "recovery", sink, 1).await;
    bench.fill(backlog, body).await;
    bench.store.shutdown().await;
    let db = bench.path.clone();
    drop(bench);
    let output = Command::new(std::env::current_exe().unwrap())
        .env(RECOVERY_MODE, &db)
        .env("FLAGPOST_BENCH_SINK", sink.addr.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "recovery child failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in text.lines() {
        let (what, value) = line.split_once('=').unwrap();
        row(
            &format!("recovery with {backlog} deliveries pending: {what}"),
            value.to_owned(),
        );
    }
    flush_writeback();
}

/// Lets the OS write back what a phase left dirty, so that its flush does not stall the next
/// phase's fsyncs.
fn flush_writeback() {
    let _ = Command::new("sync").status();
}

/// The minimal sink: answers 200 to everything, notes when each sequence arrived. Runs on a
/// single-threaded runtime of its own thread, for the ceiling and for flagpost alike.
struct Sink {
    addr: SocketAddr,
    arrivals: Arrivals,
}

impl Sink {
    fn start() -> Sink {
        Sink::start_on("127.0.0.1:0".parse().unwrap())
    }

    fn start_on(addr: SocketAddr) -> Sink {
        let arrivals = Arrivals::default();
        let addr = support::arrivals_sink(addr, arrivals.clone());
        Sink { addr, arrivals }
    }

    async fn wait_for(&self, sequence: u64, copies: usize) {
        loop {
            if self
                .arrivals
                .lock()
                .unwrap()
                .get(&sequence)
                .map_or(0, Vec::len)
                >= copies
            {
                return;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
}

struct Bench {
    path: PathBuf,
    store: Store,
    config: watch::Sender<Arc<Config>>,
    endpoints: Vec<String>,
    sink_arrivals: Arrivals,
}

impl Bench {
    async fn open(work: &Path, name: &str, sink: &Sink, endpoints: usize) -> Bench {
        let path = work.join(format!("{name}.redb"));
        let open = path.clone();
        let store =
            tokio::task::spawn_blocking(move || Store::open(&open, StoreOptions::default()))
                .await
                .unwrap()
                .unwrap();
        let config = Arc::new(Config::parse(&endpoint_config(sink.addr, endpoints)).unwrap());
        let endpoints = config.webhooks().map(|w| w.name.clone()).collect();
        sink.arrivals.lock().unwrap().clear();
        Bench {
            path,
            store,
            config: watch::channel(config).0,
            endpoints,
            sink_arrivals: sink.arrivals.clone(),
        }
    }

    /// The store writer's commit latency so far, encoded as `/metrics` shows it (the store runs
    /// in this process, so there is no `/metrics` to read).
    fn commits(&self) -> Option<CommitHistogram> {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register(support::SIDECAR_COMMITS, "", self.store.commit_latency());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).ok()?;
        CommitHistogram::parse(&text, support::SIDECAR_COMMITS)
    }

    /// The commits since `before` was read (see [`support::commit_note`]).
    fn commit_note(&self, before: Option<&CommitHistogram>, clients: Option<usize>) -> String {
        let during = self.commits().map(|after| after.since(before));
        commit_note(during.as_ref(), clients)
    }

    /// Stops `dispatcher` and the store, and lets the disk settle before the next phase.
    async fn finish(self, dispatcher: Dispatcher) {
        dispatcher.shutdown().await;
        self.store.shutdown().await;
        flush_writeback();
    }

    /// A row named `what`: p50 and p99 of acknowledgement to receipt at a steady `rate` changes
    /// a second (see [`Bench::latency_at_rate`]), with the commits meanwhile.
    async fn latency_row(&self, what: &str, rate: u64, seconds: u64, body: &Bytes) {
        let commits = self.commits();
        let (p50, p99, n) = self.latency_at_rate(rate, seconds, body).await;
        let commits = self.commit_note(commits.as_ref(), None);
        row(
            what,
            format!("{} / {} ({n} deliveries; {commits})", ms(p50), ms(p99)),
        );
    }

    async fn start(&self, settings: DeliveryConfig) -> Dispatcher {
        Dispatcher::start(
            self.store.clone(),
            self.config.subscribe(),
            settings,
            Arc::new(DeliveryMetrics::default()),
        )
        .await
        .unwrap()
    }

    /// Commits `count` events in batches, as the change path would over time.
    async fn fill(&self, count: u64, body: &Bytes) {
        let mut left = count;
        while left > 0 {
            let n = left.min(10_000);
            let (body, config) = (body.clone(), self.config.borrow().clone());
            self.store
                .write(move |tables| {
                    for _ in 0..n {
                        push_event(tables, &config, &body)?;
                    }
                    Ok(())
                })
                .await
                .unwrap();
            left -= n;
        }
    }

    async fn commit(&self, body: &Bytes) -> u64 {
        let (body, config) = (body.clone(), self.config.borrow().clone());
        self.store
            .write(move |tables| Ok(push_event(tables, &config, &body)?))
            .await
            .unwrap()
    }

    /// Waits until the outbox is empty: every delivery made and its outcome committed. Watches
    /// the pending gauge (which the recorder lowers after each commit) rather than counting the
    /// outbox over and over, which would cost the run more than it measures; one count confirms.
    async fn wait_until_recorded(&self, dispatcher: &Dispatcher) {
        let label = DeliveryMetrics::endpoint(&self.endpoints[0]);
        loop {
            if dispatcher.metrics().pending.get_or_create(&label).get() <= 0 {
                let endpoint = self.endpoints[0].clone();
                let pending = self
                    .store
                    .read(move |txn| count_pending(txn, &endpoint, 0))
                    .await
                    .unwrap();
                if pending == 0 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Commits `rate` changes a second for `seconds` (open loop, one write each, concurrently as
    /// API clients would) and returns p50 and p99 of acknowledgement to receipt, over every copy.
    async fn latency_at_rate(
        &self,
        rate: u64,
        seconds: u64,
        body: &Bytes,
    ) -> (Duration, Duration, usize) {
        let acks: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
        let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..rate * seconds {
            ticker.tick().await;
            let (store, body, config, acks) = (
                self.store.clone(),
                body.clone(),
                self.config.borrow().clone(),
                acks.clone(),
            );
            tasks.spawn(async move {
                let sequence = store
                    .write(move |tables| Ok(push_event(tables, &config, &body)?))
                    .await
                    .unwrap();
                acks.lock().unwrap().push((sequence, Instant::now()));
            });
        }
        while tasks.join_next().await.is_some() {}
        let acks = acks.lock().unwrap().clone();
        let copies = self.endpoints.len();
        // Let the last deliveries land.
        loop {
            let landed = {
                let arrivals = self.sink_arrivals.lock().unwrap();
                acks.iter()
                    .all(|(s, _)| arrivals.get(s).map_or(0, Vec::len) >= copies)
            };
            if landed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let arrivals = self.sink_arrivals.lock().unwrap();
        let mut latencies: Vec<Duration> = acks
            .iter()
            .flat_map(|(s, acked)| {
                arrivals[s]
                    .iter()
                    .map(move |at| at.saturating_duration_since(*acked))
            })
            .collect();
        latencies.sort();
        (
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.len(),
        )
    }
}

/// One `FLAG_UPDATED` event through the change path's outbox: a row per subscribed endpoint.
fn push_event(
    tables: &mut Tables<'_>,
    config: &Config,
    body: &[u8],
) -> Result<u64, flagpost::store::StoreError> {
    let author = Author::system("bench");
    let mut outbox = Outbox::new(config, &author, time::OffsetDateTime::now_utc());
    outbox.push(tables, EventType::FlagUpdated, Some(1), body)?;
    Ok(outbox.into_written()[0].sequence)
}

fn endpoint_config(sink: SocketAddr, endpoints: usize) -> String {
    let mut text = String::from(
        "[[environments]]\nid = 1\nname = \"Development\"\napi_key = \"k\"\nproject = 1\n",
    );
    for n in 0..endpoints {
        text.push_str(&format!(
            "[[environments.webhooks]]\nname = \"endpoint-{n}\"\nurl = \"http://{sink}/e{n}\"\nsecrets = [{{ value = \"bench-secret\" }}]\n"
        ));
    }
    text
}

/// The recovery phase, in a process of its own: opens a store with a backlog, starts delivery,
/// and reports the time to the first delivery and the peak memory while the backlog drains.
fn recovery_child(db: PathBuf) {
    let started = Instant::now();
    let sink_addr: SocketAddr = std::env::var("FLAGPOST_BENCH_SINK")
        .unwrap()
        .parse()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = tokio::task::spawn_blocking(move || Store::open(&db, StoreOptions::default()))
            .await
            .unwrap()
            .unwrap();
        let config = Arc::new(Config::parse(&endpoint_config(sink_addr, 1)).unwrap());
        let (_keep, config_rx) = watch::channel(config);
        let metrics = Arc::new(DeliveryMetrics::default());
        let dispatcher = Dispatcher::start(
            store.clone(),
            config_rx,
            DeliveryConfig::default(),
            metrics.clone(),
        )
        .await
        .unwrap();
        let label = DeliveryMetrics::endpoint("endpoint-0");
        let first = loop {
            let done = metrics
                .attempts
                .get(&flagpost::delivery::metrics::AttemptLabels {
                    endpoint: "endpoint-0".into(),
                    outcome: flagpost::delivery::metrics::AttemptKind::Delivered,
                })
                .map_or(0, |c| c.get());
            if done > 0 {
                break started.elapsed();
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        };
        // Drain for a while, then read the peak.
        let before = metrics.pending.get_or_create(&label).get();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let after = metrics.pending.get_or_create(&label).get();
        println!(
            "start (process start, store open, dispatcher) to first delivery={}",
            ms(first)
        );
        println!(
            "deliveries in the 10 s after the first={} ({} pending left)",
            before - after,
            after
        );
        println!("peak RSS={} MiB", support::peak_rss_mib(std::process::id()));
        dispatcher.shutdown().await;
        store.shutdown().await;
    });
}

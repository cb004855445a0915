//! What every bench needs: `wrk`, the minimal hyper server that sets each ceiling, a process's
//! memory from `/proc`, and the writers' durable-commit latency read from `/metrics`. Shared by
//! path with the receiver's bench; each bench uses only part of it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// The sidecar's commit-latency family on `/metrics` (see `Store::commit_latency`).
pub const SIDECAR_COMMITS: &str = "flagpost_store_commit_duration_seconds";
/// The receiver's commit-latency family on `/metrics`.
pub const RECEIVER_COMMITS: &str = "flagpost_receiver_store_commit_duration_seconds";

/// Prints one Markdown table row and flushes, so that a long run shows its progress.
pub fn row(what: &str, result: String) {
    println!("| {what} | {result} |");
    std::io::stdout().flush().unwrap();
}

pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The `q` quantile of sorted durations (nearest rank below).
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// Exits with a message unless `wrk` is on the PATH.
pub fn require_wrk() {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is needed: apt-get install wrk");
        std::process::exit(2);
    }
}

/// One `wrk` run: `connections` connections on at most two threads, for `seconds`.
pub struct Wrk {
    connections: usize,
    seconds: u64,
    script: Option<PathBuf>,
    headers: Vec<String>,
}

impl Wrk {
    pub fn new(connections: usize, seconds: u64) -> Wrk {
        Wrk {
            connections,
            seconds,
            script: None,
            headers: Vec::new(),
        }
    }

    pub fn script(mut self, path: &Path) -> Wrk {
        self.script = Some(path.to_path_buf());
        self
    }

    pub fn header(mut self, header: &str) -> Wrk {
        self.headers.push(header.to_owned());
        self
    }

    /// Runs wrk against `url` and answers requests per second; panics if any request failed.
    pub fn run(&self, url: &str) -> f64 {
        let threads = self.connections.min(2).to_string();
        let mut command = Command::new("wrk");
        command
            .args(["-t", &threads, "-c", &self.connections.to_string()])
            .args(["-d", &format!("{}s", self.seconds)]);
        for header in &self.headers {
            command.args(["-H", header]);
        }
        if let Some(script) = &self.script {
            command.arg("-s").arg(script);
        }
        let output = command.arg(url).output().expect("run wrk");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            !text.contains("Non-2xx"),
            "wrk saw failed requests:\n{text}"
        );
        text.lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no rate in wrk output:\n{text}"))
    }
}

/// A wrk script in `dir` that POSTs `body` as JSON.
pub fn post_script(dir: &Path, body: &[u8]) -> PathBuf {
    let script = dir.join("post.lua");
    let escaped = String::from_utf8_lossy(body)
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = \"{escaped}\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )
    .unwrap();
    script
}

/// The minimal server, the ceiling each bench compares with: hyper's HTTP/1 connection serving
/// `answer` on every connection `listener` accepts, and nothing else. Runs until dropped.
pub async fn serve_minimal<F, Fut>(listener: tokio::net::TcpListener, answer: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let answer = answer.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let answered = answer(request);
                async move { Ok::<_, Infallible>(answered.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// [`serve_minimal`] on a single-threaded runtime of a thread of its own, on `addr` (port 0 for
/// any); answers the address it listens on.
pub fn serve_minimal_on_thread<F, Fut>(addr: SocketAddr, answer: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = std::net::TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            serve_minimal(listener, answer).await;
        });
    });
    addr
}

/// When each copy of each event arrived, by the event's `x-flagpost-sequence`.
pub type Arrivals = Arc<Mutex<HashMap<u64, Vec<Instant>>>>;

/// Notes that a copy of event `sequence` arrived now.
pub fn note_arrival(arrivals: &Arrivals, sequence: u64) {
    arrivals
        .lock()
        .unwrap()
        .entry(sequence)
        .or_default()
        .push(Instant::now());
}

/// A web hook sink on `addr` (port 0 for any) that answers every request `ok` and notes its
/// arrival in `arrivals`; answers the address it listens on.
pub fn arrivals_sink(addr: SocketAddr, arrivals: Arrivals) -> SocketAddr {
    serve_minimal_on_thread(addr, move |request: Request<Incoming>| {
        let arrivals = arrivals.clone();
        async move {
            let sequence = request
                .headers()
                .get("x-flagpost-sequence")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let _ = request.into_body().collect().await;
            if let Some(sequence) = sequence {
                note_arrival(&arrivals, sequence);
            }
            Response::new(Full::new(Bytes::from_static(b"ok")))
        }
    })
}

/// The CPU time `pid` has used (user and system), from `/proc/<pid>/stat`: less sensitive to
/// other processes on the machine than the latencies.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command's closing parenthesis: fields 3 onwards; utime and stime are 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// A field of `/proc/<pid>/status` in KiB: `VmRSS` (resident now) or `VmHWM` (peak resident).
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Peak resident memory of `pid`, in MiB.
pub fn peak_rss_mib(pid: u32) -> u64 {
    memory_kib(pid, "VmHWM") / 1024
}

/// `GET path` over HTTP/1.0 (so the answer is never chunked) from a blocking socket; answers the
/// body when the status is 200.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nhost: {addr}\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.")
        .then(|| head.split(' ').nth(1) == Some("200"))
        .filter(|ok| *ok)
        .map(|_| body.to_owned())
}

/// Waits until `path` answers 200 (start-up, bootstrap), for up to a minute; not timed.
pub fn wait_for_ok(addr: SocketAddr, path: &str) {
    for _ in 0..600 {
        if http_get(addr, path).is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{addr}{path} did not answer 200 within a minute");
}

/// A commit-latency histogram from OpenMetrics text: cumulative counts by upper bound (seconds).
#[derive(Debug, Clone, Default)]
pub struct CommitHistogram {
    buckets: Vec<(f64, u64)>,
}

impl CommitHistogram {
    /// `None` when `family` is not in the text.
    pub fn parse(text: &str, family: &str) -> Option<CommitHistogram> {
        let prefix = format!("{family}_bucket{{");
        let mut buckets: Vec<(f64, u64)> = Vec::new();
        for line in text.lines() {
            // `name_bucket{labels} count`, perhaps followed by ` # {exemplar} value`.
            let Some((labels, rest)) = line.strip_prefix(&prefix).and_then(|l| l.split_once("} "))
            else {
                continue;
            };
            let le = labels.split(',').find_map(|l| l.strip_prefix("le="));
            let le = le.and_then(|le| le.trim_matches('"').parse::<f64>().ok());
            let count = rest.split_whitespace().next().and_then(|c| c.parse().ok());
            let (Some(le), Some(count)) = (le, count) else {
                continue;
            };
            // Series with other labels add up per bound.
            match buckets.iter_mut().find(|(bound, _)| *bound == le) {
                Some((_, total)) => *total += count,
                None => buckets.push((le, count)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        (!buckets.is_empty()).then_some(CommitHistogram { buckets })
    }

    /// The histogram on `addr`'s `/metrics`; `None` when it is not there.
    pub fn fetch(addr: SocketAddr, family: &str) -> Option<CommitHistogram> {
        CommitHistogram::parse(&http_get(addr, "/metrics")?, family)
    }

    /// The commits since `earlier` was read.
    pub fn since(&self, earlier: Option<&CommitHistogram>) -> CommitHistogram {
        let before = |bound: f64| {
            earlier
                .and_then(|e| e.buckets.iter().find(|(b, _)| *b == bound))
                .map_or(0, |(_, count)| *count)
        };
        CommitHistogram {
            buckets: self
                .buckets
                .iter()
                .map(|&(bound, count)| (bound, count.saturating_sub(before(bound))))
                .collect(),
        }
    }

    pub fn commits(&self) -> u64 {
        self.buckets.last().map_or(0, |(_, count)| *count)
    }

    /// The median, interpolated linearly within its bucket (as Prometheus' `histogram_quantile`
    /// does); `None` without commits.
    pub fn p50(&self) -> Option<Duration> {
        self.quantile(0.50)
    }

    /// The 99th percentile, likewise.
    pub fn p99(&self) -> Option<Duration> {
        self.quantile(0.99)
    }

    fn quantile(&self, q: f64) -> Option<Duration> {
        let rank = self.commits() as f64 * q;
        let (mut lower, mut below) = (0.0, 0u64);
        for &(bound, count) in &self.buckets {
            if count > 0 && count as f64 >= rank {
                if bound.is_infinite() {
                    return Some(Duration::from_secs_f64(lower));
                }
                let within = (rank - below as f64) / (count - below) as f64;
                return Some(Duration::from_secs_f64(lower + (bound - lower) * within));
            }
            (lower, below) = (bound, count);
        }
        None
    }
}

/// What a writer's commits were during one phase of a bench: read before it, noted after it.
pub struct CommitWatch {
    addr: SocketAddr,
    family: &'static str,
    before: Option<CommitHistogram>,
}

impl CommitWatch {
    pub fn start(addr: SocketAddr, family: &'static str) -> CommitWatch {
        CommitWatch {
            addr,
            family,
            before: CommitHistogram::fetch(addr, family),
        }
    }

    /// The phase's commits: see [`commit_note`].
    pub fn note(&self, clients: Option<usize>) -> String {
        let during = CommitHistogram::fetch(self.addr, self.family)
            .map(|after| after.since(self.before.as_ref()));
        commit_note(during.as_ref(), clients)
    }
}

/// "commit p50 1.20 ms, bound 64 / 1.20 ms = 53333/s": the writer's median durable-commit
/// latency over `commits`, and the rate it caps `clients` concurrent clients at, each waiting for
/// its own commit; without `clients`, "commit p50 0.40 ms, p99 0.80 ms". "n/a" when the writer
/// does not publish the histogram.
pub fn commit_note(commits: Option<&CommitHistogram>, clients: Option<usize>) -> String {
    let Some(p50) = commits.and_then(CommitHistogram::p50) else {
        return "commit p50 n/a".into();
    };
    match clients {
        Some(clients) => format!(
            "commit p50 {}, bound {clients} / {} = {:.0}/s",
            ms(p50),
            ms(p50),
            clients as f64 / p50.as_secs_f64()
        ),
        // A steady rate or one client: what a waiter meets is the tail as much as the median.
        None => {
            let p99 = commits.and_then(CommitHistogram::p99).unwrap_or(p50);
            format!("commit p50 {}, p99 {}", ms(p50), ms(p99))
        }
    }
}

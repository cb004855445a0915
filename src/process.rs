//! What both binaries set up for their process, the same way: logs to stderr, as text or JSON
//! lines (`[log] format`), with repeated errors limited to one line per kind per interval, and the
//! signal that stops them.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Logs to stderr at `RUST_LOG`'s levels (`info` when unset or invalid), in `format`: text,
/// coloured only on a terminal (and not with `NO_COLOR` set) so that captured logs stay plain,
/// or one JSON object per line (the event's fields at the top level beside `timestamp`, `level`
/// and `target`), never coloured.
pub fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(colour_on_stderr()).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_ansi(false).init(),
    }
    log_panics();
}

/// Colour only for a person at a terminal: never into a file or a pipe, and not when `NO_COLOR`
/// (no-color.org) asks for none.
fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// How often one kind of error is logged at most; the line after a quiet spell counts the ones
/// left out (`suppressed`).
pub const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The limiter every repeated error line of both programs goes through: a full disk or a
/// damaged file fails every request, and one line each would flood the log (issue 8 saw 11,145
/// lines in 6 s).
pub static ERROR_LOG: LazyLock<LogLimiter> = LazyLock::new(|| LogLimiter::new(ERROR_LOG_INTERVAL));

/// The most distinct error lines tracked at once; past it, lines whose interval has passed are
/// forgotten (so an error whose text varies cannot grow the map without bound).
const TRACKED_LINES: usize = 1024;

/// Admits one line per distinct (kind, detail) per interval.
pub struct LogLimiter {
    interval: Duration,
    lines: Mutex<HashMap<(String, String), Seen>>,
}

struct Seen {
    logged_at: Instant,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            lines: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)` when this occurrence is to be logged, `n` being how many identical ones were
    /// not since the last line; `None` when it is to be left out (and counted).
    pub fn admit(&self, kind: &str, detail: &str) -> Option<u64> {
        let now = Instant::now();
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let key = (kind.to_owned(), detail.to_owned());
        if let Some(seen) = lines.get_mut(&key) {
            if now.duration_since(seen.logged_at) < self.interval {
                seen.suppressed += 1;
                return None;
            }
            let suppressed = std::mem::take(&mut seen.suppressed);
            seen.logged_at = now;
            return Some(suppressed);
        }
        if lines.len() >= TRACKED_LINES {
            lines.retain(|_, seen| now.duration_since(seen.logged_at) < self.interval);
        }
        lines.insert(
            key,
            Seen {
                logged_at: now,
                suppressed: 0,
            },
        );
        Some(0)
    }
}

/// Panics are logged as errors, through [`ERROR_LOG`]: redb can panic on a damaged file at every
/// read, and the default hook would print each one.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if let Some(suppressed) = ERROR_LOG.admit("panic", &location) {
            tracing::error!(%location, %message, suppressed, "panic");
        }
    }));
}

/// Tells a service manager that the program serves: `READY=1` to the datagram socket named by
/// `NOTIFY_SOCKET` (systemd's `Type=notify`; a path, or an abstract name after `@`), nothing when
/// the variable is unset. A few lines rather than a crate: the protocol is one datagram.
pub fn notify_ready() {
    let Some(socket_name) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(error) = send_ready(&socket_name) {
        tracing::warn!(%error, "cannot tell the service manager that we are ready");
    }
}

#[cfg(target_os = "linux")]
fn send_ready(socket_name: &std::ffi::OsStr) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let socket = UnixDatagram::unbound()?;
    let address = match socket_name.as_bytes().strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
        None => SocketAddr::from_pathname(socket_name)?,
    };
    socket.send_to_addr(b"READY=1", &address)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn send_ready(_socket_name: &std::ffi::OsStr) -> std::io::Result<()> {
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_interval_with_a_count_of_the_rest() {
        let limiter = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(limiter.admit("commit", "disk full"), Some(0));
        for _ in 0..5 {
            assert_eq!(limiter.admit("commit", "disk full"), None);
        }
        assert_eq!(limiter.admit("commit", "damaged"), Some(0), "another error");
        assert_eq!(limiter.admit("read", "disk full"), Some(0), "another kind");
        let elapsed = LogLimiter::new(Duration::ZERO);
        assert_eq!(elapsed.admit("commit", "disk full"), Some(0));
        assert_eq!(elapsed.admit("commit", "disk full"), Some(0));
    }
}

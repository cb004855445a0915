//! Serving HTTP, the same way in both programs: [`serve`] takes a bound listener, a router and the
//! `[server]` settings, and serves HTTP/1.1 until a shutdown future completes.
//!
//! What it guards against, and how:
//! - A connection that sends nothing, or dribbles its headers (slowloris), or sits idle between
//!   requests: hyper's `header_read_timeout`, whose clock starts whenever a connection is ready
//!   for a request, closes it.
//! - Running out of file descriptors: the open-files soft limit is raised to the hard limit at
//!   start, and at most `max_connections` connections are served at once (lowered to what the
//!   limit leaves room for). Beyond it nothing is accepted: new connections wait in the kernel's
//!   listen backlog and are served as soon as a slot frees, instead of being reset, and every
//!   accepted connection keeps the descriptors the process needs for its own files.
//! - A client that sends a whole body the server refused early (413 before reading it): closing
//!   a socket with unread input makes the kernel send a reset, which can destroy the answer
//!   before the client reads it. So a finished connection is closed gracefully: our side is
//!   half-closed after the answer, and what the client still sends is read and discarded (up to
//!   [`LINGER_BYTES`], for at most [`LINGER_TIME`]) until it closes its side.
//! - A client that stops reading a long answer (a change stream): hyper then waits on the socket
//!   and never asks the handler for more, so the handler could not end it. Every request carries
//!   a [`CloseConnection`] with which its handler closes the connection outright.
//! - Small writes held back: Nagle's algorithm keeps a write while an earlier one waits for its
//!   acknowledgement, which the client may delay by up to 40 ms. hyper writes each answer in one
//!   go, so `TCP_NODELAY` costs nothing there, and a change stream's event leaves at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::ServerConfig;

/// Descriptors kept free of connections for the program's own use: its database, the watched
/// folders, outgoing delivery and bootstrap connections, log and snapshot files.
pub const RESERVED_FILES: usize = 256;

/// The most a closing connection reads and discards of what its client still sends.
pub const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// The longest a closing connection waits for its client to finish sending and close.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// The longest a stopping server waits for open answers to finish before it closes their
/// connections: a change stream whose client stopped reading never takes its end, and would
/// otherwise hold the stop (and what follows it, such as the snapshot) until heartbeats drop it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// In every request's extensions: closes the connection the request came on, at once, whatever
/// it is doing (a handler whose client stopped reading its answer uses it).
#[derive(Clone, Default)]
pub struct CloseConnection(Arc<Notify>);

impl CloseConnection {
    pub fn close(&self) {
        // A permit is kept if the connection is not waiting for it at this instant.
        self.0.notify_one();
    }
}

/// Serves `router` on `listener` until `shutdown` completes; then accepts nothing more, lets
/// each connection finish the request it is on (idle ones close at once) for up to
/// [`SHUTDOWN_GRACE`], closes what is still open and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    serve_with_grace(listener, router, config, shutdown, SHUTDOWN_GRACE).await
}

async fn serve_with_grace(
    listener: TcpListener,
    router: Router,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(connection_limit(config.max_connections)));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let next = async {
            let permit = slots.clone().acquire_owned().await;
            (permit, accept(&listener).await)
        };
        let (permit, stream) = tokio::select! {
            next = next => next,
            () = &mut shutdown => break,
        };
        let permit = permit.expect("the connection slots are never closed");
        let connection = Connection {
            http: http.clone(),
            router: router.clone(),
            stopping: stopping.clone(),
            _slot: permit,
        };
        connections.spawn(connection.run(stream));
        // Finished connections are collected as we go, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still answering at the end of the shutdown grace: closed"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// The next connection. Accept errors that concern one connection are skipped; others (out of
/// descriptors, out of memory) are logged and retried after a pause, as they pass when
/// connections close.
async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => return stream,
            Err(error) if is_connection_error(&error) => {}
            Err(error) => {
                tracing::error!(%error, "cannot accept a connection; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// One accepted connection and what it needs; its slot is given back when it is dropped.
struct Connection {
    http: http1::Builder,
    router: Router,
    stopping: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let router = self.router.clone();
        let close = CloseConnection::default();
        let closing = close.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let mut router = router.clone();
            request.extensions_mut().insert(close.clone());
            Box::pin(async move { tower_service::Service::call(&mut router, request).await })
        });
        let mut connection = self.http.serve_connection(TokioIo::new(stream), service);
        let mut shutting_down = false;
        let served = loop {
            tokio::select! {
                served = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)) => {
                    break served;
                }
                _ = self.stopping.wait_for(|stop| *stop), if !shutting_down => {
                    shutting_down = true;
                    std::pin::Pin::new(&mut connection).graceful_shutdown();
                }
                () = closing.0.notified() => {
                    tracing::debug!("connection closed by its handler");
                    return;
                }
            }
        };
        match served {
            // Timed out, or broken: nothing the client sends is worth waiting for.
            Err(error) => tracing::debug!(%error, "connection closed"),
            Ok(()) if *self.stopping.borrow() => {}
            Ok(()) => {
                let stream = connection.into_parts().io.into_inner();
                // A shutdown does not wait for a client that is slow to close.
                tokio::select! {
                    _ = tokio::time::timeout(LINGER_TIME, linger(stream)) => {}
                    _ = self.stopping.wait_for(|stop| *stop) => {}
                }
            }
        }
    }
}

/// Half-closes our side, so the client reads the whole answer and then end of stream, and
/// discards what it still sends until it closes its side: closing with its bytes unread would
/// reset the connection, and a reset can destroy the answer before the client reads it.
async fn linger(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut discard = vec![0; 16 * 1024];
    let mut left = LINGER_BYTES;
    while left > 0 {
        match stream.read(&mut discard).await {
            Ok(0) | Err(_) => return,
            Ok(read) => left = left.saturating_sub(read),
        }
    }
}

/// Raises the open-files limit, logs it, and answers how many connections may be served at once:
/// the configured number, or fewer when the limit leaves no room for them.
fn connection_limit(configured: usize) -> usize {
    let Some(open_files) = raise_open_files_limit() else {
        return configured;
    };
    let room = open_files.saturating_sub(RESERVED_FILES).max(1);
    if room < configured {
        tracing::warn!(
            open_files,
            max_connections = room,
            configured,
            "the open-files limit leaves room for fewer connections than configured"
        );
        room
    } else {
        tracing::info!(open_files, max_connections = configured, "connection limit");
        configured
    }
}

/// Raises the soft open-files limit to the hard limit (the usual soft limit, 1,024, is too few
/// for a server) and answers the soft limit in force; `None` where it cannot be read.
#[cfg(unix)]
pub fn raise_open_files_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, "cannot read the open-files limit");
        return None;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
            tracing::info!(
                from = before,
                to = limit.rlim_cur,
                "open-files soft limit raised to the hard limit"
            );
        } else {
            // macOS refuses a soft limit above its per-process maximum: keep what is in force.
            let error = std::io::Error::last_os_error();
            tracing::warn!(%error, soft = before, hard = limit.rlim_max, "cannot raise the open-files limit");
        }
    }
    Some(usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

#[cfg(not(unix))]
pub fn raise_open_files_limit() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;

    /// An answer whose body never ends (a change stream nobody ends) must not hold the stop
    /// past the grace.
    #[tokio::test]
    async fn a_stop_closes_answers_still_open_after_the_grace() {
        let router = Router::new().route(
            "/forever",
            get(|| async {
                let never = futures_util::stream::pending::<Result<Vec<u8>, std::io::Error>>();
                Body::from_stream(never)
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = ServerConfig::default();
        let grace = Duration::from_millis(200);
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            serve_with_grace(listener, router, &config, shutdown, grace).await
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /forever HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        client.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        stop.send(()).unwrap();
        // Generous: without the grace this never returns.
        tokio::time::timeout(Duration::from_secs(60), server)
            .await
            .expect("serve returned once the grace ran out")
            .unwrap()
            .unwrap();
    }
}

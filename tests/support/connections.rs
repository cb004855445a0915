//! Raw TCP clients for the connection tests of both programs (issue 8, items 7 and 17): idle
//! connections, requests written by hand, and a program started under a low open-files limit.
//! Shared by path with the receiver's tests; it needs only `std`, `tokio` and [`super::process`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::process::Running;

/// Only turns a hang into a failure with a message; no test asserts a duration.
pub const GUARD: Duration = Duration::from_secs(60);

/// Awaits `future`, failing the test with `what` if it has not completed within [`GUARD`].
pub async fn guard<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {GUARD:?}"))
}

/// `binary serve --config <config>` started by a shell whose open-files soft limit is `soft`,
/// as a login shell usually has it (1,024), with the hard limit left as it is.
pub fn serve_with_open_files(binary: &Path, config: &Path, soft: u64) -> Running {
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -S -n {soft} && exec \"$0\" serve --config \"$1\""
        ))
        .arg(binary)
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
    Running { child }
}

/// Waits until `GET /healthz` at `addr` answers 200.
pub async fn wait_healthy(addr: SocketAddr) {
    guard("the program answers /healthz", async {
        loop {
            if let Ok(Ok((200, _))) =
                tokio::time::timeout(Duration::from_secs(5), try_get(addr, "/healthz")).await
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// `n` connections to `addr` that send nothing.
pub async fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    guard(&format!("opening {n} idle connections"), async {
        let mut idle = Vec::with_capacity(n);
        for i in 0..n {
            let stream = TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}"));
            idle.push(stream);
        }
        idle
    })
    .await
}

/// `GET path` on a fresh connection: its status.
pub async fn get_status(addr: SocketAddr, path: &str) -> u16 {
    guard(&format!("GET {path}"), try_get(addr, path))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .0
}

async fn try_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(parse_answer(&answer))
}

/// Writes `head` (a request line and headers, without the blank line) and the first `before`
/// bytes of `body`, waits until the answer has arrived (as for a client still writing when the
/// server answers early), writes the rest of `body` in pieces, and only then reads: the answer's
/// status and body. Panics if the server resets the connection on the way.
pub async fn send_body_across_the_answer(
    addr: SocketAddr,
    head: &str,
    body: &[u8],
    before: usize,
) -> (u16, String) {
    guard("a request written whole, then its answer", async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("{head}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        stream.write_all(&body[..before]).await.unwrap();
        stream.readable().await.unwrap();
        for (i, piece) in body[before..].chunks(16 * 1024).enumerate() {
            stream
                .write_all(piece)
                .await
                .unwrap_or_else(|e| panic!("writing piece {i} after the answer failed: {e}"));
        }
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap_or_else(|e| {
            panic!(
                "reading the answer failed after {} bytes: {e}",
                answer.len()
            )
        });
        parse_answer(&answer)
    })
    .await
}

/// Waits until the server closes `stream` (end of stream or reset); answers what it sent before.
pub async fn closed_by_server(stream: &mut TcpStream, what: &str) -> String {
    guard(what, async {
        let mut received = Vec::new();
        loop {
            let mut buffer = [0u8; 4096];
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return String::from_utf8_lossy(&received).into_owned(),
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
}

/// Whether the server has already closed `stream`, without waiting.
pub fn is_closed_now(stream: &TcpStream) -> bool {
    let mut buffer = [0u8; 64];
    match stream.try_read(&mut buffer) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// An HTTP/1.1 answer's status and body (what follows the blank line).
fn parse_answer(answer: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

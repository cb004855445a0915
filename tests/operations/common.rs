//! The two binaries, started as an operator starts them, and a plain HTTP/1.1 client over a real
//! socket (a scrape needs the answer's headers and its exact bytes).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::process::receiver_beside;

/// The workspace's root, where the README and `config/` are.
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub fn flagpost() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flagpost"))
}

pub fn receiver() -> PathBuf {
    receiver_beside(&flagpost())
}

/// One answer: status, headers (names lowercase) and body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `method path` on `addr` with `headers` and `body`, on a connection of its own; `None` when
/// nothing answers (not started yet).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<Reply> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).expect("a UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<Vec<_>>();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some(Reply {
        status,
        headers,
        body,
    })
}

pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Option<Reply> {
    request(addr, "GET", path, headers, "")
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// Polls `check` until it holds; the generous deadline only turns a hang into a failure.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !check() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `addr` answers `path` with 200.
pub fn wait_for(addr: SocketAddr, path: &str) {
    wait_until(&format!("{addr}{path} answers 200"), || {
        get(addr, path, &[]).is_some_and(|r| r.status == 200)
    });
}

/// The text of a file of the workspace.
pub fn read(path: &str) -> String {
    let full = Path::new(ROOT).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

/// Held by each test that runs a program on its default ports (the quick start, the shipped
/// examples), so that they take turns within this test binary.
pub static DEFAULT_PORTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`DEFAULT_PORTS`] and checks that nothing else holds 7070 and 7071.
pub fn default_ports() -> std::sync::MutexGuard<'static, ()> {
    let guard = DEFAULT_PORTS.lock().unwrap_or_else(|p| p.into_inner());
    for port in [7070, 7071] {
        wait_until(
            &format!("127.0.0.1:{port}, a default port, is free"),
            || std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        );
    }
    guard
}

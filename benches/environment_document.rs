//! `GET /api/v1/environment-document/` for 1,000 features and 100 segments (each with rules and
//! an override), against the ceiling: a minimal hyper server answering the same bytes.
//!
//! Run with `cargo bench --bench environment_document` (needs `wrk`). flagpost's release binary
//! runs on 127.0.0.1 and is filled through its API; the document is then read with wrk (32
//! connections, `FLAGPOST_BENCH_SECONDS`, default 10) from flagpost and from the minimal server.
//! Figures print as Markdown table rows.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

#[path = "../tests/support/config.rs"]
#[allow(dead_code)]
mod config;
#[path = "../tests/support/process.rs"]
#[allow(dead_code)]
mod process;
#[allow(dead_code)]
mod support;
use config::SidecarConfig;
use process::{Running, free_addr};
use support::{Wrk, row};

const TOKEN: &str = "bench-token-0123456789";
const SERVER_KEY: &str = "ser.bench-document-key";
const FEATURES: u64 = 1000;
const SEGMENTS: u64 = 100;

fn main() {
    support::require_wrk();
    let seconds = support::env_number("FLAGPOST_BENCH_SECONDS", 10);
    let work = tempfile::tempdir().unwrap();
    let sidecar = free_addr();
    let extra = format!(
        "[[environments]]\nid = 2\nname = \"Production\"\napi_key = \"prod-key\"\nproject = 1\n\
         server_keys = [{{ value = \"{SERVER_KEY}\" }}]\n"
    );
    let config = SidecarConfig::new(work.path(), sidecar)
        .flag_files(None, "3600s")
        .token("bench", None, TOKEN)
        .project(1, "Default")
        .extra(&extra)
        .write();
    let binary = Path::new(env!("CARGO_BIN_EXE_flagpost"));
    let _flagpost = Running::serve(binary, &config, "warn", false);
    wait_for_health(sidecar);
    fill(sidecar);

    let document = Bytes::from(document(sidecar));
    let ceiling = support::serve_minimal_on_thread("127.0.0.1:0".parse().unwrap(), move |_| {
        let body = document.clone();
        async move {
            hyper::Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(body))
                .unwrap()
        }
    });
    let path = "/api/v1/environment-document/";
    let wrk = Wrk::new(32, seconds).header(&format!("X-Environment-Key: {SERVER_KEY}"));
    let ours = wrk.run(&format!("http://{sidecar}{path}"));
    let minimal = wrk.run(&format!("http://{ceiling}{path}"));
    println!("| measurement | result |\n| --- | --- |");
    row(
        "GET /api/v1/environment-document/, 1,000 features and 100 segments, 32 connections: flagpost / minimal hyper server, same bytes",
        format!(
            "{ours:.0} / {minimal:.0} requests/s ({:.0}% of the ceiling)",
            ours / minimal * 100.0
        ),
    );
}

fn wait_for_health(addr: SocketAddr) {
    for _ in 0..600 {
        if support::http_get(addr, "/healthz").is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("flagpost did not answer /healthz");
}

/// 1,000 features; 100 segments with nested rules, each overriding one feature in Production.
fn fill(addr: SocketAddr) {
    for i in 0..FEATURES {
        let body = json!({"project": 1, "name": format!("feature_{i}"), "initial_value": i});
        request(addr, "POST", "/api/v1/features", &body, 201);
    }
    for i in 0..SEGMENTS {
        let rules = json!([{"type": "ALL", "rules": [
            {"type": "ANY", "conditions": [
                {"property": "plan", "operator": "EQUAL", "value": format!("plan-{i}")},
                {"property": "age", "operator": "GREATER_THAN", "value": "30"},
            ]},
        ]}]);
        let body = json!({"project": 1, "name": format!("segment_{i}"), "rules": rules});
        let created = request(addr, "POST", "/api/v1/segments", &body, 201);
        let segment = created["segment"]["id"].as_u64().unwrap();
        let path =
            format!("/api/v1/environments/Production/features/feature_{i}/segments/{segment}");
        request(
            addr,
            "PUT",
            &path,
            &json!({"value": "segment", "priority": i}),
            200,
        );
    }
}

/// One request over HTTP/1.0 with the bench token; panics unless it answers `expected`.
fn request(addr: SocketAddr, method: &str, path: &str, body: &Value, expected: u16) -> Value {
    let body = serde_json::to_vec(body).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nhost: {addr}\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let answer = exchange(addr, &[head.as_bytes(), &body].concat());
    let (status, body) = split_answer(&answer);
    assert_eq!(
        status,
        expected,
        "{method} {path}: {}",
        String::from_utf8_lossy(body)
    );
    serde_json::from_slice(body).unwrap()
}

/// The document's bytes, as flagpost answers them.
fn document(addr: SocketAddr) -> Vec<u8> {
    let head = format!(
        "GET /api/v1/environment-document/ HTTP/1.0\r\nhost: {addr}\r\nx-environment-key: {SERVER_KEY}\r\n\r\n"
    );
    let answer = exchange(addr, head.as_bytes());
    let (status, body) = split_answer(&answer);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(body));
    body.to_vec()
}

fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    answer
}

fn split_answer(answer: &[u8]) -> (u16, &[u8]) {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&answer[..end]);
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, &answer[end + 4..])
}

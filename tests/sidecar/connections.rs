//! Issue 8, items 7 and 17 for the sidecar: idle connections cannot starve it (open-files limit,
//! header-read timeout, connection cap), and a refused body's answer can be read.

use std::path::Path;

use crate::common::{Process, Sidecar, TOKEN, free_addr, test_config};
use crate::support::connections::*;

/// Started by a shell with the usual soft limit of 1,024 open files, the binary raises it, so
/// that 2,000 idle connections leave room for a health check.
#[tokio::test(flavor = "multi_thread")]
async fn health_answers_with_2000_idle_connections_open() {
    // This test holds 2,000 sockets of its own.
    flagpost::serve::raise_open_files_limit();
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let config = test_config(dir.path(), addr).write();
    let running = serve_with_open_files(Path::new(env!("CARGO_BIN_EXE_flagpost")), &config, 1024);
    let _process = Process { running, addr };
    wait_healthy(addr).await;

    let idle = open_idle(addr, 2000).await;
    assert_eq!(get_status(addr, "/healthz").await, 200);
    assert_eq!(get_status(addr, "/readyz").await, 200);
    drop(idle);
}

/// A connection that sends nothing, one that stops half-way through its headers, and one kept
/// alive after a request are each closed once the header-read timeout runs out.
#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_closed_after_the_header_read_timeout() {
    let sidecar = Sidecar::start_with("[server]\nheader_read_timeout = \"1s\"\n").await;
    let mut silent = open_idle(sidecar.addr, 1).await.remove(0);
    let mut partial = open_idle(sidecar.addr, 1).await.remove(0);
    tokio::io::AsyncWriteExt::write_all(&mut partial, b"GET /healthz HTTP/1.1\r\nhost: t")
        .await
        .unwrap();
    let mut kept_alive = open_idle(sidecar.addr, 1).await.remove(0);
    tokio::io::AsyncWriteExt::write_all(
        &mut kept_alive,
        b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n",
    )
    .await
    .unwrap();

    let sent = closed_by_server(&mut silent, "a silent connection is closed").await;
    assert_eq!(sent, "");
    let sent = closed_by_server(&mut partial, "half-sent headers are closed").await;
    assert!(!sent.contains("200 OK"), "{sent}");
    let sent = closed_by_server(&mut kept_alive, "an idle kept-alive connection is closed").await;
    assert!(
        sent.starts_with("HTTP/1.1 200 OK"),
        "answered first: {sent}"
    );
    sidecar.stop().await;
}

/// With `max_connections = 2` and two idle connections held, a third connection is served only
/// once the server has closed one of them: it waits, it is not refused.
#[tokio::test(flavor = "multi_thread")]
async fn beyond_the_connection_cap_a_connection_waits_for_a_free_slot() {
    let sidecar =
        Sidecar::start_with("[server]\nheader_read_timeout = \"2s\"\nmax_connections = 2\n").await;
    let idle = open_idle(sidecar.addr, 2).await;
    assert_eq!(get_status(sidecar.addr, "/healthz").await, 200);
    assert!(
        idle.iter().any(is_closed_now),
        "the third connection was served while both idle ones held their slots"
    );
    sidecar.stop().await;
}

/// A client that writes a whole over-limit body before reading, still writing when the server
/// answers, gets the 413 and its JSON error, not a reset.
#[tokio::test(flavor = "multi_thread")]
async fn an_over_limit_body_written_whole_still_reads_its_413() {
    let sidecar = Sidecar::start().await;
    // Sixteen times the default `api.max_body_bytes`.
    let body = vec![b' '; 16 * 64 * 1024];
    for (method, path) in [
        ("POST", "/api/v1/features"),
        ("PUT", "/api/v1/environments/1/features/1/state"),
    ] {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {TOKEN}\r\n\
             content-type: application/json\r\ncontent-length: {}",
            body.len()
        );
        // Twice the limit before the answer: enough for the server to refuse.
        let before = 2 * 64 * 1024;
        let (status, answer) =
            send_body_across_the_answer(sidecar.addr, &head, &body, before).await;
        assert_eq!(status, 413, "{path}: {answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert!(answer["error"].is_string(), "{path}: {answer}");
    }
    sidecar.stop().await;
}

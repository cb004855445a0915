//! Issue 8, items 7 and 17 for the receiver: idle connections cannot starve it (open-files limit,
//! header-read timeout, connection cap), and a 413 can be read by a client that sends its whole
//! body before reading.

use std::path::Path;

use tokio::io::AsyncWriteExt;

use crate::common::connections::*;
use crate::common::*;

/// Started by a shell with the usual soft limit of 1,024 open files, the binary raises it, so
/// that 2,000 idle connections leave room for a health check.
#[tokio::test(flavor = "multi_thread")]
async fn health_answers_with_2000_idle_connections_open() {
    // This test holds 2,000 sockets of its own.
    flagpost::serve::raise_open_files_limit();
    let dir = tempfile::tempdir().unwrap();
    let addr = ([127, 0, 0, 1], free_port()).into();
    let config = test_config(dir.path()).listen(addr).write();
    let binary = Path::new(env!("CARGO_BIN_EXE_flagpost-receiver"));
    let _running = serve_with_open_files(binary, &config, 1024);
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
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(dir.path(), "", "[server]\nheader_read_timeout = \"1s\"\n");
    let receiver = Receiver::start(dir.path(), &toml).await;
    let mut silent = open_idle(receiver.addr, 1).await.remove(0);
    let mut partial = open_idle(receiver.addr, 1).await.remove(0);
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: t")
        .await
        .unwrap();
    let mut kept_alive = open_idle(receiver.addr, 1).await.remove(0);
    kept_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
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
    receiver.stop().await;
}

/// With `max_connections = 2` and two idle connections held, a third connection is served only
/// once the server has closed one of them: it waits, it is not refused.
#[tokio::test(flavor = "multi_thread")]
async fn beyond_the_connection_cap_a_connection_waits_for_a_free_slot() {
    let dir = tempfile::tempdir().unwrap();
    let server = "[server]\nheader_read_timeout = \"2s\"\nmax_connections = 2\n";
    let receiver = Receiver::start(dir.path(), &config_toml(dir.path(), "", server)).await;
    let idle = open_idle(receiver.addr, 2).await;
    assert_eq!(get_status(receiver.addr, "/healthz").await, 200);
    assert!(
        idle.iter().any(is_closed_now),
        "the third connection was served while both idle ones held their slots"
    );
    receiver.stop().await;
}

/// A client that writes a whole over-limit body before reading, still writing when the receiver
/// answers, gets the 413 and its JSON error, not a reset: whether the body's length is declared (refused before it is read) or chunked
/// (refused once the limit is passed).
#[tokio::test(flavor = "multi_thread")]
async fn an_over_limit_body_written_whole_still_reads_its_413() {
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(dir.path(), "max_body_bytes = 1024", "");
    let receiver = Receiver::start(dir.path(), &toml).await;
    let body = vec![b' '; 512 * 1024];
    let declared = format!(
        "POST /webhook HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
         content-length: {}",
        body.len()
    );
    let mut chunked_body = format!("{:x}\r\n", body.len()).into_bytes();
    chunked_body.extend_from_slice(&body);
    chunked_body.extend_from_slice(b"\r\n0\r\n\r\n");
    let chunked = "POST /webhook HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
                   transfer-encoding: chunked";
    for (name, head, body) in [
        ("declared", declared.as_str(), &body),
        ("chunked", chunked, &chunked_body),
    ] {
        let before = 64 * 1024;
        let (status, answer) = send_body_across_the_answer(receiver.addr, head, body, before).await;
        assert_eq!(status, 413, "{name}: {answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert!(answer["error"].is_string(), "{name}: {answer}");
    }
    let (_, metrics) = receiver.get("/metrics", &[]).await;
    let refused = "flagpost_receiver_webhooks_refused_total{reason=\"too_large\"} 2";
    assert!(metrics.as_str().unwrap().contains(refused), "{metrics}");
    receiver.stop().await;
}

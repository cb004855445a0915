//! What makes the receiver fetch from its upstream Flagsmith, and what it forwards there.

use std::time::Duration;

use bytes::Bytes;

use crate::upstream::*;

fn hits(stand_in: &StandIn, server_key: &str) -> u64 {
    stand_in
        .hits
        .lock()
        .unwrap()
        .get(server_key)
        .copied()
        .unwrap_or(0)
}

async fn wait_for_hits(stand_in: &StandIn, server_key: &str, at_least: u64) {
    for _ in 0..600 {
        if hits(stand_in, server_key) >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the upstream never had {at_least} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_hooks_during_a_fetch_queue_one_more_fetch_however_many_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, stand_in) = receiver_at_step(dir.path(), 30, 10).await;
    let (_, _, _, server) = ENVS[0];
    assert_eq!(hits(&stand_in, server), 1, "one fetch at start");
    // A fetch hangs; thirty web hooks arrive while it is in flight.
    stand_in.answer(server, Answer::Hang);
    trigger_fetch(&receiver, 0).await;
    wait_for_hits(&stand_in, server, 2).await;
    for n in 1..=30 {
        trigger_fetch(&receiver, n).await;
    }
    let next = document(&step(31), "live");
    stand_in.answer(server, Answer::Document(next.clone()));
    // The hung fetch times out; the one queued fetch brings the document.
    wait_for_document(&receiver, server, &next).await;
    // One more web hook, one more fetch: nothing else was queued behind it.
    let last = document(&step(32), "live");
    stand_in.answer(server, Answer::Document(last.clone()));
    trigger_fetch(&receiver, 31).await;
    wait_for_document(&receiver, server, &last).await;
    assert_eq!(
        hits(&stand_in, server),
        4,
        "start, the hung fetch, one queued for thirty web hooks, the last"
    );
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_analytics_are_accepted_counted_and_forwarded_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, stand_in) = receiver_at_step(dir.path(), 10, 10).await;
    let (_, _, client, _) = ENVS[0];
    let body = br#"{"dark_mode": 3, "banner_text": 1}"#;
    let headers = [
        ("x-environment-key", client),
        ("content-type", "application/json"),
    ];
    let (status, answer) = receiver
        .post("/api/v1/analytics/flags/", &headers, body)
        .await;
    assert_eq!(status, 200, "{answer}");
    // Whatever the key or body, an SDK never sees an error here.
    let (status, _) = receiver
        .post(
            "/api/v1/analytics/flags/",
            &[("x-environment-key", "nobody")],
            b"[",
        )
        .await;
    assert_eq!(status, 200);
    for _ in 0..600 {
        if !stand_in.analytics.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        stand_in.analytics.lock().unwrap().as_slice(),
        &[Bytes::from_static(body)]
    );
    let (_, metrics) = receiver.get("/metrics", &[]).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("sdk_analytics_total{environment=\"44\"} 1"),
        "{metrics}"
    );
    receiver.stop().await;
}

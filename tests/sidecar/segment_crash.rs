//! kill -9 of the real binary during a stream of segment changes: every acknowledged segment, its
//! rules and its events survive, as for flag changes (`crash.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Process, TOKEN, call, config_toml, events_after, free_addr, send};
use crate::support::process::stream_until_killed;

const CLIENTS: usize = 8;
const ACKS_PER_ROUND: usize = 100;
const ROUNDS: usize = 3;

/// A segment a client was told is committed, with the sequences of its events.
#[derive(Debug, Clone)]
struct Ack {
    name: String,
    value: u64,
    sequences: Vec<u64>,
}

fn rules(value: u64) -> Value {
    json!([{"type": "ALL", "rules": [], "conditions": [
        {"operator": "EQUAL", "property": "cohort", "value": value.to_string()}]}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_stream_of_segment_changes_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let config_path = dir.path().join("flagpost.toml");
    std::fs::write(&config_path, config_toml(dir.path(), addr, "")).unwrap();

    let acknowledged: Arc<Mutex<Vec<Ack>>> = Default::default();
    let mut process = Process::start(&config_path, addr);
    for round in 0..ROUNDS {
        if round > 0 {
            process = Process::start(&config_path, addr);
        }
        process.wait_ready().await;
        let base = process.url("");
        let send_change = move |client: usize, value: u64| {
            let base = base.clone();
            async move {
                let name = format!("r{round}-c{client}-{value}");
                let body = json!({"project": 1, "name": name, "rules": rules(value)});
                let body = serde_json::to_vec(&body).unwrap();
                let url = format!("{base}/api/v1/segments");
                match send(Method::POST, &url, Some(TOKEN), Some(body), &[]).await {
                    Ok((StatusCode::CREATED, answer)) => Some(Ack {
                        name,
                        value,
                        sequences: answer["events"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|e| e["sequence"].as_u64().unwrap())
                            .collect(),
                    }),
                    // The daemon is gone (killed mid-request): never acknowledged, nothing owed.
                    Err(_) => None,
                    Ok((status, answer)) => panic!("unexpected {status}: {answer}"),
                }
            }
        };
        let target = (round + 1) * ACKS_PER_ROUND;
        stream_until_killed(CLIENTS, target, &acknowledged, send_change, || {
            process.kill9()
        })
        .await;
    }
    let acks = acknowledged.lock().unwrap().clone();
    assert!(acks.len() >= ROUNDS * ACKS_PER_ROUND);

    let mut process = Process::start(&config_path, addr);
    process.wait_ready().await;
    let (status, listed) = call(
        Method::GET,
        &process.url("/api/v1/segments?project=1"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let stored: BTreeMap<String, Value> = listed["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s["rules"].clone()))
        .collect();
    let events = events_after(&process.url(""), 0).await;
    let sequences: BTreeSet<u64> = events
        .iter()
        .map(|(meta, _)| meta["sequence"].as_u64().unwrap())
        .collect();
    // Every SEGMENT_UPDATED names a stored segment: no event without its change.
    for (_, body) in &events {
        if body["event_type"] == "SEGMENT_UPDATED" {
            let name = body["data"]["segment"]["name"].as_str().unwrap();
            assert!(stored.contains_key(name), "event for a lost segment {name}");
        }
    }
    for ack in &acks {
        assert_eq!(
            stored.get(&ack.name),
            Some(&rules(ack.value)),
            "lost {ack:?}"
        );
        assert!(!ack.sequences.is_empty(), "{ack:?} reported no events");
        for sequence in &ack.sequences {
            assert!(
                sequences.contains(sequence),
                "event {sequence} of {ack:?} lost"
            );
        }
    }
    process.terminate();
}

//! The cache file (issue 8, items 5, 6 and 10): an empty or damaged file is refused at start (never
//! silently an empty cache), and after a full disk the writer recovers by itself. Every test
//! asserts what survives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use flagpost_receiver::config::Config;
use serde_json::json;

use crate::common::*;

/// Runs the real `run` on `toml` and answers its error: it must refuse before serving.
async fn refusal(toml: &str) -> String {
    let config = Config::parse(toml, "test").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ran = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        flagpost_receiver::run(listener, config, None, std::future::pending()),
    )
    .await
    .expect("a refused file stops the start");
    ran.expect_err("the file is refused").to_string()
}

/// An identity override of feature 1 in environment 1, `user-{n}` -> `value-{n}`: the answer's
/// status.
async fn send_override(receiver: &Receiver, n: u64) -> u16 {
    let body = flag_event(
        1,
        1,
        &Key::Identity(format!("user-{n}")),
        false,
        true,
        json!(format!("value-{n}")),
    );
    let signed = Signed::new(&body, &format!("evt-{n}"), Some(n + 2));
    receiver.post("/webhook", &signed.as_refs(), &body).await.0
}

/// The environment default of feature 1, which the overrides hang on.
async fn send_default(receiver: &Receiver) {
    let body = flag_event(1, 1, &Key::Default, false, true, json!("default"));
    let signed = Signed::new(&body, "evt-default", Some(1));
    let (status, answer) = receiver.post("/webhook", &signed.as_refs(), &body).await;
    assert_eq!(status, 200, "{answer}");
}

/// Every `n` in `acknowledged` is in the cache with its value.
async fn assert_all_there(receiver: &Receiver, acknowledged: &[u64]) {
    let (status, flag) = receiver.get("/v1/environments/1/flags/1", &[]).await;
    assert_eq!(status, 200, "{flag}");
    let stored: BTreeMap<String, serde_json::Value> = flag["identity_overrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["identifier"].as_str().unwrap().into(), o["value"].clone()))
        .collect();
    for n in acknowledged {
        assert_eq!(
            stored.get(&format!("user-{n}")),
            Some(&json!(format!("value-{n}"))),
            "lost user-{n}"
        );
    }
}

fn cache_file(dir: &Path) -> PathBuf {
    dir.join("receiver.redb")
}

#[tokio::test]
async fn an_empty_cache_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(cache_file(dir.path()), b"").unwrap();
    let message = refusal(&config_toml(dir.path(), ANY_AGE, "")).await;
    assert!(message.contains("is empty (0 bytes)"), "{message}");
    assert!(message.contains("delete it"), "{message}");
    assert_eq!(std::fs::metadata(cache_file(dir.path())).unwrap().len(), 0);
}

#[tokio::test]
async fn a_damaged_or_truncated_cache_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(dir.path(), ANY_AGE, "");
    let receiver = Receiver::start(dir.path(), &toml).await;
    send_default(&receiver).await;
    let acknowledged: Vec<u64> = (0..5).collect();
    for &n in &acknowledged {
        assert_eq!(send_override(&receiver, n).await, 200);
    }
    receiver.stop().await;
    let path = cache_file(dir.path());
    let good = std::fs::read(&path).unwrap();

    // Every copy of one stored value, one byte changed: its page fails its checksum.
    let mut damaged = good.clone();
    let needle = b"value-3";
    let at: Vec<usize> = damaged
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| w == needle)
        .map(|(i, _)| i)
        .collect();
    assert!(!at.is_empty());
    at.iter().for_each(|&i| damaged[i] ^= 0xff);
    std::fs::write(&path, &damaged).unwrap();
    let message = refusal(&toml).await;
    assert!(message.contains("is damaged"), "{message}");
    assert_eq!(std::fs::read(&path).unwrap(), damaged, "left as it was");

    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let message = refusal(&toml).await;
    assert!(message.contains("is damaged"), "{message}");

    std::fs::write(&path, &good).unwrap();
    let receiver = Receiver::start(dir.path(), &toml).await;
    assert_all_there(&receiver, &acknowledged).await;
    receiver.stop().await;
}

/// Unmounts when dropped, so that a failing test leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The cache on a small tmpfs filled to the last byte: web hooks are refused with 503 (never
/// acknowledged), `/readyz` says the storage cannot commit, and once space is freed the writer
/// recovers by itself. Every acknowledged change is there, after a restart too. Needs `mount`
/// (root); says so and passes where it is not allowed.
#[tokio::test]
async fn after_a_full_disk_the_writer_recovers_by_itself_and_loses_nothing() {
    let outside = tempfile::tempdir().unwrap();
    let dir = outside.path().join("disk");
    std::fs::create_dir(&dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    }
    let _mounted = Mounted(dir.clone());
    let toml = test_config(&dir).without_snapshot().intake(ANY_AGE).toml();
    let receiver = Receiver::start(&dir, &toml).await;
    // Served, so the file is open before the disk fills.
    send_default(&receiver).await;

    let filler = dir.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 16 << 20]);
    let mut acknowledged = Vec::new();
    let mut refused = false;
    for n in 0..20_000u64 {
        match send_override(&receiver, n).await {
            200 => acknowledged.push(n),
            503 => {
                refused = true;
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused, "the full disk refused a web hook");
    let (status, ready) = receiver.get("/readyz", &[]).await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["error"].as_str().unwrap().contains("cannot commit"),
        "{ready}"
    );
    for n in 100_000..100_020u64 {
        assert_eq!(send_override(&receiver, n).await, 503, "not acknowledged");
    }

    std::fs::remove_file(&filler).unwrap();
    for _ in 0..600 {
        if receiver.get("/readyz", &[]).await.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(receiver.get("/readyz", &[]).await.0, 200, "recovered");
    assert_eq!(send_override(&receiver, 200_000).await, 200);
    acknowledged.push(200_000);
    assert_all_there(&receiver, &acknowledged).await;
    receiver.stop().await;

    let receiver = Receiver::start(&dir, &toml).await;
    assert_all_there(&receiver, &acknowledged).await;
    receiver.stop().await;
}

/// Damage that appears after the start check, met by the writer's reads (the cache answers
/// lookups from memory; the writer reads the file to remember request ids): the web hook is
/// answered 503 with a JSON error and no panic's text, never acknowledged, and `/readyz` reports
/// the storage. A 1 MiB page cache under a larger file makes those reads reach the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_met_by_the_writer_is_refused_and_nothing_is_acknowledged_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "redb_cache_mib = 1\n{}",
        test_config(dir.path())
            .without_snapshot()
            .intake(ANY_AGE)
            .toml()
    );
    let receiver = Receiver::start(dir.path(), &toml).await;
    send_default(&receiver).await;
    let receiver = std::sync::Arc::new(receiver);
    let big = "x".repeat(4096);
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..8u64 {
        let receiver = receiver.clone();
        let big = big.clone();
        senders.spawn(async move {
            for n in (sender * 1000)..(sender * 1000 + 100) {
                let body = flag_event(
                    1,
                    2,
                    &Key::Identity(format!("u-{n}")),
                    false,
                    true,
                    json!(big),
                );
                let signed = Signed::new(&body, &format!("big-{n}"), Some(n + 2));
                assert_eq!(
                    receiver.post("/webhook", &signed.as_refs(), &body).await.0,
                    200
                );
            }
        });
    }
    while let Some(done) = senders.join_next().await {
        done.unwrap();
    }

    let path = cache_file(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 2 << 20, "the file outgrows the page cache");
    bytes[4096..].iter_mut().for_each(|b| *b ^= 0xff);
    std::fs::write(&path, &bytes).unwrap();

    // Updates of the oldest rows, whose pages left the cache long ago. redb checks pages only
    // when it opens a file, so a change whose pages happen to be intact may commit; the first
    // that meets the damage is refused, and after it nothing is acknowledged until the file
    // passes the check again.
    let update = |n: u64| {
        let body = flag_event(
            1,
            2,
            &Key::Identity(format!("u-{n}")),
            false,
            false,
            json!(n),
        );
        let signed = Signed::new(&body, &format!("update-{n}"), Some(n + 100_000));
        (body, signed)
    };
    let mut met = None;
    for n in 0..100u64 {
        let (body, signed) = update(n);
        let (status, answer) = receiver.post("/webhook", &signed.as_refs(), &body).await;
        if status != 200 {
            met = Some((status, answer));
            break;
        }
    }
    let (status, answer) = met.expect("a change met the damage");
    assert_eq!(status, 503, "{answer}");
    let error = answer["error"].as_str().expect("a JSON error");
    for panic_text in ["panicked", "unreachable", "unwrap", ".rs:"] {
        assert!(!error.contains(panic_text), "{error}");
    }
    for n in 1000..1010u64 {
        let (body, signed) = update(n);
        let (status, answer) = receiver.post("/webhook", &signed.as_refs(), &body).await;
        assert_eq!(
            status, 503,
            "acknowledged after the damage was met: {answer}"
        );
    }
    let (status, ready) = receiver.get("/readyz", &[]).await;
    assert_eq!(status, 503, "{ready}");
    // Lookups still answer from memory.
    let (status, flag) = receiver.get("/v1/environments/1/flags/1", &[]).await;
    assert_eq!(status, 200, "{flag}");
}

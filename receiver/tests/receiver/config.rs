//! Configuration: hot reload of secrets, an invalid file keeping the last good one, start-only
//! fields reported, and `flagpost-receiver check`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::common::*;

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn config_with_secret_file(dir: &Path, secret_file: &Path) -> String {
    ReceiverConfig::new(dir)
        .without_snapshot()
        .secret_file(secret_file)
        .toml()
}

async fn post_signed(receiver: &Receiver, secret: &str, id: &str) -> u16 {
    let body = flag_event(1, 1, &Key::Default, false, true, json!(id));
    let signature = flagpost::signing::Secret::new(secret)
        .unwrap()
        .flagsmith_signature(&body);
    let headers = [
        ("content-type", "application/json"),
        ("x-flagsmith-signature", signature.as_str()),
    ];
    receiver.post("/webhook", &headers, &body).await.0
}

async fn metrics_text(receiver: &Receiver) -> String {
    receiver
        .get("/metrics", &[])
        .await
        .1
        .as_str()
        .unwrap()
        .to_owned()
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within a minute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reload_live_and_an_invalid_file_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    std::fs::create_dir(&config_dir).unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "old-secret\n").unwrap();
    let config_path = config_dir.join("receiver.toml");
    let text = config_with_secret_file(dir.path(), &secret_file);
    std::fs::write(&config_path, &text).unwrap();
    let receiver = Receiver::start_watching(dir.path(), &text, Some(config_path.clone())).await;

    assert_eq!(post_signed(&receiver, "old-secret", "a").await, 200);
    assert_eq!(post_signed(&receiver, "new-secret", "b").await, 401);

    // Rotation: both secrets, written the way editors save (temporary file, rename).
    let new_secret_file = dir.path().join("new-secret");
    std::fs::write(&new_secret_file, "new-secret").unwrap();
    let rotated = text.replace(
        "secrets = [",
        &format!("secrets = [{{ file = {new_secret_file:?} }}, "),
    );
    write_atomically(&config_path, &rotated);
    let mut n = 0;
    eventually("the new secret taking effect", async || {
        n += 1;
        post_signed(&receiver, "new-secret", &format!("c{n}")).await == 200
    })
    .await;
    assert_eq!(
        post_signed(&receiver, "old-secret", "d").await,
        200,
        "the old one still works"
    );

    // An invalid file: refused, counted, and the last good configuration stays in force.
    write_atomically(&config_path, "[intake]\nsecrets = \"oops-not-a-list\"\n");
    eventually("the invalid file being noticed", async || {
        series_value(
            &metrics_text(&receiver).await,
            "flagpost_receiver_config_reloads_total{result=\"invalid\"}",
        ) >= 1.0
    })
    .await;
    assert_eq!(post_signed(&receiver, "new-secret", "e").await, 200);

    // A start-only field: reported, not applied; the live part still applies.
    let moved = format!("listen = \"127.0.0.1:1\"\n{}", text);
    write_atomically(&config_path, &moved);
    eventually("the restart-only change being reported", async || {
        series_value(
            &metrics_text(&receiver).await,
            "flagpost_receiver_config_reloads_total{result=\"needs_restart\"}",
        ) >= 1.0
    })
    .await;
    assert_eq!(
        post_signed(&receiver, "new-secret", "f").await,
        401,
        "back to the old secret only"
    );
    assert_eq!(post_signed(&receiver, "old-secret", "g").await, 200);
    receiver.stop().await;
}

#[test]
fn check_reports_every_error_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"not-an-address\"\n[intake]\nmax_body_bytes = 0\nsecrets = [{ value = \"whsec_!!!hunter2\" }]\n[bootstrap]\nflagpost_url = \"ftp://x\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_flagpost-receiver"))
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "listen",
        "max_body_bytes",
        "intake.secrets[0]",
        "bootstrap.flagpost_url",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected} missing from:\n{stderr}"
        );
    }
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/receiver.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_flagpost-receiver"))
        .args(["check", "--config", shipped])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Issue 8, item 4: an empty or whitespace-only file is invalid, at start (`check`) and on reload,
/// where the last good configuration (its secrets) stays in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_is_refused_at_start_and_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, " \n\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_flagpost-receiver"))
        .args(["check", "--config"])
        .arg(&empty)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("empty.toml is empty"), "{stderr}");

    let config_dir = dir.path().join("config");
    std::fs::create_dir(&config_dir).unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "old-secret\n").unwrap();
    let config_path = config_dir.join("receiver.toml");
    let text = config_with_secret_file(dir.path(), &secret_file);
    std::fs::write(&config_path, &text).unwrap();
    let receiver = Receiver::start_watching(dir.path(), &text, Some(config_path.clone())).await;
    assert_eq!(post_signed(&receiver, "old-secret", "a").await, 200);

    // The watch is armed by a task of `run`, which a loaded machine may not have run yet: each
    // try writes anew (empty, then whitespace-only), so that a write it missed is not the last.
    let mut emptied = [&b""[..], &b" \n"[..]].into_iter().cycle();
    eventually("the emptied file being refused", async || {
        std::fs::write(&config_path, emptied.next().unwrap()).unwrap();
        series_value(
            &metrics_text(&receiver).await,
            "flagpost_receiver_config_reloads_total{result=\"invalid\"}",
        ) >= 1.0
    })
    .await;
    assert_eq!(
        post_signed(&receiver, "old-secret", "b").await,
        200,
        "the secret stays"
    );
    assert_eq!(
        series_value(
            &metrics_text(&receiver).await,
            "flagpost_receiver_config_reloads_total{result=\"applied\"}",
        ),
        0.0
    );
    receiver.stop().await;
}

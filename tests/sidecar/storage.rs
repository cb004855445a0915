//! The database file (issue 8, items 5, 6 and 10): an empty or damaged file is refused at start
//! with what to do, damage found later is answered 503 without a panic's text and nothing is
//! acknowledged onto it, and after a full disk the writer recovers by itself. Every test asserts
//! what survives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use flagpost::config::Config;
use flagpost::store::UnusableFile;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Process, call, config_toml, free_addr, send, test_config, wait_until};
use crate::support::process::Running;

/// redb's first page: its header (the commit slots and the file's layout).
const HEADER_PAGE: usize = 4096;

const BINARY: &str = env!("CARGO_BIN_EXE_flagpost");

/// Runs the real `run` on `dir`'s configuration until it returns (a refusal at start) or serves;
/// answers the error of a refusal, `None` when it served (and was stopped at once).
async fn start_result(dir: &Path, unusable_file: UnusableFile) -> Option<String> {
    let config = Config::parse(&config_toml(dir, "127.0.0.1:0".parse().unwrap(), "")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(flagpost::server::run_with(
        listener,
        config,
        None,
        unusable_file,
        async {
            let _ = stopped.await;
        },
    ));
    let url = format!("http://{addr}/healthz");
    loop {
        if server.is_finished() {
            return server.await.unwrap().err().map(|e| e.to_string());
        }
        if let Ok((StatusCode::OK, _)) = send(Method::GET, &url, None, None, &[]).await {
            let _ = stop.send(());
            server.await.unwrap().unwrap();
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The binary on `dir`, its log captured in `log` (outside `dir`, which may be a full disk).
fn start_binary(config: &Path, log: &Path, extra_args: &[&str]) -> Running {
    let child = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(config)
        .args(extra_args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Running { child }
}

async fn create_feature(base: &str, name: &str) {
    let (status, body) = call(
        Method::POST,
        &format!("{base}/api/v1/features"),
        Some(json!({"project": 1, "name": name, "initial_value": "blue"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn set_override(base: &str, feature: &str, identifier: &str, value: u64) -> StatusCode {
    let url = format!(
        "{base}/api/v1/environments/Development/features/{feature}/identities/{identifier}"
    );
    call(Method::PUT, &url, Some(json!({ "value": value })))
        .await
        .0
}

/// Every identity override of the environment's first feature: identifier -> value.
async fn overrides(base: &str) -> BTreeMap<String, Value> {
    let (status, doc) = call(
        Method::GET,
        &format!("{base}/api/v1/environments/1/document"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    doc["features"][0]["identity_overrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["identifier"].as_str().unwrap().into(), o["value"].clone()))
        .collect()
}

/// A sidecar (in-process) that made `count` acknowledged overrides of feature "canary", stopped.
async fn database_with_overrides(dir: &Path, count: u64) -> BTreeMap<String, Value> {
    let config = Config::parse(&config_toml(dir, "127.0.0.1:0".parse().unwrap(), "")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(flagpost::server::run(listener, config, None, async {
        let _ = stopped.await;
    }));
    wait_until("the sidecar serves", || async {
        send(Method::GET, &format!("{base}/healthz"), None, None, &[])
            .await
            .is_ok()
    })
    .await;
    create_feature(&base, "canary").await;
    for n in 0..count {
        let status = set_override(&base, "canary", &format!("user-{n:03}"), n).await;
        assert_eq!(status, StatusCode::OK);
    }
    let acknowledged = overrides(&base).await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    acknowledged
}

/// Flips the first byte of every occurrence of `needle` in the file: whichever copy is live, the
/// page holding it no longer matches its checksum.
fn flip_occurrences(path: &Path, needle: &[u8]) {
    let mut bytes = std::fs::read(path).unwrap();
    let at: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert!(!at.is_empty(), "{needle:?} is in the file");
    for i in at {
        bytes[i] ^= 0xff;
    }
    std::fs::write(path, bytes).unwrap();
}

fn database(dir: &Path) -> PathBuf {
    dir.join("flagpost.redb")
}

#[tokio::test]
async fn an_empty_database_file_is_refused_unless_a_new_database_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), free_addr()).write();
    std::fs::write(database(dir.path()), b"").unwrap();

    let refused = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{message}");
    assert!(message.contains("is empty (0 bytes)"), "{message}");
    assert!(message.contains("--new-database"), "{message}");
    assert_eq!(
        std::fs::metadata(database(dir.path())).unwrap().len(),
        0,
        "the refused file is left as it was"
    );

    // Asked for, a new database starts; the empty file is kept aside, not deleted.
    let addr = free_addr();
    let config = test_config(dir.path(), addr).write();
    let log = dir.path().join("serve.log");
    let running = start_binary(&config, &log, &["--new-database"]);
    let mut process = Process { running, addr };
    process.wait_ready().await;
    create_feature(&process.url(""), "after-reset").await;
    process.terminate();
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("flagpost.redb.unusable-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");

    // A missing file is a new database, with no flag.
    let fresh = tempfile::tempdir().unwrap();
    test_config(fresh.path(), free_addr());
    assert_eq!(start_result(fresh.path(), UnusableFile::Refuse).await, None);
}

#[tokio::test]
async fn a_damaged_or_truncated_database_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    test_config(dir.path(), free_addr());
    let acknowledged = database_with_overrides(dir.path(), 5).await;
    let path = database(dir.path());
    let good = std::fs::read(&path).unwrap();

    flip_occurrences(&path, b"user-003");
    let damaged = std::fs::read(&path).unwrap();
    let refused = start_result(dir.path(), UnusableFile::Refuse).await;
    let message = refused.expect("a damaged file is refused");
    assert!(message.contains("is damaged"), "{message}");
    assert!(message.contains("--new-database"), "{message}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        damaged,
        "a refused file is not written"
    );

    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let refused = start_result(dir.path(), UnusableFile::Refuse).await;
    let message = refused.expect("a truncated file is refused");
    assert!(message.contains("is damaged"), "{message}");

    // The good bytes back: everything acknowledged is there.
    std::fs::write(&path, &good).unwrap();
    let addr = free_addr();
    let config = test_config(dir.path(), addr).write();
    let running = start_binary(&config, &dir.path().join("serve.log"), &[]);
    let mut process = Process { running, addr };
    process.wait_ready().await;
    assert_eq!(overrides(&process.url("")).await, acknowledged);
    process.terminate();
}

/// Damage that appears after the start check: the read that meets it answers 503 with a JSON
/// error and no panic's text, and no write is acknowledged onto the file after it.
#[tokio::test]
async fn damage_met_by_a_read_is_refused_and_nothing_is_acknowledged_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    // No page cache: every read goes to the file.
    let config = test_config(dir.path(), addr)
        .extra("")
        .toml()
        .replace("[storage]\n", "[storage]\ncache_size_mib = 0\n");
    let config_path = dir.path().join("flagpost.toml");
    std::fs::write(&config_path, config).unwrap();
    let log = dir.path().join("serve.log");
    let running = start_binary(&config_path, &log, &[]);
    let process = Process { running, addr };
    process.wait_ready().await;
    let base = process.url("");
    create_feature(&base, "canary").await;
    assert_eq!(
        set_override(&base, "canary", "user-1", 1).await,
        StatusCode::OK
    );

    // Every page but the file's header, inverted.
    let path = database(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[HEADER_PAGE..].iter_mut().for_each(|b| *b ^= 0xff);
    std::fs::write(&path, &bytes).unwrap();

    let (status, body) = call(
        Method::GET,
        &format!("{base}/api/v1/environments/1/document"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let error = body["error"].as_str().expect("a JSON error");
    for panic_text in ["panicked", "unreachable", "unwrap", ".rs:"] {
        assert!(!error.contains(panic_text), "{error}");
    }
    // A background commit may still have landed between the damage and the read that met it
    // (the README says so); from here on, nothing may.
    let bytes = std::fs::read(&path).unwrap();

    // No write is acknowledged onto it: the writer meets the damage itself, or reopens the file
    // through its integrity check, which finds it.
    let url = format!("{base}/api/v1/environments/Development/features/canary/identities/user-2");
    for value in 2..5 {
        let (status, body) = call(Method::PUT, &url, Some(json!({ "value": value }))).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "acknowledged: {body}"
        );
        let error = body["error"].as_str().expect("a JSON error");
        for panic_text in ["panicked", "unreachable", "unwrap", ".rs:"] {
            assert!(!error.contains(panic_text), "{error}");
        }
    }
    // The reopen's integrity check runs inside redb's open, which first rewrites the header
    // page of a file not closed cleanly (its layout, to the file's length: a batch not yet
    // checkpointed may have grown the file). Every page after it stays as the damage left it.
    assert!(
        std::fs::read(&path).unwrap()[HEADER_PAGE..] == bytes[HEADER_PAGE..],
        "nothing was written onto the damaged pages once the damage was met"
    );
}

fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

/// Unmounts when dropped, so that a failing test leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The database on a small tmpfs filled to the last byte: changes are refused with 503 (never
/// acknowledged), `/readyz` says the store cannot commit, the refusals are logged at a bounded
/// rate, and once space is freed the writer recovers by itself. Every acknowledged change is
/// there, after a restart too. Needs `mount` (root); says so and passes where it is not allowed.
#[tokio::test]
async fn after_a_full_disk_the_writer_recovers_by_itself_and_loses_nothing() {
    let outside = tempfile::tempdir().unwrap();
    let dir = outside.path().join("disk");
    std::fs::create_dir(&dir).unwrap();
    if !mount_tmpfs(&dir, "8m") {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    }
    let _mounted = Mounted(dir.clone());
    let addr = free_addr();
    let config = test_config(&dir, addr).write();
    let log = outside.path().join("serve.log");
    let running = start_binary(&config, &log, &[]);
    let mut process = Process { running, addr };
    process.wait_ready().await;
    let base = process.url("");
    create_feature(&base, "canary").await;

    // Fill the disk; changes go on until the first is refused.
    let filler = dir.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 16 << 20]);
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for n in 0..20_000u64 {
        match set_override(&base, "canary", &format!("user-{n:05}"), n).await {
            StatusCode::OK => acknowledged.push(n),
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(refused, 1, "the full disk refused a change");

    // Many more refusals: /readyz reports the writer, and a bounded number of log lines. (Between
    // two refusals a small background commit may land in space a failed one freed, and readiness
    // may then say so for a moment: it is asked after each refusal, and must have said it.)
    let started = Instant::now();
    let mut readiness_reported = false;
    for n in 0..200u64 {
        let status = set_override(&base, "canary", &format!("refused-{n}"), n).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, ready) = send(Method::GET, &format!("{base}/readyz"), None, None, &[])
            .await
            .unwrap();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(
                ready["error"].as_str().unwrap().contains("cannot commit"),
                "{ready}"
            );
            readiness_reported = true;
        }
    }
    assert!(
        readiness_reported,
        "/readyz never said the writer cannot commit"
    );
    let intervals = started.elapsed().as_secs() / flagpost::process::ERROR_LOG_INTERVAL.as_secs();
    let text = std::fs::read_to_string(&log).unwrap();
    for line in ["write batch failed", "request failed"] {
        let logged = text.lines().filter(|l| l.contains(line)).count() as u64;
        assert!(
            logged <= 2 + 2 * intervals,
            "{logged} lines of {line:?} for 201 refusals:\n{text}"
        );
    }

    // Space freed: the writer recovers without a restart.
    std::fs::remove_file(&filler).unwrap();
    wait_until("/readyz is 200 again", || async {
        matches!(
            send(Method::GET, &format!("{base}/readyz"), None, None, &[]).await,
            Ok((StatusCode::OK, _))
        )
    })
    .await;
    assert_eq!(
        set_override(&base, "canary", "after", 1).await,
        StatusCode::OK
    );
    acknowledged.push(u64::MAX);

    let expected = |acknowledged: &[u64]| -> BTreeMap<String, Value> {
        acknowledged
            .iter()
            .map(|&n| match n {
                u64::MAX => ("after".to_owned(), json!(1)),
                n => (format!("user-{n:05}"), json!(n)),
            })
            .collect()
    };
    assert_eq!(overrides(&base).await, expected(&acknowledged));
    process.terminate();

    let running = start_binary(&config, &log, &[]);
    let mut process = Process { running, addr };
    process.wait_ready().await;
    assert_eq!(overrides(&process.url("")).await, expected(&acknowledged));
    process.terminate();
}

//! Issue 8, item 9: no value of a configuration file in any error, and no URL credentials in any
//! log line at any level, hyper's TRACE included. The real binary, canary secrets.

use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine;
use hyper::Method;
use serde_json::json;

use crate::common::{call, free_addr, test_config, wait_until};
use crate::support::process::Running;
use crate::support::sink::{Answer, Sink};

const CANARY: &str = "CANARY-7731";

/// Files that fail with a secret where the error is: quoted in every way TOML allows, numeric,
/// in a table, a list, a URL, an unfinished string.
fn bad_files() -> Vec<String> {
    let token = |value: &str| format!("[api]\ntokens = [{{ name = \"ci\", token = {value} }}]\n");
    let hook = |rest: &str| {
        format!(
            "[[environments]]\nid = 1\nname = \"Development\"\napi_key = \"k\"\nproject = 1\n\
             [[environments.webhooks]]\nname = \"w\"\n{rest}"
        )
    };
    vec![
        token(&format!("'p@ss\"word-{CANARY}'")),
        token(&format!("{{ value = 'p@ss\"word-{CANARY}', x = 1 }}")),
        token("{ value = 7731 }"),
        token("7731"),
        token(&format!("{{ value = \"{CANARY}")),
        token(&format!("{{ value = \"{CANARY}\" }} junk")),
        token(&format!("{{ value = \"\"\"{CANARY}\"\"\", env = 1 }}")),
        hook(&format!("url = \"http://user:{CANARY}@\"\n")),
        hook(&format!(
            "url = \"http://user:{CANARY}@host/\"\nsecrets = [7731]\n"
        )),
        hook(&format!("url = 'http://user:{CANARY}@ho st/'\n")),
        format!(
            "listen = 7731\n[[relay]]\nname = \"up\"\nenvironment = 1\nsecret = '{CANARY}\"'\n"
        ),
    ]
}

/// `numeric`: also the canary's digits alone, where the file gave them as a number.
fn assert_no_canary(what: &str, text: &str, numeric: bool) {
    assert!(
        !(text.contains(CANARY) || (numeric && text.contains("7731"))),
        "{what} printed a secret:\n{text}"
    );
}

#[test]
fn a_bad_file_names_no_secret_in_check_or_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flagpost.toml");
    for (n, text) in bad_files().iter().enumerate() {
        std::fs::write(&path, text).unwrap();
        for command in ["check", "serve"] {
            let output = Command::new(env!("CARGO_BIN_EXE_flagpost"))
                .args([command, "--config"])
                .arg(&path)
                .env("RUST_LOG", "trace")
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&output.stderr).into_owned()
                + &String::from_utf8_lossy(&output.stdout);
            assert!(!output.status.success(), "file {n} was taken: {said}");
            assert!(
                said.contains("line") || said.contains("flagpost.toml"),
                "{said}"
            );
            assert_no_canary(&format!("{command} of file {n}"), &said, true);
        }
    }
}

/// Delivers to `http://user:CANARY@…` with every log at TRACE, hyper's pool included, then has
/// a bad file reloaded: the sink gets the credentials as `Authorization: Basic`, and no output
/// of the process holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_credentials_are_sent_as_basic_auth_and_never_logged() {
    let sink = Sink::start(Vec::new(), Answer::Status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let url = format!(
        "http://ops:{CANARY}@{}",
        sink.url("/hook").trim_start_matches("http://")
    );
    let text = test_config(dir.path(), addr)
        .webhook("credentialed", &url, "signing-secret-0123")
        .extra("[reload]\ndebounce = \"20ms\"\npoll_every = \"200ms\"\n")
        .toml();
    let config = dir.path().join("flagpost.toml");
    std::fs::write(&config, &text).unwrap();
    let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut running = serve_logging_to(&config, &stdout, &stderr);
    let base = format!("http://{addr}");
    wait_until("flagpost answers", || async {
        crate::common::send(Method::GET, &format!("{base}/healthz"), None, None, &[])
            .await
            .is_ok()
    })
    .await;

    let (status, body) = call(
        Method::POST,
        &format!("{base}/api/v1/features"),
        Some(json!({"project": 1, "name": "lit"})),
    )
    .await;
    assert_eq!(status, hyper::StatusCode::CREATED, "{body}");
    let received = sink.wait_until("a delivery", |r| !r.is_empty()).await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ops:{CANARY}"));
    assert_eq!(
        received[0].header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    assert_eq!(received[0].path, "/hook");

    // A reload of a file that fails is logged, and names no value.
    std::fs::write(&config, format!("{text}\nbad = 'x\"{CANARY}'\n")).unwrap();
    let stderr_path = stderr.clone();
    wait_until("the refused reload is logged", || {
        let stderr_path = stderr_path.clone();
        async move {
            std::fs::read_to_string(&stderr_path)
                .is_ok_and(|log| log.contains("unknown field `bad`"))
        }
    })
    .await;
    running.terminate();
    for file in [&stdout, &stderr] {
        let log = std::fs::read_to_string(file).unwrap();
        assert!(!log.contains(&basic), "{}: {log}", file.display());
        assert_no_canary(&file.display().to_string(), &log, false);
    }
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        log.contains("TRACE") && log.contains("hyper"),
        "not a TRACE run"
    );
}

fn serve_logging_to(config: &Path, stdout: &Path, stderr: &Path) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_flagpost"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::from(std::fs::File::create(stdout).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(stderr).unwrap()))
        .spawn()
        .unwrap();
    Running { child }
}

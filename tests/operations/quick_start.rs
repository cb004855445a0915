//! The README's quick start, command for command, in an empty folder: flagpost on its built-in
//! defaults (which generate its token), a receiver paired by `flagpost pair`, a flag created
//! through flagpost's API and seen in a receiver lookup. The binaries stand in for their
//! `cargo run --release ... --` (built by this test run, not rebuilt in release).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{self, wait_until};
use crate::support::process::Running;

const FLAGPOST: &str = "cargo run --release --bin flagpost --";
const RECEIVER: &str = "cargo run --release -p flagpost-receiver --";

/// The commands of the README's quick start block: (command, run in the background).
fn quick_start_commands() -> Vec<(String, bool)> {
    let readme = common::read("README.md");
    let section = readme
        .split_once("## Quick start")
        .expect("a Quick start section")
        .1;
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a sh block in the quick start")
        .0;
    block
        .lines()
        .map(|line| line.split_once(" #").map_or(line, |(code, _)| code).trim())
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| match line.strip_suffix('&') {
            Some(command) => (command.trim().to_owned(), true),
            None => (line.to_owned(), false),
        })
        .collect()
}

#[test]
fn the_readme_quick_start_goes_from_nothing_to_a_changed_receiver_lookup() {
    let _ports = common::default_ports();
    let dir = tempfile::tempdir().unwrap();
    let (flagpost, receiver) = (common::flagpost(), common::receiver());
    let commands = quick_start_commands();
    assert!(commands.len() >= 4, "{commands:?}");
    let mut background = Vec::new();
    let mut last_output = String::new();
    for (n, (command, in_background)) in commands.iter().enumerate() {
        assert!(
            [FLAGPOST, RECEIVER, "curl "]
                .iter()
                .any(|start| command.starts_with(start)),
            "a quick start command this test does not know how to run: {command}"
        );
        let shell = command
            .replace(FLAGPOST, &flagpost.display().to_string())
            .replace(RECEIVER, &receiver.display().to_string());
        if *in_background {
            let stdout = std::fs::File::create(dir.path().join(format!("stdout-{n}"))).unwrap();
            let child = Command::new("sh")
                .args(["-c", &format!("exec {shell}")])
                .current_dir(dir.path())
                .stdout(stdout)
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            background.push(Running { child });
            continue;
        }
        // Each command is tried until it succeeds: the servers started just before take a moment.
        wait_until(&format!("`{command}` succeeds"), || {
            let output = Command::new("sh")
                .args(["-c", &shell])
                .current_dir(dir.path())
                .output()
                .expect("sh");
            last_output = String::from_utf8_lossy(&output.stdout).into_owned();
            output.status.success()
        });
    }
    let flag: serde_json::Value = serde_json::from_str(&last_output).unwrap();
    assert_eq!(flag["name"], "quick_start", "{flag}");
    assert_eq!(flag["value"], "hello", "{flag}");
    assert_eq!(flag["enabled"], true, "{flag}");
    drop(background);
    the_token_is_owner_only_and_printed_once(dir.path(), &flagpost);
}

/// The generated token: in a 0600 file beside the database, printed on the first start only.
fn the_token_is_owner_only_and_printed_once(dir: &Path, flagpost: &Path) {
    let token_file = dir.join("flagpost.token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim();
    assert!(token.starts_with("fp_") && token.len() > 40, "{token}");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    for secret in ["flagpost-webhook.secret", "flagpost-server.key"] {
        let mode = std::fs::metadata(dir.join(secret))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}: {mode:o}");
    }
    let first = std::fs::read_to_string(dir.join("stdout-0")).unwrap();
    assert!(first.contains(token), "{first}");
    assert!(first.contains("http://127.0.0.1:7070/status"), "{first}");

    let again = dir.join("stdout-again");
    let child = Command::new(flagpost)
        .arg("serve")
        .current_dir(dir)
        .stdout(std::fs::File::create(&again).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _running = Running { child };
    let printed = || std::fs::read_to_string(&again).unwrap();
    wait_until("the second start says where the token is", || {
        printed().contains("API token in")
    });
    assert!(!printed().contains(token), "printed again: {}", printed());
}

//! Logs as an operator collects them: `[log] format = "json"` gives one JSON object per line on
//! both programs, and text written to a file (not a terminal) carries no colour codes.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::common::{self, get, wait_for};
use crate::support::config::{ReceiverConfig, SidecarConfig};
use crate::support::process::free_addr;

/// Starts `binary serve --config <config>` with stderr into `log`, waits for `/healthz`, scrapes
/// once, and stops it with SIGTERM so that it logs its shutdown too; answers what it logged.
fn run_logging_to(binary: &Path, config: &Path, addr: SocketAddr, log: &Path) -> String {
    let child: Child = Command::new(binary)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut running = crate::support::process::Running { child };
    wait_for(addr, "/healthz");
    assert!(get(addr, "/metrics", &[]).is_some());
    let status = running.terminate();
    assert!(
        status.success(),
        "{} stopped with {status}",
        binary.display()
    );
    std::fs::read_to_string(log).unwrap()
}

fn configs(dir: &Path, format: &str) -> [(std::path::PathBuf, std::path::PathBuf, SocketAddr); 2] {
    let (sidecar, receiver) = (free_addr(), free_addr());
    std::fs::create_dir_all(dir.join("flags")).unwrap();
    let log = format!("[log]\nformat = \"{format}\"\n");
    let sidecar_config = SidecarConfig::new(dir, sidecar).extra(&log).write();
    let receiver_config = ReceiverConfig::new(dir)
        .listen(receiver)
        .extra(&log)
        .write();
    [
        (common::flagpost(), sidecar_config, sidecar),
        (common::receiver(), receiver_config, receiver),
    ]
}

#[test]
fn json_logs_parse_line_by_line_in_both_programs() {
    let dir = tempfile::tempdir().unwrap();
    for (binary, config, addr) in configs(dir.path(), "json") {
        let text = run_logging_to(&binary, &config, addr, &dir.path().join("log.json"));
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.len() >= 2,
            "{}: start and stop lines: {text}",
            binary.display()
        );
        for line in lines {
            let entry: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", binary.display()));
            for field in ["timestamp", "level", "target"] {
                assert!(entry[field].is_string(), "{field} missing: {line}");
            }
            assert!(!line.contains('\u{1b}'), "colour in a JSON line: {line}");
        }
    }
}

#[test]
fn text_logs_into_a_file_carry_no_colour() {
    let dir = tempfile::tempdir().unwrap();
    for (binary, config, addr) in configs(dir.path(), "text") {
        let text = run_logging_to(&binary, &config, addr, &dir.path().join("log.txt"));
        assert!(text.lines().count() >= 2, "{}: {text}", binary.display());
        assert!(
            !text.contains('\u{1b}'),
            "{}: colour codes: {text}",
            binary.display()
        );
        assert!(serde_json::from_str::<Value>(text.lines().next().unwrap()).is_err());
    }
}

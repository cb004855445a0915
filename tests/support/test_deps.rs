//! Where the tests of both programs find the client libraries that `.ci/test` installs, pinned,
//! under `<target>/test-deps/` (Python packages from `receiver/tests/sdk/requirements.txt`, Node
//! packages from `receiver/tests/sdk/package.json`): plain `cargo test` works once that command
//! has run, and a test whose library is missing fails naming it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// The README's test command, which installs what these tests need.
pub const SETUP: &str = ".ci/test --setup-only";

/// `<target>/test-deps`, with `<target>` as `.ci/test` chooses it: `CARGO_TARGET_DIR` (relative
/// to the workspace root) or the workspace's `target/`.
pub fn test_deps_dir() -> PathBuf {
    // Both packages include this file: the workspace root is the one holding `Cargo.lock`.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .expect("the workspace root holds Cargo.lock");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| workspace.join(dir))
        .unwrap_or_else(|| workspace.join("target"));
    target.join("test-deps")
}

/// `python3` that imports the pinned Flagsmith SDK (`flagsmith`).
pub fn python() -> Command {
    python_importing(&["flagsmith"])
}

/// `node` that requires the pinned `flagsmith-nodejs`.
pub fn node() -> Command {
    node_requiring(&["flagsmith-nodejs"])
}

/// `node` that requires each of `modules`, comma-separated.
pub fn node_with(modules: &str) -> Command {
    node_requiring(&modules.split(',').collect::<Vec<_>>())
}

/// `node` that requires each of `modules`; panics naming [`SETUP`] when one is not installed.
pub fn node_requiring(modules: &[&str]) -> Command {
    let requires: String = modules
        .iter()
        .map(|module| format!("require('{module}');"))
        .collect();
    interpreter("node", "NODE_PATH", "node/node_modules", &requires, modules)
}

/// `python3` that imports each of `modules`; panics naming [`SETUP`] when one is not installed.
pub fn python_importing(modules: &[&str]) -> Command {
    let imports = format!("import {}", modules.join(", "));
    interpreter("python3", "PYTHONPATH", "python", &imports, modules)
}

/// `program` with `path_variable` set to `<test-deps>/<under>`, after checking that `probe` runs
/// there: a missing library fails here, naming the command that installs it, not deep in a test.
fn interpreter(
    program: &str,
    path_variable: &str,
    under: &str,
    probe: &str,
    modules: &[&str],
) -> Command {
    let path = test_deps_dir().join(under);
    let probe_flag = if program == "node" { "-e" } else { "-c" };
    let works = Command::new(program)
        .env(path_variable, &path)
        .args([probe_flag, probe])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        works,
        "the pinned {modules:?} for {program} are missing from {}: run `{SETUP}` once",
        path.display()
    );
    let mut command = Command::new(program);
    command.env(path_variable, &path);
    command
}

/// Runs `command` with `input` as JSON on its standard input and answers the JSON it prints;
/// panics with what it wrote to standard error when it fails.
pub fn run_json(mut command: Command, input: &Value) -> Value {
    let described = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {described}: {e}"));
    let input = serde_json::to_vec(input).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{described} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{described} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

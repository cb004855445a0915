//! Where the tests find the Flagsmith SDKs that `.ci/test` installs, pinned, under
//! `<target>/test-deps/`: plain `cargo test` works once that command has run.

use std::path::PathBuf;
use std::process::Command;

/// The README's test command, which installs what these tests need.
pub const SETUP: &str = ".ci/test --setup-only";

/// `<target>/test-deps`, with `<target>` as `.ci/test` chooses it: `CARGO_TARGET_DIR` (relative
/// to the workspace root) or the workspace's `target/`.
pub fn test_deps_dir() -> PathBuf {
    let workspace = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| workspace.join(dir))
        .unwrap_or_else(|| workspace.join("target"));
    target.join("test-deps")
}

/// `python3` that imports the pinned `flagsmith` package; panics naming [`SETUP`] when it is
/// not installed.
pub fn python() -> Command {
    let path = test_deps_dir().join("python");
    let mut command = Command::new("python3");
    command.env("PYTHONPATH", &path);
    let works = Command::new("python3")
        .env("PYTHONPATH", &path)
        .args(["-c", "import flagsmith"])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        works,
        "the pinned Flagsmith Python SDK is missing from {}: run `{SETUP}` once",
        path.display()
    );
    command
}

/// `node` that requires the pinned `flagsmith-nodejs`; panics naming [`SETUP`] when it is not
/// installed.
pub fn node() -> Command {
    node_with("flagsmith-nodejs")
}

/// `node` that requires each of the pinned `modules` (comma-separated); panics naming [`SETUP`]
/// when one is not installed.
pub fn node_with(modules: &str) -> Command {
    let path = test_deps_dir().join("node/node_modules");
    let mut command = Command::new("node");
    command.env("NODE_PATH", &path);
    let requires: Vec<String> = modules
        .split(',')
        .map(|module| format!("require('{module}');"))
        .collect();
    let works = Command::new("node")
        .env("NODE_PATH", &path)
        .args(["-e", &requires.concat()])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        works,
        "the pinned {modules} is missing from {}: run `{SETUP}` once",
        path.display()
    );
    command
}

/// `node` that requires each of `modules` (pinned in `tests/sdk/package.json`); panics naming
/// [`SETUP`] when one is not installed.
pub fn node_requiring(modules: &[&str]) -> Command {
    let path = test_deps_dir().join("node/node_modules");
    for module in modules {
        let works = Command::new("node")
            .env("NODE_PATH", &path)
            .args(["-e", &format!("require('{module}')")])
            .output()
            .is_ok_and(|output| output.status.success());
        assert!(
            works,
            "the pinned Node package {module} is missing from {}: run `{SETUP}` once",
            path.display()
        );
    }
    let mut command = Command::new("node");
    command.env("NODE_PATH", &path);
    command
}

/// `python3` that imports each of `modules` (pinned in `tests/sdk/requirements.txt`); panics
/// naming [`SETUP`] when one is not installed.
pub fn python_importing(modules: &[&str]) -> Command {
    let path = test_deps_dir().join("python");
    let imports = format!("import {}", modules.join(", "));
    let works = Command::new("python3")
        .env("PYTHONPATH", &path)
        .args(["-c", &imports])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        works,
        "the pinned Python packages {modules:?} are missing from {}: run `{SETUP}` once",
        path.display()
    );
    let mut command = Command::new("python3");
    command.env("PYTHONPATH", &path);
    command
}

//! `flagpost check`: every error of a configuration and its flag files, and a non-zero exit.

use std::process::Command;

use crate::common::{config_toml, free_addr};

fn check(config: &std::path::Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_flagpost"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    (output.status.success(), text)
}

#[test]
fn check_reports_every_error_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flagpost.toml");
    std::fs::write(&path, config_toml(dir.path(), free_addr(), "")).unwrap();
    let (ok, text) = check(&path);
    assert!(ok, "{text}");

    std::fs::write(
        dir.path().join("flags/Development.toml"),
        "[features.a]\nenabled = 3\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("flags/Nowhere.toml"), "[features.b]\n").unwrap();
    let (ok, text) = check(&path);
    assert!(!ok);
    assert!(text.contains("Development.toml:2:"), "{text}");
    assert!(text.contains("no environment named \"Nowhere\""), "{text}");

    let extra = "[[audit_webhooks]]\nname = \"parked\"\nurl = \"not a url\"\n";
    std::fs::write(&path, config_toml(dir.path(), free_addr(), extra)).unwrap();
    let (ok, text) = check(&path);
    assert!(!ok);
    assert!(
        text.contains("used twice") && text.contains("not a url"),
        "{text}"
    );
}

/// Issue 8, item 4: an empty or whitespace-only file is invalid, with a message that says why.
#[test]
fn check_refuses_an_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flagpost.toml");
    for text in ["", "  \n\t\n"] {
        std::fs::write(&path, text).unwrap();
        let (ok, output) = check(&path);
        assert!(!ok, "{output}");
        assert!(output.contains("flagpost.toml is empty"), "{output}");
    }
}

//! Issue 8, item 9: a bad configuration file's errors name no value from it (a secret quoted any
//! way TOML allows, a numeric one, credentials in a URL), at `check` and at start.

use std::process::Command;

const CANARY: &str = "CANARY-7731";

fn bad_files() -> Vec<String> {
    vec![
        format!("[intake]\nsecrets = ['p@ss\"word-{CANARY}']\n"),
        format!("[intake]\nsecrets = [{{ value = 'p@ss\"word-{CANARY}', x = 1 }}]\n"),
        "[intake]\nsecrets = [{ value = 7731 }]\n".to_owned(),
        format!("[intake]\nsecrets = [{{ value = \"{CANARY} }}]\n"),
        format!("[intake]\nsecrets = [{{ value = \"{CANARY}\" }}] junk\n"),
        format!("[bootstrap]\ntoken = 'x\"{CANARY}'\n"),
        "[bootstrap]\ntoken = { value = 7731 }\n".to_owned(),
        format!("[bootstrap]\nflagpost_url = \"http://ops:{CANARY}@127.0.0.1:7070/\"\n"),
        format!("[bootstrap]\nflagpost_url = \"ftp://ops:{CANARY}@127.0.0.1/\"\n"),
        "[[environments]]\nid = 1\nkeys = [7731]\n".to_owned(),
    ]
}

#[test]
fn a_bad_file_names_no_secret_in_check_or_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("receiver.toml");
    for (n, text) in bad_files().iter().enumerate() {
        std::fs::write(&path, text).unwrap();
        for command in ["check", "serve"] {
            let output = Command::new(env!("CARGO_BIN_EXE_flagpost-receiver"))
                .args([command, "--config"])
                .arg(&path)
                .env("RUST_LOG", "trace")
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&output.stderr).into_owned()
                + &String::from_utf8_lossy(&output.stdout);
            assert!(!output.status.success(), "file {n} was taken: {said}");
            assert!(said.contains("receiver.toml"), "{said}");
            assert!(
                !said.contains(CANARY) && !said.contains("7731"),
                "{command} of file {n} printed a secret:\n{said}"
            );
        }
    }
}

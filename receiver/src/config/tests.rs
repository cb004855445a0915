//! Configuration: parsing, validation and the shipped example.

use super::*;

#[test]
fn no_file_means_the_documented_defaults() {
    let config = Config::default();
    assert_eq!(config.fixed.listen.to_string(), "127.0.0.1:7071");
    assert_eq!(config.fixed.webhook_path, "/webhook");
    assert_eq!(config.live.timestamp_tolerance_secs, 300);
    assert_eq!(config.live.dedupe_retention_secs, 259_200);
    assert!(!config.live.allow_unsigned);
}

#[test]
fn the_shipped_example_is_the_defaults_plus_its_examples() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/receiver.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let config = Config::parse(&text, path).unwrap();
    // The one setting the shipped file changes: it is set up for flagpost senders, so it
    // requires their timestamped signature (issue 8, item 3).
    let mut expected = Config::default();
    assert!(!expected.live.require_standard_signature);
    expected.live.require_standard_signature = true;
    assert_eq!(config, expected);
}

#[test]
fn unsigned_senders_and_a_required_standard_signature_exclude_each_other() {
    let text = "[intake]\nallow_unsigned = true\nrequire_standard_signature = true\n";
    let err = Config::parse(text, "t.toml").unwrap_err().to_string();
    assert!(err.contains("require_standard_signature"), "{err}");
}

#[test]
fn secrets_come_from_the_file_an_environment_variable_or_a_file_path() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "from-a-file\n").unwrap();
    // PATH is set wherever tests run; its value stands in for a secret.
    let text = format!(
        "[intake]\nsecrets = [{{ value = \"inline\" }}, {{ env = \"PATH\" }}, {{ file = {secret_file:?} }}]\n"
    );
    let config = Config::parse(&text, "t.toml").unwrap();
    let expected: Vec<Secret> = [
        "inline".to_owned(),
        std::env::var("PATH").unwrap(),
        "from-a-file".to_owned(),
    ]
    .into_iter()
    .map(|text| Secret::new(text).unwrap())
    .collect();
    assert_eq!(config.live.secrets, expected);
}

#[test]
fn the_server_section_is_validated() {
    let text = "[server]\nheader_read_timeout = \"0s\"\nmax_connections = 0\n";
    let err = Config::parse(text, "t.toml").unwrap_err().to_string();
    assert!(err.contains("server.header_read_timeout"), "{err}");
    assert!(err.contains("server.max_connections"), "{err}");
    let config = Config::parse("[server]\nheader_read_timeout = \"2s\"\n", "t.toml").unwrap();
    assert_eq!(
        config.fixed.server.header_read_timeout,
        Duration::from_secs(2)
    );
    assert_eq!(config.fixed.server.max_connections, 4096);
}

#[test]
fn an_upstream_takes_its_defaults_and_bad_values_are_reported() {
    let text = r#"
        [[environments]]
        id = 7
        keys = ["client"]
        server_keys = ["ser.server"]
        [environments.upstream]
        url = "http://127.0.0.1:8000/"
        server_key = { value = "ser.upstream-secret" }
    "#;
    let config = Config::parse(text, "t.toml").unwrap();
    let upstream = &config.live.upstreams[&7];
    assert_eq!(upstream.url, "http://127.0.0.1:8000");
    assert_eq!(upstream.poll_interval, Duration::from_secs(60));
    assert_eq!(upstream.timeout, Duration::from_secs(10));
    assert_eq!(config.live.server_keys["ser.server"], 7);
    assert_eq!(config.live.environment_keys["ser.server"], 7);
    assert!(!format!("{config:?}").contains("ser.upstream-secret"));

    let text = r#"
        [[environments]]
        id = 7
        server_keys = ["", "k"]
        keys = ["k"]
        [environments.upstream]
        url = "ftp://x"
        server_key = { value = "" }
        poll_interval_secs = 0
    "#;
    let err = Config::parse(text, "t.toml").unwrap_err().to_string();
    for expected in [
        "server_keys[0]: is empty",
        "server_keys[1]: the same key",
        "upstream.url",
        "poll_interval_secs",
        "upstream.server_key: is empty",
    ] {
        assert!(err.contains(expected), "{expected} missing from {err}");
    }
}

#[test]
fn every_error_is_reported_and_secrets_are_not_echoed() {
    let text = r#"
        listen = "nowhere"
        [intake]
        max_body_bytes = 0
        secrets = [{ value = "" }, { env = "FLAGPOST_RECEIVER_TEST_UNSET_VAR" }, { value = "a", env = "B" }]
    "#;
    let err = Config::parse(text, "t.toml").unwrap_err().to_string();
    for expected in [
        "listen",
        "max_body_bytes",
        "secrets[0]",
        "secrets[1]",
        "secrets[2]",
    ] {
        assert!(err.contains(expected), "{expected} missing from {err}");
    }
    let err = Config::parse("[intake]\nsecrets = \"hunter2\"\n", "t.toml")
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn a_status_token_is_kept_as_a_digest_and_a_short_one_refused() {
    let config = Config::parse(
        "status_token = { value = \"status-0123456789\" }\n",
        "t.toml",
    )
    .unwrap();
    let token = config.live.status_token.expect("a status token");
    assert!(token.matches("status-0123456789"));
    assert!(!token.matches("status-012345678"));
    assert!(!format!("{token:?}").contains("status-0123456789"));
    assert_eq!(Config::default().live.status_token, None);
    let err = Config::parse("status_token = { value = \"short\" }\n", "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("status_token: must be at least 12 characters"),
        "{err}"
    );
    assert!(!err.contains("short\""), "{err}");
}

#[test]
fn bootstrap_needs_a_flagpost_server_key_for_each_environment_without_an_upstream() {
    let bootstrap = "[bootstrap]\nflagpost_url = \"http://127.0.0.1:7070\"\n";
    let without = format!("[[environments]]\nid = 1\n{bootstrap}");
    let err = Config::parse(&without, "t.toml").unwrap_err().to_string();
    assert!(
        err.contains("environments[0].flagpost_server_key: needed with [bootstrap]"),
        "{err}"
    );
    let empty =
        format!("[[environments]]\nid = 1\nflagpost_server_key = {{ value = \"\" }}\n{bootstrap}");
    let err = Config::parse(&empty, "t.toml").unwrap_err().to_string();
    assert!(err.contains("flagpost_server_key: is empty"), "{err}");
    let with = format!(
        "[[environments]]\nid = 1\nflagpost_server_key = {{ value = \"ser.k\" }}\n\
         [[environments]]\nid = 2\n[environments.upstream]\nurl = \"http://fs\"\n\
         server_key = {{ value = \"ser.up\" }}\n{bootstrap}"
    );
    let config = Config::parse(&with, "t.toml").unwrap();
    let keys = &config.live.bootstrap.unwrap().server_keys;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[&1].0, "ser.k");
    // The key is a secret: not in any debug output.
    assert!(!format!("{keys:?}").contains("ser.k"));
}

#[test]
fn stream_limits_are_read_and_checked() {
    let config = Config::parse(
        "[streams]\nmax_streams = 5\nbuffer_events = 2\nheartbeat_secs = 3\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(config.live.streams.max_streams, 5);
    assert_eq!(config.live.streams.buffer_events, 2);
    assert_eq!(config.live.streams.heartbeat, Duration::from_secs(3));
    let text = "[streams]\nbuffer_events = 0\nheartbeat_secs = 0\n";
    let err = Config::parse(text, "t.toml").unwrap_err().to_string();
    assert!(
        err.contains("streams.buffer_events: must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains("streams.heartbeat_secs: must be at least 1"),
        "{err}"
    );
}

//! End to end: the real `flagpost` and `flagpost-receiver` binaries on 127.0.0.1. A change made
//! through flagpost's API and an edit of a flag file each show up in a receiver lookup, delivered
//! as signed web hooks; the receiver bootstraps from flagpost's document first.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

#[path = "sidecar/common.rs"]
#[allow(dead_code)]
mod sidecar;
mod support;
use sidecar::{free_addr, receiver_binary, send, wait_until};
use support::config::{ReceiverConfig, SidecarConfig};
use support::process::Running;

const TOKEN: &str = "e2e-token-0123456789";
/// The environment's server-side key in flagpost: the receiver reads its document with it.
const SERVER_KEY: &str = "ser.e2e-server-key";
const SECRET: &str = "whsec_ZTJlIHNoYXJlZCBzZWNyZXQgZm9yIHRoZSB0ZXN0cw==";

fn start(binary: &Path, config: &Path) -> Running {
    Running::serve(binary, config, "warn", false)
}

async fn receiver_flag(receiver: SocketAddr, name: &str) -> Option<Value> {
    let url = format!("http://{receiver}/v1/environments/1/flags/{name}");
    match send(Method::GET, &url, None, None, &[]).await {
        Ok((StatusCode::OK, flag)) => Some(flag),
        _ => None,
    }
}

/// A request to flagpost's API with this test's token.
async fn call(method: Method, url: &str, body: Value) -> (StatusCode, Value) {
    let body = serde_json::to_vec(&body).unwrap();
    send(method, url, Some(TOKEN), Some(body), &[])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_through_the_api_and_flag_files_reach_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let (sidecar, receiver) = (free_addr(), free_addr());
    let flags = dir.path().join("flags");
    std::fs::create_dir_all(&flags).unwrap();
    std::fs::write(
        flags.join("Development.toml"),
        "[features.from_file]\nenabled = true\nvalue = 1\n",
    )
    .unwrap();

    let sidecar_config = SidecarConfig::new(dir.path(), sidecar)
        .flag_files(Some("20ms"), "500ms")
        .token("e2e", None, TOKEN)
        .server_key(SERVER_KEY)
        .webhook("receiver", &format!("http://{receiver}/webhook"), SECRET)
        .write();
    let receiver_config = ReceiverConfig::new(dir.path())
        .listen(receiver)
        .without_snapshot()
        .secret(SECRET)
        .environment(1, &["dev-key"])
        .flagpost_server_key(1, SERVER_KEY)
        .bootstrap(&format!("http://{sidecar}"), TOKEN, 1)
        .write();

    let _sidecar = start(Path::new(env!("CARGO_BIN_EXE_flagpost")), &sidecar_config);
    let _receiver = start(&receiver_binary(), &receiver_config);

    // The flag file's feature arrives (by bootstrap or by web hook, whichever is first).
    wait_until("the receiver has the flag file's feature", || async {
        receiver_flag(receiver, "from_file")
            .await
            .is_some_and(|f| f["value"] == 1)
    })
    .await;

    // A change through flagpost's API.
    let created = call(
        Method::POST,
        &format!("http://{sidecar}/api/v1/features"),
        json!({"project": 1, "name": "from_api", "initial_value": "a"}),
    )
    .await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
    let set = call(
        Method::PUT,
        &format!("http://{sidecar}/api/v1/environments/1/features/from_api/state"),
        json!({"enabled": true, "value": "b"}),
    )
    .await;
    assert_eq!(set.0, StatusCode::OK, "{}", set.1);
    wait_until("the API change reaches the receiver", || async {
        receiver_flag(receiver, "from_api")
            .await
            .is_some_and(|f| f["value"] == "b" && f["enabled"] == true)
    })
    .await;

    // An edit of the flag file, saved the way editors do.
    let tmp = flags.join(".Development.toml.swp");
    std::fs::write(&tmp, "[features.from_file]\nenabled = false\nvalue = 2\n").unwrap();
    std::fs::rename(&tmp, flags.join("Development.toml")).unwrap();
    wait_until("the flag-file edit reaches the receiver", || async {
        receiver_flag(receiver, "from_file")
            .await
            .is_some_and(|f| f["value"] == 2 && f["enabled"] == false)
    })
    .await;

    // And the Flagsmith-SDK-compatible route sees the same.
    let (status, flags) = send(
        Method::GET,
        &format!("http://{receiver}/api/v1/flags/"),
        None,
        None,
        &[("x-environment-key", "dev-key")],
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{flags}");
    let names: Vec<&str> = flags
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["feature"]["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"from_api") && names.contains(&"from_file"),
        "{flags}"
    );

    // The operator's view: the CLI lists the endpoint's attempts through the admin API.
    let output = Command::new(env!("CARGO_BIN_EXE_flagpost"))
        .args([
            "deliveries",
            "--url",
            &format!("http://{sidecar}"),
            "--token",
            TOKEN,
        ])
        .args(["attempts", "--endpoint", "receiver"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{listed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        listed.contains("\"status\": 200") || listed.contains("\"status\":200"),
        "{listed}"
    );
}

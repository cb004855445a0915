//! What an operator deploys with: the shipped example configurations run as shipped, both
//! binaries say their version, and the Kubernetes example is well-formed YAML that wires what the
//! README says (flagpost on a claim, the receiver as a sidecar, probes on /healthz and /readyz).
//! The Dockerfile and the systemd units are checked by hand (see the README's "Packaging").

use std::path::Path;
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

use crate::common::{self, get, wait_for};
use crate::support::config::{ReceiverConfig, SidecarConfig};
use crate::support::process::{Running, free_addr};

#[test]
fn both_binaries_say_their_version() {
    for (binary, name) in [
        (common::flagpost(), "flagpost"),
        (common::receiver(), "flagpost-receiver"),
    ] {
        let output = Command::new(&binary).arg("--version").output().unwrap();
        assert!(output.status.success(), "{name} --version");
        let said = String::from_utf8(output.stdout).unwrap();
        assert_eq!(said.trim(), format!("{name} {}", env!("CARGO_PKG_VERSION")));
    }
}

/// Copies `config/` into `dir`, whose folder then looks like the checkout's root to the examples'
/// relative paths (`config/flags`, `flagpost.redb`).
fn copy_config(dir: &Path) {
    let status = Command::new("cp")
        .args(["-r", &format!("{}/config", common::ROOT)])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn the_shipped_example_configurations_run_as_shipped() {
    let _ports = common::default_ports();
    let dir = tempfile::tempdir().unwrap();
    copy_config(dir.path());
    let mut running = Vec::new();
    for (binary, config) in [
        (common::flagpost(), "config/flagpost.toml"),
        (common::receiver(), "config/receiver.toml"),
    ] {
        let mut command = Command::new(binary);
        command.args(["serve", "--config", config]);
        command
            .current_dir(dir.path())
            .env_remove("FLAGPOST_CONFIG");
        running.push(Running::spawn(&mut command, true));
    }
    let (flagpost, receiver) = (
        "127.0.0.1:7070".parse().unwrap(),
        "127.0.0.1:7071".parse().unwrap(),
    );
    wait_for(flagpost, "/readyz");
    wait_for(receiver, "/readyz");
    // The demo token written in the file is the API's.
    let token = "Bearer demo-token-replace-me-0123456789";
    let features = || get(flagpost, "/api/v1/features", &[("authorization", token)]).unwrap();
    assert_eq!(features().status, 200, "{}", features().body);
    // And the example flag files are applied (by the watcher's first pass, after start).
    common::wait_until("the example flag files are applied", || {
        features().body.contains("new_checkout")
    });
}

fn string<'a>(yaml: &'a Yaml, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(yaml, |node, key| match &node[*key] {
            Yaml::BadValue => None,
            found => Some(found),
        })?
        .as_str()
}

#[test]
fn the_kubernetes_example_runs_flagpost_on_a_claim_and_the_receiver_as_a_sidecar() {
    let text = common::read("config/deploy/kubernetes.yaml");
    let documents = YamlLoader::load_from_str(&text).expect("valid YAML");
    let kinds: Vec<&str> = documents
        .iter()
        .filter_map(|d| d["kind"].as_str())
        .collect();
    assert_eq!(kinds.len(), documents.len(), "every document has a kind");
    let deployment = |name: &str| {
        documents
            .iter()
            .find(|d| {
                string(d, &["kind"]) == Some("Deployment")
                    && string(d, &["metadata", "name"]) == Some(name)
            })
            .unwrap_or_else(|| panic!("a Deployment {name}"))
    };
    let claim = documents
        .iter()
        .find(|d| d["kind"].as_str() == Some("PersistentVolumeClaim"))
        .expect("a PersistentVolumeClaim");
    let claim_name = string(claim, &["metadata", "name"]).unwrap();

    let flagpost = deployment("flagpost");
    let pod = &flagpost["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_vec().unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| string(v, &["persistentVolumeClaim", "claimName"]) == Some(claim_name))
    );
    assert_eq!(
        string(flagpost, &["spec", "strategy", "type"]),
        Some("Recreate")
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));

    let app = deployment("app");
    let containers = app["spec"]["template"]["spec"]["containers"]
        .as_vec()
        .unwrap();
    assert!(containers.len() >= 2, "the app and its receiver");
    let receiver = containers
        .iter()
        .find(|c| c["command"][0].as_str() == Some("/usr/local/bin/flagpost-receiver"))
        .expect("a flagpost-receiver sidecar");
    for container in [&pod["containers"][0], receiver] {
        assert_eq!(
            string(container, &["livenessProbe", "httpGet", "path"]),
            Some("/healthz")
        );
        assert_eq!(
            string(container, &["readinessProbe", "httpGet", "path"]),
            Some("/readyz")
        );
    }
}

/// systemd's `Type=notify`: each binary sends `READY=1` to `$NOTIFY_SOCKET` once it serves.
#[test]
fn both_binaries_tell_the_service_manager_they_are_ready() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("flags")).unwrap();
    let (sidecar, receiver) = (free_addr(), free_addr());
    let configs = [
        (
            common::flagpost(),
            SidecarConfig::new(dir.path(), sidecar).write(),
            sidecar,
        ),
        (
            common::receiver(),
            ReceiverConfig::new(dir.path()).listen(receiver).write(),
            receiver,
        ),
    ];
    for (n, (binary, config, addr)) in configs.into_iter().enumerate() {
        let socket_path = dir.path().join(format!("notify-{n}"));
        let socket = UnixDatagram::bind(&socket_path).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(90)))
            .unwrap();
        let mut command = Command::new(&binary);
        command.args(["serve", "--config"]).arg(&config);
        let _running = Running::spawn(command.env("NOTIFY_SOCKET", &socket_path), true);
        let mut message = [0u8; 64];
        let length = socket
            .recv(&mut message)
            .unwrap_or_else(|e| panic!("{}: no READY=1 ({e})", binary.display()));
        assert_eq!(&message[..length], b"READY=1");
        // Ready means serving.
        assert_eq!(get(addr, "/healthz", &[]).map(|r| r.status), Some(200));
    }
}

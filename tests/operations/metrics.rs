//! `/metrics` of both real binaries by Prometheus' conventions: Prometheus' text format by
//! default and for `text/plain`, which `promtool check metrics` passes without a remark;
//! OpenMetrics when asked for; and exactly the families, types, labels and label values the
//! README's metrics table documents, every family there from start with its known series at zero.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::common::{self, get, wait_for};
use crate::support::config::{ReceiverConfig, SidecarConfig};
use crate::support::process::{Running, free_addr};

const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the README says of one family: its type, and per label the values it takes (`None`:
/// open, such as an endpoint's name).
#[derive(Debug, PartialEq)]
struct Family {
    kind: String,
    labels: BTreeMap<String, Option<BTreeSet<String>>>,
}

#[test]
fn both_pages_follow_prometheus_conventions_and_match_the_readme() {
    let dir = tempfile::tempdir().unwrap();
    let (sidecar, receiver, nothing) = (free_addr(), free_addr(), free_addr());
    std::fs::create_dir_all(dir.path().join("flags")).unwrap();
    let sidecar_config = SidecarConfig::new(dir.path(), sidecar)
        .token("ops", None, "ops-token-0123456789")
        .webhook(
            "app-receiver",
            &format!("http://{nothing}/webhook"),
            "s3cret-value",
        )
        .write();
    // Environment 44 has an upstream (nothing listens there), so its fetch series are shown; a
    // JetStream intake (no NATS server there either) shows its families.
    let receiver_config = ReceiverConfig::new(dir.path())
        .listen(receiver)
        .secret("s3cret-value")
        .environment(1, &["dev-key"])
        .extra(&format!(
            "[[environments]]\nid = 44\nkeys = [\"up-key\"]\n[environments.upstream]\n\
             url = \"http://{nothing}\"\nserver_key = {{ value = \"ser.upstream-key\" }}\n\
             [jetstream]\ndurable = \"metrics-test\"\n\
             [jetstream.connection]\nservers = [\"nats://{nothing}\"]\n"
        ))
        .write();
    let _sidecar = Running::serve(&common::flagpost(), &sidecar_config, "warn", true);
    let _receiver = Running::serve(&common::receiver(), &receiver_config, "warn", true);
    wait_for(sidecar, "/readyz");
    wait_for(receiver, "/healthz");

    let documented = readme_families();
    for (program, addr, prefix) in [
        ("flagpost", sidecar, "flagpost_"),
        ("flagpost-receiver", receiver, "flagpost_receiver_"),
    ] {
        let text = scrape(addr, None, TEXT);
        assert_eq!(scrape(addr, Some("text/plain"), TEXT), text, "{program}");
        promtool_passes(program, &text);
        let openmetrics = scrape(addr, Some("application/openmetrics-text"), OPENMETRICS);
        assert!(openmetrics.ends_with("# EOF\n"), "{program}: {openmetrics}");

        let served = page_families(&text);
        let ours = |name: &str| {
            name.starts_with(prefix)
                && (prefix == "flagpost_receiver_" || !name.starts_with("flagpost_receiver_"))
        };
        let expected: BTreeMap<&String, &Family> =
            documented.iter().filter(|(n, _)| ours(n)).collect();
        assert_eq!(
            served.keys().collect::<BTreeSet<_>>(),
            expected.keys().copied().collect::<BTreeSet<_>>(),
            "{program}: the families on /metrics at start (left) and in the README's table (right)"
        );
        for (name, (family, samples)) in &served {
            let documented = expected[name];
            assert_eq!(family.kind, documented.kind, "{program}: {name}'s type");
            // A family with no series yet (an age before the first data) shows only its type.
            if *samples > 0 {
                assert_eq!(
                    family.labels, documented.labels,
                    "{program}: {name}'s labels and values at start, as served and as documented"
                );
            }
        }
    }
}

/// `/metrics` with `accept`, checking the answer's content type.
fn scrape(addr: SocketAddr, accept: Option<&str>, content_type: &str) -> String {
    let headers: Vec<_> = accept.map(|a| ("accept", a)).into_iter().collect();
    let reply = get(addr, "/metrics", &headers).expect("/metrics answers");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some(content_type),
        "{accept:?}"
    );
    reply.body
}

/// `promtool check metrics` reads the page from stdin; it must find nothing to say.
fn promtool_passes(program: &str, page: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is missing ({e}): run `.ci/test --setup-only` (Debian's prometheus)")
        });
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "{program}: promtool check metrics: {said}\n{page}"
    );
}

/// Each family of a text-format page by its `# TYPE` name, with the labels and values of its
/// samples (a histogram's `le` left out; open labels by name only), and its number of samples.
fn page_families(page: &str) -> BTreeMap<String, (Family, usize)> {
    let mut families = BTreeMap::new();
    let mut current = String::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            current = name.to_owned();
            let family = Family {
                kind: kind.to_owned(),
                labels: BTreeMap::new(),
            };
            families.insert(current.clone(), (family, 0));
        } else if !line.starts_with('#') && !line.is_empty() {
            let (family, samples) = families.get_mut(&current).expect("a sample after # TYPE");
            *samples += 1;
            let Some((_, labels)) = line.split_once('{') else {
                continue;
            };
            let labels = labels.rsplit_once('}').unwrap().0;
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let (name, value) = pair.split_once('=').unwrap();
                if name == "le" {
                    continue;
                }
                let values = family.labels.entry(name.to_owned()).or_insert_with(|| {
                    // Open labels are compared by name: their values are this test's own.
                    (!OPEN_LABELS.contains(&name)).then(BTreeSet::new)
                });
                if let Some(values) = values {
                    values.insert(value.trim_matches('"').to_owned());
                }
            }
        }
    }
    families
}

/// Labels whose values are names and ids from the configuration, not a fixed list.
const OPEN_LABELS: [&str; 2] = ["endpoint", "environment"];

/// The rows of the README's metrics table: `` | `name` | type | `label`: `a`, `b`; `open` (…) | … ``.
fn readme_families() -> BTreeMap<String, Family> {
    let readme = common::read("README.md");
    let mut families = BTreeMap::new();
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, name, kind, labels, ..] = cells.as_slice() else {
            continue;
        };
        let Some(name) = name
            .strip_prefix('`')
            .and_then(|n| n.strip_suffix('`'))
            .filter(|n| n.starts_with("flagpost_"))
        else {
            continue;
        };
        let mut parsed = BTreeMap::new();
        for label in labels.split(';').map(str::trim).filter(|l| *l != "none") {
            let ticked: Vec<&str> = label.split('`').skip(1).step_by(2).collect();
            let (label_name, values) = ticked.split_first().expect("a label name in backticks");
            let values = (!OPEN_LABELS.contains(label_name))
                .then(|| values.iter().map(|v| v.to_string()).collect());
            parsed.insert(label_name.to_string(), values);
        }
        let family = Family {
            kind: kind.to_string(),
            labels: parsed,
        };
        assert!(
            families.insert(name.to_owned(), family).is_none(),
            "{name} twice in the README"
        );
    }
    assert!(
        families.len() > 10,
        "the README's metrics table: {families:?}"
    );
    families
}

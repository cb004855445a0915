//! Issue 9: the 50 steps recorded from a real Flagsmith v2.265.0
//! (`shared/conformance/flagsmith-v2.265.0-live/`) replayed into the real receiver binary, which
//! holds both environments with [`StandIn`] as their upstream Flagsmith. Each step's web hooks go
//! in as Flagsmith sent them (exact bytes and headers); the stand-in serves that step's documents.
//!
//! What is compared: everything in Flagsmith's answers that the document or the web hooks carry.
//! Left out, because neither carries them: `feature.created_date`, `default_enabled`,
//! `description` and `initial_value` (features in the document have only id, name and type),
//! `feature_segment` (the FeatureSegment id is in neither), and the traits' database `id`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::common::*;
use crate::stand_in::{Document, StandIn, base64_decode};

pub const LIVE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/conformance/flagsmith-v2.265.0-live"
);
const WEBHOOK_SECRET: &str = "fsconf-webhook-secret-1";
pub const STEPS: usize = 50;

/// `(name, environment id, client key, server key)` of the recording's two environments.
pub const ENVIRONMENTS: [(&str, u64, &str, &str); 2] = [
    (
        "live",
        44,
        "FsConfLiveClientKey001",
        "ser.FsConfLiveServerKey001",
    ),
    (
        "qa",
        45,
        "FsConfQaClientKey00002",
        "ser.FsConfQaServerKey00002",
    ),
];

pub fn step(n: usize) -> Value {
    read_json(Path::new(LIVE).join(format!("steps/{n:03}.json")))
}

/// The traits a recorded identity was asked with (its `traits_sent`), by name.
pub fn traits_sent(recorded_identity: &Value) -> Map<String, Value> {
    recorded_identity["traits_sent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["trait_key"].as_str().unwrap().to_owned(),
                t["trait_value"].clone(),
            )
        })
        .collect()
}

/// Step `n`'s document of `env` as Flagsmith served it.
pub fn document(step: &Value, n: usize, env: &str) -> Document {
    let headers = &step["environment_document_headers"][env];
    Document {
        version: n,
        body: serde_json::to_vec(&step["environment_documents"][env])
            .unwrap()
            .into(),
        last_modified: headers["Last-Modified"].as_str().unwrap().to_owned(),
        updated_at: headers["X-Flagsmith-Document-Updated-At"]
            .as_str()
            .unwrap()
            .to_owned(),
    }
}

/// The receiver binary, configured for both environments with `upstream` as their Flagsmith;
/// documents are polled every second, and a fetch may wait in the stand-in's closed gate for up
/// to 30 s before it counts as failed.
pub async fn start_receiver(dir: &Path, upstream: &str) -> (Running, u16) {
    let mut environments = String::new();
    for (_, id, client_key, server_key) in ENVIRONMENTS {
        environments.push_str(&format!(
            "[[environments]]\nid = {id}\nkeys = [\"{client_key}\"]\nserver_keys = [\"{server_key}\"]\n\
             [environments.upstream]\nurl = \"{upstream}\"\nserver_key = {{ value = \"{server_key}\" }}\n\
             poll_interval_secs = 1\ntimeout_secs = 30\n"
        ));
    }
    let port = free_port();
    let config = test_config(dir)
        .secret(WEBHOOK_SECRET)
        .intake(ANY_AGE)
        .listen(([127, 0, 0, 1], port).into())
        .extra(&environments)
        .write();
    let running = crate::crash::start_binary(&config, port).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = request("GET", &url(port, "/readyz"), &[], Vec::new()).await;
        if status == 200 {
            return (running, port);
        }
        assert!(Instant::now() < deadline, "never ready: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// Posts the step's web hooks in arrival order, byte for byte with their headers (less those the
/// connection sets itself); answers, per environment, when its last one was acknowledged.
pub async fn post_webhooks(port: u16, step: &Value) -> HashMap<String, Instant> {
    let mut acknowledged = HashMap::new();
    for webhook in step["webhooks"].as_array().unwrap() {
        let body = base64_decode(webhook["body_b64"].as_str().unwrap());
        let headers: Vec<(String, String)> = webhook["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| (pair[0].as_str().unwrap(), pair[1].as_str().unwrap()))
            .filter(|(name, _)| {
                !["host", "content-length", "connection"].contains(&&*name.to_lowercase())
            })
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let (status, answer) = request("POST", &url(port, "/webhook"), &refs, body).await;
        assert!(
            (200..300).contains(&status),
            "step {}: web hook {} refused: {status} {answer}",
            step["step"],
            webhook["seq"]
        );
        if let Some(env) = webhook["path"].as_str().unwrap().strip_prefix("/env/") {
            acknowledged.insert(env.to_owned(), Instant::now());
        }
    }
    acknowledged
}

/// What tells one recorded document from another: all but `identity_overrides`, whose changes
/// always move `updated_at` too, and which the receiver may complete from web hooks where the
/// document leaves them out (`use_identity_overrides_in_local_eval` false). Project-level
/// `hide_disabled_flags`, which leaves `updated_at` alone, is compared.
fn document_version(mut document: Value) -> Value {
    if let Some(fields) = document.as_object_mut() {
        fields.remove("identity_overrides");
    }
    document
}

/// Waits until the receiver holds step `n`'s documents: the stand-in answered a request that
/// began after the step's last web hook for that environment (a document fetched earlier may be
/// overtaken by the web hooks), the receiver's `/readyz` counts that fetch as done, and its own
/// `GET /api/v1/environment-document/` shows the document.
async fn wait_for_documents(
    port: u16,
    stand_in: &StandIn,
    step: &Value,
    n: usize,
    since: &HashMap<String, Instant>,
    served_from: Instant,
) {
    for (env, id, _, server_key) in ENVIRONMENTS {
        let begun = since.get(env).copied().unwrap_or(served_from);
        let answered = stand_in.fetched(server_key, begun, n).await;
        let want = document_version(step["environment_documents"][env].clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, ready) = request("GET", &url(port, "/readyz"), &[], Vec::new()).await;
            let (status, held) = request(
                "GET",
                &url(port, "/api/v1/environment-document/"),
                &[("x-environment-key", server_key)],
                Vec::new(),
            )
            .await;
            let fetches = ready["documents"][id.to_string()]["fetches"].as_u64();
            if fetches.is_some_and(|done| done >= answered as u64)
                && status == 200
                && document_version(held.clone()) == want
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "step {n}: the receiver never took {env}'s fetch number {answered} (fetches: \
                 {:?}); /readyz: {ready}; its document: {status} {held}",
                stand_in.fetches()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The part of a flag that the receiver can know; `variant` only in identity answers.
fn comparable_flag(flag: &Value, with_variant: bool) -> Value {
    let mut comparable = json!({
        "feature": {"id": flag["feature"]["id"], "name": flag["feature"]["name"],
                    "type": flag["feature"]["type"]},
        "enabled": flag["enabled"],
        "feature_state_value": flag["feature_state_value"],
        "id": flag["id"],
        "environment": flag["environment"],
        "identity": flag["identity"],
    });
    if with_variant {
        comparable["variant"] = flag["variant"].clone();
    }
    comparable
}

/// Flags by feature name, comparable.
pub fn comparable_flags(flags: &Value, with_variant: bool) -> BTreeMap<String, Value> {
    flags
        .as_array()
        .unwrap_or_else(|| panic!("not a list of flags: {flags}"))
        .iter()
        .map(|flag| {
            let name = flag["feature"]["name"].as_str().unwrap().to_owned();
            (name, comparable_flag(flag, with_variant))
        })
        .collect()
}

fn comparable_traits(answer: &Value) -> Value {
    let traits = answer["traits"].as_array().cloned().unwrap_or_default();
    traits
        .iter()
        .map(|t| json!([t["trait_key"], t["trait_value"], t["transient"]]))
        .collect()
}

/// What one environment answers at one moment: `/flags/` and each identity's POST, comparable.
#[derive(Debug, Clone, PartialEq)]
pub struct Answers {
    pub flags: BTreeMap<String, Value>,
    pub identities: BTreeMap<String, (Value, BTreeMap<String, Value>)>,
}

impl Answers {
    pub fn recorded(step: &Value, env: &str) -> Answers {
        let identities = step["identities"][env].as_object().unwrap();
        Answers {
            flags: comparable_flags(&step["flags"][env], false),
            identities: identities
                .iter()
                .map(|(identifier, recorded)| {
                    let answer = &recorded["answer"];
                    let head = json!([answer["identifier"], comparable_traits(answer)]);
                    let flags = comparable_flags(&answer["flags"], true);
                    (identifier.clone(), (head, flags))
                })
                .collect(),
        }
    }

    /// The receiver's answers to the requests the recording made at `step`.
    pub async fn asked(port: u16, step: &Value, env: &str, client_key: &str) -> Answers {
        let key = [("x-environment-key", client_key)];
        let (status, flags) = request("GET", &url(port, "/api/v1/flags/"), &key, Vec::new()).await;
        assert_eq!(status, 200, "{env} /api/v1/flags/: {flags}");
        let mut identities = BTreeMap::new();
        for (identifier, recorded) in step["identities"][env].as_object().unwrap() {
            let body = json!({"identifier": identifier, "traits": recorded["traits_sent"]});
            let headers = [key[0], ("content-type", "application/json")];
            let (status, answer) = request(
                "POST",
                &url(port, "/api/v1/identities/"),
                &headers,
                serde_json::to_vec(&body).unwrap(),
            )
            .await;
            assert_eq!(status, 200, "{env} {identifier}: {answer}");
            let head = json!([answer["identifier"], comparable_traits(&answer)]);
            let flags = comparable_flags(&answer["flags"], true);
            identities.insert(identifier.clone(), (head, flags));
        }
        Answers {
            flags: comparable_flags(&flags, false),
            identities,
        }
    }

    /// The same answers with only the features `keep` names.
    pub fn only(&self, keep: impl Fn(&str) -> bool) -> Answers {
        let filter = |flags: &BTreeMap<String, Value>| -> BTreeMap<String, Value> {
            flags
                .iter()
                .filter(|(name, _)| keep(name))
                .map(|(name, flag)| (name.clone(), flag.clone()))
                .collect()
        };
        Answers {
            flags: filter(&self.flags),
            identities: self
                .identities
                .iter()
                .map(|(id, (head, flags))| (id.clone(), (head.clone(), filter(flags))))
                .collect(),
        }
    }

    /// Each difference from `want`, as `who feature: got X, want Y`.
    pub fn differences(&self, want: &Answers) -> Vec<String> {
        let mut found = flag_differences("/flags/", &self.flags, &want.flags);
        for (identifier, (want_head, want_flags)) in &want.identities {
            let Some((head, flags)) = self.identities.get(identifier) else {
                found.push(format!("{identifier}: no answer"));
                continue;
            };
            if head != want_head {
                found.push(format!("{identifier}: got {head}, want {want_head}"));
            }
            found.extend(flag_differences(identifier, flags, want_flags));
        }
        found
    }
}

pub fn flag_differences(
    who: &str,
    got: &BTreeMap<String, Value>,
    want: &BTreeMap<String, Value>,
) -> Vec<String> {
    let mut names: Vec<&String> = got.keys().chain(want.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|name| got.get(*name) != want.get(*name))
        .map(|name| {
            let show = |flag: Option<&Value>| flag.map_or("absent".to_owned(), Value::to_string);
            format!(
                "{who} {name}: got {}, want {}",
                show(got.get(name)),
                show(want.get(name))
            )
        })
        .collect()
}

/// The replay's receiver, its stand-in upstream (serving step 0), and its folder.
pub struct Replay {
    pub stand_in: StandIn,
    pub port: u16,
    _receiver: Running,
    _dir: tempfile::TempDir,
}

impl Replay {
    pub async fn start() -> Replay {
        let dir = tempfile::tempdir().unwrap();
        let stand_in = StandIn::start().await;
        let first = step(0);
        for (env, _, _, server_key) in ENVIRONMENTS {
            stand_in.serve(server_key, document(&first, 0, env));
        }
        let (receiver, port) = start_receiver(dir.path(), &stand_in.url()).await;
        let replay = Replay {
            stand_in,
            port,
            _receiver: receiver,
            _dir: dir,
        };
        replay
            .wait_for_documents(&first, 0, &HashMap::new(), Instant::now())
            .await;
        replay
    }

    pub async fn wait_for_documents(
        &self,
        step: &Value,
        n: usize,
        since: &HashMap<String, Instant>,
        served_from: Instant,
    ) {
        wait_for_documents(self.port, &self.stand_in, step, n, since, served_from).await;
    }

    /// Serves step `n`'s documents from now on; answers when that began.
    pub fn serve(&self, step: &Value, n: usize) -> Instant {
        let served_from = Instant::now();
        for (env, _, _, server_key) in ENVIRONMENTS {
            self.stand_in.serve(server_key, document(step, n, env));
        }
        served_from
    }

    /// Every difference between the receiver's answers and Flagsmith's at this step.
    async fn differences_from_recorded(&self, step: &Value, n: usize) -> Vec<String> {
        let mut found = Vec::new();
        for (env, _, client_key, _) in ENVIRONMENTS {
            let asked = Answers::asked(self.port, step, env, client_key).await;
            let mut recorded = Answers::recorded(step, env);
            let unknowable = forgive_unknowable_override_ids(&asked, &mut recorded, step, env);
            if unknowable > 0 {
                println!(
                    "step {n} {env}: {unknowable} identity override ids no document or web hook \
                     carries, answered null"
                );
            }
            let differences = asked.differences(&recorded);
            found.extend(
                differences
                    .into_iter()
                    .map(|d| format!("step {n} {env} {d}")),
            );
        }
        found
    }
}

/// The one thing the receiver cannot know: while an environment's document leaves identity
/// overrides out (`use_identity_overrides_in_local_eval` false: qa, steps 36-44), an override
/// made then (qa u-ben `layout`, step 41) is known from its web hook alone, and Flagsmith's web
/// hooks carry no feature state id. Where the receiver answers such an override with `id` null,
/// Flagsmith's id is not asked of it; a wrong id, or any other field, still counts. Answers how
/// many ids were forgiven.
fn forgive_unknowable_override_ids(
    asked: &Answers,
    recorded: &mut Answers,
    step: &Value,
    env: &str,
) -> usize {
    if step["environment_documents"][env]["use_identity_overrides_in_local_eval"] != false {
        return 0;
    }
    let in_document = step["environment_documents"][env]["identity_overrides"]
        .as_array()
        .is_some_and(|overrides| !overrides.is_empty());
    let mut forgiven = 0;
    for (identifier, (_, flags)) in recorded.identities.iter_mut() {
        for (name, flag) in flags.iter_mut() {
            let answered = asked
                .identities
                .get(identifier)
                .and_then(|(_, flags)| flags.get(name));
            if !flag["identity"].is_null()
                && !in_document
                && answered.is_some_and(|answered| answered["id"].is_null())
            {
                flag["id"] = Value::Null;
                forgiven += 1;
            }
        }
    }
    forgiven
}

/// Issue 9: after every step, once the receiver holds the step's documents, each identity's
/// `POST /api/v1/identities/` and `GET /api/v1/flags/` answer as Flagsmith did, in both
/// environments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replayed_step_answers_as_flagsmith_did() {
    let replay = Replay::start().await;
    let mut differences = replay.differences_from_recorded(&step(0), 0).await;
    for n in 1..STEPS {
        let recorded = step(n);
        let served_from = replay.serve(&recorded, n);
        let acknowledged = post_webhooks(replay.port, &recorded).await;
        replay
            .wait_for_documents(&recorded, n, &acknowledged, served_from)
            .await;
        differences.extend(replay.differences_from_recorded(&recorded, n).await);
    }
    assert_no_differences(&differences);
}

pub fn assert_no_differences(differences: &[String]) {
    assert!(
        differences.is_empty(),
        "{} answers differ from Flagsmith's:\n{}",
        differences.len(),
        differences
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

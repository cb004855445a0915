//! A receiver fed by real flagpost servers (`flagpost::server::run` on 127.0.0.1, real redb
//! files): relayed Flagsmith hooks sent again (issue 8, item 1), and a flagpost that starts again
//! on a new database (issue 8, item 5).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::common::*;

const TOKEN: &str = "senders-test-token-0123456789";
const RELAY_SECRET: &str = "interop-secret-123";

/// flagpost's `run` in this process, on a listener the test bound.
struct Flagpost {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Flagpost {
    async fn start(listener: TcpListener, toml: &str) -> Flagpost {
        let config = flagpost::config::Config::parse(toml).expect("test configuration is valid");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            flagpost::server::run(listener, config, None, async {
                let _ = stopped.await;
            })
            .await
            .expect("flagpost runs");
        });
        Flagpost { addr, stop, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server and waits until its database is closed.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("flagpost stops")
            .unwrap();
    }

    /// A change through the API, which must succeed.
    async fn change(&self, method: &str, path: &str, body: Value) -> Value {
        let auth = format!("Bearer {TOKEN}");
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        let body = serde_json::to_vec(&body).unwrap();
        let (status, answer) = request(method, &self.url(path), &headers, body).await;
        assert!((200..300).contains(&status), "{method} {path}: {answer}");
        answer
    }
}

/// flagpost with its database in `dir`, one environment (1) whose events go, one at a time and
/// in order, to `webhook` signed with the receiver's test secret; `extra` appended.
/// flagpost's server-side key of environment 1: the receiver reads its document with it.
const SERVER_KEY: &str = "ser.senders-server-key";

fn flagpost_toml(dir: &Path, webhook: &str, extra: &str) -> String {
    let database = dir.join("flagpost.redb");
    format!(
        r#"listen = "127.0.0.1:0"
[storage]
path = {database:?}
[flag_files]
enabled = false
[api]
tokens = [{{ name = "tests", token = {{ value = "{TOKEN}" }} }}]
[[projects]]
id = 1
name = "Shop"
[[environments]]
id = 1
name = "Development"
api_key = "dev-key"
project = 1
server_keys = [{{ value = "{SERVER_KEY}" }}]
[[environments.webhooks]]
name = "receiver"
url = "{webhook}"
secrets = [{{ value = "{TEST_SECRET}" }}]
ordered = true
{extra}
"#
    )
}

/// Polls `check` until it holds. The deadline only turns a hang into a failure with a message.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting until {what}");
}

/// The value of feature `name` in environment 1, as `flags` (a native listing) has it; `None`
/// when the feature is not there.
fn value_of(flags: &Value, name: &str) -> Option<Value> {
    flags
        .as_array()?
        .iter()
        .find(|flag| flag["name"] == name)
        .map(|flag| flag["value"].clone())
}

/// A captured Flagsmith request of the conformance set: its body and `X-Flagsmith-Signature`.
fn captured(file: &str) -> (Vec<u8>, String) {
    let dir = format!("{CONFORMANCE}/flagsmith-v2.265.0");
    let captures = read_json(format!("{dir}/captures.json"));
    let signature = captures["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["body_file"] == file)
        .and_then(|r| r["x_flagsmith_signature"].as_str())
        .unwrap()
        .to_owned();
    (read(format!("{dir}/{file}")), signature)
}

async fn relay(flagpost: &Flagpost, file: &str) -> (u16, Value) {
    let (body, signature) = captured(file);
    let headers = [
        ("content-type", "application/json"),
        ("x-flagsmith-signature", signature.as_str()),
    ];
    request(
        "POST",
        &flagpost.url("/api/v1/relay/upstream"),
        &headers,
        body,
    )
    .await
}

/// Issue 8, item 1: A ("v1"), B ("v2"), then A again with the same bytes and signature (a
/// Flagsmith retry after a timeout), then a late body for the same key (its creation): the
/// receiver behind flagpost ends on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_a_b_a_ends_on_b_at_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), &config_toml(dir.path(), "", "")).await;
    let relay_source = format!(
        "[[relay]]\nname = \"upstream\"\nenvironment = 1\nsecret = {{ value = \"{RELAY_SECRET}\" }}\n"
    );
    let toml = flagpost_toml(dir.path(), &receiver.url("/webhook"), &relay_source);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let flagpost = Flagpost::start(listener, &toml).await;

    let (status, first) = relay(&flagpost, "002_flag_updated.json").await;
    assert_eq!((status, first["status"].as_str()), (202, Some("relayed")));
    let (status, answer) = relay(&flagpost, "003_flag_updated.json").await;
    assert_eq!((status, answer["status"].as_str()), (202, Some("relayed")));
    let (status, again) = relay(&flagpost, "002_flag_updated.json").await;
    assert_eq!((status, again["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(again["events"], first["events"], "the event it became");
    let (status, late) = relay(&flagpost, "001_flag_updated.json").await;
    assert_eq!(
        (status, late["status"].as_str(), late["events"].clone()),
        (200, Some("superseded"), json!([]))
    );
    // A later change of another feature: delivered in order, so once the receiver has it, it
    // has taken everything relayed before.
    let (status, _) = relay(&flagpost, "011_flag_updated.json").await;
    assert_eq!(status, 202);
    eventually("the receiver has the last relayed change", || async {
        value_of(&receiver.env_flags(1).await, "interop_flag_2").is_some()
    })
    .await;
    let flags = receiver.env_flags(1).await;
    assert_eq!(
        value_of(&flags, "interop_flag"),
        Some(json!("v2")),
        "{flags}"
    );

    flagpost.stop().await;
    receiver.stop().await;
}

/// Issue 8, item 5: flagpost's database is removed and created again (sequences count from 1,
/// feature ids too); the receiver follows the new database (re-bootstrapping from it) instead of
/// answering "superseded" to everything, and still does after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flagpost_started_on_a_new_database_is_followed_across_a_restart() {
    let flagpost_dir = tempfile::tempdir().unwrap();
    let receiver_dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let flagpost_addr = listener.local_addr().unwrap();
    let rest = format!(
        "[[environments]]\nid = 1\nkeys = [\"key-1\"]\nflagpost_server_key = {{ value = \"{SERVER_KEY}\" }}\n[bootstrap]\nflagpost_url = \"http://{flagpost_addr}\"\ntoken = {{ value = \"{TOKEN}\" }}\nretry_secs = 1\n"
    );
    let receiver_toml = config_toml(receiver_dir.path(), "", &rest);
    let receiver = Receiver::start(receiver_dir.path(), &receiver_toml).await;
    let toml = flagpost_toml(flagpost_dir.path(), &receiver.url("/webhook"), "");

    // The first database: more events than the second will have, an override, a deleted feature.
    let flagpost = Flagpost::start(listener, &toml).await;
    flagpost
        .change(
            "POST",
            "/api/v1/features",
            json!({"project": 1, "name": "dark_mode"}),
        )
        .await;
    let gone = flagpost
        .change(
            "POST",
            "/api/v1/features",
            json!({"project": 1, "name": "gone"}),
        )
        .await;
    for n in 1..=5 {
        let state = json!({"enabled": true, "value": format!("old-{n}")});
        flagpost
            .change(
                "PUT",
                "/api/v1/environments/1/features/dark_mode/state",
                state,
            )
            .await;
    }
    let alice = json!({"enabled": true, "value": "alice-old"});
    let alice_path = "/api/v1/environments/1/features/dark_mode/identities/alice";
    flagpost.change("PUT", alice_path, alice).await;
    let gone_path = format!("/api/v1/features/{}", gone["feature"]["id"]);
    flagpost.change("DELETE", &gone_path, json!({})).await;
    eventually("the receiver follows the first database", || async {
        let alice = receiver.identity_flags(1, "alice").await;
        value_of(&alice, "dark_mode") == Some(json!("alice-old"))
            && value_of(&receiver.env_flags(1).await, "gone").is_none()
    })
    .await;
    flagpost.stop().await;

    // The same flagpost, its database removed: a new one, counting from 1 again.
    std::fs::remove_file(flagpost_dir.path().join("flagpost.redb")).unwrap();
    let listener = TcpListener::bind(flagpost_addr).await.unwrap();
    let flagpost = Flagpost::start(listener, &toml).await;
    flagpost
        .change(
            "POST",
            "/api/v1/features",
            json!({"project": 1, "name": "dark_mode"}),
        )
        .await;
    // Feature id 2 again, which the first database deleted.
    let second = flagpost
        .change(
            "POST",
            "/api/v1/features",
            json!({"project": 1, "name": "second"}),
        )
        .await;
    assert_eq!(second["feature"]["id"], gone["feature"]["id"]);
    let state = json!({"enabled": true, "value": "new"});
    flagpost
        .change(
            "PUT",
            "/api/v1/environments/1/features/dark_mode/state",
            state,
        )
        .await;

    let follows_the_new_database = || async {
        let flags = receiver.env_flags(1).await;
        let alice = receiver.identity_flags(1, "alice").await;
        value_of(&flags, "dark_mode") == Some(json!("new"))
            && value_of(&flags, "second").is_some()
            // Only the new database's document drops what the old one held and it does not.
            && value_of(&alice, "dark_mode") == Some(json!("new"))
            && receiver.get("/readyz", &[]).await.0 == 200
    };
    eventually(
        "the receiver follows the new database",
        follows_the_new_database,
    )
    .await;

    // Across a restart: the database followed is remembered, its events still apply. (The
    // restarted receiver listens on another port: flagpost is pointed at it, same database.)
    receiver.stop().await;
    flagpost.stop().await;
    let receiver = Receiver::start(receiver_dir.path(), &receiver_toml).await;
    let flags = receiver.env_flags(1).await;
    assert_eq!(value_of(&flags, "dark_mode"), Some(json!("new")), "{flags}");
    let toml = flagpost_toml(flagpost_dir.path(), &receiver.url("/webhook"), "");
    let listener = TcpListener::bind(flagpost_addr).await.unwrap();
    let flagpost = Flagpost::start(listener, &toml).await;
    let state = json!({"enabled": true, "value": "newer"});
    flagpost
        .change(
            "PUT",
            "/api/v1/environments/1/features/dark_mode/state",
            state,
        )
        .await;
    eventually(
        "a change of the new database applies after a restart",
        || async { value_of(&receiver.env_flags(1).await, "dark_mode") == Some(json!("newer")) },
    )
    .await;

    flagpost.stop().await;
    receiver.stop().await;
}

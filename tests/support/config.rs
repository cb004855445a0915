//! Configuration files for the two programs, as the tests and benches write them: one builder per
//! program holding the fields they set, written out as TOML. Shared by path with the receiver's
//! tests and benches, so it needs nothing but `std`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A TOML basic string: Rust's debug quoting escapes the same characters for the paths and names
/// used here.
fn quoted(text: impl std::fmt::Debug) -> String {
    format!("{text:?}")
}

/// The sidecar's configuration: its files in one folder (`flagpost.redb`, `flags/`), one
/// environment (id 1, "Development", project 1) whose webhooks the builder adds.
pub struct SidecarConfig {
    listen: SocketAddr,
    dir: PathBuf,
    debounce: Option<String>,
    poll_every: Option<String>,
    tokens: Vec<String>,
    projects: Vec<(u64, String)>,
    api_key: String,
    server_keys: Vec<String>,
    webhooks: Vec<String>,
    extra: String,
}

impl SidecarConfig {
    /// Creates `dir/flags` too, as the sidecar watches it from the start.
    pub fn new(dir: &Path, listen: SocketAddr) -> SidecarConfig {
        std::fs::create_dir_all(dir.join("flags")).unwrap();
        SidecarConfig {
            listen,
            dir: dir.to_path_buf(),
            debounce: None,
            poll_every: None,
            tokens: Vec::new(),
            projects: Vec::new(),
            api_key: "dev-key".into(),
            server_keys: Vec::new(),
            webhooks: Vec::new(),
            extra: String::new(),
        }
    }

    pub fn flags_dir(&self) -> PathBuf {
        self.dir.join("flags")
    }

    /// How flag-file changes are picked up: the watcher's debounce and the fallback poll.
    pub fn flag_files(mut self, debounce: Option<&str>, poll_every: &str) -> SidecarConfig {
        self.debounce = debounce.map(str::to_owned);
        self.poll_every = Some(poll_every.to_owned());
        self
    }

    /// An API token; `email` becomes the `changed_by` of its changes.
    pub fn token(mut self, name: &str, email: Option<&str>, value: &str) -> SidecarConfig {
        let email = email.map_or(String::new(), |e| format!("email = {}, ", quoted(e)));
        self.tokens.push(format!(
            "{{ name = {}, {email}token = {{ value = {} }} }}",
            quoted(name),
            quoted(value)
        ));
        self
    }

    pub fn project(mut self, id: u64, name: &str) -> SidecarConfig {
        self.projects.push((id, name.to_owned()));
        self
    }

    pub fn api_key(mut self, key: &str) -> SidecarConfig {
        self.api_key = key.to_owned();
        self
    }

    /// A server-side key of the environment: it reads `GET /api/v1/environment-document/`.
    pub fn server_key(mut self, key: &str) -> SidecarConfig {
        self.server_keys
            .push(format!("{{ value = {} }}", quoted(key)));
        self
    }

    /// A disabled webhook: its outbox rows stay pending, so tests can count them.
    pub fn parked_webhook(mut self, name: &str, url: &str) -> SidecarConfig {
        self.webhooks.push(format!(
            "name = {}\nurl = {}\nenabled = false\n",
            quoted(name),
            quoted(url)
        ));
        self
    }

    /// A webhook signed with `secret`.
    pub fn webhook(mut self, name: &str, url: &str, secret: &str) -> SidecarConfig {
        self.webhooks.push(format!(
            "name = {}\nurl = {}\nsecrets = [{{ value = {} }}]\n",
            quoted(name),
            quoted(url),
            quoted(secret)
        ));
        self
    }

    /// A webhook written as TOML lines of its own (a JetStream endpoint's tables, say).
    pub fn raw_webhook(mut self, toml: &str) -> SidecarConfig {
        self.webhooks.push(toml.to_owned());
        self
    }

    /// TOML appended as it is, after the environment and its webhooks.
    pub fn extra(mut self, toml: &str) -> SidecarConfig {
        self.extra.push_str(toml);
        self
    }

    pub fn toml(&self) -> String {
        let mut text = format!(
            "listen = \"{}\"\n[storage]\npath = {}\n[flag_files]\ndir = {}\n",
            self.listen,
            quoted(self.dir.join("flagpost.redb").display().to_string()),
            quoted(self.flags_dir().display().to_string()),
        );
        if let Some(debounce) = &self.debounce {
            writeln!(text, "debounce = {}", quoted(debounce)).unwrap();
        }
        if let Some(poll_every) = &self.poll_every {
            writeln!(text, "poll_every = {}", quoted(poll_every)).unwrap();
        }
        writeln!(text, "[api]\ntokens = [{}]", self.tokens.join(", ")).unwrap();
        for (id, name) in &self.projects {
            writeln!(text, "[[projects]]\nid = {id}\nname = {}", quoted(name)).unwrap();
        }
        writeln!(
            text,
            "[[environments]]\nid = 1\nname = \"Development\"\napi_key = {}\nproject = 1\n\
             server_keys = [{}]",
            quoted(&self.api_key),
            self.server_keys.join(", ")
        )
        .unwrap();
        for webhook in &self.webhooks {
            writeln!(text, "[[environments.webhooks]]\n{webhook}").unwrap();
        }
        text.push_str(&self.extra);
        text.push('\n');
        text
    }

    /// Writes `flagpost.toml` in the folder and answers its path.
    pub fn write(&self) -> PathBuf {
        let path = self.dir.join("flagpost.toml");
        std::fs::write(&path, self.toml()).unwrap();
        path
    }
}

/// The receiver's configuration: its files in one folder (`receiver.redb`, `snapshot.json`).
pub struct ReceiverConfig {
    dir: PathBuf,
    listen: Option<SocketAddr>,
    snapshot: bool,
    snapshot_debounce_ms: Option<u64>,
    secrets: Vec<String>,
    intake: String,
    environments: Vec<(u64, Vec<String>)>,
    /// Environment -> its server-side key in flagpost (`flagpost_server_key`).
    flagpost_keys: Vec<(u64, String)>,
    bootstrap: Option<String>,
    extra: String,
}

impl ReceiverConfig {
    pub fn new(dir: &Path) -> ReceiverConfig {
        ReceiverConfig {
            dir: dir.to_path_buf(),
            listen: None,
            snapshot: true,
            snapshot_debounce_ms: None,
            secrets: Vec::new(),
            intake: String::new(),
            environments: Vec::new(),
            flagpost_keys: Vec::new(),
            bootstrap: None,
            extra: String::new(),
        }
    }

    /// Only the binary reads it; the tests that call `run` bind their own listener.
    pub fn listen(mut self, addr: SocketAddr) -> ReceiverConfig {
        self.listen = Some(addr);
        self
    }

    /// No snapshot file (an empty `snapshot_path`).
    pub fn without_snapshot(mut self) -> ReceiverConfig {
        self.snapshot = false;
        self
    }

    pub fn snapshot_debounce_ms(mut self, ms: u64) -> ReceiverConfig {
        self.snapshot_debounce_ms = Some(ms);
        self
    }

    pub fn secret(mut self, value: &str) -> ReceiverConfig {
        self.secrets
            .push(format!("{{ value = {} }}", quoted(value)));
        self
    }

    pub fn secret_file(mut self, path: &Path) -> ReceiverConfig {
        self.secrets.push(format!("{{ file = {} }}", quoted(path)));
        self
    }

    /// Further lines of `[intake]`, after the secrets.
    pub fn intake(mut self, toml: &str) -> ReceiverConfig {
        self.intake.push_str(toml);
        self
    }

    pub fn environment(mut self, id: u64, keys: &[&str]) -> ReceiverConfig {
        self.environments
            .push((id, keys.iter().map(quoted).collect()));
        self
    }

    /// Environment `id` reads its document from flagpost with the server-side key `key`.
    pub fn flagpost_server_key(mut self, id: u64, key: &str) -> ReceiverConfig {
        self.flagpost_keys.push((id, key.to_owned()));
        self
    }

    /// Documents fetched from flagpost at `url` with `token` (and each environment's
    /// [`ReceiverConfig::flagpost_server_key`]).
    pub fn bootstrap(mut self, url: &str, token: &str, retry_secs: u64) -> ReceiverConfig {
        self.bootstrap = Some(format!(
            "flagpost_url = {}\ntoken = {{ value = {} }}\nretry_secs = {retry_secs}",
            quoted(url),
            quoted(token)
        ));
        self
    }

    /// TOML appended as it is, after everything else (further tables).
    pub fn extra(mut self, toml: &str) -> ReceiverConfig {
        self.extra.push_str(toml);
        self
    }

    pub fn toml(&self) -> String {
        let mut text = String::new();
        if let Some(listen) = self.listen {
            writeln!(text, "listen = \"{listen}\"").unwrap();
        }
        let snapshot = if self.snapshot {
            self.dir.join("snapshot.json")
        } else {
            PathBuf::new()
        };
        writeln!(
            text,
            "storage_path = {}\nsnapshot_path = {}",
            quoted(self.dir.join("receiver.redb")),
            quoted(snapshot)
        )
        .unwrap();
        if let Some(ms) = self.snapshot_debounce_ms {
            writeln!(text, "snapshot_debounce_ms = {ms}").unwrap();
        }
        writeln!(
            text,
            "[intake]\nsecrets = [{}]\n{}",
            self.secrets.join(", "),
            self.intake
        )
        .unwrap();
        for (id, keys) in &self.environments {
            writeln!(
                text,
                "[[environments]]\nid = {id}\nkeys = [{}]",
                keys.join(", ")
            )
            .unwrap();
            for (_, key) in self.flagpost_keys.iter().filter(|(env, _)| env == id) {
                writeln!(text, "flagpost_server_key = {{ value = {} }}", quoted(key)).unwrap();
            }
        }
        if let Some(bootstrap) = &self.bootstrap {
            writeln!(text, "[bootstrap]\n{bootstrap}").unwrap();
        }
        text.push_str(&self.extra);
        text.push('\n');
        text
    }

    /// Writes `receiver.toml` in the folder and answers its path.
    pub fn write(&self) -> PathBuf {
        let path = self.dir.join("receiver.toml");
        std::fs::write(&path, self.toml()).unwrap();
        path
    }
}

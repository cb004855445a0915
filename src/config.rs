//! The sidecar's configuration: TOML, validated at load, with every default built in so that
//! `flagpost serve` runs with no file at all. `config/flagpost.toml` documents every field.
//!
//! Loading is two steps: [`RawConfig`] is what the file says (serde, unknown fields refused), and
//! [`Config::from_raw`] resolves secrets and checks everything, collecting *every* error rather than
//! stopping at the first, so that `flagpost check` can report them all at once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::signing::Secret;
use crate::wire::EventType;

/// A secret as written in configuration: inline, from an environment variable, or from a file
/// (the Kubernetes way). Exactly one of the three. Shared by both programs' configurations.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSource")
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("env", &self.env)
            .field("file", &self.file)
            .finish()
    }
}

impl SecretSource {
    /// Resolves the secret. Errors name the source, never the value.
    pub fn resolve(&self) -> Result<String, String> {
        let text = match (&self.value, &self.env, &self.file) {
            (Some(value), None, None) => value.clone(),
            (None, Some(var), None) => std::env::var(var)
                .map_err(|_| format!("environment variable {var} is not set or not UTF-8"))?,
            (None, None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
            _ => return Err("give exactly one of value, env or file".to_owned()),
        };
        if text.is_empty() {
            return Err("is empty".to_owned());
        }
        Ok(text)
    }
}

/// A TOML error as line, column and message, with every quoted string blanked: the offending value
/// could be a secret, and this text goes to logs.
pub fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let mut message = String::new();
    let mut in_quotes = false;
    for c in error.message().chars() {
        if c == '"' {
            in_quotes = !in_quotes;
            message.push_str(if in_quotes { "\"…" } else { "\"" });
        } else if !in_quotes {
            message.push(c);
        }
    }
    match error.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {}", message.trim_end())
        }
        None => message.trim_end().to_owned(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub listen: String,
    pub storage: RawStorage,
    pub organisation: RawOrganisation,
    pub flag_files: RawFlagFiles,
    pub api: RawApi,
    pub projects: Vec<RawProject>,
    pub environments: Vec<RawEnvironment>,
    pub audit_webhooks: Vec<RawWebhook>,
    pub relay: Vec<RawRelaySource>,
    pub reload: RawReload,
    pub delivery: crate::delivery::DeliveryConfig,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            listen: "127.0.0.1:7070".to_owned(),
            storage: RawStorage::default(),
            organisation: RawOrganisation::default(),
            flag_files: RawFlagFiles::default(),
            api: RawApi::default(),
            projects: vec![RawProject {
                id: 1,
                name: "Default".to_owned(),
            }],
            environments: vec![RawEnvironment {
                id: 1,
                name: "Development".to_owned(),
                api_key: "dev-environment-key".to_owned(),
                project: 1,
                webhooks: Vec::new(),
            }],
            audit_webhooks: Vec::new(),
            relay: Vec::new(),
            reload: RawReload::default(),
            delivery: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStorage {
    pub path: PathBuf,
    pub cache_size_mib: usize,
    pub max_batch: usize,
    #[serde(with = "humantime_serde")]
    pub idempotency_retention: Duration,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            path: PathBuf::from("flagpost.redb"),
            cache_size_mib: 64,
            max_batch: 4096,
            idempotency_retention: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOrganisation {
    pub id: u64,
}

impl Default for RawOrganisation {
    fn default() -> Self {
        RawOrganisation { id: 1 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFlagFiles {
    pub enabled: bool,
    pub dir: PathBuf,
    #[serde(with = "humantime_serde")]
    pub debounce: Duration,
    #[serde(with = "humantime_serde")]
    pub poll_every: Duration,
}

impl Default for RawFlagFiles {
    fn default() -> Self {
        RawFlagFiles {
            enabled: true,
            dir: PathBuf::from("config/flags"),
            debounce: Duration::from_millis(200),
            poll_every: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApi {
    pub max_body_bytes: usize,
    pub tokens: Vec<RawToken>,
}

impl Default for RawApi {
    fn default() -> Self {
        RawApi {
            max_body_bytes: 64 * 1024,
            tokens: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    /// Sent as `author.id` in audit-log events; defaults to the token's position (from 1).
    #[serde(default)]
    pub id: Option<u64>,
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    pub token: SecretSource,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProject {
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnvironment {
    pub id: u64,
    pub name: String,
    pub api_key: String,
    pub project: u64,
    #[serde(default)]
    pub webhooks: Vec<RawWebhook>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub secrets: Vec<SecretSource>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub events: Option<Vec<String>>,
    #[serde(default)]
    pub ordered: bool,
    #[serde(default)]
    pub max_in_flight: Option<usize>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelaySource {
    pub name: String,
    pub secret: SecretSource,
    pub environment: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawReload {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub debounce: Duration,
    #[serde(with = "humantime_serde")]
    pub poll_every: Duration,
}

impl Default for RawReload {
    fn default() -> Self {
        RawReload {
            enabled: true,
            debounce: Duration::from_millis(200),
            poll_every: Duration::from_secs(10),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The validated configuration.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub storage: RawStorage,
    pub organisation_id: u64,
    pub flag_files: RawFlagFiles,
    pub max_body_bytes: usize,
    pub tokens: Vec<ApiToken>,
    pub projects: BTreeMap<u64, Project>,
    pub environments: BTreeMap<u64, Environment>,
    pub audit_webhooks: Vec<Webhook>,
    pub relay_sources: BTreeMap<String, RelaySource>,
    pub reload: RawReload,
    pub delivery: crate::delivery::DeliveryConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub id: u64,
    pub name: String,
    pub api_key: String,
    pub project: u64,
    pub webhooks: Vec<Webhook>,
}

/// A named API token. The name is the author of the changes made with it. Only the token's
/// SHA-256 is kept, and a presented token is compared with it in constant time.
#[derive(Clone)]
pub struct ApiToken {
    pub id: u64,
    pub name: String,
    pub email: Option<String>,
    digest: [u8; 32],
}

impl ApiToken {
    pub fn new(id: u64, name: impl Into<String>, email: Option<String>, token: &str) -> ApiToken {
        ApiToken {
            id,
            name: name.into(),
            email,
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    pub fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        presented.ct_eq(&self.digest).into()
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// An endpoint that receives web hooks. `name` is its stable identity: the outbox is keyed by it,
/// so a changed URL or rotated secret keeps every pending delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub name: String,
    pub url: http::Uri,
    pub secrets: Vec<Secret>,
    pub enabled: bool,
    pub events: BTreeSet<String>,
    pub ordered: bool,
    pub max_in_flight: Option<usize>,
}

impl Webhook {
    pub fn wants(&self, event_type: &EventType) -> bool {
        self.events.contains(event_type.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct RelaySource {
    pub name: String,
    pub secret: Secret,
    pub environment: u64,
}

/// Everything wrong with a configuration, one line per problem.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration{}:\n  {}", .source_name.as_deref().map(|s| format!(" in {s}")).unwrap_or_default(), .problems.join("\n  "))]
pub struct ConfigError {
    pub source_name: Option<String>,
    pub problems: Vec<String>,
}

impl Config {
    /// Reads and validates the file at `path`; `None` gives the built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Config::from_raw(RawConfig::default());
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: Some(path.display().to_string()),
            problems: vec![format!("cannot read: {e}")],
        })?;
        Config::parse(&text).map_err(|mut e| {
            e.source_name = Some(path.display().to_string());
            e
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            source_name: None,
            problems: vec![describe_toml_error(text, &e)],
        })?;
        Config::from_raw(raw)
    }

    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let listen = raw.listen.parse().unwrap_or_else(|_| {
            problems.push(format!(
                "listen: {:?} is not an address such as 127.0.0.1:7070",
                raw.listen
            ));
            SocketAddr::from(([127, 0, 0, 1], 7070))
        });
        if raw.storage.max_batch == 0 {
            problems.push("storage.max_batch must be at least 1".to_owned());
        }

        let mut tokens = Vec::new();
        let mut token_names = BTreeSet::new();
        for (i, t) in raw.api.tokens.iter().enumerate() {
            if !token_names.insert(t.name.clone()) {
                problems.push(format!("api.tokens[{i}]: name {:?} is used twice", t.name));
            }
            match t.token.resolve() {
                Ok(text) if text.len() < 16 => problems.push(format!(
                    "api.tokens[{i}] ({}): a token must be at least 16 characters",
                    t.name
                )),
                Ok(text) => tokens.push(ApiToken::new(
                    t.id.unwrap_or(i as u64 + 1),
                    &t.name,
                    t.email.clone(),
                    &text,
                )),
                Err(e) => problems.push(format!("api.tokens[{i}] ({}): {e}", t.name)),
            }
        }

        let mut projects = BTreeMap::new();
        for p in &raw.projects {
            if projects
                .insert(
                    p.id,
                    Project {
                        id: p.id,
                        name: p.name.clone(),
                    },
                )
                .is_some()
            {
                problems.push(format!("projects: id {} is used twice", p.id));
            }
        }

        let mut webhook_names = BTreeSet::new();
        let mut environments = BTreeMap::new();
        let mut env_names = BTreeSet::new();
        for (i, e) in raw.environments.iter().enumerate() {
            let at = format!("environments[{i}] ({})", e.name);
            if !is_file_safe(&e.name) {
                problems.push(format!(
                    "{at}: name must be letters, digits, '-' or '_' (it names the flag file)"
                ));
            }
            if !env_names.insert(e.name.clone()) {
                problems.push(format!("{at}: name is used twice"));
            }
            if !projects.contains_key(&e.project) {
                problems.push(format!("{at}: project {} is not in projects", e.project));
            }
            if e.api_key.is_empty() {
                problems.push(format!("{at}: api_key is empty"));
            }
            let webhooks = e
                .webhooks
                .iter()
                .enumerate()
                .filter_map(|(j, w)| {
                    let at = format!("{at}.webhooks[{j}]");
                    let default_events = ["FLAG_UPDATED", "FLAG_DELETED"];
                    webhook(w, &at, &default_events, &mut webhook_names, &mut problems)
                })
                .collect();
            let env = Environment {
                id: e.id,
                name: e.name.clone(),
                api_key: e.api_key.clone(),
                project: e.project,
                webhooks,
            };
            if environments.insert(e.id, env).is_some() {
                problems.push(format!("{at}: id {} is used twice", e.id));
            }
        }
        let audit_webhooks = raw
            .audit_webhooks
            .iter()
            .enumerate()
            .filter_map(|(j, w)| {
                let at = format!("audit_webhooks[{j}]");
                webhook(
                    w,
                    &at,
                    &["AUDIT_LOG_CREATED"],
                    &mut webhook_names,
                    &mut problems,
                )
            })
            .collect();

        let mut relay_sources = BTreeMap::new();
        for (i, r) in raw.relay.iter().enumerate() {
            let at = format!("relay[{i}] ({})", r.name);
            if !is_file_safe(&r.name) {
                problems.push(format!(
                    "{at}: name must be letters, digits, '-' or '_' (it is part of the URL)"
                ));
            }
            if !environments.contains_key(&r.environment) {
                problems.push(format!(
                    "{at}: environment {} is not in environments",
                    r.environment
                ));
            }
            match r
                .secret
                .resolve()
                .and_then(|s| Secret::new(s).map_err(|e| e.to_string()))
            {
                Ok(secret) => {
                    let source = RelaySource {
                        name: r.name.clone(),
                        secret,
                        environment: r.environment,
                    };
                    if relay_sources.insert(r.name.clone(), source).is_some() {
                        problems.push(format!("{at}: name is used twice"));
                    }
                }
                Err(e) => problems.push(format!("{at}.secret: {e}")),
            }
        }

        problems.extend(raw.delivery.problems());
        if !problems.is_empty() {
            return Err(ConfigError {
                source_name: None,
                problems,
            });
        }
        Ok(Config {
            listen,
            storage: raw.storage,
            organisation_id: raw.organisation.id,
            flag_files: raw.flag_files,
            max_body_bytes: raw.api.max_body_bytes,
            tokens,
            projects,
            environments,
            audit_webhooks,
            relay_sources,
            reload: raw.reload,
            delivery: raw.delivery,
        })
    }

    pub fn environment_by_name(&self, name: &str) -> Option<&Environment> {
        self.environments.values().find(|e| e.name == name)
    }

    /// The names of the endpoints subscribed to `event_type` in `environment` (audit-log endpoints
    /// for `AUDIT_LOG_CREATED`), disabled ones included: their deliveries wait until re-enabled.
    pub fn subscribers(&self, environment: Option<u64>, event_type: &EventType) -> Vec<String> {
        let env_hooks = environment
            .and_then(|id| self.environments.get(&id))
            .map(|e| e.webhooks.as_slice())
            .unwrap_or_default();
        env_hooks
            .iter()
            .chain(self.audit_webhooks.iter())
            .filter(|w| w.wants(event_type))
            .map(|w| w.name.clone())
            .collect()
    }

    /// Every configured endpoint, environment and audit-log alike.
    pub fn webhooks(&self) -> impl Iterator<Item = &Webhook> {
        self.environments
            .values()
            .flat_map(|e| e.webhooks.iter())
            .chain(self.audit_webhooks.iter())
    }

    /// What differs between two configurations that cannot be applied without a restart.
    pub fn needs_restart(&self, next: &Config) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.listen != next.listen {
            fields.push("listen");
        }
        if self.storage.path != next.storage.path {
            fields.push("storage.path");
        }
        if self.storage.cache_size_mib != next.storage.cache_size_mib {
            fields.push("storage.cache_size_mib");
        }
        if self.flag_files.dir != next.flag_files.dir
            || self.flag_files.enabled != next.flag_files.enabled
        {
            fields.push("flag_files");
        }
        if self.delivery != next.delivery {
            fields.push("delivery");
        }
        fields
    }
}

fn webhook(
    w: &RawWebhook,
    at: &str,
    default_events: &[&str],
    names: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) -> Option<Webhook> {
    let before = problems.len();
    if !names.insert(w.name.clone()) {
        problems.push(format!(
            "{at}: webhook name {:?} is used twice (names key the outbox)",
            w.name
        ));
    }
    if w.name.is_empty() || w.name.len() > 200 {
        problems.push(format!("{at}: name must be 1 to 200 characters"));
    }
    let url = match w.url.parse::<http::Uri>() {
        Ok(url) if matches!(url.scheme_str(), Some("http" | "https")) && url.host().is_some() => {
            Some(url)
        }
        _ => {
            problems.push(format!(
                "{at}: url {:?} is not an http:// or https:// URL",
                w.url
            ));
            None
        }
    };
    let mut secrets = Vec::new();
    for (k, s) in w.secrets.iter().enumerate() {
        match s
            .resolve()
            .and_then(|s| Secret::new(s).map_err(|e| e.to_string()))
        {
            Ok(secret) => secrets.push(secret),
            Err(e) => problems.push(format!("{at}.secrets[{k}]: {e}")),
        }
    }
    let events: BTreeSet<String> = match &w.events {
        Some(events) => events.iter().cloned().collect(),
        None => default_events.iter().map(|s| s.to_string()).collect(),
    };
    for event in &events {
        if let EventType::Other(other) = EventType::parse(event) {
            problems.push(format!(
                "{at}.events: {other:?} is not FLAG_UPDATED, FLAG_DELETED or AUDIT_LOG_CREATED"
            ));
        }
    }
    if w.max_in_flight == Some(0) {
        problems.push(format!("{at}: max_in_flight must be at least 1"));
    }
    if problems.len() > before {
        return None;
    }
    Some(Webhook {
        name: w.name.clone(),
        url: url?,
        secrets,
        enabled: w.enabled,
        events,
        ordered: w.ordered,
        max_in_flight: w.max_in_flight,
    })
}

fn is_file_safe(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_defaults_are_valid() {
        let config = Config::load(None).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(config.environments.len(), 1);
    }

    /// The documented example says what the defaults are; it must not drift from them.
    #[test]
    fn the_example_configuration_documents_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/flagpost.toml");
        let text = std::fs::read_to_string(path).unwrap().replace(
            "{ env = \"FLAGPOST_CI_TOKEN\" }",
            "{ value = \"example-token-0123456789\" }",
        );
        let example = Config::parse(&text).unwrap();
        let defaults = Config::load(None).unwrap();
        assert_eq!(example.listen, defaults.listen);
        assert_eq!(example.storage.path, defaults.storage.path);
        assert_eq!(
            example.storage.cache_size_mib,
            defaults.storage.cache_size_mib
        );
        assert_eq!(example.storage.max_batch, defaults.storage.max_batch);
        assert_eq!(example.flag_files.dir, defaults.flag_files.dir);
        assert_eq!(
            example.flag_files.poll_every,
            defaults.flag_files.poll_every
        );
        assert_eq!(example.max_body_bytes, defaults.max_body_bytes);
        assert_eq!(example.delivery, defaults.delivery);
        assert_eq!(example.environments, defaults.environments);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Config::parse(
            r#"
            listen = "nowhere"
            [[environments]]
            id = 1
            name = "bad name"
            api_key = "k"
            project = 99
            [[environments.webhooks]]
            name = "a"
            url = "ftp://x"
            events = ["FLAG_EXPLODED"]
            "#,
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "listen",
            "name must be letters",
            "project 99",
            "ftp://x",
            "FLAG_EXPLODED",
        ] {
            assert!(err.contains(expected), "{expected} missing from: {err}");
        }
    }

    #[test]
    fn unknown_fields_are_refused_with_their_line() {
        let err = Config::parse("listen = \"127.0.0.1:1\"\nlisten_typo = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("listen_typo"), "{err}");
    }

    #[test]
    fn a_syntax_error_never_echoes_the_value_it_is_about() {
        let err = Config::parse("[api]\ntokens = [{ name = \"ci\", token = { value = \"tok-very-secret-0123\", x = 1 } }]\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("very-secret"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let config = Config::parse(
            r#"
            [api]
            tokens = [{ name = "ci", token = { value = "tok-very-secret-0123456789" } }]
            [[relay]]
            name = "upstream"
            environment = 1
            secret = { value = "relay-very-secret" }
            "#,
        )
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("very-secret"), "{debug}");
    }
}

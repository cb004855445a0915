//! Configuration: the TOML file, its built-in defaults, validation, and the split between what a
//! running receiver can take live and what needs a restart.
//!
//! Every field is documented in `config/receiver.toml`. Secrets (signing secrets, the bootstrap
//! token) come from the file, an environment variable or a file path, and never appear in a
//! `Debug` output or an error message.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use flagpost::config::{LogConfig, LogFormat, SecretSource, ServerConfig, ServerKey};
use flagpost::config::{describe_toml_error, redact_url};
use flagpost::reload::LoadedFile;
use flagpost::signing::Secret;
use serde::Deserialize;

mod cors;
pub use cors::{AllowedOrigins, CorsFile};
mod jetstream;
pub use jetstream::{JetStreamFile, JetStreamIntake};
mod streams;
use streams::check_streams;
pub use streams::{StreamLimits, StreamsFile};

/// Paths the lookup, SDK, admin and health routes use ([`crate::api::router`]); the webhook path
/// must not start with one.
pub const RESERVED_PREFIXES: &[&str] = &[
    "/v1/", "/api/", "/admin/", "/sse/", "/healthz", "/readyz", "/metrics", "/ofrep/", "/status",
];

/// The file as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub listen: String,
    pub webhook_path: String,
    pub storage_path: PathBuf,
    pub redb_cache_mib: usize,
    pub snapshot_path: PathBuf,
    pub snapshot_debounce_ms: u64,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub intake: IntakeFile,
    pub environments: Vec<EnvironmentFile>,
    pub bootstrap: BootstrapFile,
    pub streams: StreamsFile,
    pub cors: CorsFile,
    /// A bearer token the status page's data (`GET /admin/status`) asks for; none by default,
    /// as for every other lookup and admin route.
    pub status_token: Option<SecretSource>,
    /// Intake from NATS JetStream; absent: web hooks only.
    pub jetstream: Option<JetStreamFile>,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            listen: "127.0.0.1:7071".into(),
            webhook_path: "/webhook".into(),
            storage_path: "flagpost-receiver.redb".into(),
            redb_cache_mib: 16,
            snapshot_path: "flagpost-receiver.snapshot.json".into(),
            snapshot_debounce_ms: 200,
            server: ServerConfig::default(),
            log: LogConfig::default(),
            intake: IntakeFile::default(),
            environments: Vec::new(),
            bootstrap: BootstrapFile::default(),
            streams: StreamsFile::default(),
            cors: CorsFile::default(),
            status_token: None,
            jetstream: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntakeFile {
    pub allow_unsigned: bool,
    pub require_standard_signature: bool,
    pub timestamp_tolerance_secs: u64,
    pub max_body_bytes: usize,
    pub dedupe_retention_secs: u64,
    pub secrets: Vec<SecretSource>,
}

impl Default for IntakeFile {
    fn default() -> Self {
        IntakeFile {
            allow_unsigned: false,
            // A real Flagsmith sends only X-Flagsmith-Signature: requiring the timestamped one
            // is for receivers fed by flagpost alone (the shipped file sets it).
            require_standard_signature: false,
            timestamp_tolerance_secs: 300,
            max_body_bytes: 1024 * 1024,
            dedupe_retention_secs: 3 * 24 * 3600,
            secrets: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentFile {
    pub id: u64,
    #[serde(default)]
    pub keys: Vec<String>,
    /// Server-side keys: they also read `GET /api/v1/environment-document/`.
    #[serde(default)]
    pub server_keys: Vec<String>,
    #[serde(default)]
    pub upstream: Option<UpstreamFile>,
    /// A server-side key of this environment in flagpost: bootstrap reads flagpost's
    /// `GET /api/v1/environment-document/` with it. Needed with `[bootstrap]` unless the
    /// environment has an `upstream`.
    #[serde(default)]
    pub flagpost_server_key: Option<SecretSource>,
}

/// An upstream Flagsmith the environment's document is fetched from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    /// Flagsmith's API base: the document is `{url}/api/v1/environment-document/`.
    pub url: String,
    /// A server-side environment key of that Flagsmith.
    pub server_key: SecretSource,
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
    #[serde(default = "default_upstream_timeout_secs")]
    pub timeout_secs: u64,
}

/// Flagsmith's own SDKs poll every 60 s.
fn default_poll_interval_secs() -> u64 {
    60
}

fn default_upstream_timeout_secs() -> u64 {
    10
}

/// A validated upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// Without a trailing `/`.
    pub url: String,
    pub server_key: Redacted,
    pub poll_interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BootstrapFile {
    pub flagpost_url: String,
    pub token: Option<SecretSource>,
    pub timeout_secs: u64,
    pub retry_secs: u64,
}

impl Default for BootstrapFile {
    fn default() -> Self {
        BootstrapFile {
            flagpost_url: String::new(),
            token: None,
            timeout_secs: 10,
            retry_secs: 5,
        }
    }
}

/// A string kept out of logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What is fixed for the life of the process.
#[derive(Debug, Clone, PartialEq)]
pub struct Fixed {
    pub listen: SocketAddr,
    pub webhook_path: String,
    pub storage_path: PathBuf,
    /// The storage's page cache (`redb_cache_mib` in the file).
    pub storage_cache_bytes: usize,
    /// `None` when the snapshot file is switched off.
    pub snapshot_path: Option<PathBuf>,
    pub snapshot_debounce: Duration,
    /// `[server]`: connection limits and timeouts, shared with the sidecar.
    pub server: ServerConfig,
    /// `[log]`: the log lines' format, shared with the sidecar.
    pub log: LogConfig,
    /// `[jetstream]`: the durable consumer this receiver takes events from, if any.
    pub jetstream: Option<JetStreamIntake>,
}

/// What a running receiver takes from a reloaded file.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    pub secrets: Vec<Secret>,
    pub allow_unsigned: bool,
    /// Refuse requests signed only with `X-Flagsmith-Signature` (no timestamp: replayable).
    pub require_standard_signature: bool,
    pub timestamp_tolerance_secs: u64,
    pub max_body_bytes: usize,
    pub dedupe_retention_secs: u64,
    /// `X-Environment-Key` value -> environment id (client and server keys).
    pub environment_keys: HashMap<String, u64>,
    /// Server-side keys -> environment id: those read the environment document.
    pub server_keys: HashMap<String, u64>,
    /// Environments fetched from an upstream Flagsmith.
    pub upstreams: HashMap<u64, Upstream>,
    /// Configured environments, in file order.
    pub environments: Vec<u64>,
    pub bootstrap: Option<Bootstrap>,
    pub streams: StreamLimits,
    /// `[cors]`: the web origins whose pages may read the receiver.
    pub cors_origins: AllowedOrigins,
    /// `status_token`: kept as a digest and compared in constant time, as a server-side key is.
    pub status_token: Option<ServerKey>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bootstrap {
    pub flagpost_url: String,
    pub token: Option<Redacted>,
    /// Each environment's server-side key in flagpost (`flagpost_server_key`).
    pub server_keys: HashMap<u64, Redacted>,
    pub timeout: Duration,
    pub retry: Duration,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub fixed: Fixed,
    pub live: Live,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Empty or whitespace only: the message names the file and says why it is refused.
    #[error("{0}")]
    Empty(String),
    #[error("{path}: not valid TOML for this configuration: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: {} error(s):\n  {}", .errors.len(), .errors.join("\n  "))]
    Invalid { path: String, errors: Vec<String> },
}

impl Default for Config {
    fn default() -> Self {
        Config::validate(FileConfig::default(), "built-in defaults")
            .expect("the built-in defaults are valid")
    }
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_file(path).map(|(config, _)| config)
    }

    /// Reads and validates a file, returning with the configuration the text it was read from,
    /// for the reload watch.
    pub fn load_file(path: &Path) -> Result<(Config, LoadedFile), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        flagpost::reload::refuse_empty(&text, path).map_err(ConfigError::Empty)?;
        let config = Config::parse(&text, &path.display().to_string())?;
        let file = LoadedFile {
            path: path.to_owned(),
            text: text.into_bytes(),
        };
        Ok((config, file))
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|error| ConfigError::Syntax {
            path: origin.to_owned(),
            message: describe_toml_error(text, &error),
        })?;
        Config::validate(file, origin)
    }

    fn validate(file: FileConfig, origin: &str) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let listen = check_fixed(&file, &mut errors);
        errors.extend(file.server.problems());
        let intake = &file.intake;
        let secrets = check_intake(intake, &mut errors);
        let (environment_keys, environments) = check_environments(&file.environments, &mut errors);
        let (server_keys, upstreams) = check_upstreams(&file.environments, &mut errors);
        let bootstrap = check_bootstrap(&file.bootstrap, &file.environments, &mut errors);
        let streams = check_streams(&file.streams, &mut errors);
        let cors_origins = cors::check_cors(&file.cors, &mut errors);
        let status_token = check_status_token(file.status_token.as_ref(), &mut errors);
        let jetstream = file
            .jetstream
            .as_ref()
            .and_then(|j| jetstream::check(j, &mut errors));
        let Some(listen) = listen.filter(|_| errors.is_empty()) else {
            return Err(ConfigError::Invalid {
                path: origin.to_owned(),
                errors,
            });
        };
        let snapshot_path =
            (!file.snapshot_path.as_os_str().is_empty()).then_some(file.snapshot_path);
        Ok(Config {
            fixed: Fixed {
                listen,
                webhook_path: file.webhook_path,
                storage_path: file.storage_path,
                storage_cache_bytes: file.redb_cache_mib * 1024 * 1024,
                snapshot_path,
                snapshot_debounce: Duration::from_millis(file.snapshot_debounce_ms),
                server: file.server,
                log: file.log,
                jetstream,
            },
            live: Live {
                secrets,
                allow_unsigned: intake.allow_unsigned,
                require_standard_signature: intake.require_standard_signature,
                timestamp_tolerance_secs: intake.timestamp_tolerance_secs,
                max_body_bytes: intake.max_body_bytes,
                dedupe_retention_secs: intake.dedupe_retention_secs,
                environment_keys,
                server_keys,
                upstreams,
                environments,
                bootstrap,
                streams,
                cors_origins,
                status_token,
            },
        })
    }
}

/// Checks the start-only fields; answers the listen address when it parses.
fn check_fixed(file: &FileConfig, errors: &mut Vec<String>) -> Option<SocketAddr> {
    let listen = file
        .listen
        .parse::<SocketAddr>()
        .map_err(|_| errors.push(format!("listen: {:?} is not an address:port", file.listen)))
        .ok();
    if !file.webhook_path.starts_with('/') || file.webhook_path.len() < 2 {
        errors.push(format!(
            "webhook_path: {:?} must start with / and name a path",
            file.webhook_path
        ));
    } else if RESERVED_PREFIXES
        .iter()
        .any(|prefix| file.webhook_path.starts_with(prefix))
    {
        errors.push(format!(
            "webhook_path: {:?} collides with a lookup or admin route",
            file.webhook_path
        ));
    }
    if file.storage_path.as_os_str().is_empty() {
        errors.push("storage_path: must not be empty".into());
    }
    if file.redb_cache_mib == 0 {
        errors.push("redb_cache_mib: must be at least 1".into());
    }
    listen
}

/// Checks the intake limits; answers the secrets that resolve.
fn check_intake(intake: &IntakeFile, errors: &mut Vec<String>) -> Vec<Secret> {
    if intake.allow_unsigned && intake.require_standard_signature {
        errors.push(
            "intake.allow_unsigned and intake.require_standard_signature: cannot both be true (unsigned senders would pass where X-Flagsmith-Signature is refused)".into(),
        );
    }
    if intake.timestamp_tolerance_secs == 0 {
        errors.push("intake.timestamp_tolerance_secs: must be at least 1".into());
    }
    if intake.max_body_bytes == 0 {
        errors.push("intake.max_body_bytes: must be at least 1".into());
    }
    if intake.dedupe_retention_secs == 0 {
        errors.push("intake.dedupe_retention_secs: must be at least 1".into());
    }
    let mut secrets = Vec::new();
    for (i, source) in intake.secrets.iter().enumerate() {
        let what = format!("intake.secrets[{i}]");
        match source
            .resolve()
            .and_then(|text| Secret::new(text).map_err(|e| e.to_string()))
        {
            Ok(secret) => secrets.push(secret),
            Err(error) => errors.push(format!("{what}: {error}")),
        }
    }
    secrets
}

/// Answers the environment keys (key -> environment) and the environments in file order.
fn check_environments(
    listed: &[EnvironmentFile],
    errors: &mut Vec<String>,
) -> (HashMap<String, u64>, Vec<u64>) {
    let mut environment_keys = HashMap::new();
    let mut environments = Vec::new();
    for (i, env) in listed.iter().enumerate() {
        if environments.contains(&env.id) {
            errors.push(format!(
                "environments[{i}]: environment {} is listed twice",
                env.id
            ));
        }
        environments.push(env.id);
        let listed = env.keys.iter().map(|key| ("keys", key));
        let server = env.server_keys.iter().map(|key| ("server_keys", key));
        for (k, (field, key)) in listed.chain(server).enumerate() {
            let k = if field == "keys" {
                k
            } else {
                k - env.keys.len()
            };
            if key.is_empty() {
                errors.push(format!("environments[{i}].{field}[{k}]: is empty"));
            } else if environment_keys.insert(key.clone(), env.id).is_some() {
                errors.push(format!(
                    "environments[{i}].{field}[{k}]: the same key is given twice"
                ));
            }
        }
    }
    (environment_keys, environments)
}

/// Answers the server keys (key -> environment) and each environment's upstream.
fn check_upstreams(
    listed: &[EnvironmentFile],
    errors: &mut Vec<String>,
) -> (HashMap<String, u64>, HashMap<u64, Upstream>) {
    let mut server_keys = HashMap::new();
    let mut upstreams = HashMap::new();
    for (i, env) in listed.iter().enumerate() {
        for key in &env.server_keys {
            server_keys.insert(key.clone(), env.id);
        }
        let Some(upstream) = &env.upstream else {
            continue;
        };
        let what = format!("environments[{i}].upstream");
        if !(upstream.url.starts_with("http://") || upstream.url.starts_with("https://")) {
            errors.push(format!(
                "{what}.url: {:?} must start with http:// or https://",
                upstream.url
            ));
        }
        if upstream.poll_interval_secs == 0 || upstream.timeout_secs == 0 {
            errors.push(format!(
                "{what}.poll_interval_secs and {what}.timeout_secs: must be at least 1"
            ));
        }
        let server_key = match upstream.server_key.resolve() {
            Ok(key) if !key.is_empty() => Some(Redacted(key)),
            Ok(_) => {
                errors.push(format!("{what}.server_key: is empty"));
                None
            }
            Err(error) => {
                errors.push(format!("{what}.server_key: {error}"));
                None
            }
        };
        if let Some(server_key) = server_key {
            upstreams.insert(
                env.id,
                Upstream {
                    url: upstream.url.trim_end_matches('/').to_owned(),
                    server_key,
                    poll_interval: Duration::from_secs(upstream.poll_interval_secs),
                    timeout: Duration::from_secs(upstream.timeout_secs),
                },
            );
        }
    }
    (server_keys, upstreams)
}

/// `None` when bootstrap is off (no `flagpost_url`).
fn check_bootstrap(
    bootstrap: &BootstrapFile,
    environments: &[EnvironmentFile],
    errors: &mut Vec<String>,
) -> Option<Bootstrap> {
    if bootstrap.flagpost_url.is_empty() {
        return None;
    }
    let server_keys = check_flagpost_keys(environments, errors);
    if !(bootstrap.flagpost_url.starts_with("http://")
        || bootstrap.flagpost_url.starts_with("https://"))
    {
        errors.push(format!(
            "bootstrap.flagpost_url: {:?} must start with http:// or https://",
            redact_url(&bootstrap.flagpost_url)
        ));
    }
    // Credentials in the URL would be printed wherever the URL is (hyper logs its pool keys,
    // userinfo included, at TRACE); flagpost takes a bearer token, which has a field of its own.
    if redact_url(&bootstrap.flagpost_url) != bootstrap.flagpost_url {
        errors.push(
            "bootstrap.flagpost_url: must not carry credentials (user:password@): \
             give them as bootstrap.token"
                .into(),
        );
    }
    if bootstrap.timeout_secs == 0 || bootstrap.retry_secs == 0 {
        errors.push("bootstrap.timeout_secs and bootstrap.retry_secs: must be at least 1".into());
    }
    let token = match &bootstrap.token {
        None => None,
        Some(source) => match source.resolve() {
            Ok(text) => Some(Redacted(text)),
            Err(error) => {
                errors.push(format!("bootstrap.token: {error}"));
                None
            }
        },
    };
    Some(Bootstrap {
        flagpost_url: bootstrap.flagpost_url.trim_end_matches('/').to_owned(),
        token,
        server_keys,
        timeout: Duration::from_secs(bootstrap.timeout_secs),
        retry: Duration::from_secs(bootstrap.retry_secs),
    })
}

/// The status page's token: at least 12 characters, so that it is not a guessable word.
fn check_status_token(token: Option<&SecretSource>, errors: &mut Vec<String>) -> Option<ServerKey> {
    match token?.resolve() {
        Ok(text) if text.trim().len() >= 12 => Some(ServerKey::new(text.trim())),
        Ok(_) => {
            errors.push("status_token: must be at least 12 characters".into());
            None
        }
        Err(error) => {
            errors.push(format!("status_token: {error}"));
            None
        }
    }
}

/// Each environment's `flagpost_server_key`, which bootstrap needs for every environment that
/// has no upstream Flagsmith.
fn check_flagpost_keys(
    environments: &[EnvironmentFile],
    errors: &mut Vec<String>,
) -> HashMap<u64, Redacted> {
    let mut keys = HashMap::new();
    for (i, env) in environments.iter().enumerate() {
        let what = format!("environments[{i}].flagpost_server_key");
        match &env.flagpost_server_key {
            None if env.upstream.is_none() => errors.push(format!(
                "{what}: needed with [bootstrap]: the document is read from flagpost's \
                 /api/v1/environment-document/ with a server-side key of environment {}",
                env.id
            )),
            None => {}
            Some(source) => match source.resolve() {
                Ok(key) if !key.is_empty() => {
                    keys.insert(env.id, Redacted(key));
                }
                Ok(_) => errors.push(format!("{what}: is empty")),
                Err(error) => errors.push(format!("{what}: {error}")),
            },
        }
    }
    keys
}

#[cfg(test)]
mod tests;

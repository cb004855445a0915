//! The configuration file as written: serde types with every default built in and unknown fields
//! refused. Nothing here is validated; [`super::Config::from_raw`] does that.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::SecretSource;

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
    pub delivery: super::DeliveryConfig,
    pub server: super::ServerConfig,
    pub log: super::LogConfig,
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
                server_keys: Vec::new(),
                webhooks: Vec::new(),
            }],
            audit_webhooks: Vec::new(),
            relay: Vec::new(),
            reload: RawReload::default(),
            delivery: Default::default(),
            server: Default::default(),
            log: Default::default(),
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Server-side keys: what Flagsmith's SDKs in local evaluation mode send for the document.
    #[serde(default)]
    pub server_keys: Vec<SecretSource>,
    #[serde(default)]
    pub webhooks: Vec<RawWebhook>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub name: String,
    /// An HTTP endpoint's URL; empty for a JetStream endpoint, which has `jetstream` instead.
    #[serde(default)]
    pub url: String,
    /// Publish to NATS JetStream instead of POSTing.
    #[serde(default)]
    pub jetstream: Option<RawJetStreamEndpoint>,
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

/// A JetStream endpoint: where its messages are published, over which connection, into which
/// stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJetStreamEndpoint {
    pub subject: String,
    pub connection: crate::jetstream::RawNatsConnection,
    #[serde(default)]
    pub stream: crate::jetstream::RawStream,
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
    /// The upstream Flagsmith whose environment document flagpost serves for `environment`.
    #[serde(default)]
    pub upstream: Option<RawUpstream>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Flagsmith's API base, e.g. `https://edge.api.flagsmith.com/api/v1/`.
    pub url: String,
    pub server_key: SecretSource,
    #[serde(default = "upstream_poll_every", with = "humantime_serde")]
    pub poll_every: Duration,
}

fn upstream_poll_every() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
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

//! Where events go and where relayed ones come from: environments and their web hooks, audit-log
//! web hooks, and relay sources, validated with every problem collected.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::endpoint_url::{Credentials, redact_url, split_credentials};
use super::file::{RawEnvironment, RawRelaySource, RawUpstream, RawWebhook};
pub use super::jetstream::JetStreamTarget;
use super::secrets::ServerKey;
use crate::signing::Secret;
use crate::wire::EventType;

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
    /// Keys that read the environment's document (`GET /api/v1/environment-document/`).
    pub server_keys: Vec<ServerKey>,
    pub webhooks: Vec<Webhook>,
}

/// An endpoint that receives web hooks. `name` is its stable identity: the outbox is keyed by it,
/// so a changed URL or rotated secret keeps every pending delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub name: String,
    /// Never with userinfo: credentials written in the URL are in `credentials`.
    pub url: http::Uri,
    /// `Authorization: Basic` made of the userinfo written in the URL, sent with every request.
    pub credentials: Option<Credentials>,
    pub secrets: Vec<Secret>,
    pub enabled: bool,
    pub events: BTreeSet<String>,
    pub ordered: bool,
    pub max_in_flight: Option<usize>,
    /// Set for a JetStream endpoint, whose `url` is then its first server (for display).
    pub jetstream: Option<std::sync::Arc<JetStreamTarget>>,
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
    pub upstream: Option<Upstream>,
}

/// The upstream Flagsmith a relay source's environment document is fetched from.
#[derive(Clone, PartialEq)]
pub struct Upstream {
    /// Flagsmith's API base, ending in `/`; the document is `environment-document/` under it.
    pub url: http::Uri,
    /// Sent as `X-Environment-Key`, and nowhere else.
    pub server_key: String,
    pub poll_every: Duration,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.url)
            .field("server_key", &"<redacted>")
            .field("poll_every", &self.poll_every)
            .finish()
    }
}

/// Validates the environments and their web hooks; `webhook_names` collects every endpoint's
/// name, which must be unique across environments and audit-log web hooks alike.
pub(super) fn environments(
    raw: &[RawEnvironment],
    projects: &BTreeMap<u64, Project>,
    webhook_names: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) -> BTreeMap<u64, Environment> {
    let mut environments = BTreeMap::new();
    let mut env_names = BTreeSet::new();
    let mut key_texts = BTreeSet::new();
    for (i, e) in raw.iter().enumerate() {
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
                let default_events = [
                    "FLAG_UPDATED",
                    "FLAG_DELETED",
                    "SEGMENT_UPDATED",
                    "SEGMENT_DELETED",
                ];
                webhook(w, &at, &default_events, webhook_names, problems)
            })
            .collect();
        let server_keys = server_keys(e, &at, &mut key_texts, problems);
        let env = Environment {
            id: e.id,
            name: e.name.clone(),
            api_key: e.api_key.clone(),
            project: e.project,
            server_keys,
            webhooks,
        };
        if environments.insert(e.id, env).is_some() {
            problems.push(format!("{at}: id {} is used twice", e.id));
        }
    }
    environments
}

/// Resolves an environment's server-side keys. A key must start with `ser.` (the SDKs check it),
/// and must not be used by two environments: a key names the one document it reads.
/// `key_texts` holds the digests of the keys seen so far, so no key text outlives this check.
fn server_keys(
    e: &RawEnvironment,
    at: &str,
    key_texts: &mut BTreeSet<[u8; 32]>,
    problems: &mut Vec<String>,
) -> Vec<ServerKey> {
    let mut keys = Vec::new();
    for (k, source) in e.server_keys.iter().enumerate() {
        let at = format!("{at}.server_keys[{k}]");
        match source.resolve() {
            Ok(text) if !text.starts_with(ServerKey::PREFIX) || text.len() < 12 => {
                problems.push(format!(
                    "{at}: a server-side key starts with \"ser.\" and is at least 12 characters"
                ))
            }
            Ok(text) if !key_texts.insert(Sha256::digest(text.as_bytes()).into()) => {
                problems.push(format!("{at}: the same key is configured twice"))
            }
            Ok(text) => keys.push(ServerKey::new(&text)),
            Err(e) => problems.push(format!("{at}: {e}")),
        }
    }
    keys
}

/// Validates the audit-log web hooks (by default they take `AUDIT_LOG_CREATED` only).
pub(super) fn audit_webhooks(
    raw: &[RawWebhook],
    webhook_names: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) -> Vec<Webhook> {
    raw.iter()
        .enumerate()
        .filter_map(|(j, w)| {
            let at = format!("audit_webhooks[{j}]");
            webhook(w, &at, &["AUDIT_LOG_CREATED"], webhook_names, problems)
        })
        .collect()
}

/// Validates the relay sources and resolves their secrets.
pub(super) fn relay_sources(
    raw: &[RawRelaySource],
    environments: &BTreeMap<u64, Environment>,
    problems: &mut Vec<String>,
) -> BTreeMap<String, RelaySource> {
    let mut relay_sources = BTreeMap::new();
    for (i, r) in raw.iter().enumerate() {
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
                let upstream = r.upstream.as_ref().and_then(|u| upstream(u, &at, problems));
                let source = RelaySource {
                    name: r.name.clone(),
                    secret,
                    environment: r.environment,
                    upstream,
                };
                if relay_sources.insert(r.name.clone(), source).is_some() {
                    problems.push(format!("{at}: name is used twice"));
                }
            }
            Err(e) => problems.push(format!("{at}.secret: {e}")),
        }
    }
    relay_sources
}

/// Validates a relay source's upstream Flagsmith: an http(s) URL without credentials (the key
/// is the credential), a server-side key, and a poll interval of at least a second.
fn upstream(raw: &RawUpstream, at: &str, problems: &mut Vec<String>) -> Option<Upstream> {
    let before = problems.len();
    let url = match raw.url.parse::<http::Uri>() {
        Ok(url)
            if matches!(url.scheme_str(), Some("http" | "https"))
                && url.host().is_some()
                && !url.authority().is_some_and(|a| a.as_str().contains('@')) =>
        {
            Some(url)
        }
        _ => {
            problems.push(format!(
                "{at}.upstream.url: {:?} is not an http:// or https:// URL without credentials",
                redact_url(&raw.url)
            ));
            None
        }
    };
    let server_key = match raw.server_key.resolve() {
        Ok(key) if key.starts_with(ServerKey::PREFIX) => Some(key),
        Ok(_) => {
            problems.push(format!(
                "{at}.upstream.server_key: a server-side key starts with \"ser.\""
            ));
            None
        }
        Err(e) => {
            problems.push(format!("{at}.upstream.server_key: {e}"));
            None
        }
    };
    if raw.poll_every < Duration::from_secs(1) {
        problems.push(format!("{at}.upstream.poll_every: must be at least 1s"));
    }
    if problems.len() > before {
        return None;
    }
    let url = url?;
    // A base without its trailing slash would lose its last segment when the path is joined.
    let url = match url.path().ends_with('/') {
        true => url,
        false => format!("{url}/").parse().ok()?,
    };
    Some(Upstream {
        url,
        server_key: server_key?,
        poll_every: raw.poll_every,
    })
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
    let jetstream = w
        .jetstream
        .as_ref()
        .map(|raw| super::jetstream::target(raw, &format!("{at}.jetstream"), problems));
    let url = match (&jetstream, w.url.parse::<http::Uri>()) {
        (Some(target), _) if w.url.is_empty() => target.as_ref().map(|t| (t.display_url(), None)),
        (Some(_), _) => {
            problems.push(format!("{at}: give url (HTTP) or jetstream, not both"));
            None
        }
        (None, Ok(url))
            if matches!(url.scheme_str(), Some("http" | "https")) && url.host().is_some() =>
        {
            Some(split_credentials(&url))
        }
        (None, _) => {
            problems.push(format!(
                "{at}: url {:?} is not an http:// or https:// URL",
                redact_url(&w.url)
            ));
            None
        }
    };
    let secrets = webhook_secrets(w, at, problems);
    let events = webhook_events(w, at, default_events, problems);
    if w.max_in_flight == Some(0) {
        problems.push(format!("{at}: max_in_flight must be at least 1"));
    }
    if problems.len() > before {
        return None;
    }
    let (url, credentials) = url?;
    Some(Webhook {
        name: w.name.clone(),
        url,
        credentials,
        secrets,
        enabled: w.enabled,
        events,
        ordered: w.ordered,
        max_in_flight: w.max_in_flight,
        jetstream: jetstream.flatten().map(std::sync::Arc::new),
    })
}

fn webhook_secrets(w: &RawWebhook, at: &str, problems: &mut Vec<String>) -> Vec<Secret> {
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
    secrets
}

/// The event types the endpoint subscribes to (`default_events` when it names none).
fn webhook_events(
    w: &RawWebhook,
    at: &str,
    default_events: &[&str],
    problems: &mut Vec<String>,
) -> BTreeSet<String> {
    let events: BTreeSet<String> = match &w.events {
        Some(events) => events.iter().cloned().collect(),
        None => default_events.iter().map(|s| s.to_string()).collect(),
    };
    for event in &events {
        if let EventType::Other(other) = EventType::parse(event) {
            problems.push(format!(
                "{at}.events: {other:?} is not FLAG_UPDATED, FLAG_DELETED, AUDIT_LOG_CREATED, \
                 SEGMENT_UPDATED or SEGMENT_DELETED"
            ));
        }
    }
    events
}

fn is_file_safe(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

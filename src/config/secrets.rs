//! Secrets in configuration: where they come from, and API tokens, of which only a digest is kept.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::file::RawToken;

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
        self.matches_digest(&ApiToken::digest_of(presented))
    }

    /// The SHA-256 a presented token is compared by: computed once per request, however many
    /// tokens are configured.
    pub fn digest_of(presented: &str) -> [u8; 32] {
        Sha256::digest(presented.as_bytes()).into()
    }

    /// Whether `digest` ([`ApiToken::digest_of`] a presented token) is this token's, compared in
    /// constant time.
    pub fn matches_digest(&self, digest: &[u8; 32]) -> bool {
        digest.ct_eq(&self.digest).into()
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// An environment's server-side key. Only its SHA-256 is kept, and a presented key is compared
/// with it in constant time, so the key never sits in memory where a dump or `Debug` shows it.
#[derive(Clone, PartialEq)]
pub struct ServerKey {
    digest: [u8; 32],
}

impl ServerKey {
    /// What every server-side key starts with: Flagsmith's SDKs refuse local evaluation otherwise.
    pub const PREFIX: &'static str = "ser.";

    pub fn new(key: &str) -> ServerKey {
        ServerKey {
            digest: Sha256::digest(key.as_bytes()).into(),
        }
    }

    pub fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        presented.ct_eq(&self.digest).into()
    }
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(<redacted>)")
    }
}

/// Resolves the `[api]` tokens, each problem added to `problems`.
pub(super) fn api_tokens(raw: &[RawToken], problems: &mut Vec<String>) -> Vec<ApiToken> {
    let mut tokens = Vec::new();
    let mut token_names = BTreeSet::new();
    for (i, t) in raw.iter().enumerate() {
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
    tokens
}

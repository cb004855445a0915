//! One NATS connection's settings: the servers, credentials and TLS, written in TOML by both
//! programs and validated with every problem collected, as the rest of each configuration is.
//!
//! Credentials (a token, or a user and password) and the TLS client key are secrets in the
//! configuration's secret forms (`value`, `env`, `file`); they are resolved once at validation and
//! never appear in `Debug`, logs or errors.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, ServerAddr};
use serde::Deserialize;

use crate::config::{SecretSource, redact_url};

/// A NATS connection as written in a configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawNatsConnection {
    /// `nats://host:port` or `tls://host:port`; the client fails over between them.
    pub servers: Vec<String>,
    pub token: Option<SecretSource>,
    pub user: Option<String>,
    pub password: Option<SecretSource>,
    /// Require TLS even with `nats://` addresses.
    pub tls_required: bool,
    /// PEM roots that the server's certificate must chain to (default: the system's).
    pub tls_ca_file: Option<PathBuf>,
    /// A PEM client certificate and its key, for servers that verify clients.
    pub tls_client_cert: Option<PathBuf>,
    pub tls_client_key: Option<PathBuf>,
    /// How long connecting to one server may take.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for RawNatsConnection {
    fn default() -> Self {
        RawNatsConnection {
            servers: Vec::new(),
            token: None,
            user: None,
            password: None,
            tls_required: false,
            tls_ca_file: None,
            tls_client_cert: None,
            tls_client_key: None,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, PartialEq)]
enum Auth {
    None,
    Token(String),
    UserPassword { user: String, password: String },
}

/// A validated NATS connection: what [`NatsConnection::connect`] opens.
#[derive(Clone, PartialEq)]
pub struct NatsConnection {
    servers: Vec<ServerAddr>,
    /// The servers as configured, for logs and the admin API (they never carry credentials).
    pub server_names: Vec<String>,
    auth: Auth,
    tls_required: bool,
    tls_ca_file: Option<PathBuf>,
    tls_client: Option<(PathBuf, PathBuf)>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for NatsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match &self.auth {
            Auth::None => "none",
            Auth::Token(_) => "token <redacted>",
            Auth::UserPassword { .. } => "user and password <redacted>",
        };
        f.debug_struct("NatsConnection")
            .field("servers", &self.server_names)
            .field("auth", &auth)
            .field("tls_required", &self.tls_required)
            .finish_non_exhaustive()
    }
}

impl RawNatsConnection {
    /// Validates the settings; every problem is added to `problems`, prefixed with `at`.
    pub fn validate(&self, at: &str, problems: &mut Vec<String>) -> Option<NatsConnection> {
        let before = problems.len();
        if self.servers.is_empty() {
            problems.push(format!("{at}.servers: give at least one nats:// server"));
        }
        let mut servers = Vec::new();
        for (i, server) in self.servers.iter().enumerate() {
            match parse_server(server) {
                Ok(addr) => servers.push(addr),
                Err(why) => problems.push(format!("{at}.servers[{i}]: {why}")),
            }
        }
        let auth = self.auth(at, problems);
        let tls_client = match (&self.tls_client_cert, &self.tls_client_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => {
                problems.push(format!(
                    "{at}: tls_client_cert and tls_client_key go together"
                ));
                None
            }
        };
        for path in [
            &self.tls_ca_file,
            &self.tls_client_cert,
            &self.tls_client_key,
        ]
        .into_iter()
        .flatten()
        {
            if !path.is_file() {
                problems.push(format!("{at}: TLS file {} is not readable", path.display()));
            }
        }
        if self.connect_timeout < Duration::from_millis(10) {
            problems.push(format!("{at}.connect_timeout: must be at least 10ms"));
        }
        if problems.len() > before {
            return None;
        }
        Some(NatsConnection {
            servers,
            server_names: self.servers.clone(),
            auth: auth?,
            tls_required: self.tls_required,
            tls_ca_file: self.tls_ca_file.clone(),
            tls_client,
            connect_timeout: self.connect_timeout,
        })
    }

    fn auth(&self, at: &str, problems: &mut Vec<String>) -> Option<Auth> {
        let secret = |source: &SecretSource, field: &str, problems: &mut Vec<String>| {
            source
                .resolve()
                .map_err(|e| problems.push(format!("{at}.{field}: {e}")))
                .ok()
        };
        match (&self.token, &self.user, &self.password) {
            (None, None, None) => Some(Auth::None),
            (Some(token), None, None) => Some(Auth::Token(secret(token, "token", problems)?)),
            (None, Some(user), Some(password)) if !user.is_empty() => Some(Auth::UserPassword {
                user: user.clone(),
                password: secret(password, "password", problems)?,
            }),
            _ => {
                problems.push(format!(
                    "{at}: give either token, or user and password, or neither"
                ));
                None
            }
        }
    }
}

/// A server address: `nats://` or `tls://`, a host, and no credentials (those are secrets). A
/// refused address is shown with any userinfo in it hidden, as an endpoint URL is.
fn parse_server(text: &str) -> Result<ServerAddr, String> {
    let scheme_ok = text.starts_with("nats://") || text.starts_with("tls://");
    if !scheme_ok {
        return Err(format!(
            "{:?} is not a nats:// or tls:// address",
            redact_url(text)
        ));
    }
    let addr: ServerAddr = text
        .parse()
        .map_err(|_| format!("{:?} is not a server address", redact_url(text)))?;
    if addr.has_user_pass() {
        return Err("credentials go in token, or user and password, not in the address".into());
    }
    Ok(addr)
}

/// Why a connection could not be opened; it names the servers, never a credential.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {servers}: {reason}")]
pub struct ConnectError {
    pub servers: String,
    pub reason: String,
}

impl NatsConnection {
    /// Opens the connection. Once open, the client reconnects by itself for ever (publishes and
    /// acknowledgements made while it is away fail by their timeouts and are tried again).
    /// `name` is what the server's monitoring shows for this client.
    pub async fn connect(&self, name: &str) -> Result<Client, ConnectError> {
        let mut options = ConnectOptions::new()
            .name(name)
            .connection_timeout(self.connect_timeout)
            .require_tls(self.tls_required)
            .max_reconnects(None);
        options = match &self.auth {
            Auth::None => options,
            Auth::Token(token) => options.token(token.clone()),
            Auth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
        };
        if let Some(ca) = &self.tls_ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls_client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let servers = self.server_names.join(", ");
        match tokio::time::timeout(
            self.connect_timeout.saturating_mul(2),
            options.connect(self.servers.clone()),
        )
        .await
        {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(error)) => Err(ConnectError {
                servers,
                reason: error.to_string(),
            }),
            Err(_) => Err(ConnectError {
                servers,
                reason: format!("no answer within {:?}", self.connect_timeout * 2),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(raw: RawNatsConnection) -> Result<NatsConnection, Vec<String>> {
        let mut problems = Vec::new();
        raw.validate("nats", &mut problems).ok_or(problems)
    }

    #[test]
    fn servers_must_be_nats_addresses_without_credentials() {
        let raw = |servers: &[&str]| RawNatsConnection {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(validate(raw(&["nats://127.0.0.1:4222", "tls://nats.example:4222"])).is_ok());
        assert!(validate(raw(&[])).is_err());
        assert!(validate(raw(&["http://127.0.0.1:4222"])).is_err());
        for refused in [
            "nats://me:hunter2@127.0.0.1:4222",
            "http://me:hunter2@127.0.0.1:4222",
            "nats://me:hunter2@127.0.0.1:port",
        ] {
            let problems = validate(raw(&[refused])).unwrap_err();
            assert!(!problems.join(" ").contains("hunter2"), "{problems:?}");
        }
    }

    #[test]
    fn credentials_are_a_token_or_a_user_and_password_and_never_shown() {
        let raw = RawNatsConnection {
            servers: vec!["nats://127.0.0.1:4222".into()],
            user: Some("flagpost".into()),
            password: Some(SecretSource {
                value: Some("hunter2".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let connection = validate(raw.clone()).unwrap();
        assert!(!format!("{connection:?}").contains("hunter2"));
        let both = RawNatsConnection {
            token: Some(SecretSource {
                value: Some("t".into()),
                ..Default::default()
            }),
            ..raw
        };
        assert!(validate(both).is_err());
    }
}

//! `flagpost serve` with no configuration file is usable at once, and `flagpost pair` gives a
//! local receiver its configuration, so that the quick start needs no file written by hand.
//!
//! On the built-in defaults, the first start generates an API token and a web hook secret,
//! random, kept beside the database in files only their owner can read (0600), and prints the
//! token once with the status page's address. Never a well-known secret: a default shared by
//! every installation would be a password anyone can look up. The defaults then take that token
//! (`local-admin`) and a web hook endpoint, `local-receiver`, to a receiver's default address,
//! signed with that secret. `flagpost pair` prints a receiver configuration that names the two
//! files (never their contents), so the secrets stay in those files.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::config::{Config, RawConfig};

/// Where a receiver listens on its defaults, and where `local-receiver` posts.
pub const RECEIVER_ADDRESS: &str = "127.0.0.1:7071";

/// The two files beside the database.
pub struct LocalFiles {
    pub token: PathBuf,
    pub webhook_secret: PathBuf,
    /// The environment's server-side key, with which a paired receiver reads its document.
    pub server_key: PathBuf,
}

impl LocalFiles {
    /// `flagpost.token` and `flagpost-webhook.secret` in the database's folder, as absolute
    /// paths (a receiver started elsewhere reads them too).
    pub fn beside(database: &Path) -> anyhow::Result<LocalFiles> {
        let database = std::path::absolute(database).context("the database's folder")?;
        let dir = database.parent().unwrap_or(Path::new("/"));
        Ok(LocalFiles {
            token: dir.join("flagpost.token"),
            webhook_secret: dir.join("flagpost-webhook.secret"),
            server_key: dir.join("flagpost-server.key"),
        })
    }
}

/// The built-in defaults, with the local token and the `local-receiver` endpoint; creates the
/// two files on the first start, printing the token then (and only then) on stdout.
pub fn default_config() -> anyhow::Result<Config> {
    let defaults = RawConfig::default();
    let files = LocalFiles::beside(&defaults.storage.path)?;
    let token = ensure_secret_file(&files.token, "fp_")?;
    ensure_secret_file(&files.webhook_secret, "whsec_")?;
    ensure_secret_file(&files.server_key, "ser.")?;
    let config =
        Config::parse(&defaults_toml(&defaults, &files)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let status = format!("http://{}/status", config.fixed.listen);
    match token {
        Some(token) => println!(
            "flagpost: first start on the built-in defaults. API token (kept in {}, readable by \
             you only; shown this once):\n\n    {token}\n\nStatus page: {status} (sign in with the \
             token). A receiver for it: `flagpost pair > receiver.toml`, then \
             `flagpost-receiver serve --config receiver.toml`.",
            files.token.display()
        ),
        None => println!(
            "flagpost: on the built-in defaults; API token in {}. Status page: {status}",
            files.token.display()
        ),
    }
    Ok(config)
}

/// The defaults' environment and project, with the token and the endpoint, as TOML.
fn defaults_toml(defaults: &RawConfig, files: &LocalFiles) -> String {
    let quoted = |path: &Path| toml::Value::String(path.display().to_string()).to_string();
    let environment = &defaults.environments[0];
    format!(
        "[api]\ntokens = [{{ name = \"local-admin\", token = {{ file = {token} }} }}]\n\
         [[environments]]\nid = {id}\nname = \"{name}\"\napi_key = \"{key}\"\nproject = {project}\n\
         server_keys = [{{ file = {server_key} }}]\n\
         [[environments.webhooks]]\nname = \"local-receiver\"\n\
         url = \"http://{RECEIVER_ADDRESS}/webhook\"\nsecrets = [{{ file = {secret} }}]\n",
        token = quoted(&files.token),
        secret = quoted(&files.webhook_secret),
        server_key = quoted(&files.server_key),
        id = environment.id,
        name = environment.name,
        key = environment.api_key,
        project = environment.project,
    )
}

/// Creates `path` holding a new random secret (`prefix` and 32 random bytes, hex for a token,
/// base64 for a Standard Webhooks secret), owner-only; answers it when created now, `None` when
/// the file was there already.
fn ensure_secret_file(path: &Path, prefix: &str) -> anyhow::Result<Option<String>> {
    if path.exists() {
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            // Logging is not set up yet (the configuration chooses its format): say it plainly.
            eprintln!(
                "flagpost: {} is readable by others than its owner: chmod 600 it",
                path.display()
            );
        }
        return Ok(None);
    }
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the system's random numbers: {e}"))?;
    let secret = if prefix == "whsec_" {
        use base64::Engine;
        format!(
            "{prefix}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    } else {
        format!("{prefix}{}", hex::encode(bytes))
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(format!("{secret}\n").as_bytes())?;
    file.sync_all()?;
    Ok(Some(secret))
}

/// A receiver configuration paired with the flagpost that runs on the built-in defaults in this
/// folder: its address, the web hook secret and the token, named by file.
pub fn receiver_config() -> anyhow::Result<String> {
    let defaults = RawConfig::default();
    let files = LocalFiles::beside(&defaults.storage.path)?;
    if !files.token.exists() || !files.webhook_secret.exists() || !files.server_key.exists() {
        bail!(
            "{} is missing: run `flagpost serve` (on the built-in defaults) in this folder first",
            files.token.display()
        );
    }
    let quoted = |path: &Path| toml::Value::String(path.display().to_string()).to_string();
    let environment = &defaults.environments[0];
    Ok(format!(
        "# Written by `flagpost pair`: a receiver of the flagpost on {flagpost}, whose web hooks it\n\
         # verifies with the secret in the file named below. See config/receiver.toml for every field.\n\
         listen = \"{RECEIVER_ADDRESS}\"\n\n[intake]\nrequire_standard_signature = true\n\
         secrets = [{{ file = {secret} }}]\n\n[[environments]]\nid = {id}\nkeys = [\"{key}\"]\n\
         flagpost_server_key = {{ file = {server_key} }}\n\n\
         [bootstrap]\nflagpost_url = \"http://{flagpost}\"\ntoken = {{ file = {token} }}\n",
        flagpost = defaults.listen,
        secret = quoted(&files.webhook_secret),
        token = quoted(&files.token),
        server_key = quoted(&files.server_key),
        id = environment.id,
        key = environment.api_key,
    ))
}

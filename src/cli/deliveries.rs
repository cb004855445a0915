//! `flagpost deliveries ...`: the admin API from the command line. The running sidecar holds the
//! database (redb allows one process), so the CLI asks it over HTTP with an API token.
//!
//! [`run`] returns the answer's JSON, which the command prints.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct DeliveriesArgs {
    /// The sidecar's address.
    #[arg(long, env = "FLAGPOST_URL", default_value = "http://127.0.0.1:7070")]
    pub url: String,
    /// An API token from the sidecar's configuration.
    #[arg(long, env = "FLAGPOST_TOKEN", hide_env_values = true)]
    pub token: String,
    #[command(subcommand)]
    pub command: DeliveriesCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DeliveriesCommand {
    /// Pending counts per endpoint, or with --endpoint that endpoint's pending deliveries.
    Pending {
        #[arg(long)]
        endpoint: Option<String>,
        /// Only deliveries after this event sequence.
        #[arg(long)]
        after: Option<u64>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Attempts for one event (--sequence) or an endpoint's latest (--endpoint).
    Attempts {
        #[arg(long)]
        sequence: Option<u64>,
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Dead letters, of one endpoint or all.
    DeadLetters {
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Dead-letters now the deliveries waiting for an endpoint removed from the configuration
    /// (they wait for `delivery.removed_endpoint_grace` otherwise); replayable as any dead letter.
    DropRemoved {
        #[arg(long)]
        endpoint: String,
    },
    /// Puts dead letters back in the outbox: one (--endpoint and --sequence), an endpoint's
    /// (--endpoint), or every one (--all, so that it is never done by accident).
    Replay {
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long, requires = "endpoint")]
        sequence: Option<u64>,
        #[arg(long, conflicts_with = "endpoint")]
        all: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("give --endpoint (and --sequence for one), or --all")]
    ReplayWhat,
    #[error("{0} is not a valid sidecar URL")]
    BadUrl(String),
    #[error("the token has characters that cannot be sent in an HTTP header")]
    BadToken,
    #[error("cannot reach the sidecar: {0}")]
    Unreachable(String),
    #[error("the sidecar answered {status}: {message}")]
    Refused { status: u16, message: String },
}

/// Runs one command against the sidecar and returns its answer, pretty-printed JSON.
pub async fn run(args: DeliveriesArgs) -> Result<String, CliError> {
    let (method, path, body) = admin_request(args.command)?;
    let url = format!("{}/api/v1/admin{path}", args.url.trim_end_matches('/'));
    let uri: http::Uri = url
        .parse()
        .map_err(|_| CliError::BadUrl(args.url.clone()))?;
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", args.token),
        )
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .map_err(|_| CliError::BadToken)?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client
        .request(request)
        .await
        .map_err(|e| CliError::Unreachable(e.to_string()))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| CliError::Unreachable(e.to_string()))?
        .to_bytes();
    let answer: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    if !status.is_success() {
        let message = answer["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| answer.to_string());
        return Err(CliError::Refused {
            status: status.as_u16(),
            message,
        });
    }
    Ok(serde_json::to_string_pretty(&answer).expect("a JSON value serialises"))
}

/// The admin API's method, path (with its query) and body for one command.
fn admin_request(command: DeliveriesCommand) -> Result<(Method, String, Option<Value>), CliError> {
    Ok(match command {
        DeliveriesCommand::Pending {
            endpoint,
            after,
            limit,
        } => (
            Method::GET,
            format!(
                "/deliveries/pending{}",
                query(&[
                    ("endpoint", endpoint),
                    ("after", after.map(|a| a.to_string())),
                    ("limit", limit.map(|l| l.to_string())),
                ])
            ),
            None,
        ),
        DeliveriesCommand::Attempts {
            sequence,
            endpoint,
            limit,
        } => (
            Method::GET,
            format!(
                "/attempts{}",
                query(&[
                    ("sequence", sequence.map(|s| s.to_string())),
                    ("endpoint", endpoint),
                    ("limit", limit.map(|l| l.to_string())),
                ])
            ),
            None,
        ),
        DeliveriesCommand::DeadLetters { endpoint, limit } => (
            Method::GET,
            format!(
                "/dead-letters{}",
                query(&[
                    ("endpoint", endpoint),
                    ("limit", limit.map(|l| l.to_string())),
                ])
            ),
            None,
        ),
        DeliveriesCommand::DropRemoved { endpoint } => (
            Method::POST,
            "/deliveries/drop-removed".to_owned(),
            Some(json!({ "endpoint": endpoint })),
        ),
        DeliveriesCommand::Replay {
            endpoint,
            sequence,
            all,
        } => {
            let filter = match (endpoint, sequence, all) {
                (None, None, true) => json!({}),
                (Some(endpoint), None, false) => json!({ "endpoint": endpoint }),
                (Some(endpoint), Some(sequence), false) => {
                    json!({ "endpoint": endpoint, "sequence": sequence })
                }
                _ => return Err(CliError::ReplayWhat),
            };
            (
                Method::POST,
                "/dead-letters/replay".to_owned(),
                Some(filter),
            )
        }
    })
}

/// `?a=1&b=2` from the parameters that are set, each value percent-encoded.
fn query(parameters: &[(&str, Option<String>)]) -> String {
    let set: Vec<String> = parameters
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={}", encode(v))))
        .collect();
    if set.is_empty() {
        String::new()
    } else {
        format!("?{}", set.join("&"))
    }
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_carry_only_what_is_set_and_are_encoded() {
        assert_eq!(query(&[("endpoint", None)]), "");
        assert_eq!(
            query(&[
                ("endpoint", Some("a b/é".into())),
                ("limit", None),
                ("after", Some("7".into()))
            ]),
            "?endpoint=a%20b%2F%C3%A9&after=7"
        );
    }
}

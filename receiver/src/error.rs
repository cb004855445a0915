//! Every domain error of the receiver, and the one place that maps them to HTTP statuses.
//!
//! The errors live here, not in the modules that raise them, so that every module can use them
//! and this file depends on none of them: the module graph stays acyclic.

use std::sync::Arc;

use axum::Json;
use axum::response::{IntoResponse, Response};
use flagpost::signing::{SEQUENCE_HEADER, VerifyError};
use flagpost::wire::WireError;
use http::StatusCode;

/// Why a write was not acknowledged: the one error of the write path (intake, writer, storage).
///
/// A web hook is refused before it reaches the writer (the first eight variants, each counted by
/// its [`WriteError::refusal`] reason), or its batch is not durably committed (the rest). It is
/// `Clone` so that one failed commit answers every waiter of its batch with the cause itself.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("body is over the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("cannot read the body: {0}")]
    Body(String),
    #[error("{0}")]
    Signature(#[from] VerifyError),
    #[error("{0}")]
    Malformed(Arc<WireError>),
    #[error("{SEQUENCE_HEADER} must be a whole number")]
    BadSequence,
    /// The sequence header is not what the signed `webhook-id` names (or the id names none):
    /// the order a receiver believes comes only from what a verified signature covers.
    #[error("{SEQUENCE_HEADER} {claimed} is not the sequence the signed webhook-id names ({})", .signed.map_or("none: not a flagpost event id evt_<database>_<sequence>".to_owned(), |s| s.to_string()))]
    UnsignedSequence { claimed: u64, signed: Option<u64> },
    /// `intake.require_standard_signature`: a request signed only with `X-Flagsmith-Signature`,
    /// which has no timestamp, so a captured one could be replayed at any time.
    #[error(
        "only X-Flagsmith-Signature was sent; this receiver requires the Standard Webhooks signature (webhook-id, webhook-timestamp, webhook-signature)"
    )]
    StandardSignatureRequired,
    /// The database failed (its cause is opaque here: only the storage module names redb).
    #[error("database: {0}")]
    Database(Arc<dyn std::error::Error + Send + Sync>),
    #[error("a stored row cannot be read: {0}")]
    Corrupt(String),
    /// The database file is empty or damaged (refused at start), or failed while in use.
    #[error("{0}")]
    DatabaseFile(String),
    #[error("the storage writer has stopped")]
    WriterGone,
    #[error("cannot start the writer thread: {0}")]
    WriterThread(Arc<std::io::Error>),
}

/// Why an environment document is refused (from an upstream Flagsmith or from storage).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DocumentError {
    #[error("the document is not JSON: {0}")]
    NotJson(String),
    #[error("the document is not a JSON object")]
    NotAnObject,
    #[error("the document is not an environment document: {0}")]
    Shape(String),
    #[error("the document is for environment {found}, not {expected}")]
    OtherEnvironment { expected: u64, found: u64 },
}

/// Why a fetch from an upstream Flagsmith was refused; the last good document stays.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach the upstream: {0}")]
    Transport(String),
    #[error("the upstream answered {0}")]
    Status(http::StatusCode),
    #[error("the upstream did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("the upstream's answer is over the {0}-byte limit")]
    TooLarge(usize),
    #[error("{0}")]
    Document(#[from] DocumentError),
    #[error("cannot store the document: {0}")]
    Write(#[from] WriteError),
}

impl UpstreamError {
    /// The metric label of a failed fetch.
    pub fn label(&self) -> &'static str {
        match self {
            UpstreamError::Transport(_) => "unreachable",
            UpstreamError::Status(status)
                if *status == http::StatusCode::UNAUTHORIZED
                    || *status == http::StatusCode::FORBIDDEN =>
            {
                "unauthorized"
            }
            UpstreamError::Status(_) => "bad_status",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::TooLarge(_) => "too_large",
            UpstreamError::Document(DocumentError::OtherEnvironment { .. }) => "other_environment",
            UpstreamError::Document(_) => "invalid",
            UpstreamError::Write(_) => "not_stored",
        }
    }
}

impl From<WireError> for WriteError {
    fn from(error: WireError) -> Self {
        WriteError::Malformed(Arc::new(error))
    }
}

impl WriteError {
    /// The metric label of a refused web hook; `None` when the request was fine and storage
    /// failed.
    pub fn refusal(&self) -> Option<&'static str> {
        Some(match self {
            WriteError::UnsupportedMediaType => "unsupported_media_type",
            WriteError::TooLarge { .. } => "too_large",
            WriteError::Body(_) => "unreadable_body",
            WriteError::Signature(VerifyError::Missing) => "missing_signature",
            WriteError::Signature(VerifyError::StaleTimestamp { .. }) => "stale_timestamp",
            WriteError::Signature(VerifyError::BadTimestamp) => "bad_timestamp",
            WriteError::Signature(_) => "bad_signature",
            WriteError::Malformed(_) | WriteError::BadSequence => "malformed",
            WriteError::UnsignedSequence { .. } => "unsigned_sequence",
            WriteError::StandardSignatureRequired => "standard_signature_required",
            WriteError::Database(_)
            | WriteError::Corrupt(_)
            | WriteError::DatabaseFile(_)
            | WriteError::WriterGone
            | WriteError::WriterThread(_) => return None,
        })
    }

    fn status(&self) -> StatusCode {
        match self {
            WriteError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WriteError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WriteError::Body(_)
            | WriteError::Malformed(_)
            | WriteError::BadSequence
            | WriteError::UnsignedSequence { .. } => StatusCode::BAD_REQUEST,
            WriteError::Signature(_) | WriteError::StandardSignatureRequired => {
                StatusCode::UNAUTHORIZED
            }
            WriteError::Database(_)
            | WriteError::Corrupt(_)
            | WriteError::DatabaseFile(_)
            | WriteError::WriterGone
            | WriteError::WriterThread(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Why a lookup has no answer.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("environment {0} is not in the cache")]
    UnknownEnvironment(u64),
    #[error("feature {feature:?} is not in environment {env}")]
    UnknownFeature { env: u64, feature: String },
    #[error("missing X-Environment-Key header")]
    MissingEnvironmentKey,
    #[error("X-Environment-Key is not configured")]
    UnknownEnvironmentKey,
    #[error("identifier is required")]
    MissingIdentifier,
    #[error("request body: {0}")]
    BadRequest(String),
    /// Flagsmith's own wording for this refusal.
    #[error("Invalid or missing Environment key")]
    NotAServerKey,
    #[error("environment {0} has no environment document yet (it is fetched from its upstream)")]
    NoDocument(u64),
}

/// Why an environment's document was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("bootstrap is not configured (bootstrap.flagpost_url is empty)")]
    NotConfigured,
    #[error("environment {0} is not in the configuration")]
    NotConfiguredEnvironment(u64),
    #[error("environment {0} has no flagpost_server_key (it is fed by an upstream Flagsmith)")]
    NoServerKey(u64),
    #[error("cannot reach flagpost: {0}")]
    Transport(String),
    #[error("flagpost answered {0}")]
    Status(http::StatusCode),
    #[error("flagpost did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("the document is not valid: {0}")]
    Invalid(String),
    #[error("{0}")]
    Write(#[from] WriteError),
}

impl BootstrapError {
    /// Whether trying again later may succeed (flagpost unreachable, busy or slow; a commit that
    /// failed), as opposed to a configuration that will refuse it again.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BootstrapError::Transport(_)
                | BootstrapError::Status(_)
                | BootstrapError::Timeout(_)
                | BootstrapError::Invalid(_)
                | BootstrapError::Write(_)
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// An answer made outside a handler (axum's rejections, 404, 405), re-worded by [`json_errors`].
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Write(error) => error.status(),
            ApiError::Lookup(error) => match error {
                LookupError::UnknownEnvironment(_) | LookupError::UnknownFeature { .. } => {
                    StatusCode::NOT_FOUND
                }
                LookupError::MissingEnvironmentKey | LookupError::UnknownEnvironmentKey => {
                    StatusCode::UNAUTHORIZED
                }
                LookupError::MissingIdentifier | LookupError::BadRequest(_) => {
                    StatusCode::BAD_REQUEST
                }
                LookupError::NotAServerKey => StatusCode::FORBIDDEN,
                LookupError::NoDocument(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
            ApiError::Bootstrap(error) => match error {
                BootstrapError::NotConfigured
                | BootstrapError::NotConfiguredEnvironment(_)
                | BootstrapError::NoServerKey(_) => StatusCode::NOT_FOUND,
                BootstrapError::Write(_) => StatusCode::SERVICE_UNAVAILABLE,
                BootstrapError::Transport(_)
                | BootstrapError::Status(_)
                | BootstrapError::Timeout(_)
                | BootstrapError::Invalid(_) => StatusCode::BAD_GATEWAY,
            },
            ApiError::Rejected { status, .. } => *status,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // A full disk fails every request the same way: one line per interval, with a count.
            let error = self.to_string();
            if let Some(suppressed) = flagpost::process::ERROR_LOG.admit("request failed", &error) {
                tracing::warn!(%error, suppressed, "request failed");
            }
        }
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// Every error answer is `{"error": "..."}`: this layer re-words the ones no handler made (axum's
/// rejections of a path or query, its empty 404 and 405) through [`ApiError`], keeping their
/// status and other headers (a 405's `Allow`). One mapping for every route.
pub async fn json_errors(response: Response) -> Response {
    flagpost::http_error::reword_non_json_error(response, |status, message| {
        ApiError::Rejected { status, message }.into_response()
    })
    .await
}

//! The sidecar's HTTP errors, and the one place where each becomes an HTTP status: the change
//! API, the relay and the admin API all answer through [`ApiError`].

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{StoreError, WriteError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("body is over the {0}-byte limit")]
    PayloadTooLarge(usize),
    #[error("content-type must be application/json")]
    UnsupportedMediaType,
    #[error("{0}")]
    NotFound(String),
    /// A refused change, or one that could not be made durable (not applied, not acknowledged).
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The writer has stopped: nothing can be acknowledged.
    #[error("the store's writer has stopped")]
    WriterStopped,
    /// What was asked for is not there yet (a relayed environment's document before its first
    /// fetch from upstream).
    #[error("{0}")]
    Unavailable(String),
    /// The writer is running but its last commit failed; it retries by itself.
    #[error("the store cannot commit: {0}")]
    CannotCommit(String),
    /// An answer made outside a handler (axum's rejections, 404, 405), re-worded by [`json_errors`].
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::Write(WriteError::Storage(error))
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::WriterStopped | ApiError::CannotCommit(_) | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Rejected { status, .. } => *status,
            ApiError::Write(error) => match error {
                WriteError::UnknownEnvironment(_)
                | WriteError::UnknownProject(_)
                | WriteError::UnknownFeature(_)
                | WriteError::NoSuchOverride(_)
                | WriteError::UnknownSegment(_)
                | WriteError::UnknownOption { .. } => StatusCode::NOT_FOUND,
                WriteError::FeatureExists { .. }
                | WriteError::SegmentExists { .. }
                | WriteError::SegmentManagedByFiles(_)
                | WriteError::SegmentManagedByApi(_)
                | WriteError::ManagedByFiles(_)
                | WriteError::ManagedByApi(_) => StatusCode::CONFLICT,
                WriteError::WrongProject { .. }
                | WriteError::IdempotencyConflict
                | WriteError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                WriteError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
        }
    }

    /// Every name [`ApiError::reason`] gives, shown at zero on `/metrics` from start: add a new
    /// reason here too.
    pub const REASONS: [&'static str; 9] = [
        "unauthorized",
        "bad_request",
        "too_large",
        "content_type",
        "not_found",
        "unavailable",
        "storage",
        "refused",
        "rejected",
    ];

    /// A short, stable name for metrics: one of [`ApiError::REASONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::PayloadTooLarge(_) => "too_large",
            ApiError::UnsupportedMediaType => "content_type",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Write(WriteError::Storage(_))
            | ApiError::WriterStopped
            | ApiError::CannotCommit(_) => "storage",
            ApiError::Write(_) => "refused",
            ApiError::Rejected { .. } => "rejected",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status().is_server_error() {
            // A full disk fails every request the same way: one line per interval, with a count.
            let error = self.to_string();
            if let Some(suppressed) = crate::process::ERROR_LOG.admit("request failed", &error) {
                tracing::error!(%error, suppressed, "request failed");
            }
        }
        (self.status(), Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// Every error answer is `{"error": "..."}`: this layer re-words the ones no handler made (axum's
/// rejections of a path, query or body, its empty 404 and 405) through [`ApiError`], keeping their
/// status and other headers (a 405's `Allow`). One mapping for every route, the admin API's too.
pub async fn json_errors(response: Response) -> Response {
    crate::http_error::reword_non_json_error(response, |status, message| {
        ApiError::Rejected { status, message }.into_response()
    })
    .await
}

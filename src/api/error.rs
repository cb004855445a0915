//! The API's errors, and the one place where each becomes an HTTP status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::changes::ChangeError;
use crate::store::{StoreError, WriteError};

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
    #[error(transparent)]
    Change(#[from] ChangeError),
    /// The change could not be made durable; it was not applied and is not acknowledged.
    #[error("not committed: {0}")]
    Unavailable(#[from] StoreError),
}

impl From<WriteError<ChangeError>> for ApiError {
    fn from(e: WriteError<ChangeError>) -> Self {
        match e {
            WriteError::Refused(refusal) => ApiError::Change(refusal),
            WriteError::Storage(storage) => ApiError::Unavailable(storage),
        }
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
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Change(change) => match change {
                ChangeError::UnknownEnvironment(_)
                | ChangeError::UnknownProject(_)
                | ChangeError::UnknownFeature(_)
                | ChangeError::NoSuchOverride(_) => StatusCode::NOT_FOUND,
                ChangeError::FeatureExists { .. }
                | ChangeError::ManagedByFiles(_)
                | ChangeError::ManagedByApi(_) => StatusCode::CONFLICT,
                ChangeError::WrongProject { .. }
                | ChangeError::IdempotencyConflict
                | ChangeError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            },
        }
    }

    /// A short, stable name for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::PayloadTooLarge(_) => "too_large",
            ApiError::UnsupportedMediaType => "content_type",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unavailable(_) => "storage",
            ApiError::Change(_) => "refused",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Unavailable(error) = &self {
            tracing::error!(%error, "change not committed");
        }
        (self.status(), Json(json!({ "error": self.to_string() }))).into_response()
    }
}

//! Every domain error of the receiver, and the one place that maps them to HTTP statuses.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::bootstrap::BootstrapError;
use crate::intake::IntakeError;
use crate::lookup::LookupError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Intake(#[from] IntakeError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Intake(error) => match error {
                IntakeError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                IntakeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                IntakeError::Body(_) | IntakeError::Malformed(_) | IntakeError::BadSequence => {
                    StatusCode::BAD_REQUEST
                }
                IntakeError::Signature(_) => StatusCode::UNAUTHORIZED,
            },
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
            },
            ApiError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Bootstrap(error) => match error {
                BootstrapError::NotConfigured | BootstrapError::NotConfiguredEnvironment(_) => {
                    StatusCode::NOT_FOUND
                }
                BootstrapError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
                BootstrapError::Transport(_)
                | BootstrapError::Status(_)
                | BootstrapError::Timeout(_)
                | BootstrapError::Invalid(_) => StatusCode::BAD_GATEWAY,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

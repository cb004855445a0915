//! `POST {webhook_path}`: a web hook, checked by [`crate::intake::request`] and acknowledged only
//! after the writer's durable commit.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use http_body_util::{BodyExt, Limited};

use crate::api::{AppState, json_response};
use crate::app::Shared;
use crate::clock::{now_micros, now_unix};
use crate::error::{ApiError, WriteError};
use crate::intake::recent::WebhookRecord;
use crate::intake::{IntakeOutcome, request};

pub(crate) async fn take_webhook(State(shared): AppState, incoming: Request) -> Response {
    let mut about = (None, None);
    let answered = intake_request(&shared, incoming, &mut about).await;
    let (environment, feature) = about;
    let record = |accepted, outcome| WebhookRecord {
        at_ms: now_micros() / 1_000,
        accepted,
        outcome,
        environment,
        feature,
    };
    match answered {
        Ok(outcome) => {
            shared.metrics.accepted(outcome);
            shared
                .recent_webhooks
                .record(record(true, outcome.as_str()));
            json_response(StatusCode::OK, Bytes::from_static(outcome.response_body()))
        }
        Err(error) => {
            if let Some(reason) = error.refusal() {
                shared.metrics.refused(reason);
                shared.recent_webhooks.record(record(false, reason));
            }
            ApiError::from(error).into_response()
        }
    }
}

/// Takes one web hook; `about` is set to its environment and feature once it is verified.
async fn intake_request(
    shared: &Arc<Shared>,
    incoming: Request,
    about: &mut (Option<u64>, Option<String>),
) -> Result<IntakeOutcome, WriteError> {
    let (parts, body) = incoming.into_parts();
    request::check_content_type(&parts.headers)?;
    let limit = shared.live.load().max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(WriteError::TooLarge { limit });
    }
    let body = Limited::new(body, limit).collect().await.map_err(|error| {
        if error.is::<http_body_util::LengthLimitError>() {
            WriteError::TooLarge { limit }
        } else {
            WriteError::Body(error.to_string())
        }
    })?;
    shared
        .take_verified(&parts.headers, &body.to_bytes(), now_unix(), about)
        .await
}

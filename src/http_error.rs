//! What both programs do to error answers no handler made: axum's rejections of a path, query or
//! body, and its empty 404 and 405. Each program re-words them through its own error type, so
//! that every error it answers is `{"error": "..."}`; this is the shared part.

use axum::http::{StatusCode, header};
use axum::response::Response;

/// Passes `response` through unless it is a non-JSON error; then takes its text (or a wording of
/// its status when it has none), hands status and text to `reword`, and keeps the original's other
/// headers (a 405's `Allow`) on the answer.
pub async fn reword_non_json_error(
    response: Response,
    reword: impl FnOnce(StatusCode, String) -> Response,
) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = match (text.is_empty(), status) {
        (false, _) => text,
        (true, StatusCode::NOT_FOUND) => "no such route".to_owned(),
        (true, StatusCode::METHOD_NOT_ALLOWED) => "method not allowed on this route".to_owned(),
        (true, _) => status.canonical_reason().unwrap_or("refused").to_owned(),
    };
    let mut answer = reword(status, message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().append(name, value.clone());
        }
    }
    answer
}

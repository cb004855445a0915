//! CORS, so that pages on the origins `[cors] allowed_origins` lists can read the receiver with
//! the Flagsmith JavaScript client or an OFREP web provider.
//!
//! A request without `Origin` (servers, SDKs outside browsers) passes untouched, and so does one
//! from the receiver's own origin. A request from a listed origin is answered with
//! `Access-Control-Allow-Origin` naming it; its preflight (`OPTIONS` with
//! `Access-Control-Request-Method`) is answered here with the methods and headers the clients
//! send. A request from any other origin is refused with 403 before it reaches a handler, so a
//! page elsewhere can neither read nor change anything.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::app::Shared;
use crate::error::ApiError;

/// The request headers a page may send: the environment key in each form the clients use,
/// JSON bodies, conditional requests, stream resumption, and the headers the Flagsmith
/// JavaScript client adds to name itself.
const ALLOWED_HEADERS: &str = "Authorization, Content-Type, If-None-Match, Last-Event-ID, \
     X-API-Key, X-Environment-Key, Flagsmith-Application-Name, Flagsmith-Application-Version, \
     Flagsmith-SDK-User-Agent";
const ALLOWED_METHODS: &str = "GET, POST, OPTIONS";
/// Response headers a page may read beyond the safelisted ones: OFREP's bulk answer's tag, and
/// the flags' `updated_at`, which Flagsmith's JS client reads to skip the realtime events its
/// flags already reflect (hidden, it fetches again after every event).
const EXPOSED_HEADERS: &str = "ETag, Retry-After, X-Flagsmith-Document-Updated-At";
/// How long a browser may keep a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// What CORS makes of a request, before it reaches a handler.
pub(crate) enum Admission {
    /// No `Origin`: passes untouched, and so does its answer.
    Untouched,
    /// From an allowed origin: handled, and its answer names the origin.
    Allowed(HeaderValue),
    /// Refused, or a preflight: answered here, without a handler.
    Answered(Response),
}

/// Checks a request's origin (see the module's documentation).
pub(crate) fn admit(shared: &Shared, request: &Request) -> Admission {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return Admission::Untouched;
    };
    let text = origin.to_str().unwrap_or_default();
    let allowed =
        shared.live.load().cors_origins.allows(text) || same_origin(text, request.headers());
    if !allowed {
        shared.metrics.cors_refused();
        return Admission::Answered(
            ApiError::OriginRefused(String::from_utf8_lossy(origin.as_bytes()).into_owned())
                .into_response(),
        );
    }
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut answer = preflight_answer();
        name_origin(&mut answer, origin.clone());
        return Admission::Answered(answer);
    }
    Admission::Allowed(origin.clone())
}

/// The answer to a request from an allowed origin: it names the origin, and what the page may
/// read of it.
pub(crate) fn allowed_answer(mut response: Response, origin: HeaderValue) -> Response {
    name_origin(&mut response, origin);
    response.headers_mut().insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
    response
}

fn name_origin(response: &mut Response, origin: HeaderValue) {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

fn preflight_answer() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    let fixed = [
        (header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS),
        (header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Whether `origin` is the receiver itself as the request reached it (a page it serves, such as
/// a status page): its host and port are the request's `Host`.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let authority = origin.split_once("://").map(|(_, rest)| rest);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receivers_own_origin_is_its_host() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7071"));
        assert!(same_origin("http://127.0.0.1:7071", &headers));
        assert!(!same_origin("http://127.0.0.1:7072", &headers));
        assert!(!same_origin("null", &headers));
        assert!(!same_origin("http://127.0.0.1:7071", &HeaderMap::new()));
    }
}

//! `GET /status`: the status page, an HTML page with its script and style embedded in the binary
//! (no build step, nothing fetched from elsewhere). The page itself is public and holds no data:
//! it asks for an API token, keeps it in the tab's `sessionStorage` and sends it as
//! `Authorization: Bearer` to the admin and events routes, which check it as they always do.
//!
//! The script and style shared with flagpost-receiver's page are public here
//! ([`COMMON_JS`], [`STYLE_CSS`], [`asset`]), so both pages look and behave alike.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The token form, requests carrying the token, DOM building from text only, the refresh loop.
pub const COMMON_JS: &str = include_str!("status_page/common.js");
pub const STYLE_CSS: &str = include_str!("status_page/status.css");
const PAGE_HTML: &str = include_str!("status_page/flagpost.html");
const PAGE_JS: &str = include_str!("status_page/flagpost.js");

pub const HTML: &str = "text/html; charset=utf-8";
pub const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
pub const CSS: &str = "text/css; charset=utf-8";

/// Scripts and styles from this origin only, requests to this origin only, no framing: data
/// that slipped into markup could neither run nor send anything anywhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One embedded file of a status page, with the headers every one carries.
pub fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The page and its files, for the sidecar's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    page_router(PAGE_HTML, "/status/flagpost.js", PAGE_JS)
}

/// A status page's routes, for both programs: its HTML at `/status`, its own script at
/// `script_path`, and the script and style both pages share.
pub fn page_router<S: Clone + Send + Sync + 'static>(
    html: &'static str,
    script_path: &'static str,
    script: &'static str,
) -> Router<S> {
    Router::new()
        .route("/status", get(move || async move { asset(HTML, html) }))
        .route(
            "/status/common.js",
            get(|| async { asset(JAVASCRIPT, COMMON_JS) }),
        )
        .route(
            script_path,
            get(move || async move { asset(JAVASCRIPT, script) }),
        )
        .route(
            "/status/status.css",
            get(|| async { asset(CSS, STYLE_CSS) }),
        )
}

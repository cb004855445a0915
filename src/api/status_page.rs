//! `GET /status`: the status page, an HTML page with its script and style embedded in the binary
//! (no build step, nothing fetched from elsewhere). The page itself is public and holds no data:
//! it asks for an API token, keeps it in the tab's `sessionStorage` and sends it as
//! `Authorization: Bearer` to the admin and events routes, which check it as they always do.
//!
//! The page's frame, script and style are shared with flagpost-receiver's page ([`StatusPage`],
//! [`page_router`]), so both pages look and behave alike and differ only in their sections.

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The token form, requests carrying the token, DOM building from text only, the refresh loop.
pub const COMMON_JS: &str = include_str!("status_page/common.js");
pub const STYLE_CSS: &str = include_str!("status_page/status.css");
/// The frame of both pages: head, title, token form, message line and scripts.
const PAGE_FRAME: &str = include_str!("status_page/page.html");

/// The sidecar's page.
const FLAGPOST_PAGE: StatusPage = StatusPage {
    title: "flagpost status",
    token_hint: "API token",
    token_label: "API token",
    sections: include_str!("status_page/flagpost-sections.html"),
    script_path: "/status/flagpost.js",
    script: include_str!("status_page/flagpost.js"),
};

/// What one program's status page has of its own; the rest is [`PAGE_FRAME`].
pub struct StatusPage {
    pub title: &'static str,
    /// The token field's placeholder, and its accessible name.
    pub token_hint: &'static str,
    pub token_label: &'static str,
    /// The page's `<section>`s, below the message line.
    pub sections: &'static str,
    /// Where the page's own script is served, and the script.
    pub script_path: &'static str,
    pub script: &'static str,
}

impl StatusPage {
    /// The whole page: the frame with this page's parts put in.
    fn html(&self) -> String {
        PAGE_FRAME
            .replace("{{title}}", self.title)
            .replace("{{token_hint}}", self.token_hint)
            .replace("{{token_label}}", self.token_label)
            .replace("{{script_path}}", self.script_path)
            .replace("{{sections}}", self.sections)
    }
}

pub const HTML: &str = "text/html; charset=utf-8";
pub const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
pub const CSS: &str = "text/css; charset=utf-8";

/// Scripts and styles from this origin only, requests to this origin only, no framing: data
/// that slipped into markup could neither run nor send anything anywhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One embedded file of a status page, with the headers every one carries.
pub fn asset(content_type: &'static str, body: impl IntoResponse) -> Response {
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
    page_router(FLAGPOST_PAGE)
}

/// A status page's routes, for both programs: its HTML at `/status` (put together once, here),
/// its own script, and the script and style both pages share.
pub fn page_router<S: Clone + Send + Sync + 'static>(page: StatusPage) -> Router<S> {
    let html = Bytes::from(page.html());
    let script = page.script;
    Router::new()
        .route("/status", get(move || async move { asset(HTML, html) }))
        .route(
            "/status/common.js",
            get(|| async { asset(JAVASCRIPT, COMMON_JS) }),
        )
        .route(
            page.script_path,
            get(move || async move { asset(JAVASCRIPT, script) }),
        )
        .route(
            "/status/status.css",
            get(|| async { asset(CSS, STYLE_CSS) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_takes_every_part_of_a_page() {
        let html = FLAGPOST_PAGE.html();
        assert!(!html.contains("{{"), "a part left out: {html}");
        assert_eq!(
            html.matches("flagpost status").count(),
            2,
            "title and heading"
        );
        assert!(html.contains(r#"<script src="/status/flagpost.js"></script>"#));
        assert!(html.contains(r#"<table id="dead-letters">"#));
    }
}

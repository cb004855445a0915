//! The HTTP transport: the router and thin handlers, one file per area. Handlers read the
//! published documents ([`crate::documents`]) and hand writes to the writer; none reaches storage.
//!
//! - [`webhook`]: web hook intake; [`native`]: the native JSON lookups;
//! - [`sdk`]: the Flagsmith-SDK-compatible API; [`status`]: health, readiness, metrics, admin;
//! - [`snapshot`]: the native lookups' shape as a file, for apps that read files;
//! - [`ofrep`]: the OpenFeature Remote Evaluation Protocol; [`cors`]: browsers on other origins;
//! - [`edge`]: the layer around every route (CORS, errors as JSON);
//! - [`transient`]: the identifier Flagsmith gives an identity sent without one.
//! - [`status_page`]: the status page and the data it polls.

pub mod cors;
pub mod edge;
pub mod native;
pub mod ofrep;
pub mod sdk;
pub mod snapshot;
pub mod status;
pub mod status_page;
pub mod streams;
pub mod transient;
pub mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};

use crate::app::Shared;

type AppState = State<Arc<Shared>>;

/// The router; every path but `webhook_path` starts with one of
/// [`crate::config::RESERVED_PREFIXES`].
pub fn router(shared: Arc<Shared>, webhook_path: &str) -> Router {
    Router::new()
        .route(webhook_path, post(webhook::take_webhook))
        .route(
            "/v1/environments/{env}/flags",
            get(native::environment_flags_route),
        )
        .route(
            "/v1/environments/{env}/flags/{feature}",
            get(native::one_flag_route),
        )
        .route(
            "/v1/environments/{env}/identities/{identifier}/flags",
            get(native::identity_flags_route).post(native::identity_flags_with_traits_route),
        )
        .route("/api/v1/flags/", get(sdk::flags_route))
        .route("/api/v1/flags", get(sdk::flags_route))
        .route(
            "/api/v1/identities/",
            get(sdk::identity_get).post(sdk::identity_post),
        )
        .route(
            "/api/v1/identities",
            get(sdk::identity_get).post(sdk::identity_post),
        )
        .route(
            "/api/v1/environment-document/",
            get(sdk::environment_document),
        )
        .route(
            "/api/v1/environment-document",
            get(sdk::environment_document),
        )
        .route("/api/v1/analytics/flags/", post(sdk::analytics))
        .route("/api/v1/analytics/flags", post(sdk::analytics))
        .route(
            "/admin/environments/{env}/bootstrap",
            post(status::bootstrap_environment),
        )
        // Change streams (issue 11): Flagsmith's realtime protocol and the native stream.
        .route(
            "/sse/environments/{key}/stream",
            get(streams::flagsmith_stream),
        )
        .route("/v1/environments/{env}/stream", get(streams::native_stream))
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(status::metrics))
        // OFREP (issue 11, item 3).
        .route("/ofrep/v1/evaluate/flags", post(ofrep::evaluate_flags))
        .route("/ofrep/v1/evaluate/flags/{key}", post(ofrep::evaluate_flag))
        // The status page and its data (`/status`, `/admin/status`).
        .merge(status_page::router())
        // CORS on every answer (errors included), and errors re-worded as JSON.
        .layer(edge::EdgeLayer::new(shared.clone()))
        .with_state(shared)
}

/// Appends the bytes `slot` keeps, rendered by `render` on first use; without a slot (a flag
/// the environment could not prepare), `render` writes straight into `out`. Both the identity
/// and the OFREP answers copy each flag's rendering this way.
pub(crate) fn write_kept(
    out: &mut Vec<u8>,
    slot: Option<&std::sync::OnceLock<Box<[u8]>>>,
    render: impl Fn(&mut Vec<u8>),
) {
    let Some(slot) = slot else {
        return render(out);
    };
    let rendered = slot.get_or_init(|| {
        let mut bytes = Vec::new();
        render(&mut bytes);
        bytes.into_boxed_slice()
    });
    out.extend_from_slice(rendered);
}

pub(crate) fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub(crate) fn json_value<T: serde::Serialize>(value: &T) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_vec(value).expect("responses serialise"),
    )
}

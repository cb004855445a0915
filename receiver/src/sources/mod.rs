//! Where documents come from, besides web hooks: [`flagpost`], an environment's document from
//! flagpost (bootstrap, after segment and multivariate events, and reload on demand);
//! [`upstream`], Flagsmith's environment document from an upstream Flagsmith (at start, after
//! web hooks, on a poll); [`jetstream`], flagpost's events from a NATS JetStream stream (this
//! receiver's durable consumer), taken as web hooks are.

pub mod flagpost;
pub mod jetstream;
pub mod upstream;

pub use self::flagpost::{DocumentClient, parse_flagpost_document};

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The HTTP client both document sources use: HTTPS against the webpki roots, or plain HTTP
/// (flagpost on the same host), over HTTP/1.
type SourceClient<B> = Client<HttpsConnector<HttpConnector>, B>;

fn source_client<B>() -> SourceClient<B>
where
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

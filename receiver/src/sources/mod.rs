//! Where documents come from, besides web hooks: [`flagpost`], an environment's document from
//! flagpost (bootstrap, after segment and multivariate events, and reload on demand);
//! [`upstream`], Flagsmith's environment document from an upstream Flagsmith (at start, after
//! web hooks, on a poll); [`jetstream`], flagpost's events from a NATS JetStream stream (this
//! receiver's durable consumer), taken as web hooks are.

pub mod flagpost;
pub mod jetstream;
pub mod upstream;

pub use self::flagpost::{DocumentClient, parse_flagpost_document};

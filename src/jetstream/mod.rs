//! NATS JetStream, shared by both programs: how a connection is configured and opened
//! ([`connection`]), and the stream flagpost publishes to and receivers consume from ([`stream`]).
//!
//! flagpost's JetStream lane transport is in [`crate::delivery::jetstream`]; the receiver's durable
//! consumer is in `flagpost_receiver::sources::jetstream`. Both use only what is here to reach the
//! server, so a connection is configured the same way on both sides.

pub mod connection;
pub mod stream;

pub use connection::{NatsConnection, RawNatsConnection};
pub use stream::{RawStream, StreamSettings};

/// The header JetStream deduplicates by: flagpost sets it to the event id.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

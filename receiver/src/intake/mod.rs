//! Intake: everything between a web hook arriving and its acknowledgement.
//!
//! - [`request`]: content type, signature and body checks of one web hook, and the id duplicates
//!   are recognised by; all on the raw bytes, before the writer sees the request.
//! - [`writer`]: the one writer thread: remembers request ids (dedupe), applies changes to the
//!   documents, and commits both durably (group commit) before anyone is answered.
//! - [`recent`]: the latest web hooks taken and refused, for the status page.

pub mod recent;
pub mod request;
pub mod writer;

pub use writer::{IntakeOutcome, Published, Writer};

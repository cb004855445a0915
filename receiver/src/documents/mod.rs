//! The receiver's domain: each environment's flags and the rules that decide which change is
//! newer, free of HTTP and storage (so they are unit- and property-tested on plain values).
//!
//! Each cache key (environment, feature, and the default, an identity or a segment) remembers the
//! [`Order`] of the change last applied to it, and a change is applied only if it is newer, as
//! DESIGN.md "Ordering in the receiver" says:
//!
//! - with flagpost's sequence number on both sides, iff the sequence is greater;
//! - otherwise by timestamp: later or equal applies (arrival order breaks ties), except that an
//!   update never undoes a deletion with the same timestamp;
//! - deleting an environment default removes the feature, its overrides with it, and leaves a
//!   tombstone on the feature id so that nothing for it, of any key, comes back;
//! - deleting an override leaves a tombstone on that key, ordered like any other state;
//! - a document from flagpost counts as applied at its `last_sequence` for every key, and is
//!   held as the environment's base document ([`flagpost`]);
//! - sequences count within one flagpost database: an environment follows the database its
//!   events come from, and a new one (the sender started again) re-bases it ([`sender`]).
//! - a document from an upstream Flagsmith supersedes every change taken before its fetch began.
//!
//! - [`order`]: which of two changes is newer; [`state`]: what one feature holds, its identity
//!   overrides in [`overrides`] (shared in shards, so a change copies few of them);
//! - [`change`]: a web hook's change, normalised; [`cache`]: every environment, and applying
//!   changes to it; [`sender`]: which flagpost database an environment follows;
//! - [`flagpost`]: documents from flagpost, ordered by their sequence; [`upstream`]: documents
//!   from an upstream Flagsmith, with the web-hook changes taken since their fetch began on top;
//!   [`raw`]: their bytes as kept;
//!   [`revision`]: each environment's revision and `updated_at`, moved once per batch.
//! - [`fold_hash`]: the hash the cache's maps use.

pub mod cache;
pub mod change;
pub mod event_id;
pub mod flagpost;
pub mod fold_hash;
pub mod order;
pub mod overrides;
pub mod raw;
pub mod revision;
pub mod sender;
pub mod state;
pub mod upstream;

pub use cache::{Dirty, EnvCache, FlagCache, Outcome};
pub use change::{Change, Scope};
pub use flagpost::FlagpostDocument;
pub use order::Order;
pub use overrides::IdentityOverrides;
pub use raw::DocumentBytes;
pub use sender::SenderCheck;
pub use state::{FeatureEntry, FeatureMeta, FlagState, SegmentState, Slot};
pub use upstream::{UpstreamDocument, flagsmith_value};

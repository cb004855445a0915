//! The one seam to Flagsmith's engine (`flagsmith-flag-engine`): an environment document is read
//! and checked once ([`document`]), prepared with the web-hook changes on top ([`prepared`]), and
//! every request evaluates the prepared environment.
//!
//! What the engine crate leaves to this module (measured: see `notes/issue9.md`): the
//! environment- and project-level `hide_disabled_flags`, multivariate options in id order,
//! `variant: "control"` when an override supplies a multivariate feature's value, the hashing key
//! when `use_identity_composite_key_for_hashing` is false, identity overrides (kept apart, by
//! identifier), and never letting a malformed document reach the engine at request time.

pub(crate) mod compiled;
pub(crate) mod conditions;
pub mod document;
pub mod outcome;
pub mod prepared;

pub use document::{EvaluationDocument, EvaluationSettings, IdentityEntry, IdentityOverride};
pub use outcome::{FlagOutcome, OutcomeValue};
pub use prepared::{
    Evaluation, FeatureOverlay, IDENTITY_OVERRIDE_REASON, IdentityInput, IdentityOverlay,
    OverlayState, PreparedEnvironment, ResolvedFlag, value_json,
};

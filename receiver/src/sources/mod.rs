//! Where documents come from, besides web hooks: [`flagpost`], an environment's full document
//! from flagpost's change API (bootstrap, and reload on demand).

pub mod flagpost;

pub use self::flagpost::{
    DocumentClient, FlagpostDocument, parse_document, parse_flagpost_document,
};

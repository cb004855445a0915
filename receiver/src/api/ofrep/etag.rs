//! The bulk answer's `ETag`, derived from what the answer is made of instead of its bytes, so that
//! `If-None-Match` is answered 304 before anything is evaluated or rendered.
//!
//! The answer is a function of the environment's content and of the context: the content is
//! named by the environment's id, its revision (moved by the writer in the very batch that
//! changes anything of it, and stored with it), the cache file's id (revisions count within one
//! file: two receivers behind one balancer, or one whose file was deleted, may hold different
//! contents at the same revision) and its `updated_at`; the context by its
//! `targetingKey` and its traits, in name order. A tag therefore changes whenever the answer
//! can, and stays across restarts while nothing changes; two contexts that read the same flags
//! (traits no segment reads) get different tags for the same answer, which costs a 200.

use http::HeaderValue;

use crate::documents::EnvCache;
use crate::evaluation::IdentityInput;
use flagsmith_flag_engine::types::FlagsmithValueType;

/// Changes with the receiver's version: a new version may word an answer otherwise.
const FORMAT: &[u8] = concat!("ofrep-bulk/", env!("CARGO_PKG_VERSION")).as_bytes();

/// The tag of the bulk answer of environment `env_id` (`env`: its content, if it has any) for
/// `identity` (`None`: the environment's own flags), in the cache file `file_id`.
pub fn bulk_etag(
    file_id: u64,
    env_id: u64,
    env: Option<&EnvCache>,
    identity: Option<&IdentityInput>,
) -> HeaderValue {
    let mut hash = Fnv128::default();
    hash.update(FORMAT);
    hash.update(&file_id.to_le_bytes());
    hash.update(&env_id.to_le_bytes());
    match env {
        Some(env) => {
            hash.update(&[1]);
            hash.update(&env.revision.to_le_bytes());
            hash.update(&env.updated_at_micros.to_le_bytes());
        }
        None => hash.update(&[0]),
    }
    if let Some(identity) = identity {
        hash.field(identity.identifier.as_bytes());
        let mut traits: Vec<_> = identity.traits.iter().collect();
        traits.sort_unstable_by_key(|(name, _)| name.as_str());
        for (name, value) in traits {
            hash.field(name.as_bytes());
            hash.update(&[type_tag(&value.value_type)]);
            hash.field(value.value.as_bytes());
        }
    }
    let mut tag = [b'"'; 34];
    let digest = hash.0.to_be_bytes();
    hex::encode_to_slice(digest, &mut tag[1..33]).expect("16 bytes are 32 hex digits");
    HeaderValue::from_bytes(&tag).expect("hex is a valid header value")
}

/// FNV-1a, 128 bits: a fixed, published function (the tag stays across restarts and builds),
/// and a few instructions per byte of the ~100 bytes hashed. Not cryptographic: a tag guards
/// nothing, it only lets a client keep what it was given.
struct Fnv128(u128);

impl Default for Fnv128 {
    fn default() -> Self {
        Fnv128(0x6c62_272e_07bb_0142_62b8_2175_6295_c58d)
    }
}

impl Fnv128 {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    fn update(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u128::from(*byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    /// A variable-length field, its length first, so that no two sequences of fields hash
    /// the same bytes.
    fn field(&mut self, bytes: &[u8]) {
        self.update(&(bytes.len() as u64).to_le_bytes());
        self.update(bytes);
    }
}

fn type_tag(kind: &FlagsmithValueType) -> u8 {
    match kind {
        FlagsmithValueType::None => 0,
        FlagsmithValueType::String => 1,
        FlagsmithValueType::Bool => 2,
        FlagsmithValueType::Integer => 3,
        FlagsmithValueType::Float => 4,
    }
}

/// Whether `If-None-Match` names `etag` (or is `*`); weak tags compare as strong ones, as
/// `If-None-Match` asks.
pub fn matches(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(tags) = if_none_match.to_str() else {
        return false;
    };
    let etag = etag.to_str().unwrap_or_default();
    tags.split(',').map(str::trim).any(|tag| {
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || tag == etag
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use flagsmith_flag_engine::types::FlagsmithValue;

    use super::*;

    /// A cache file's id.
    const FILE: u64 = 0xfeed;

    fn identity(identifier: &str, traits: &[(&str, FlagsmithValueType, &str)]) -> IdentityInput {
        let traits: HashMap<String, FlagsmithValue> = traits
            .iter()
            .map(|(name, value_type, value)| {
                let value = FlagsmithValue {
                    value: (*value).to_owned(),
                    value_type: value_type.clone(),
                };
                ((*name).to_owned(), value)
            })
            .collect();
        IdentityInput {
            identifier: identifier.to_owned(),
            key: None,
            traits,
        }
    }

    #[test]
    fn the_tag_follows_the_file_the_environments_revision_and_the_context() {
        use FlagsmithValueType::{Integer, String};
        let mut env = EnvCache::default();
        env.revision = 4;
        env.updated_at_micros = 1_000;
        let anna = identity("anna", &[("plan", String, "pro"), ("n", Integer, "3")]);
        let tag = bulk_etag(FILE, 1, Some(&env), Some(&anna));
        assert_eq!(tag.len(), 34);
        // The same inputs, whatever order the traits were read in: the same tag.
        let again = identity("anna", &[("n", Integer, "3"), ("plan", String, "pro")]);
        assert_eq!(bulk_etag(FILE, 1, Some(&env), Some(&again)), tag);
        let others = [
            bulk_etag(FILE + 1, 1, Some(&env), Some(&anna)),
            bulk_etag(FILE, 2, Some(&env), Some(&anna)),
            bulk_etag(FILE, 1, None, Some(&anna)),
            bulk_etag(FILE, 1, Some(&env), None),
            bulk_etag(FILE, 1, Some(&env), Some(&identity("ben", &[]))),
            bulk_etag(
                FILE,
                1,
                Some(&env),
                Some(&identity("anna", &[("plan", String, "pro")])),
            ),
            bulk_etag(
                FILE,
                1,
                Some(&env),
                Some(&identity(
                    "anna",
                    &[("plan", String, "3"), ("n", Integer, "pro")],
                )),
            ),
            bulk_etag(
                FILE,
                1,
                Some(&env),
                Some(&identity(
                    "anna",
                    &[("plan", String, "pro"), ("n", String, "3")],
                )),
            ),
        ];
        for other in &others {
            assert_ne!(*other, tag);
        }
        env.revision += 1;
        assert_ne!(bulk_etag(FILE, 1, Some(&env), Some(&anna)), tag);
        env.revision -= 1;
        env.updated_at_micros += 1;
        assert_ne!(bulk_etag(FILE, 1, Some(&env), Some(&anna)), tag);
    }

    #[test]
    fn the_hash_is_fnv_1a_128() {
        // The published test vectors of FNV-1a, 128 bits.
        let of = |text: &[u8]| {
            let mut hash = Fnv128::default();
            hash.update(text);
            hash.0
        };
        assert_eq!(of(b""), 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d);
        assert_eq!(of(b"a"), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
    }

    #[test]
    fn if_none_match_names_the_tag_or_any() {
        let etag = bulk_etag(FILE, 1, None, None);
        let header = |text: String| HeaderValue::try_from(text).unwrap();
        let tag = etag.to_str().unwrap().to_owned();
        assert!(matches(&header(tag.clone()), &etag));
        assert!(matches(&header(format!("\"x\", W/{tag}")), &etag));
        assert!(matches(&header("*".into()), &etag));
        assert!(!matches(&header("\"x\"".into()), &etag));
    }
}

//! A check, in one pass and without building a JSON value, that no object of a body has the same
//! key twice.
//!
//! `serde_json` keeps the last of duplicate keys, so a signed body could say one thing to a reader
//! that keeps the first and another to this one. The body is then read straight into its types.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess};

/// Checks that `body` is one JSON value in which no object has a duplicate key, at any depth.
pub(crate) fn check(body: &[u8]) -> Result<(), serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    UniqueKeys::deserialize(&mut deserializer)?;
    deserializer.end()
}

/// Any JSON value, checked as it is read and then forgotten.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Visitor).map(|()| UniqueKeys)
    }
}

/// An object's key, borrowed from the body unless it had escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Not `Cow`'s own `Deserialize`, which always copies.
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> de::Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(key)))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(key.to_owned())))
    }
}

struct Visitor;

impl<'de> de::Visitor<'de> for Visitor {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value without duplicate object keys")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        UniqueKeys::deserialize(deserializer).map(|_| ())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            map.next_value::<UniqueKeys>()?;
            keys.push(key);
        }
        // Sorted, so that an object of many keys costs n log n, not n squared.
        keys.sort_unstable();
        match keys.windows(2).find(|pair| pair[0] == pair[1]) {
            Some(pair) => Err(de::Error::custom(format_args!(
                "duplicate key {:?} in an object",
                pair[0]
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_key_at_any_depth_is_refused() {
        for body in [
            r#"{"a": 1, "a": 2}"#,
            r#"{"a": {"b": [{"c": 1, "c": 1}]}}"#,
            r#"{"a\u0062": 1, "ab": 2}"#,
        ] {
            let err = check(body.as_bytes()).err().unwrap();
            assert!(err.to_string().contains("duplicate key"), "{body}: {err}");
        }
    }

    #[test]
    fn any_json_without_duplicates_passes_and_anything_else_is_refused() {
        let body = r#"{"a": [1, -2, 1.5, "x\n", true, null, {"b": {}}], "c": {"a": 1}}"#;
        check(body.as_bytes()).unwrap();
        for bad in [r#"{"a": 1"#, r#"{"a": 1} 2"#, "", r#"{"a": tru}"#] {
            assert!(check(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}

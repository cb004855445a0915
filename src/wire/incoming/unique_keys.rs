//! A check, in one pass over the bytes and without building anything, that no object of a body
//! has the same key twice.
//!
//! `serde_json` keeps the last of duplicate keys, so a signed body could say one thing to a reader
//! that keeps the first and another to this one. The body is then read straight into its types,
//! and that read refuses whatever is not JSON: so this pass follows only what it needs (strings,
//! and where objects and arrays open and close), and promises an exact answer for valid JSON
//! alone. A body that is not JSON is refused either way.

use std::borrow::Cow;

/// Why a body was refused: an object in it has `key` twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("duplicate key {key:?} in an object")]
pub struct DuplicateKey {
    pub key: String,
}

/// Checks that no object in `body` has a duplicate key, at any depth. Keys are compared as the
/// text they stand for, so `"a\u0062"` and `"ab"` are the same key.
pub(crate) fn check(body: &[u8]) -> Result<(), DuplicateKey> {
    // Sized for a web hook's nesting and keys, so that a usual body grows neither.
    let mut open: Vec<Open> = Vec::with_capacity(8);
    // The keys of every object still open, the innermost last.
    let mut keys: Vec<Cow<'_, [u8]>> = Vec::with_capacity(32);
    let mut key_next = false;
    let mut at = 0;
    while let Some(&byte) = body.get(at) {
        at += 1;
        match byte {
            b'"' => {
                let (end, escaped) = string_end(body, at);
                if key_next {
                    keys.push(key_text(body, at - 1, end, escaped));
                    key_next = false;
                }
                at = end + 1;
            }
            b'{' => {
                open.push(Open::Object {
                    first_key: keys.len(),
                });
                key_next = true;
            }
            b'[' => {
                open.push(Open::Array);
                key_next = false;
            }
            b'}' | b']' => {
                if let Some(Open::Object { first_key }) = open.pop() {
                    unique(&mut keys[first_key..])?;
                    keys.truncate(first_key);
                }
                key_next = false;
            }
            b',' => key_next = matches!(open.last(), Some(Open::Object { .. })),
            _ => {}
        }
    }
    Ok(())
}

/// An object or array not yet closed.
enum Open {
    /// Its keys are `keys[first_key..]`.
    Object {
        first_key: usize,
    },
    Array,
}

/// Where the string whose text starts at `from` ends (its closing quote, or the body's end), and
/// whether it has escapes.
fn string_end(body: &[u8], mut from: usize) -> (usize, bool) {
    let mut escaped = false;
    while let Some(found) = memchr::memchr2(b'"', b'\\', &body[from.min(body.len())..]) {
        let at = from + found;
        if body[at] == b'"' {
            return (at, escaped);
        }
        escaped = true;
        from = at + 2; // the escaped byte, whatever it is, does not end the string
    }
    (body.len(), escaped)
}

/// A key's text: its bytes as they are, or, with escapes, what they stand for.
fn key_text(body: &[u8], quote: usize, end: usize, escaped: bool) -> Cow<'_, [u8]> {
    let raw = &body[quote + 1..end.min(body.len())];
    if !escaped {
        return Cow::Borrowed(raw);
    }
    match body.get(quote..=end).map(serde_json::from_slice::<String>) {
        Some(Ok(text)) => Cow::Owned(text.into_bytes()),
        // Not a JSON string: the typed read refuses the body.
        _ => Cow::Borrowed(raw),
    }
}

/// Up to this many keys, an object's keys are compared pairwise: fewer comparisons than a sort
/// takes to set up, for the few keys of a web hook's objects.
const PAIRWISE_UP_TO: usize = 12;

/// Refuses an object's keys when two are the same. Sorted when there are many, so that an object
/// of many keys costs n log n, not n squared.
fn unique(keys: &mut [Cow<'_, [u8]>]) -> Result<(), DuplicateKey> {
    let duplicate = if keys.len() <= PAIRWISE_UP_TO {
        (1..keys.len()).find_map(|i| keys[..i].iter().find(|earlier| **earlier == keys[i]))
    } else {
        keys.sort_unstable();
        keys.windows(2)
            .find(|pair| pair[0] == pair[1])
            .map(|pair| &pair[0])
    };
    match duplicate {
        Some(key) => Err(DuplicateKey {
            key: String::from_utf8_lossy(key).into_owned(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_duplicate_key_at_any_depth_is_refused() {
        for (body, key) in [
            (r#"{"a": 1, "a": 2}"#, "a"),
            (r#"{"a": {"b": [{"c": 1, "c": 1}]}}"#, "c"),
            (r#"{"a\u0062": 1, "ab": 2}"#, "ab"),
            (r#"[1, {"x": "y", "z": {}, "x": null}]"#, "x"),
            (r#"{"q\"": 1, "q\u0022": 2}"#, "q\""),
        ] {
            let err = check(body.as_bytes()).unwrap_err();
            assert_eq!(err.key, key, "{body}");
            assert!(err.to_string().starts_with("duplicate key"), "{err}");
        }
    }

    #[test]
    fn objects_of_many_keys_are_checked_as_surely_as_small_ones() {
        let keys: Vec<String> = (0..3 * PAIRWISE_UP_TO)
            .map(|n| format!("\"k{n}\": {n}"))
            .collect();
        let body = format!("{{{}}}", keys.join(", "));
        assert_eq!(check(body.as_bytes()), Ok(()));
        let with_twice = format!("{{{}, \"k7\": 0}}", keys.join(", "));
        assert_eq!(check(with_twice.as_bytes()).unwrap_err().key, "k7");
    }

    #[test]
    fn the_same_key_in_different_objects_and_values_like_keys_pass() {
        for body in [
            r#"{"a": {"a": {"a": 1}}, "b": [{"a": 1}, {"a": 2}]}"#,
            r#"{"a": "a", "b": ["a", "a"], "c": {"d": "b"}}"#,
            r#"{"a": "x,\"a\":{", "b": "\\", "c": "}"}"#,
            r#"{"a": [1, -2, 1.5e3, true, null, "x\n"], "c": {"a": 1}}"#,
            r#"{}"#,
            "[]",
            "",
        ] {
            assert_eq!(check(body.as_bytes()), Ok(()), "{body}");
        }
    }

    /// A JSON value built for the pass: keys from a small alphabet (so that objects often have
    /// one twice), each written plainly or all in `\u` escapes.
    #[derive(Debug, Clone)]
    enum Json {
        Leaf(&'static str),
        Array(Vec<Json>),
        Object(Vec<(String, bool, Json)>),
    }

    fn json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just("1"),
            Just("-2.5e3"),
            Just("null"),
            Just(r#""a""#),
            Just(r#""x,\"a\":{}[""#),
        ];
        leaf.prop_map(Json::Leaf).prop_recursive(4, 40, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Json::Array),
                vec(("[ab\"é]{1,2}", any::<bool>(), inner), 0..5).prop_map(Json::Object),
            ]
        })
    }

    fn write(json: &Json, out: &mut String) {
        match json {
            Json::Leaf(text) => out.push_str(text),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    out.push_str(if i == 0 { "" } else { ", " });
                    write(item, out);
                }
                out.push(']');
            }
            Json::Object(entries) => {
                out.push('{');
                for (i, (key, escaped, value)) in entries.iter().enumerate() {
                    out.push_str(if i == 0 { "\"" } else { ", \"" });
                    for c in key.chars() {
                        match (escaped, c) {
                            (true, c) => out.push_str(&format!("\\u{:04x}", c as u32)),
                            (false, '"') => out.push_str("\\\""),
                            (false, c) => out.push(c),
                        }
                    }
                    out.push_str("\": ");
                    write(value, out);
                }
                out.push('}');
            }
        }
    }

    fn has_duplicate(json: &Json) -> bool {
        match json {
            Json::Leaf(_) => false,
            Json::Array(items) => items.iter().any(has_duplicate),
            Json::Object(entries) => {
                let keys: std::collections::HashSet<&str> =
                    entries.iter().map(|(key, ..)| key.as_str()).collect();
                keys.len() < entries.len() || entries.iter().any(|(.., v)| has_duplicate(v))
            }
        }
    }

    proptest! {
        #[test]
        fn the_pass_refuses_exactly_the_bodies_with_a_key_twice_in_an_object(json in json()) {
            let mut body = String::new();
            write(&json, &mut body);
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            prop_assert!(!value.is_null() || body == "null");
            prop_assert_eq!(check(body.as_bytes()).is_err(), has_duplicate(&json), "{}", body);
        }
    }

    #[test]
    fn a_body_that_is_not_json_ends_the_pass_without_a_panic() {
        for body in [
            r#"{"a": 1"#,
            r#"{"a"#,
            r#"{"a\"#,
            "}}]]",
            r#"{"\u12"#,
            "\"\\",
        ] {
            let _ = check(body.as_bytes());
        }
    }
}

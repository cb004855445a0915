//! The identifier Flagsmith gives an identity sent without one (`identify(null, traits, true)` in
//! its JavaScript client): such an identity is transient, and its identifier is the SHA-256 (hex)
//! of its traits, so that the same traits always hash into the same multivariate and
//! percentage-split buckets. With no traits at all, a random one (a UUIDv4's 32 hex digits).
//!
//! Flagsmith's API (`get_transient_identifier`, Python) joins `{trait_key}{trait_value}` over the
//! traits sorted by key, skipping null values, with each value as Python writes it: `True`,
//! `34`, `55.5`, `1e+16`. The same text gives the same hash, so the same buckets.

use std::hash::{BuildHasher, RandomState};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::sdk::Trait;

/// The identifier of a transient identity with these traits.
pub fn identifier(traits: &[Trait]) -> String {
    if traits.is_empty() {
        return random_identifier();
    }
    let mut sorted: Vec<&Trait> = traits.iter().collect();
    // Stable, as Python's `sorted`; byte order of UTF-8 is code point order.
    sorted.sort_by(|a, b| a.trait_key.cmp(&b.trait_key));
    let mut text = String::new();
    for t in sorted.into_iter().filter(|t| !t.trait_value.is_null()) {
        text.push_str(&t.trait_key);
        text.push_str(&python_text(&t.trait_value));
    }
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// 32 hex digits that no other request gets.
fn random_identifier() -> String {
    let hasher = RandomState::new();
    format!(
        "{:016x}{:016x}",
        hasher.hash_one(std::time::SystemTime::now()),
        hasher.hash_one(std::thread::current().id())
    )
}

/// A JSON scalar as Python's `f"{value}"` writes what `json.loads` made of it.
fn python_text(value: &Value) -> String {
    match value {
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::String(text) => text.clone(),
        Value::Number(number) if number.is_f64() => {
            python_float(number.as_f64().unwrap_or_default())
        }
        Value::Number(number) => number.to_string(),
        other => other.to_string(),
    }
}

/// Python's `repr` of a float: the shortest digits that read back the same, positional from
/// 1e-4 up to 1e16, else `d.ddde+XX`; a whole number keeps `.0`.
fn python_float(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "nan"
        } else if x > 0.0 {
            "inf"
        } else {
            "-inf"
        }
        .to_owned();
    }
    // Rust's `{:e}` writes the same shortest digits: `5.55e1`, `-1e-7`.
    let scientific = format!("{x:e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e}'s exponent is a number");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(unsigned) => ("-", unsigned),
        None => ("", mantissa),
    };
    let digits = mantissa.replace('.', "");
    if !(-4..16).contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        return format!(
            "{sign}{first}{dot}{rest}e{exponent_sign}{:02}",
            exponent.abs()
        );
    }
    if exponent < 0 {
        let zeros = "0".repeat((-exponent - 1) as usize);
        return format!("{sign}0.{zeros}{digits}");
    }
    let whole = exponent as usize + 1;
    if digits.len() <= whole {
        format!("{sign}{digits}{}.0", "0".repeat(whole - digits.len()))
    } else {
        format!("{sign}{}.{}", &digits[..whole], &digits[whole..])
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn floats_read_as_python_writes_them() {
        let cases = [
            (55.5, "55.5"),
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (123456.789, "123456.789"),
            (-2.5e-7, "-2.5e-07"),
        ];
        for (x, python) in cases {
            assert_eq!(python_float(x), python, "{x}");
        }
    }

    fn traits(list: Value) -> Vec<Trait> {
        serde_json::from_value(list).unwrap()
    }

    #[test]
    fn the_same_traits_give_the_same_identifier_in_any_order() {
        let one = traits(json!([
            {"trait_key": "plan", "trait_value": "pro"},
            {"trait_key": "age", "trait_value": 34},
            {"trait_key": "gone", "trait_value": null},
            {"trait_key": "score", "trait_value": 55.5},
            {"trait_key": "verified", "trait_value": true},
        ]));
        let mut other = one.clone();
        other.reverse();
        assert_eq!(identifier(&one), identifier(&other));
        // sha256("age34planproscore55.5verifiedTrue"), as Flagsmith computes it.
        let text = "age34planproscore55.5verifiedTrue";
        assert_eq!(identifier(&one), hex::encode(Sha256::digest(text)));
        assert_ne!(identifier(&[]), identifier(&[]));
        assert_eq!(identifier(&[]).len(), 32);
    }
}

//! The range of integers flagpost takes: a signed 64-bit integer, −9223372036854775808 to
//! 9223372036854775807, in every field and every flag value (Flagsmith keeps its ids and integer
//! values in 64 bits or fewer, and a JavaScript client reads anything wider wrongly).
//!
//! serde_json reads an integer literal too wide for 64 bits as a float, losing digits, and the
//! float it makes cannot be told from one written with a fraction. So a body's integer literals
//! are checked on the bytes, before it is read: one pass, no allocation.

/// The smallest and largest integer taken, as written in errors and the README.
pub const INTEGER_RANGE: &str = "-9223372036854775808 to 9223372036854775807";

/// The first integer literal of a JSON text (outside strings) that is not a signed 64-bit
/// integer, as written. Numbers with a fraction or an exponent are floats and not checked here;
/// the text need not be valid JSON (the parser judges that after).
pub fn first_integer_out_of_range(json: &[u8]) -> Option<&str> {
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => i = skip_string(json, i + 1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < json.len() && json[i].is_ascii_digit() {
                    i += 1;
                }
                let is_float = matches!(json.get(i), Some(b'.' | b'e' | b'E'));
                let literal = std::str::from_utf8(&json[start..i]).unwrap_or("");
                if !is_float && literal != "-" && literal.parse::<i64>().is_err() {
                    return Some(literal);
                }
                // Step over the fraction and exponent, whose digits are no integer of their own.
                while i < json.len()
                    && matches!(json[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The index just past the string whose content starts at `i`.
fn skip_string(json: &[u8], mut i: usize) -> usize {
    while i < json.len() {
        match json[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_wider_than_i64_are_found_outside_strings_only() {
        for (json, found) in [
            (
                r#"{"value": 18446744073709551615}"#,
                Some("18446744073709551615"),
            ),
            (
                r#"{"a": [1, -2, {"b": 12345678901234567890123}]}"#,
                Some("12345678901234567890123"),
            ),
            (
                r#"{"value": -9223372036854775809}"#,
                Some("-9223372036854775809"),
            ),
            (
                r#"{"value": 9223372036854775807, "v": -9223372036854775808}"#,
                None,
            ),
            (r#"{"value": "18446744073709551615"}"#, None),
            (r#"{"v\"99999999999999999999": 1}"#, None),
            (r#"{"value": 1.8446744073709551615e19, "w": 1e400}"#, None),
            (r#"{"value": 123456789012345678901.5}"#, None),
        ] {
            assert_eq!(first_integer_out_of_range(json.as_bytes()), found, "{json}");
        }
    }
}

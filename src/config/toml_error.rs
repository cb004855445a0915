//! A configuration file's TOML error as both programs report it: line, column, the key path, and
//! what kind of problem it is. Never a value from the file, and never the source line (which
//! toml's own `Display` quotes): any of them could be a secret, and this text goes to logs.
//!
//! toml's messages quote what they read in several ways (serde's `string "…"` escapes quotes,
//! an integer is quoted in backticks, a parse error names the token), so no blanking of quoted
//! parts is safe. Only text from a fixed set is kept: serde's and toml's descriptions of what is
//! wrong, what was expected (taken from the program's own types), and key names.

/// `line L, column C: <what is wrong> (at key.path)`, from `error` on `text`.
pub fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let mut description = String::new();
    if let Some(span) = error.span() {
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        description.push_str(&format!("line {line}, column {column}: "));
    }
    let message = error.message();
    let mut keys = key_path(error);
    // An unknown field is the key itself, at the span: shown when it is a bare key.
    let unknown_key = message
        .starts_with("unknown field")
        .then(|| error.span().and_then(|span| text.get(span)))
        .flatten()
        .filter(|key| is_bare_key(key));
    description.push_str(&problem(message, unknown_key));
    keys.extend(unknown_key.map(str::to_owned));
    if !keys.is_empty() {
        description.push_str(&format!(" (at {})", keys.join(".")));
    }
    description
}

/// What is wrong, without any value the message quotes; `key` names an unknown field.
fn problem(message: &str, key: Option<&str>) -> String {
    // serde's data errors: "<kind>: <what was read>, expected <what the type wants>". The
    // expectation comes from flagpost's own types; what was read is left out.
    for kind in [
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown variant",
        "unknown field",
    ] {
        if message.starts_with(kind) {
            let expected = message
                .rsplit_once(", expected ")
                .map(|(_, expected)| expected.trim_end())
                .filter(|expected| expected.chars().all(is_plain))
                .map(|expected| format!(", expected {expected}"))
                .unwrap_or_default();
            let key = key.map(|key| format!(" `{key}`")).unwrap_or_default();
            return format!("{kind}{key}{expected}");
        }
    }
    // Otherwise (missing and duplicate fields, toml's syntax errors, other messages): the words
    // up to the first quote or mark; a field name in backticks is the program's own.
    let words: String = message
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-'))
        .collect();
    let words = words.trim();
    if let Some(field) = ["missing field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field)
        .filter(|field| is_bare_key(field))
    {
        return format!("{words} `{field}`");
    }
    if words.is_empty() {
        "not valid TOML here".to_owned()
    } else {
        words.to_owned()
    }
}

/// The keys that lead to the value in error, which toml keeps but shows only in its `Display`
/// when it has no input: so the error is shown without its input, and the keys taken from the
/// line it adds (`in \`a.b\``).
fn key_path(error: &toml::de::Error) -> Vec<String> {
    let mut bare = error.clone();
    bare.set_input(None);
    let shown = bare.to_string();
    shown
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("in `")?.strip_suffix('`'))
        .map(|path| {
            path.split('.')
                .map(|key| {
                    if is_bare_key(key) {
                        key.to_owned()
                    } else {
                        "…".to_owned()
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A key as TOML writes it without quotes: the only kind shown.
fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// What an expectation from serde or toml is made of: words, backticked names, punctuation.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '-' | '`' | ',' | '.' | ':')
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct File {
        server: Server,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Server {
        token: String,
        port: Option<u16>,
    }

    fn describe(text: &str) -> String {
        describe_toml_error(text, &toml::from_str::<File>(text).unwrap_err())
    }

    #[test]
    fn no_value_from_the_file_is_ever_shown() {
        for text in [
            "[server]\ntoken = 'p@ss\"word-TAIL-SECRET-777'\nport = 'x'\n",
            "[server]\ntoken = 12345777\n",
            "[server]\ntoken = \"SECRET-777\"\nport = 70000\n",
            "[server]\ntoken = \"SECRET-777\nport = 1\n",
            "[server]\ntoken = \"SECRET-777\" junk\n",
            "[server]\ntoken = [\"SECRET-777\"]\n",
            "[server]\ntoken = { \"SECRET-777\" = 1 }\n",
            "[server]\ntoken = \"a\"\n\"SECRET-777\" = 1\n",
            "[server]\ntoken = \"a\"\nSECRET-777\n",
        ] {
            let description = describe(text);
            assert!(!description.contains("777"), "{text:?} gave {description}");
            assert!(description.contains("line"), "{text:?} gave {description}");
        }
    }

    #[test]
    fn the_line_column_key_path_and_kind_are_shown() {
        let description = describe("[server]\ntoken = \"t\"\nport = \"x\"\n");
        assert!(
            description.starts_with("line 3, column 8: invalid type"),
            "{description}"
        );
        assert!(description.contains("(at server.port)"), "{description}");
        let description = describe("[server]\ntoken = \"t\"\ntypo = 1\n");
        assert!(
            description.starts_with("line 3, column 1: unknown field"),
            "{description}"
        );
        assert!(description.contains("`typo`"), "{description}");
        let description = describe("[server]\nport = 1\n");
        assert!(
            description.contains("missing field `token`"),
            "{description}"
        );
    }
}

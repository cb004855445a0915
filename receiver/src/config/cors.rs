//! `[cors]`: which web origins may read the receiver from a browser. None by default: a page on
//! another origin is refused until its origin is listed here.

use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsFile {
    /// `scheme://host[:port]` as a browser sends it in `Origin`, or `"*"` for any origin.
    pub allowed_origins: Vec<String>,
}

/// The origins allowed, normalised the way browsers write `Origin` (lowercase, no default port).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins {
    any: bool,
    listed: Vec<String>,
}

impl AllowedOrigins {
    /// Whether a request carrying `Origin: origin` may be answered.
    pub fn allows(&self, origin: &str) -> bool {
        self.any || normalise(origin).is_some_and(|origin| self.listed.contains(&origin))
    }

    pub fn is_empty(&self) -> bool {
        !self.any && self.listed.is_empty()
    }
}

/// Validates `[cors]`, pushing one message per bad entry.
pub fn check_cors(cors: &CorsFile, errors: &mut Vec<String>) -> AllowedOrigins {
    let mut allowed = AllowedOrigins::default();
    for (i, origin) in cors.allowed_origins.iter().enumerate() {
        if origin == "*" {
            allowed.any = true;
            continue;
        }
        match normalise(origin) {
            Some(origin) => allowed.listed.push(origin),
            None => errors.push(format!(
                "cors.allowed_origins[{i}]: {origin:?} is not an origin: write \
                 scheme://host[:port] with http or https and no path (e.g. \
                 \"https://app.example.com\"), or \"*\" for any origin"
            )),
        }
    }
    allowed
}

/// `scheme://host[:port]` in lowercase, the scheme's default port dropped (browsers omit it);
/// `None` for anything else (a path, user info, another scheme, `null`).
fn normalise(origin: &str) -> Option<String> {
    let origin = origin.to_ascii_lowercase();
    let (scheme, authority) = origin.split_once("://")?;
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let bad = |c: char| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace();
    if authority.is_empty() || authority.contains(bad) {
        return None;
    }
    let host = authority.strip_suffix(default_port).unwrap_or(authority);
    // An IPv6 host is bracketed and holds colons of its own.
    let port = match host.starts_with('[') {
        true => host.split_once(']')?.1,
        false => host.find(':').map_or("", |at| &host[at..]),
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|digits| digits.parse::<u16>().is_ok());
    if host.len() == port.len() || !port_ok {
        return None;
    }
    Some(format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(origins: &[&str]) -> Result<AllowedOrigins, Vec<String>> {
        let file = CorsFile {
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
        };
        let mut errors = Vec::new();
        let allowed = check_cors(&file, &mut errors);
        if errors.is_empty() {
            Ok(allowed)
        } else {
            Err(errors)
        }
    }

    #[test]
    fn origins_match_as_browsers_write_them() {
        let cors = allowed(&["https://App.example.com:443", "http://localhost:3000"]).unwrap();
        assert!(cors.allows("https://app.example.com"));
        assert!(cors.allows("http://localhost:3000"));
        assert!(!cors.allows("http://localhost:3001"));
        assert!(!cors.allows("http://app.example.com"));
        assert!(!cors.allows("null"));
        assert!(AllowedOrigins::default().is_empty());
        assert!(!AllowedOrigins::default().allows("http://localhost:3000"));
        assert!(allowed(&["*"]).unwrap().allows("https://anywhere.test"));
    }

    #[test]
    fn what_is_no_origin_is_refused_with_its_position() {
        let errors = allowed(&[
            "https://ok.test",
            "https://a.test/",
            "ftp://a.test",
            "a.test",
            "",
        ])
        .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors[0].starts_with("cors.allowed_origins[1]"),
            "{errors:?}"
        );
        assert!(allowed(&["http://[::1]:8080", "http://h:99999"]).is_err());
        assert!(allowed(&["http://[::1]:8080"]).is_ok());
    }
}

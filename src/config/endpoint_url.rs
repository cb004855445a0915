//! Credentials written in an endpoint's URL (`https://user:secret@host/hook`).
//!
//! They are taken out of the URL when the configuration loads and sent as an
//! `Authorization: Basic` header instead, which is what the server sees of them anyway. Kept in
//! the URL, they would reach every place that prints one: hyper's connection pool logs its key
//! (scheme and authority, userinfo included) at TRACE, and errors quote URLs. The URL that
//! remains has no userinfo, and [`redact_url`] hides it in any text that shows a URL as written.

use std::fmt;

use base64::Engine;
use http::HeaderValue;
use http::uri::{Authority, Uri};

/// The `Authorization: Basic` value made of a URL's userinfo; `Debug` never shows it.
#[derive(Clone, PartialEq)]
pub struct Credentials(HeaderValue);

impl Credentials {
    pub fn header(&self) -> &HeaderValue {
        &self.0
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// `uri` without its userinfo, and the userinfo as Basic credentials (percent-decoded, as
/// RFC 3986 writes them). A URI without userinfo comes back as it is.
pub fn split_credentials(uri: &Uri) -> (Uri, Option<Credentials>) {
    let Some(authority) = uri.authority() else {
        return (uri.clone(), None);
    };
    let Some((userinfo, host)) = authority.as_str().rsplit_once('@') else {
        return (uri.clone(), None);
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let pair = [
        percent_decode(user),
        b":".to_vec(),
        percent_decode(password),
    ]
    .concat();
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let credentials = HeaderValue::try_from(format!("Basic {encoded}"))
        .ok()
        .map(|mut value| {
            // hyper and http print a sensitive value as "Sensitive" wherever headers are shown.
            value.set_sensitive(true);
            Credentials(value)
        });
    let mut parts = uri.clone().into_parts();
    parts.authority = Authority::try_from(host).ok();
    let bare = Uri::from_parts(parts).unwrap_or_else(|_| uri.clone());
    (bare, credentials)
}

/// `text` with the userinfo of a URL in it replaced by `***`: for messages that show a URL as
/// it was written, which may not even parse.
pub fn redact_url(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &text[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_len].rfind('@') {
        Some(at) => format!(
            "{}***{}",
            &text[..authority_start],
            &text[authority_start + at..]
        ),
        None => text.to_owned(),
    }
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_leaves_the_url_and_becomes_basic_credentials() {
        let uri: Uri = "http://user:p%40ss@127.0.0.1:8080/hook?x=1"
            .parse()
            .unwrap();
        let (bare, credentials) = split_credentials(&uri);
        assert_eq!(bare.to_string(), "http://127.0.0.1:8080/hook?x=1");
        let expected = base64::engine::general_purpose::STANDARD.encode("user:p@ss");
        assert_eq!(
            credentials.as_ref().unwrap().header(),
            &format!("Basic {expected}")
        );
        assert!(!format!("{credentials:?}").contains(&expected));

        let plain: Uri = "https://example.com/hook".parse().unwrap();
        assert_eq!(split_credentials(&plain), (plain.clone(), None));
    }

    #[test]
    fn redaction_hides_userinfo_only() {
        assert_eq!(
            redact_url("http://u:secret@host:1/p@th"),
            "http://***@host:1/p@th"
        );
        assert_eq!(redact_url("ftp://x"), "ftp://x");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}

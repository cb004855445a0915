//! Web hook signatures, both schemes flagpost sends and receivers check.
//!
//! - Flagsmith's `X-Flagsmith-Signature`: lowercase hex HMAC-SHA256 of the exact body bytes, keyed
//!   with the secret's UTF-8 bytes.
//! - Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`): `v1,<base64>` of
//!   HMAC-SHA256 over `{id}.{timestamp}.{body}`, one per active secret, space-separated. A secret
//!   written `whsec_<base64>` is keyed with the decoded bytes, as the reference libraries do; any
//!   other secret with its UTF-8 bytes.
//!
//! Every comparison goes through [`Mac::verify_slice`], which runs in constant time.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const FLAGSMITH_SIGNATURE_HEADER: &str = "x-flagsmith-signature";
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";
/// flagpost's own header: the event's sequence number, so that receivers can order its events exactly.
pub const SEQUENCE_HEADER: &str = "x-flagpost-sequence";

/// A signing secret. Its `Debug` never shows the value, so it cannot leak through a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    text: String,
    standard_key: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("secret is empty")]
    Empty,
    #[error("secret starts with whsec_ but the rest is not valid base64")]
    BadBase64,
}

impl Secret {
    pub fn new(text: impl Into<String>) -> Result<Secret, SecretError> {
        let text = text.into();
        if text.is_empty() {
            return Err(SecretError::Empty);
        }
        let standard_key = match text.strip_prefix("whsec_") {
            Some(encoded) => BASE64.decode(encoded).map_err(|_| SecretError::BadBase64)?,
            None => text.as_bytes().to_vec(),
        };
        if standard_key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Secret { text, standard_key })
    }

    fn flagsmith_mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(self.text.as_bytes()).expect("HMAC takes a key of any length")
    }

    fn standard_mac(&self, id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.standard_key).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `X-Flagsmith-Signature` value for `body`.
    pub fn flagsmith_signature(&self, body: &[u8]) -> String {
        let mut mac = self.flagsmith_mac();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    /// One `v1,<base64>` entry of a `webhook-signature` header.
    pub fn standard_signature(&self, id: &str, timestamp: &str, body: &[u8]) -> String {
        let tag = self
            .standard_mac(id, timestamp, body)
            .finalize()
            .into_bytes();
        format!("v1,{}", BASE64.encode(tag))
    }

    fn verifies_flagsmith(&self, body: &[u8], expected: &[u8]) -> bool {
        let mut mac = self.flagsmith_mac();
        mac.update(body);
        mac.verify_slice(expected).is_ok()
    }

    /// Both keys of this secret, derived once for every signature made with them.
    pub fn prepare(&self) -> SigningKey {
        SigningKey {
            flagsmith: self.flagsmith_mac(),
            standard: HmacSha256::new_from_slice(&self.standard_key)
                .expect("HMAC takes a key of any length"),
        }
    }
}

/// A secret's HMAC states, keyed and ready to take a message. Deriving an HMAC key hashes two
/// blocks; a sender signs every attempt with the same secrets, so it keeps these and clones one
/// per signature instead. Its `Debug` never shows anything derived from the secret.
#[derive(Clone)]
pub struct SigningKey {
    flagsmith: HmacSha256,
    standard: HmacSha256,
}

impl SigningKey {
    /// The `X-Flagsmith-Signature` value for `body`.
    pub fn flagsmith_signature(&self, body: &[u8]) -> String {
        let mut mac = self.flagsmith.clone();
        mac.update(body);
        // Into a buffer of the known size: `hex::encode` collects the digits one char at a time.
        let mut digits = [0u8; 64];
        hex::encode_to_slice(mac.finalize().into_bytes(), &mut digits)
            .expect("32 bytes are 64 hex digits");
        String::from_utf8(digits.to_vec()).expect("hex digits are ASCII")
    }

    /// Appends one `v1,<base64>` entry of a `webhook-signature` header to `header`.
    pub fn push_standard_signature(
        &self,
        header: &mut String,
        id: &str,
        timestamp: &str,
        body: &[u8],
    ) {
        let mut mac = self.standard.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        header.push_str("v1,");
        BASE64.encode_string(mac.finalize().into_bytes(), header);
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// The `webhook-signature` header value from prepared keys: one signature per key,
/// space-separated, built in one string.
pub fn standard_signature_header_with(
    keys: &[SigningKey],
    id: &str,
    timestamp: &str,
    body: &[u8],
) -> String {
    // "v1," and 44 characters of base64 per signature, and a space between them.
    let mut header = String::with_capacity(keys.len() * 48);
    for (n, key) in keys.iter().enumerate() {
        if n > 0 {
            header.push(' ');
        }
        key.push_standard_signature(&mut header, id, timestamp, body);
    }
    header
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The `webhook-signature` header value: one signature per active secret, space-separated.
pub fn standard_signature_header(
    secrets: &[Secret],
    id: &str,
    timestamp: &str,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| secret.standard_signature(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no signature: expected webhook-signature or X-Flagsmith-Signature")]
    Missing,
    #[error("signature does not match any configured secret")]
    Mismatch,
    #[error("webhook-timestamp is not a unix time in seconds")]
    BadTimestamp,
    #[error(
        "webhook-timestamp is {skew_secs} s away from now, over the {tolerance_secs} s tolerance"
    )]
    StaleTimestamp { skew_secs: i64, tolerance_secs: u64 },
    #[error("webhook-signature is present but webhook-id is missing")]
    MissingId,
}

/// Checks an `X-Flagsmith-Signature` header against each secret in turn. Only the documented form
/// verifies: 64 lowercase hex digits, nothing around them (no upper case, no padding).
pub fn verify_flagsmith(secrets: &[Secret], body: &[u8], header: &str) -> Result<(), VerifyError> {
    let documented = header.len() == 64
        && header
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !documented {
        return Err(VerifyError::Mismatch);
    }
    let expected = hex::decode(header).map_err(|_| VerifyError::Mismatch)?;
    if secrets
        .iter()
        .any(|s| s.verifies_flagsmith(body, &expected))
    {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Checks Standard Webhooks headers: the timestamp must be within `tolerance_secs` of `now_unix`,
/// and any `v1` signature in the header must verify under any secret.
pub fn verify_standard(
    secrets: &[Secret],
    id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now_unix: i64,
    tolerance_secs: u64,
) -> Result<(), VerifyError> {
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    let skew = now_unix.saturating_sub(sent);
    if skew.unsigned_abs() > tolerance_secs {
        return Err(VerifyError::StaleTimestamp {
            skew_secs: skew,
            tolerance_secs,
        });
    }
    let candidates: Vec<Vec<u8>> = signature_header
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| BASE64.decode(encoded).ok())
        .collect();
    for secret in secrets {
        let mac = secret.standard_mac(id, timestamp.trim(), body);
        if candidates
            .iter()
            .any(|candidate| mac.clone().verify_slice(candidate).is_ok())
        {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = Secret::new("hunter2").unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn malformed_secrets_are_refused() {
        assert_eq!(Secret::new(""), Err(SecretError::Empty));
        assert_eq!(Secret::new("whsec_!!!"), Err(SecretError::BadBase64));
    }

    #[test]
    fn several_secrets_give_several_signatures_and_either_verifies() {
        let old = Secret::new("old-secret").unwrap();
        let new = Secret::new("whsec_bmV3LXNlY3JldC1ieXRlcw==").unwrap();
        let header = standard_signature_header(&[old.clone(), new.clone()], "evt_1", "100", b"{}");
        assert_eq!(header.split(' ').count(), 2);
        for secret in [old, new] {
            verify_standard(&[secret], "evt_1", "100", &header, b"{}", 100, 300).unwrap();
        }
    }

    #[test]
    fn prepared_keys_sign_exactly_as_the_secret_does() {
        let old = Secret::new("old-secret").unwrap();
        let new = Secret::new("whsec_bmV3LXNlY3JldC1ieXRlcw==").unwrap();
        let keys = [new.prepare(), old.prepare()];
        for _ in 0..2 {
            assert_eq!(
                keys[0].flagsmith_signature(b"{}"),
                new.flagsmith_signature(b"{}")
            );
            assert_eq!(
                standard_signature_header_with(&keys, "evt_1", "100", b"{}"),
                standard_signature_header(&[new.clone(), old.clone()], "evt_1", "100", b"{}")
            );
        }
        assert_eq!(format!("{:?}", keys[0]), "SigningKey(<redacted>)");
    }

    #[test]
    fn only_lowercase_unpadded_hex_verifies_a_flagsmith_signature() {
        let secret = Secret::new("s").unwrap();
        let good = secret.flagsmith_signature(b"x");
        let secrets = std::slice::from_ref(&secret);
        verify_flagsmith(secrets, b"x", &good).unwrap();
        for bad in [
            good.to_uppercase(),
            format!(" {good}"),
            format!("{good} "),
            format!("{good}00"),
        ] {
            assert_eq!(
                verify_flagsmith(secrets, b"x", &bad),
                Err(VerifyError::Mismatch),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_timestamp_outside_the_tolerance_is_stale() {
        let secret = Secret::new("s").unwrap();
        let header = standard_signature_header(std::slice::from_ref(&secret), "i", "100", b"x");
        let err = verify_standard(&[secret], "i", "100", &header, b"x", 500, 300).unwrap_err();
        assert_eq!(
            err,
            VerifyError::StaleTimestamp {
                skew_secs: 400,
                tolerance_secs: 300
            }
        );
    }
}

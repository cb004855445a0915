//! Checking and reading one web hook request: content type, size, signature, body, sequence, request id.
//!
//! Everything here is checked before the writer sees the request, so a refused request never
//! reaches the cache. The checks run on the raw body bytes, never on re-serialised JSON.

use flagpost::signing::{
    FLAGSMITH_SIGNATURE_HEADER, SEQUENCE_HEADER, VerifyError, WEBHOOK_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER, verify_flagsmith, verify_standard,
};
use flagpost::wire::{IncomingEvent, parse_incoming};
use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::Live;
use crate::documents::Change;
use crate::error::WriteError;

/// A request that passed every check.
#[derive(Debug)]
pub struct Accepted {
    /// `webhook-id` when sent, else the SHA-256 of the body: what duplicates are recognised by.
    pub request_id: String,
    /// `None` for event types that are acknowledged and never applied.
    pub change: Option<Change>,
}

/// Checks the content type before the body is read.
pub fn check_content_type(headers: &HeaderMap) -> Result<(), WriteError> {
    let is_json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(WriteError::UnsupportedMediaType)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Which signature a request carried, and so which of its headers can be believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Standard Webhooks: `webhook-id` is covered by the signature.
    Standard,
    /// `X-Flagsmith-Signature` covers the body alone.
    Flagsmith,
    /// Accepted unsigned (`allow_unsigned`).
    Unsigned,
}

/// Verifies the signature: Standard Webhooks when `webhook-signature` is present, else
/// `X-Flagsmith-Signature`, else refused unless unsigned senders are allowed.
pub fn verify(
    headers: &HeaderMap,
    body: &[u8],
    live: &Live,
    now_unix: i64,
) -> Result<Verified, WriteError> {
    if let Some(signature) = header(headers, WEBHOOK_SIGNATURE_HEADER) {
        let id = header(headers, WEBHOOK_ID_HEADER).ok_or(VerifyError::MissingId)?;
        let timestamp =
            header(headers, WEBHOOK_TIMESTAMP_HEADER).ok_or(VerifyError::BadTimestamp)?;
        verify_standard(
            &live.secrets,
            id,
            timestamp,
            signature,
            body,
            now_unix,
            live.timestamp_tolerance_secs,
        )?;
        Ok(Verified::Standard)
    } else if let Some(signature) = header(headers, FLAGSMITH_SIGNATURE_HEADER) {
        verify_flagsmith(&live.secrets, body, signature)?;
        Ok(Verified::Flagsmith)
    } else if live.allow_unsigned {
        Ok(Verified::Unsigned)
    } else {
        Err(VerifyError::Missing.into())
    }
}

/// Reads a verified body into what the writer applies.
///
/// `webhook-id` and flagpost's sequence are believed only from a Standard Webhooks sender, whose
/// signature proves it holds the secret and sent this request within the tolerance. Otherwise
/// anyone holding one old signed body could send it again with a fresh id (past the duplicate
/// check) and a huge sequence (freezing the key against every later event): such a request is
/// recognised by its body's SHA-256 and ordered by its timestamp, as a Flagsmith one is.
pub fn read(headers: &HeaderMap, body: &[u8], verified: Verified) -> Result<Accepted, WriteError> {
    let trusted = |name: &str| header(headers, name).filter(|_| verified == Verified::Standard);
    let seq = match trusted(SEQUENCE_HEADER) {
        None => None,
        Some(value) => Some(
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| WriteError::BadSequence)?,
        ),
    };
    let change = match parse_incoming(body)? {
        IncomingEvent::Flag(event) => Some(Change::from_event(&event, seq)),
        IncomingEvent::NotApplied(_) => None,
    };
    let request_id = match trusted(WEBHOOK_ID_HEADER) {
        Some(id) if !id.is_empty() => format!("id:{id}"),
        _ => format!("sha256:{}", hex::encode(Sha256::digest(body))),
    };
    Ok(Accepted { request_id, change })
}

//! Checking and reading one web hook request: content type, size, signature, body, the signed
//! origin (database and sequence) of a flagpost event, request id.
//!
//! Everything here is checked before the writer sees the request, so a refused request never
//! reaches the cache. The checks run on the raw body bytes, never on re-serialised JSON.

use flagpost::signing::{
    FLAGSMITH_SIGNATURE_HEADER, SEQUENCE_HEADER, VerifyError, WEBHOOK_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER, verify_flagsmith, verify_standard,
};
use flagpost::wire::{EventType, IncomingEvent, parse_incoming};
use http::HeaderMap;

use crate::config::Live;
use crate::documents::Change;
pub use crate::documents::event_id::{EventOrigin, parse_event_id};
use crate::error::WriteError;
use crate::storage::RequestId;

/// A request that passed every check.
#[derive(Debug)]
pub struct Accepted {
    /// `webhook-id` when sent, else the SHA-256 of the body: what duplicates are recognised by.
    pub request_id: RequestId,
    /// `None` for event types that are acknowledged and never applied.
    pub change: Option<Change>,
    /// The environment whose document must be read again from flagpost: the event says
    /// something the change cannot carry (see [`document_wanted`]).
    pub document_wanted: Option<u64>,
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
/// `X-Flagsmith-Signature` (refused when `require_standard_signature` is set: it has no timestamp,
/// so a captured request replays for ever), else refused unless unsigned senders are allowed.
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
        if live.require_standard_signature {
            return Err(WriteError::StandardSignatureRequired);
        }
        verify_flagsmith(&live.secrets, body, signature)?;
        Ok(Verified::Flagsmith)
    } else if live.allow_unsigned {
        Ok(Verified::Unsigned)
    } else {
        Err(VerifyError::Missing.into())
    }
}

/// The origin a receiver orders by: read from `webhook-id`, and only when a Standard Webhooks
/// signature (which covers the id) verified. `x-flagpost-sequence` is never believed on its own:
/// from a Standard sender it must name the id's own sequence, or the request is refused.
fn signed_origin(
    headers: &HeaderMap,
    verified: Verified,
) -> Result<Option<EventOrigin>, WriteError> {
    if verified != Verified::Standard {
        // Nothing signed names an order: no header of such a request decides it.
        return Ok(None);
    }
    let origin = header(headers, WEBHOOK_ID_HEADER).and_then(parse_event_id);
    let Some(claimed) = header(headers, SEQUENCE_HEADER) else {
        return Ok(origin);
    };
    let claimed = claimed
        .trim()
        .parse::<u64>()
        .map_err(|_| WriteError::BadSequence)?;
    match origin {
        Some(origin) if origin.sequence == claimed => Ok(Some(origin)),
        _ => Err(WriteError::UnsignedSequence {
            claimed,
            signed: origin.map(|origin| origin.sequence),
        }),
    }
}

/// Reads a verified body into what the writer applies.
///
/// `webhook-id`, and the origin it names, are believed only from a Standard Webhooks sender,
/// whose signature covers the id and proves it holds the secret and sent this request within the
/// tolerance. Otherwise anyone holding one old signed body could send it again with a fresh id
/// (past the duplicate check) and a huge sequence (freezing the key against every later event):
/// such a request is recognised by its body's SHA-256 and ordered by its timestamp, as a
/// Flagsmith one is.
pub fn read(headers: &HeaderMap, body: &[u8], verified: Verified) -> Result<Accepted, WriteError> {
    let origin = signed_origin(headers, verified)?;
    let incoming = parse_incoming(body)?;
    let document_wanted = document_wanted(&incoming, body);
    let change = match incoming {
        IncomingEvent::Flag(event) => {
            let mut change = Change::from_event(&event, origin.map(|o| o.sequence));
            change.sender = origin.map(|o| o.instance);
            Some(change)
        }
        IncomingEvent::NotApplied(_) => None,
    };
    let signed_id = header(headers, WEBHOOK_ID_HEADER).filter(|_| verified == Verified::Standard);
    let request_id = match signed_id {
        Some(id) if !id.is_empty() => RequestId::webhook_id(id),
        _ => RequestId::body(body),
    };
    Ok(Accepted {
        request_id,
        change,
        document_wanted,
    })
}

/// The environment whose document an event makes stale in a way no change can mend: flagpost's
/// `SEGMENT_UPDATED` and `SEGMENT_DELETED` (a segment's rules live only in the document), and a
/// flag event with multivariate allocations (a change holds a value, not its options). `None`
/// for every other event.
fn document_wanted(incoming: &IncomingEvent, body: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct SegmentEvent {
        data: SegmentData,
    }
    #[derive(serde::Deserialize)]
    struct SegmentData {
        environment: u64,
    }
    match incoming {
        IncomingEvent::Flag(event) => {
            let state = &event.state;
            (!state.multivariate_feature_state_values.is_empty()).then(|| state.environment.id())
        }
        IncomingEvent::NotApplied(EventType::SegmentUpdated | EventType::SegmentDeleted) => {
            serde_json::from_slice::<SegmentEvent>(body)
                .ok()
                .map(|event| event.data.environment)
        }
        IncomingEvent::NotApplied(_) => None,
    }
}

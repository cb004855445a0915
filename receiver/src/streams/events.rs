//! What a change stream sends: the flags as a stream shows them, what changed between two
//! evaluations, and the bytes of each Server-Sent Events frame.
//!
//! Two protocols share the hub:
//! - Flagsmith's realtime service: `event: environment_updated` with `{"updated_at": <unix
//!   seconds, a float>}`, which Flagsmith's SDKs compare with what they hold and refetch on;
//! - the native stream: `event: flags`, `id: <file id>-<revision>` ([`event_id`]), the flags that
//!   changed (or all of them, `"full": true`) and the features that went.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};

use bytes::Bytes;
use flagsmith_flag_engine::types::FlagsmithValue;
use serde::Serialize;

use crate::documents::EnvCache;
use crate::evaluation::{IdentityInput, ResolvedFlag};

/// A comment line: proxies see traffic, clients ignore it.
pub const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// Sent first on every stream: how long a client waits before it reconnects (milliseconds).
pub const RETRY: &[u8] = b"retry: 1000\n\n";

/// `retry:` and then `frame`, as one piece: a stream's opening, written at once.
pub fn with_retry(frame: &[u8]) -> Bytes {
    let mut opening = Vec::with_capacity(RETRY.len() + frame.len());
    opening.extend_from_slice(RETRY);
    opening.extend_from_slice(frame);
    Bytes::from(opening)
}

/// One flag as a stream shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamFlag {
    pub id: u64,
    pub name: String,
    pub enabled: bool,
    pub value: serde_json::Value,
    pub variant: Option<String>,
    pub reason: String,
}

impl StreamFlag {
    fn from_resolved(flag: ResolvedFlag) -> StreamFlag {
        StreamFlag {
            id: flag.feature_id,
            name: flag.name,
            enabled: flag.enabled,
            value: flag.value,
            variant: flag.variant,
            reason: flag.reason,
        }
    }
}

/// Flags by feature id.
pub type FlagTable = BTreeMap<u64, StreamFlag>;

/// Who a stream resolves flags for: the environment's defaults, or one identity with its traits.
#[derive(Debug, Clone, Default)]
pub struct Audience {
    pub identity: Option<IdentityInput>,
}

impl Audience {
    pub fn identity(identifier: String, traits: HashMap<String, FlagsmithValue>) -> Audience {
        Audience {
            identity: Some(IdentityInput {
                identifier,
                key: None,
                traits,
            }),
        }
    }

    /// The flags as Flagsmith's engine resolves them for this audience.
    pub fn evaluate(&self, env: Option<&EnvCache>) -> FlagTable {
        let Some(env) = env else {
            return FlagTable::new();
        };
        let prepared = env.prepared();
        let evaluation = match &self.identity {
            None => prepared.evaluate(None, &[]),
            Some(identity) => {
                let overlay = env.identity_overlay(&identity.identifier);
                prepared.evaluate(Some(identity), &overlay)
            }
        };
        evaluation
            .flags
            .into_iter()
            .map(|flag| (flag.feature_id, StreamFlag::from_resolved(flag)))
            .collect()
    }
}

/// What changed from `old` to `new`: flags new or different, and the ids of those that went.
pub fn diff(old: &FlagTable, new: &FlagTable) -> (Vec<StreamFlag>, Vec<u64>) {
    let changed = new
        .iter()
        .filter(|(id, flag)| old.get(id) != Some(flag))
        .map(|(_, flag)| flag.clone())
        .collect();
    let deleted = old
        .keys()
        .filter(|id| !new.contains_key(id))
        .copied()
        .collect();
    (changed, deleted)
}

/// Unix microseconds as unix seconds with a fraction, as Flagsmith writes `updated_at`.
pub fn seconds(micros: i64) -> String {
    Seconds::new(micros).as_str().to_owned()
}

/// [`seconds`] laid out on the stack: every flag answer carries it in a header, where a
/// formatted string cost a tenth of a whole lookup's instructions.
pub struct Seconds {
    bytes: [u8; 27],
    len: usize,
}

impl Seconds {
    pub fn new(micros: i64) -> Seconds {
        let mut whole = itoa::Buffer::new();
        let whole = whole.format(micros.div_euclid(1_000_000)).as_bytes();
        // At most 20 bytes (sign and 19 digits), a point and 6 digits.
        let mut bytes = [b'0'; 27];
        bytes[..whole.len()].copy_from_slice(whole);
        bytes[whole.len()] = b'.';
        let mut fraction = micros.rem_euclid(1_000_000);
        for digit in bytes[whole.len() + 1..whole.len() + 7].iter_mut().rev() {
            *digit = b'0' + (fraction % 10) as u8;
            fraction /= 10;
        }
        Seconds {
            bytes,
            len: whole.len() + 7,
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("digits, a sign and a point")
    }
}

/// Flagsmith's realtime event for an environment that changed at `updated_at_micros`.
pub fn flagsmith_frame(updated_at_micros: i64) -> Bytes {
    Bytes::from(format!(
        "event: environment_updated\ndata: {{\"updated_at\":{}}}\n\n",
        seconds(updated_at_micros)
    ))
}

#[derive(Serialize)]
struct FlagsEvent<'a> {
    environment: u64,
    revision: u64,
    updated_at: f64,
    /// True when `flags` is every flag (the first event, or a position too old to resume).
    full: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    identifier: Option<&'a str>,
    flags: &'a [StreamFlag],
    deleted: &'a [u64],
}

/// Where a native event stands: its environment, revision and `updated_at`.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    /// The cache file's id ([`crate::storage::Storage::file_id`]): revisions count within it.
    pub file_id: u64,
    pub env: u64,
    pub revision: u64,
    pub updated_at_micros: i64,
}

/// A native `flags` event: `id:` is its position ([`event_id`]), which a client resumes from.
pub fn native_frame(
    at: Position,
    identifier: Option<&str>,
    full: bool,
    flags: &[StreamFlag],
    deleted: &[u64],
) -> Bytes {
    let event = FlagsEvent {
        environment: at.env,
        revision: at.revision,
        updated_at: at.updated_at_micros as f64 / 1e6,
        full,
        identifier,
        flags,
        deleted,
    };
    let mut frame = String::with_capacity(128 + 96 * flags.len());
    let _ = write!(
        frame,
        "id: {}\nevent: flags\ndata: ",
        event_id(at.file_id, at.revision)
    );
    frame.push_str(&serde_json::to_string(&event).expect("stream events serialise"));
    frame.push_str("\n\n");
    Bytes::from(frame)
}

/// A native event's `id:`, the position a client resumes from: the revision, and the file it
/// counts in. Revisions start again in a new file (a reset database) and differ between receivers,
/// so a bare revision could name another state that happens to have the same number.
pub fn event_id(file_id: u64, revision: u64) -> EventId {
    EventId { file_id, revision }
}

/// See [`event_id`]: written straight into a frame, `<file id in 16 hex digits>-<revision>`.
pub struct EventId {
    file_id: u64,
    revision: u64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.file_id, self.revision)
    }
}

/// The revision a `Last-Event-ID` names in the file `file_id`; `None` for an id of another file,
/// or not one of [`event_id`]'s.
pub fn revision_in(last_event_id: &str, file_id: u64) -> Option<u64> {
    let (file, revision) = last_event_id.trim().split_once('-')?;
    let file = u64::from_str_radix(file, 16).ok()?;
    (file == file_id).then(|| revision.parse().ok()).flatten()
}

/// Every flag of `table` as one full-state event.
pub fn full_frame(at: Position, identifier: Option<&str>, table: &FlagTable) -> Bytes {
    let flags: Vec<StreamFlag> = table.values().cloned().collect();
    native_frame(at, identifier, true, &flags, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(id: u64, enabled: bool) -> StreamFlag {
        StreamFlag {
            id,
            name: format!("f{id}"),
            enabled,
            value: serde_json::Value::Null,
            variant: None,
            reason: "DEFAULT".into(),
        }
    }

    #[test]
    fn a_diff_names_what_changed_appeared_and_went() {
        let old: FlagTable = [(1, flag(1, true)), (2, flag(2, true))].into();
        let new: FlagTable = [(1, flag(1, true)), (2, flag(2, false)), (3, flag(3, true))].into();
        let (changed, deleted) = diff(&old, &new);
        assert_eq!(changed, vec![flag(2, false), flag(3, true)]);
        assert!(deleted.is_empty());
        let (changed, deleted) = diff(&new, &old);
        assert_eq!(changed, vec![flag(2, true)]);
        assert_eq!(deleted, vec![3]);
    }

    #[test]
    fn updated_at_is_written_as_seconds_with_microseconds() {
        assert_eq!(seconds(1_733_140_000_000_001), "1733140000.000001");
        assert_eq!(seconds(1_733_140_000_123_456), "1733140000.123456");
        assert_eq!(seconds(0), "0.000000");
        assert_eq!(
            seconds(-1),
            "-1.999999",
            "as div_euclid and rem_euclid split it"
        );
        assert_eq!(seconds(i64::MIN), "-9223372036855.224192");
        assert_eq!(
            &flagsmith_frame(1_500_000)[..],
            b"event: environment_updated\ndata: {\"updated_at\":1.500000}\n\n"
        );
    }

    #[test]
    fn an_event_id_resumes_only_in_the_file_that_wrote_it() {
        let id = event_id(0xfeed, 42).to_string();
        assert_eq!(id, "000000000000feed-42");
        assert_eq!(revision_in(&id, 0xfeed), Some(42));
        assert_eq!(revision_in(&id, 0xbeef), None);
        for other in ["42", "0", "", "feed-", "-42", "zz-42", "000000000000feed-x"] {
            assert_eq!(revision_in(other, 0xfeed), None, "{other:?}");
        }
    }
}

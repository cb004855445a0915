//! Request ids already taken (dedupe), kept in a fixed width so that remembering one is cheap.
//!
//! A flagpost event id is kept as its (database, sequence) pair: one sender's ids then follow each
//! other in the table, and a whole batch of them lands in one page (a string or a hash key would
//! land in a page of its own per request, each a page more to write and sync per commit). Any
//! other signed `webhook-id`, and the body of a request without one, is kept as the first 128 bits
//! of its SHA-256: two different requests are taken for one only if those collide.
//!
//! Each id is in two tables: by id (the duplicate check) and by when it was first taken (so that
//! forgetting those past the retention is one range scan). Both are appends for flagpost's ids.

use std::cell::RefCell;
use std::rc::Rc;

use flagpost::store::redo::{LoggedTable, RedoOps};
use redb::{ReadableTable, TableDefinition};
use sha2::{Digest, Sha256};

use crate::documents::event_id::parse_event_id;
use crate::error::WriteError;
use crate::storage::{LoggedAs, logged};

/// `(kind, id)` -> when it was first taken (unix seconds).
pub(super) const REQUEST_IDS: TableDefinition<(u8, u128), i64> =
    TableDefinition::new("request_ids");
/// `(when, kind, id)`: the same ids by when they were first taken.
pub(super) const REQUEST_IDS_BY_TIME: TableDefinition<(i64, u8, u128), ()> =
    TableDefinition::new("request_ids_by_time");

/// A flagpost event id: `(instance << 64) | sequence`.
const FLAGPOST_EVENT: u8 = 0;
/// Another `webhook-id`: its SHA-256, truncated.
const WEBHOOK_ID: u8 = 1;
/// A request without a signed id: its body's SHA-256, truncated.
const BODY: u8 = 2;

/// What a request is recognised as a duplicate by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId {
    kind: u8,
    id: u128,
}

impl RequestId {
    /// A request by its signed `webhook-id`.
    pub fn webhook_id(id: &str) -> RequestId {
        match parse_event_id(id) {
            Some(origin) => RequestId {
                kind: FLAGPOST_EVENT,
                id: (u128::from(origin.instance) << 64) | u128::from(origin.sequence),
            },
            None => RequestId {
                kind: WEBHOOK_ID,
                id: truncated(&Sha256::digest(id.as_bytes())),
            },
        }
    }

    /// A request without a signed id, by its body.
    pub fn body(body: &[u8]) -> RequestId {
        RequestId::body_digest(&Sha256::digest(body))
    }

    fn body_digest(digest: &[u8]) -> RequestId {
        RequestId {
            kind: BODY,
            id: truncated(digest),
        }
    }

    /// The text form ids were kept in before (schema 1): `id:<webhook-id>`, or
    /// `sha256:<hex of the body's digest>`. Anything else is taken as a `webhook-id`.
    pub fn from_text(text: &str) -> RequestId {
        if let Some(id) = text.strip_prefix("id:") {
            return RequestId::webhook_id(id);
        }
        let digest = text
            .strip_prefix("sha256:")
            .and_then(|hex_digest| hex::decode(hex_digest).ok())
            .filter(|digest| digest.len() == 32);
        match digest {
            Some(digest) => RequestId::body_digest(&digest),
            None => RequestId::webhook_id(text),
        }
    }

    pub(super) fn key(self) -> (u8, u128) {
        (self.kind, self.id)
    }
}

/// `id:<webhook-id>` or `sha256:<hex>`, as request ids were written as text.
impl From<&str> for RequestId {
    fn from(text: &str) -> RequestId {
        RequestId::from_text(text)
    }
}

fn truncated(digest: &[u8]) -> u128 {
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// The two request-id tables of one write transaction.
pub(super) struct RequestIds<'txn> {
    by_id: LoggedTable<'txn, (u8, u128), i64>,
    by_time: LoggedTable<'txn, (i64, u8, u128), ()>,
}

impl<'txn> RequestIds<'txn> {
    pub(super) fn open(
        txn: &'txn redb::WriteTransaction,
        ops: &Rc<RefCell<RedoOps>>,
    ) -> Result<Self, WriteError> {
        Ok(RequestIds {
            by_id: logged(txn, REQUEST_IDS, LoggedAs::RequestIds, ops)?,
            by_time: logged(txn, REQUEST_IDS_BY_TIME, LoggedAs::RequestIdsByTime, ops)?,
        })
    }

    /// Records `id` as taken at `at_unix`; false when it was taken before.
    pub(super) fn remember(&mut self, id: RequestId, at_unix: i64) -> Result<bool, WriteError> {
        let key = id.key();
        // One lookup in the common case (a new id): the insert answers what the id held before.
        let first_seen = self
            .by_id
            .insert(key, at_unix)?
            .map(|previous| previous.value());
        if let Some(first_seen) = first_seen {
            // Keep when it was first taken, which its by-time row records.
            self.by_id.insert(key, first_seen)?;
            return Ok(false);
        }
        self.by_time.insert((at_unix, key.0, key.1), ())?;
        Ok(true)
    }

    /// Forgets ids first taken before `before_unix`; answers how many.
    pub(super) fn forget_before(&mut self, before_unix: i64) -> Result<u64, WriteError> {
        let old: Vec<(i64, u8, u128)> = self
            .by_time
            .range((i64::MIN, 0, 0)..(before_unix, 0, 0))?
            .map(|row| row.map(|(key, _)| key.value()))
            .collect::<Result<_, _>>()?;
        for key in &old {
            self.by_time.remove(key)?;
            self.by_id.remove((key.1, key.2))?;
        }
        Ok(old.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_has_one_id_whichever_form_it_was_kept_in() {
        let event = flagpost::store::events::event_id(0xbe4c, 42);
        let id = RequestId::webhook_id(&event);
        assert_eq!(id.key(), (FLAGPOST_EVENT, (0xbe4c_u128 << 64) | 42));
        assert_eq!(RequestId::from_text(&format!("id:{event}")), id);
        assert_eq!(RequestId::from(format!("id:{event}").as_str()), id);
        assert_eq!(RequestId::webhook_id("msg_1").key().0, WEBHOOK_ID);
        assert_ne!(
            RequestId::webhook_id("msg_1"),
            RequestId::webhook_id("msg_2")
        );
        let body = b"{\"event_type\":\"FLAG_UPDATED\"}";
        let text = format!("sha256:{}", hex::encode(Sha256::digest(body)));
        assert_eq!(RequestId::from_text(&text), RequestId::body(body));
        assert_ne!(RequestId::body(body), RequestId::webhook_id(&text));
    }

    #[test]
    fn one_senders_ids_are_kept_in_order() {
        let id = |sequence| RequestId::webhook_id(&flagpost::store::events::event_id(7, sequence));
        assert!(id(9).key() < id(10).key() && id(10).key() < id(1_000_000).key());
    }
}

//! Which relayed web hooks go on to receivers (issue 8, item 1).
//!
//! A relayed body becomes a flagpost event with the next sequence, and receivers order flagpost's
//! events by sequence: whatever flagpost relays last wins. So flagpost itself must not relay a
//! body that would take a key backwards. Per relay source and cache key (environment, feature,
//! and identity or segment), it decides as receivers decide for Flagsmith's own web hooks
//! (DESIGN.md "Ordering in the receiver", point 3):
//!
//! - a later `timestamp` than the key's last relayed one goes on; an earlier one is superseded:
//!   acknowledged, not relayed (a late retry, or a captured body sent again);
//! - an equal one goes on (Flagsmith gives successive changes one timestamp, so arrival order is
//!   all there is), unless the same bytes were relayed at that timestamp already (sent again: a
//!   duplicate), or it is an update that would undo a deletion with the same timestamp;
//! - a deletion of the environment default always goes on: Flagsmith stamps it with the
//!   feature's creation time, and receivers keep it whatever comes later;
//! - a body with no timestamp (Flagsmith may send `""`) carries no order: it goes on.

use crate::wire::{IdentityRef, IncomingFlagEvent};

/// How many bodies one key remembers at one timestamp (Flagsmith sends a few at most).
const BODIES_KEPT: usize = 32;

/// A key's last relayed timestamp, and the bodies relayed at it (SHA-256 of each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedKey {
    pub timestamp_micros: i64,
    pub deleted: bool,
    pub bodies: Vec<[u8; 32]>,
}

/// What becomes of a relayed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayVerdict {
    /// Relay it; the key's history becomes this (`None`: the body has no key or no timestamp,
    /// and the history stays as it is).
    Relay(Option<RelayedKey>),
    /// Older than what was relayed for its key: acknowledged, not relayed.
    Superseded,
    /// The same bytes were relayed at the key's timestamp already.
    Duplicate,
}

/// What the order of one relayed flag event depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedChange {
    /// `{environment}/{feature}/{scope}`, scope empty for the default, `i:<identity>` or
    /// `s:<segment id>` (an identity or segment override).
    pub key: String,
    timestamp_micros: Option<i64>,
    deleted: bool,
    body: [u8; 32],
}

impl RelayedChange {
    /// `body_sha256` is the SHA-256 of the exact bytes relayed.
    pub fn of(event: &IncomingFlagEvent, body_sha256: [u8; 32]) -> RelayedChange {
        let state = &event.state;
        let scope = if let Some(segment) = &state.feature_segment {
            format!("s:{}", segment.segment.id)
        } else if let Some(identifier) = &state.identity_identifier {
            format!("i:{identifier}")
        } else {
            match &state.identity {
                Some(IdentityRef::Id(id)) => format!("i:{id}"),
                Some(IdentityRef::Uuid(uuid)) => format!("i:{uuid}"),
                None => String::new(),
            }
        };
        RelayedChange {
            key: format!("{}/{}/{scope}", state.environment.id(), state.feature.id),
            timestamp_micros: event
                .timestamp
                .map(|at| (at.unix_timestamp_nanos() / 1_000) as i64),
            deleted: event.deleted,
            body: body_sha256,
        }
    }

    fn deletes_the_default(&self) -> bool {
        self.deleted && self.key.ends_with('/')
    }

    /// Decides against `held`, the key's history (`None`: nothing relayed for it yet).
    pub fn judge(&self, held: Option<&RelayedKey>) -> RelayVerdict {
        let Some(at) = self.timestamp_micros else {
            return RelayVerdict::Relay(None);
        };
        let fresh = || {
            RelayVerdict::Relay(Some(RelayedKey {
                timestamp_micros: at,
                deleted: self.deleted,
                bodies: vec![self.body],
            }))
        };
        let Some(held) = held else {
            return fresh();
        };
        if held.timestamp_micros == at && held.bodies.contains(&self.body) {
            return RelayVerdict::Duplicate;
        }
        if self.deletes_the_default() {
            // Final at receivers whatever its order; the key's history stays the later one.
            return RelayVerdict::Relay(None);
        }
        if at > held.timestamp_micros {
            return fresh();
        }
        if at < held.timestamp_micros || (held.deleted && !self.deleted) {
            return RelayVerdict::Superseded;
        }
        let mut bodies = held.bodies.clone();
        if bodies.len() >= BODIES_KEPT {
            bodies.remove(0);
        }
        bodies.push(self.body);
        RelayVerdict::Relay(Some(RelayedKey {
            timestamp_micros: at,
            deleted: self.deleted,
            bodies,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(at: Option<i64>, deleted: bool, default: bool, body: u8) -> RelayedChange {
        RelayedChange {
            key: if default {
                "1/7/".into()
            } else {
                "1/7/i:u".into()
            },
            timestamp_micros: at,
            deleted,
            body: [body; 32],
        }
    }

    fn history(verdict: RelayVerdict) -> RelayedKey {
        match verdict {
            RelayVerdict::Relay(Some(history)) => history,
            other => panic!("not relayed with a history: {other:?}"),
        }
    }

    #[test]
    fn a_late_body_is_superseded_and_one_sent_again_a_duplicate() {
        let a = change(Some(1), false, true, 1);
        let b = change(Some(2), false, true, 2);
        let held = history(a.judge(None));
        let held = history(b.judge(Some(&held)));
        assert_eq!(a.judge(Some(&held)), RelayVerdict::Superseded);
        assert_eq!(b.judge(Some(&held)), RelayVerdict::Duplicate);
    }

    #[test]
    fn equal_timestamps_go_on_in_arrival_order_but_never_twice() {
        let a = change(Some(5), false, true, 1);
        let b = change(Some(5), false, true, 2);
        let held = history(a.judge(None));
        let held = history(b.judge(Some(&held)));
        assert_eq!(held.bodies.len(), 2);
        // A sent again after B shares B's timestamp: taking it would undo B.
        assert_eq!(a.judge(Some(&held)), RelayVerdict::Duplicate);
    }

    #[test]
    fn a_default_deletion_always_goes_on_and_an_override_deletion_is_not_undone_on_a_tie() {
        let update = change(Some(9), false, true, 1);
        let held = history(update.judge(None));
        let deletion = change(Some(3), true, true, 2);
        assert_eq!(deletion.judge(Some(&held)), RelayVerdict::Relay(None));

        let removed = change(Some(4), true, false, 3);
        let held = history(removed.judge(None));
        let tie = change(Some(4), false, false, 4);
        assert_eq!(tie.judge(Some(&held)), RelayVerdict::Superseded);
        assert!(matches!(
            change(Some(5), false, false, 5).judge(Some(&held)),
            RelayVerdict::Relay(Some(_))
        ));
    }

    #[test]
    fn a_body_without_a_timestamp_goes_on_and_leaves_the_history() {
        let held = history(change(Some(9), false, true, 1).judge(None));
        assert_eq!(
            change(None, false, true, 2).judge(Some(&held)),
            RelayVerdict::Relay(None)
        );
    }
}

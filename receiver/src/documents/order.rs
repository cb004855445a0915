//! Which of two changes to one cache key is newer (DESIGN.md "Ordering in the receiver").

use serde::{Deserialize, Serialize};

/// Where a change stands in its sender's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Order {
    /// flagpost's event sequence (`x-flagpost-sequence`), exact when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The webhook's `timestamp` in unix microseconds; Flagsmith's is not a version, only a hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_micros: Option<i64>,
}

impl Order {
    /// Whether a change at `self` (a deletion when `deleting`) replaces a key last set at `held`
    /// (a tombstone when `held_deleted`).
    pub fn supersedes(self, held: Order, held_deleted: bool, deleting: bool) -> bool {
        if let (Some(incoming), Some(held)) = (self.seq, held.seq) {
            return incoming > held;
        }
        let undoes_deletion = held_deleted && !deleting;
        match (self.ts_micros, held.ts_micros) {
            (Some(incoming), Some(held)) if incoming != held => incoming > held,
            // Equal, or one side told no time: arrival order, but never resurrect on a tie.
            _ => !undoes_deletion,
        }
    }
}

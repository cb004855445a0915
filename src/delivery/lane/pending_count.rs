//! How a lane keeps its endpoint's pending gauge: an enabled lane counts the rows it reads; a
//! disabled one, which reads none, counts what was committed since its last count.

use prometheus_client::metrics::gauge::Gauge;

use crate::delivery::client::now_millis;
use crate::store::Store;
use crate::store::deliveries::{committed_sequence, count_pending};

/// A disabled lane counts new rows at most this often: each count is a read, and a read makes
/// the writer commit the batches it holds (`store::writer::held`).
const COUNT_EVERY_MS: u64 = 200;

/// Rows up to `through` are in the gauge already; the last count was at `at_ms`.
#[derive(Default)]
pub(super) struct PendingCount {
    through: u64,
    at_ms: u64,
}

impl PendingCount {
    /// A row the lane read: counted unless it was before.
    pub(super) fn read(&mut self, sequence: u64, gauge: &Gauge) {
        if sequence > self.through {
            gauge.inc();
            self.through = sequence;
        }
    }

    /// A scan reached the end of the outbox at `sequence`: every row up to it was read.
    pub(super) fn read_through(&mut self, sequence: u64) {
        self.through = self.through.max(sequence);
    }

    /// Whether a disabled lane counts now: rows were committed since its last count, which is
    /// [`COUNT_EVERY_MS`] old.
    pub(super) fn due(&self, committed: u64) -> bool {
        committed > self.through && now_millis() >= self.at_ms + COUNT_EVERY_MS
    }

    /// When a disabled lane with rows to count may count them.
    pub(super) fn next(&self, enabled: bool, committed: u64) -> Option<u64> {
        (!enabled && committed > self.through).then_some(self.at_ms + COUNT_EVERY_MS)
    }

    /// Adds the rows committed since the last count to the gauge. At start this counts the whole
    /// backlog, before the lane sends anything (so that no delivery settles before it is
    /// counted). The recorder takes settled rows off.
    pub(super) async fn count_new_rows(&mut self, store: &Store, endpoint: &str, gauge: &Gauge) {
        let after = self.through;
        self.at_ms = now_millis();
        let name = endpoint.to_owned();
        let counted = store
            .read(move |txn| Ok((count_pending(txn, &name, after)?, committed_sequence(txn)?)))
            .await;
        match counted {
            Ok((count, through)) => {
                gauge.inc_by(i64::try_from(count).unwrap_or(i64::MAX));
                self.through = self.through.max(through);
            }
            // Only the gauge suffers; delivery itself is unaffected.
            Err(error) => {
                tracing::warn!(endpoint, %error, "cannot count pending deliveries");
            }
        }
    }
}

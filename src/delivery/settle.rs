//! How the recorder answers a lane about the outcomes it wrote. The lane and the recorder both
//! depend on this module, and neither on the other's insides.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;

/// The recorder's word on a finished delivery: its row is out of the outbox (`recorded`), or
/// the write failed and the row is still there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settled {
    pub sequence: u64,
    pub recorded: bool,
}

/// A lane as the recorder sees it: where its settle notices go, and its metrics that follow a
/// commit, looked up once per lane rather than by label for every outcome.
pub(crate) struct LaneReturn {
    pub settled: mpsc::UnboundedSender<Settled>,
    pub pending: Gauge,
    pub dead_letters: Counter,
}

impl LaneReturn {
    /// A delivered (or, with `dead`, dead-lettered) row's outcome was written, or failed to be.
    pub fn settle(&self, sequence: u64, recorded: bool, dead: bool) {
        if recorded {
            self.pending.dec();
            if dead {
                self.dead_letters.inc();
            }
        }
        // The lane may have stopped; its rows are read again at the next start.
        let _ = self.settled.send(Settled { sequence, recorded });
    }
}

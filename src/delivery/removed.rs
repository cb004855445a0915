//! Endpoints that left the configuration: their pending deliveries wait, paused, for
//! `delivery.removed_endpoint_grace`, because a removal is more often an edit gone wrong (a file
//! half written by a deploy, a name mistyped) than the end of an endpoint. If the endpoint comes
//! back under the same name within the grace, its lane starts again and sends them in order;
//! after it, or when an operator drops them, they are dead-lettered as "endpoint removed", from
//! where they can be replayed like any dead letter.
//!
//! When an endpoint was removed is kept in memory only: at start, rows of endpoints that are not
//! configured get a whole grace from then. A restart thus keeps rows longer, never shorter.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::recorder::RecorderCommand;
use super::retry::DeadLetterReason;
use crate::store::deliveries::committed_sequence;
use crate::store::{Store, StoreError};

/// Why an operator's drop was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DropError {
    #[error("endpoint {0:?} is configured: remove it from the configuration first")]
    Configured(String),
    #[error("endpoint {0:?} has no deliveries waiting after a removal")]
    NotRemoved(String),
    #[error("delivery has stopped")]
    Stopped,
}

/// One removed endpoint: when its grace ends, and its lane while that finishes what it had in
/// flight (none when it was found unconfigured at start).
struct Removed {
    grace_ends: Instant,
    stopping: Option<JoinHandle<()>>,
}

/// The removed endpoints whose deliveries wait, by name.
pub(crate) struct RemovedEndpoints {
    grace: Duration,
    waiting: HashMap<String, Removed>,
}

impl RemovedEndpoints {
    pub fn new(grace: Duration) -> RemovedEndpoints {
        RemovedEndpoints {
            grace,
            waiting: HashMap::new(),
        }
    }

    /// `name` left the configuration now; `stopping` is its lane, told to stop.
    pub fn insert(&mut self, name: String, stopping: Option<JoinHandle<()>>) {
        tracing::warn!(
            endpoint = %name,
            grace_secs = self.grace.as_secs(),
            "endpoint removed from the configuration: its pending deliveries wait for the grace period, \
             then are dead-lettered"
        );
        let grace_ends = Instant::now() + self.grace;
        self.waiting.insert(
            name,
            Removed {
                grace_ends,
                stopping,
            },
        );
    }

    /// `name` is configured again: its old lane, still finishing, if any. The new lane must start
    /// after it, so that no delivery is in flight twice.
    pub fn take_back(&mut self, name: &str) -> Option<JoinHandle<()>> {
        let removed = self.waiting.remove(name)?;
        tracing::info!(endpoint = %name, "removed endpoint is configured again: its deliveries resume");
        removed.stopping
    }

    /// When the next grace ends, if any does.
    pub fn next_grace_end(&self) -> Option<Instant> {
        self.waiting.values().map(|r| r.grace_ends).min()
    }

    /// Dead-letters the deliveries of every endpoint whose grace has ended.
    pub fn expire(&mut self, store: &Store, recorder: &mpsc::Sender<RecorderCommand>) {
        let now = Instant::now();
        let ended: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, removed)| removed.grace_ends <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in ended {
            self.dead_letter(name, store, recorder, None);
        }
    }

    /// An operator's drop: dead-letters `name`'s deliveries now; `done` hears how many.
    pub fn dead_letter(
        &mut self,
        name: String,
        store: &Store,
        recorder: &mpsc::Sender<RecorderCommand>,
        done: Option<oneshot::Sender<Result<usize, DropError>>>,
    ) {
        let Some(removed) = self.waiting.remove(&name) else {
            if let Some(done) = done {
                let _ = done.send(Err(DropError::NotRemoved(name)));
            }
            return;
        };
        let (store, recorder) = (store.clone(), recorder.clone());
        tokio::spawn(async move {
            if let Some(lane) = removed.stopping {
                let _ = lane.await;
            }
            // Every row of the endpoint is committed by now: it has been unconfigured since
            // the removal, so no later change gave it one.
            let up_to = store.read(committed_sequence).await;
            let moved = dead_letter_all(&recorder, name, up_to).await;
            if let Some(done) = done {
                let _ = done.send(moved.ok_or(DropError::Stopped));
            }
        });
    }
}

/// Dead-letters the rows of a removed endpoint up to `up_to`, the last committed sequence; how
/// many, once written (`None` when they could not be: they stay pending).
async fn dead_letter_all(
    recorder: &mpsc::Sender<RecorderCommand>,
    endpoint: String,
    up_to: Result<u64, StoreError>,
) -> Option<usize> {
    let up_to = match up_to {
        Ok(up_to) => up_to,
        Err(error) => {
            tracing::error!(%error, endpoint, "cannot dead-letter a removed endpoint's deliveries; they stay pending");
            return None;
        }
    };
    let (done, moved) = oneshot::channel();
    let command = RecorderCommand::DeadLetterEndpoint {
        endpoint,
        up_to,
        reason: DeadLetterReason::EndpointRemoved.to_string(),
        done,
    };
    recorder.send(command).await.ok()?;
    moved.await.ok()
}

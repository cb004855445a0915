//! Writes delivery outcomes to the store in batches.
//!
//! A durable commit costs an fsync; one per delivery would cap a lane near the disk's commit rate.
//! Every lane sends its outcomes here instead, and the recorder writes whatever has queued up in
//! one transaction: under load, batches grow by themselves. A lane hears back (through its
//! `settled` channel) once a finished delivery's row is gone from the outbox, and only then
//! forgets the delivery, so that a rescan can never pick up a row that is about to be deleted.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::client::now_millis;
use super::metrics::DeliveryMetrics;
use super::settle::LaneReturn;
use crate::store::Store;
use crate::store::deliveries::{
    DeliveryOutcome, dead_letter_pending, prune_attempts, prune_delivered_events, record_outcomes,
};

/// Rows moved to dead letters per transaction when an endpoint is removed.
const DEAD_LETTER_CHUNK: usize = 10_000;
/// Attempt records looked at per pruning transaction.
const PRUNE_BUDGET: usize = 10_000;
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// The least time from the start of one write of outcomes to the start of the next. A commit
/// costs about a million instructions (and an fsync) whatever it holds: on a quiet disk, writing
/// as soon as the last commit is done made batches of a few dozen outcomes, and the commits cost
/// more than the outcomes in them. No lane waits for these writes; only the record of a finished
/// delivery (and its row's removal from the outbox) comes this much later.
const WRITE_INTERVAL: Duration = Duration::from_millis(5);

pub(crate) enum RecorderCommand {
    Outcome {
        outcome: DeliveryOutcome,
        /// Told once a delivered or dead-lettered row is gone from the outbox.
        lane: Arc<LaneReturn>,
    },
    /// Dead-letters every pending row of a removed endpoint; queued behind that endpoint's last
    /// outcomes, so none of them lands after it.
    DeadLetterEndpoint {
        endpoint: String,
        /// The last sequence committed when the endpoint was removed.
        up_to: u64,
        reason: String,
        done: oneshot::Sender<usize>,
    },
}

pub(crate) struct Recorder {
    pub store: Store,
    pub metrics: Arc<DeliveryMetrics>,
    pub max_batch: usize,
    pub attempt_retention: Duration,
    pub delivered_retention: Duration,
}

impl Recorder {
    /// Runs until every sender is dropped, writing what is still queued before it returns.
    pub async fn run(self, mut commands: mpsc::Receiver<RecorderCommand>) {
        let mut prune_from = (0, 0);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_write = Instant::now();
        loop {
            let first = tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => command,
                    None => return,
                },
                _ = prune.tick() => {
                    prune_from = self.prune(prune_from).await;
                    continue;
                }
            };
            // Let outcomes gather for the rest of the interval, so that one commit takes them all.
            tokio::time::sleep_until(next_write).await;
            next_write = Instant::now() + WRITE_INTERVAL;
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            let mut outcomes = Vec::new();
            for command in batch {
                match command {
                    RecorderCommand::Outcome { outcome, lane } => {
                        outcomes.push((outcome, lane));
                    }
                    RecorderCommand::DeadLetterEndpoint {
                        endpoint,
                        up_to,
                        reason,
                        done,
                    } => {
                        self.write_outcomes(std::mem::take(&mut outcomes)).await;
                        let moved = self.dead_letter_endpoint(&endpoint, up_to, &reason).await;
                        let _ = done.send(moved);
                    }
                }
            }
            self.write_outcomes(outcomes).await;
        }
    }

    async fn write_outcomes(&self, outcomes: Vec<(DeliveryOutcome, Arc<LaneReturn>)>) {
        if outcomes.is_empty() {
            return;
        }
        let (records, lanes): (Vec<DeliveryOutcome>, Vec<Arc<LaneReturn>>) =
            outcomes.into_iter().unzip();
        let records = Arc::new(records);
        let job = records.clone();
        let written = self
            .store
            .write(move |tables| {
                record_outcomes(tables, &job)?;
                Ok(())
            })
            .await;
        if let Err(error) = &written {
            // The rows stay in the outbox; their lanes read them again (see `Lane::settle`), so
            // at-least-once holds and only the record of this attempt is lost.
            self.metrics.record_failures.inc();
            tracing::error!(%error, outcomes = records.len(), "cannot record delivery outcomes");
        }
        for (outcome, lane) in records.iter().zip(lanes) {
            let (sequence, dead) = match outcome {
                DeliveryOutcome::Delivered(attempt) => (attempt.sequence, false),
                DeliveryOutcome::DeadLettered { attempt, .. } => (attempt.sequence, true),
                DeliveryOutcome::WillRetry { .. } => continue,
            };
            lane.settle(sequence, written.is_ok(), dead);
        }
    }

    async fn dead_letter_endpoint(&self, endpoint: &str, up_to: u64, reason: &str) -> usize {
        let mut total = 0;
        loop {
            let (name, why) = (endpoint.to_owned(), reason.to_owned());
            let moved = self
                .store
                .write_txn(move |txn| {
                    let moved = dead_letter_pending(
                        txn,
                        &name,
                        up_to,
                        &why,
                        now_millis(),
                        DEAD_LETTER_CHUNK,
                    )?;
                    Ok(moved)
                })
                .await;
            match moved {
                Ok(0) => break,
                Ok(moved) => {
                    total += moved;
                    let label = DeliveryMetrics::endpoint(endpoint);
                    self.metrics
                        .dead_letters
                        .get_or_create(&label)
                        .inc_by(moved as u64);
                }
                Err(error) => {
                    self.metrics.record_failures.inc();
                    tracing::error!(%error, endpoint, "cannot dead-letter a removed endpoint's deliveries; they stay pending");
                    break;
                }
            }
        }
        self.metrics
            .pending
            .remove(&DeliveryMetrics::endpoint(endpoint));
        if total > 0 {
            tracing::warn!(
                endpoint,
                deliveries = total,
                reason,
                "pending deliveries dead-lettered"
            );
        }
        total
    }

    /// One pruning step of attempt records and of delivered events; returns where the next
    /// one starts in each.
    async fn prune(&self, (attempts_from, events_from): (u64, u64)) -> (u64, u64) {
        let cutoff = |retention: Duration| {
            now_millis().saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX))
        };
        let (attempts_cutoff, events_cutoff) = (
            cutoff(self.attempt_retention),
            cutoff(self.delivered_retention),
        );
        let pruned = self
            .store
            .write_txn(move |txn| {
                let attempts = prune_attempts(txn, attempts_cutoff, attempts_from, PRUNE_BUDGET)?;
                let events = prune_delivered_events(txn, events_cutoff, events_from, PRUNE_BUDGET)?;
                Ok((attempts, events))
            })
            .await;
        match pruned {
            Ok(((attempts_next, attempts), (events_next, events))) => {
                if attempts + events > 0 {
                    tracing::debug!(attempts, events, "records past retention pruned");
                }
                (attempts_next, events_next)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot prune records past retention");
                (attempts_from, events_from)
            }
        }
    }
}

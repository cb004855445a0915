//! One lane per endpoint: reads the endpoint's outbox rows in sequence order, a page at a time,
//! and keeps up to the endpoint's bound of requests in flight, so that a slow or dead endpoint
//! only ever holds up its own lane.
//!
//! The lane holds at most a page or so of rows in memory (plus the few that failed and wait for
//! their retry): a backlog of a million rows is streamed from redb, never loaded whole. A cursor
//! remembers how far the outbox was read; a row behind the cursor is either in memory or settled.
//! New rows always get a higher sequence than any committed before them, so once a scan reaches the
//! end of the outbox the lane only scans again when a later sequence has been committed. The next
//! page is read while the lane delivers the rows it holds, so that it never waits on the disk with
//! work in hand.
//!
//! Ordering: deliveries start in sequence order. An `ordered` endpoint has one request in flight
//! and head-of-line retry: nothing after a failed delivery starts until it is delivered or
//! dead-lettered.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::client::{AttemptOutcome, DeliveryClient, KeyedDelivery, now_millis};
use super::endpoint_health::{EndpointHealth, HealthPolicy};
use super::metrics::{DeliveryMetrics, EndpointMetrics};
use super::recorder::RecorderCommand;
use super::retry::{RetryDecision, RetrySchedule};
use super::settle::{LaneReturn, Settled};
use super::status::{ActivityBoard, ActivityCell};
use super::transport::Transport;
use crate::config::DeliveryConfig;
use crate::config::Webhook;
use crate::signing::{Secret, SigningKey};
use crate::store::deliveries::{
    AttemptRecord, AttemptResult, DeadLetter, DeliveryOutcome, OutboxPage, outbox_page,
};
use crate::store::{Store, StoreError};
use pending_count::PendingCount;

mod pending_count;

/// What every lane shares.
pub(crate) struct LaneShared {
    pub store: Store,
    pub client: DeliveryClient,
    pub schedule: RetrySchedule,
    pub config: DeliveryConfig,
    pub metrics: Arc<DeliveryMetrics>,
    pub recorder: mpsc::Sender<RecorderCommand>,
    /// The last committed sequence, published by the store's writer with every batch that
    /// appends an event ([`Store::event_sequence`]).
    pub committed: watch::Receiver<u64>,
    /// What each lane is doing, for the admin API's summary.
    pub activity: ActivityBoard,
}

/// The endpoint's configuration in force, with its secrets' keys prepared once for every
/// attempt made under it; made again when the configuration changes.
struct Endpoint {
    webhook: Arc<Webhook>,
    keys: Vec<SigningKey>,
    transport: Transport,
}

impl Endpoint {
    fn new(
        webhook: Arc<Webhook>,
        shared: &LaneShared,
        previous: Option<&Endpoint>,
    ) -> Arc<Endpoint> {
        let keys = webhook.secrets.iter().map(Secret::prepare).collect();
        let transport = Transport::for_endpoint(
            &webhook,
            &shared.client,
            shared.config.request_timeout,
            previous.map(|p| &p.transport),
        );
        Arc::new(Endpoint {
            webhook,
            keys,
            transport,
        })
    }
}

/// The page being read, once it is read; never, when none is. Cancel-safe: the read goes on
/// in its task when another branch wins.
async fn read_page(scanning: &mut Option<JoinHandle<PageRead>>) -> PageRead {
    let Some(scan) = scanning else {
        return std::future::pending().await;
    };
    let page = scan
        .await
        .unwrap_or_else(|e| Err(StoreError::new(format!("the outbox read failed: {e}"))));
    *scanning = None;
    page
}

type PageRead = Result<OutboxPage, StoreError>;

pub(crate) enum LaneCommand {
    /// Rows were put back behind the cursor (a replay): read the outbox from the start again.
    Rescan,
    /// Start nothing new; let what is in flight finish until the deadline, then return.
    Stop { deadline: Instant },
}

/// A delivery the lane holds: not yet sent, in flight, or waiting for its retry.
#[derive(Debug, Clone)]
struct Pending {
    sequence: u64,
    /// Attempts since the row was (re)queued: the position in the retry schedule.
    attempts: u32,
    /// Attempts recorded before the row was last requeued: attempt numbers go on from here.
    earlier_attempts: u32,
    next_attempt_at_ms: u64,
    event_id: Arc<str>,
    committed_at_ms: u64,
    body: Bytes,
}

pub(crate) struct Lane {
    name: Arc<str>,
    shared: Arc<LaneShared>,
    webhook: watch::Receiver<Arc<Webhook>>,
    endpoint: Arc<Endpoint>,
    commands: mpsc::UnboundedReceiver<LaneCommand>,
    /// Every row of the outbox up to here has been read (or the lane knows it settled).
    cursor: u64,
    /// The last scan reached the end of the outbox as it was at `cursor`.
    exhausted: bool,
    /// Rows read and due, in sequence order.
    fresh: VecDeque<Pending>,
    /// Rows waiting for a retry, by sequence.
    waiting: BTreeMap<u64, Pending>,
    /// Every sequence the lane holds or has handed to the recorder and not yet heard back about:
    /// a rescan skips these.
    unsettled: HashSet<u64>,
    /// The page of the outbox being read, if one is.
    scanning: Option<JoinHandle<PageRead>>,
    in_flight: JoinSet<(Pending, AttemptOutcome)>,
    /// Handed to the recorder with every outcome; its notices come back on `settled`.
    return_path: Arc<LaneReturn>,
    settled: mpsc::UnboundedReceiver<Settled>,
    health: EndpointHealth,
    pending_count: PendingCount,
    metrics: EndpointMetrics,
    activity: ActivityCell,
}

impl Lane {
    pub(crate) fn new(
        shared: Arc<LaneShared>,
        webhook: watch::Receiver<Arc<Webhook>>,
        commands: mpsc::UnboundedReceiver<LaneCommand>,
    ) -> Lane {
        let endpoint = Endpoint::new(webhook.borrow().clone(), &shared, None);
        let name: Arc<str> = endpoint.webhook.name.as_str().into();
        let (settled_tx, settled) = mpsc::unbounded_channel();
        let health = EndpointHealth::new(HealthPolicy {
            failures_before_backoff: shared.config.lane_failures_before_backoff,
            initial_pause: shared.config.lane_backoff_initial,
            max_pause: shared.config.lane_backoff_max,
        });
        let metrics = shared.metrics.for_endpoint(&name);
        let return_path = Arc::new(LaneReturn {
            settled: settled_tx,
            pending: metrics.pending.clone(),
            dead_letters: shared
                .metrics
                .dead_letters
                .get_or_create_owned(&DeliveryMetrics::endpoint(&name)),
        });
        Lane {
            activity: shared.activity.cell(&name),
            metrics,
            name,
            shared,
            webhook,
            endpoint,
            commands,
            cursor: 0,
            exhausted: false,
            fresh: VecDeque::new(),
            waiting: BTreeMap::new(),
            unsettled: HashSet::new(),
            scanning: None,
            in_flight: JoinSet::new(),
            return_path,
            settled,
            health,
            pending_count: PendingCount::default(),
        }
    }

    pub(crate) async fn run(mut self) {
        self.count_new_rows().await;
        let mut stop_at: Option<Instant> = None;
        let mut config_open = true;
        let mut committed = self.shared.committed.clone();
        loop {
            if self.webhook.has_changed().unwrap_or(false) {
                self.refresh_endpoint();
            }
            let endpoint = self.endpoint.clone();
            let webhook = &endpoint.webhook;
            let active = webhook.enabled && stop_at.is_none();
            if stop_at.is_some() && self.in_flight.is_empty() {
                break;
            }
            let last_committed = *committed.borrow();
            if !webhook.enabled && stop_at.is_none() && self.pending_count.due(last_committed) {
                self.count_new_rows().await;
            }
            if active && self.scanning.is_none() && self.wants_rows(last_committed) {
                self.start_scan();
            }
            let now = now_millis();
            let wake = if active {
                let room = self.dispatch(&endpoint, now);
                self.next_wake(webhook.ordered, room, now)
            } else {
                self.pending_count.next(webhook.enabled, last_committed)
            };
            self.activity
                .dispatched(self.in_flight.len(), self.health.state());
            let sleep_until = wake.map(|at_ms| {
                Instant::now() + Duration::from_millis(at_ms.saturating_sub(now_millis()))
            });
            // New commits matter to an enabled lane at the end of its outbox (rows to read) and to
            // a disabled one (rows to count).
            let may_scan = (active && self.exhausted) || (!webhook.enabled && stop_at.is_none());
            // While a page is read, settle notices wait: one applied meanwhile could let the page
            // bring back a row whose removal committed after the page's snapshot.
            let reading = self.scanning.is_some();
            tokio::select! {
                joined = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    if let Some(Ok(finished)) = joined {
                        self.finished(finished).await;
                    }
                }
                page = read_page(&mut self.scanning) => self.take_page(page).await,
                Some(settled) = self.settled.recv(), if !reading => self.settle(settled),
                changed = self.webhook.changed(), if config_open => match changed {
                    Ok(()) => self.refresh_endpoint(),
                    Err(_) => {
                        config_open = false;
                        stop_at.get_or_insert(Instant::now() + self.shared.config.shutdown_deadline);
                    }
                },
                _ = committed.changed(), if may_scan => {}
                command = self.commands.recv(), if stop_at.is_none() => match command {
                    Some(LaneCommand::Rescan) => self.rescan(),
                    Some(LaneCommand::Stop { deadline }) => stop_at = Some(deadline),
                    None => stop_at = Some(Instant::now() + self.shared.config.shutdown_deadline),
                },
                _ = tokio::time::sleep_until(sleep_until.unwrap_or_else(Instant::now)), if sleep_until.is_some() => {}
                _ = tokio::time::sleep_until(stop_at.unwrap_or_else(Instant::now)), if stop_at.is_some() => {
                    self.abandon_in_flight().await;
                    break;
                }
            }
            // Settle notices are cheap: take every one that is ready before the next scan.
            while self.scanning.is_none()
                && let Ok(settled) = self.settled.try_recv()
            {
                self.settle(settled);
            }
        }
        self.activity.stopped();
    }

    /// A finished attempt, and every other that has finished too before the slots are refilled:
    /// one turn of the run loop for all of them.
    async fn finished(&mut self, (pending, outcome): (Pending, AttemptOutcome)) {
        self.attempted(pending, outcome).await;
        while let Some(Ok((pending, outcome))) = self.in_flight.try_join_next() {
            self.attempted(pending, outcome).await;
        }
    }

    /// Takes the endpoint's new configuration, preparing its secrets' keys once for the
    /// attempts made under it.
    fn refresh_endpoint(&mut self) {
        let webhook = self.webhook.borrow_and_update().clone();
        self.endpoint = Endpoint::new(webhook, &self.shared, Some(&self.endpoint));
    }

    /// Past the shutdown deadline: what is still in flight is abandoned. Its rows stay in the
    /// outbox, so they are delivered again after the restart.
    async fn abandon_in_flight(&mut self) {
        let abandoned = self.in_flight.len();
        self.in_flight.shutdown().await;
        if abandoned > 0 {
            tracing::warn!(endpoint = %self.name, abandoned, "shutdown deadline passed with requests in flight");
        }
    }

    /// Rows were put back behind the cursor: read the outbox from the start again, and drop a
    /// page being read, which may not hold them.
    fn rescan(&mut self) {
        if let Some(scan) = self.scanning.take() {
            scan.abort();
        }
        self.cursor = 0;
        self.exhausted = false;
    }

    /// Adds the rows committed since the last count to the pending gauge ([`PendingCount`]).
    async fn count_new_rows(&mut self) {
        let (store, gauge) = (&self.shared.store, &self.metrics.pending);
        self.pending_count
            .count_new_rows(store, &self.name, gauge)
            .await;
    }

    /// Whether to read more rows: the queue is running low, and there are rows beyond the cursor
    /// or a later sequence was committed since the last scan reached the end.
    fn wants_rows(&self, committed: u64) -> bool {
        self.fresh.len() < self.shared.config.scan_batch.div_ceil(2)
            && (!self.exhausted || committed > self.cursor)
    }

    /// The recorder is done with a finished delivery. When its outcome could not be written, the
    /// row is still in the outbox behind the cursor: read from there again, so that it is
    /// delivered (again, with the same id) or dead-lettered now rather than after a restart.
    fn settle(&mut self, settled: Settled) {
        self.unsettled.remove(&settled.sequence);
        if !settled.recorded {
            self.cursor = self.cursor.min(settled.sequence.saturating_sub(1));
            self.exhausted = false;
        }
    }

    /// Starts reading the next page of the outbox after the cursor. It is read while the lane
    /// goes on delivering what it holds, so that the lane never waits on the disk with rows in
    /// hand; [`Lane::take_page`] takes the page in.
    fn start_scan(&mut self) {
        let store = self.shared.store.clone();
        let endpoint = self.name.to_string();
        let after = self.cursor;
        let limit = self.shared.config.scan_batch;
        self.scanning = Some(tokio::spawn(async move {
            store
                .read(move |txn| outbox_page(txn, &endpoint, after, limit))
                .await
        }));
    }

    async fn take_page(&mut self, page: Result<OutboxPage, StoreError>) {
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                tracing::error!(endpoint = %self.name, %error, "cannot read the outbox; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
        };
        let now = now_millis();
        for row in page.rows {
            self.cursor = self.cursor.max(row.sequence);
            self.pending_count.read(row.sequence, &self.metrics.pending);
            if !self.unsettled.insert(row.sequence) {
                continue;
            }
            let pending = Pending {
                sequence: row.sequence,
                attempts: row.attempts,
                earlier_attempts: row.earlier_attempts,
                next_attempt_at_ms: row.next_attempt_at_ms,
                event_id: row.event_id.into(),
                committed_at_ms: row.committed_at_ms,
                body: Bytes::from(row.body),
            };
            if pending.next_attempt_at_ms > now {
                self.waiting.insert(pending.sequence, pending);
            } else {
                self.fresh.push_back(pending);
            }
        }
        self.exhausted = page.exhausted;
        if page.exhausted {
            self.cursor = self.cursor.max(page.last_sequence);
            self.pending_count.read_through(page.last_sequence);
        }
    }

    /// Starts every due delivery the lane has room for; true when room is left.
    fn dispatch(&mut self, endpoint: &Arc<Endpoint>, now: u64) -> bool {
        let webhook = &endpoint.webhook;
        let max = if webhook.ordered {
            1
        } else {
            webhook
                .max_in_flight
                .unwrap_or(self.shared.config.max_in_flight)
        };
        while self.in_flight.len() < self.health.capacity(now, max) {
            let Some(pending) = self.next_due(webhook.ordered, now) else {
                return true;
            };
            let endpoint = endpoint.clone();
            // Boxed once here rather than copied whole into the task and back out of it.
            self.in_flight.spawn(Box::pin(async move {
                let attempt = endpoint.transport.attempt(KeyedDelivery {
                    keys: &endpoint.keys,
                    event_id: &pending.event_id,
                    sequence: pending.sequence,
                    body: pending.body.clone(),
                });
                let outcome = AttemptOutcome::caught(attempt).await;
                (pending, outcome)
            }));
        }
        false
    }

    /// The next delivery to start: the lowest sequence that is due. For an ordered endpoint, the
    /// lowest sequence held, and only once it is due (head-of-line).
    fn next_due(&mut self, ordered: bool, now: u64) -> Option<Pending> {
        let fresh = self.fresh.front().map(|p| p.sequence);
        let retry = if ordered {
            self.waiting
                .first_key_value()
                .map(|(s, p)| (*s, p.next_attempt_at_ms))
        } else {
            self.waiting
                .iter()
                .find(|(_, p)| p.next_attempt_at_ms <= now)
                .map(|(s, p)| (*s, p.next_attempt_at_ms))
        };
        match (fresh, retry) {
            (Some(f), Some((r, _))) if f < r => self.fresh.pop_front(),
            (_, Some((r, due))) if due <= now => self.waiting.remove(&r),
            (_, Some(_)) if ordered => None,
            (Some(_), _) => self.fresh.pop_front(),
            (None, _) => None,
        }
    }

    /// When the lane has something to do without being woken: its pause ends, or (when it has
    /// room for another request) a retry comes due. Without room, a finished request wakes it.
    fn next_wake(&self, ordered: bool, room: bool, now: u64) -> Option<u64> {
        if let Some(until) = self.health.paused_until() {
            return Some(until);
        }
        if !room {
            return None;
        }
        let due = if ordered {
            // Only the head of the line counts.
            self.waiting.values().next().map(|p| p.next_attempt_at_ms)
        } else {
            self.waiting.values().map(|p| p.next_attempt_at_ms).min()
        };
        due.map(|at| at.max(now))
    }

    /// Decides what a finished attempt means for its delivery and sends the outcome to the
    /// recorder. The attempt's number comes from the row the lane read: nothing is looked up.
    async fn attempted(&mut self, mut pending: Pending, outcome: AttemptOutcome) {
        let now = now_millis();
        pending.attempts = pending.attempts.saturating_add(1);
        self.metrics.observe_attempt(&outcome);
        let attempt = AttemptRecord {
            endpoint: self.name.to_string(),
            sequence: pending.sequence,
            attempt: pending.earlier_attempts.saturating_add(pending.attempts),
            at_ms: outcome.started_at_ms,
            latency_ms: outcome.latency.as_secs_f64() * 1000.0,
            status: outcome.status,
            error: outcome.error.clone(),
            result: AttemptResult::Delivered,
            next_attempt_at_ms: None,
        };
        let recorded = if outcome.delivered() {
            self.health.on_success();
            self.metrics
                .delivery_latency
                .observe(now.saturating_sub(pending.committed_at_ms) as f64 / 1000.0);
            DeliveryOutcome::Delivered(attempt)
        } else {
            self.failed(pending, attempt, &outcome, now)
        };
        let (DeliveryOutcome::Delivered(record)
        | DeliveryOutcome::WillRetry {
            attempt: record, ..
        }
        | DeliveryOutcome::DeadLettered {
            attempt: record, ..
        }) = &recorded;
        self.activity
            .attempted(&outcome, record, now, self.health.state());
        let command = RecorderCommand::Outcome {
            outcome: recorded,
            lane: self.return_path.clone(),
        };
        if self.shared.recorder.send(command).await.is_err() {
            tracing::error!(endpoint = %self.name, "the recorder has stopped; outcome not recorded");
        }
    }

    /// A failed attempt: the delivery waits for its retry, or is given up.
    fn failed(
        &mut self,
        mut pending: Pending,
        mut attempt: AttemptRecord,
        outcome: &AttemptOutcome,
        now: u64,
    ) -> DeliveryOutcome {
        let asked = outcome
            .retry_after
            .filter(|_| matches!(outcome.status, Some(429 | 503)))
            .map(|d| d.min(self.shared.config.retry_after_cap));
        self.health.on_failure(now, asked, fastrand::f64());
        let decision = self.shared.schedule.decide(
            pending.attempts,
            outcome.status,
            outcome.retry_after,
            now,
            fastrand::f64(),
        );
        match decision {
            RetryDecision::RetryAt { at_ms, .. } => {
                tracing::debug!(endpoint = %self.name, sequence = pending.sequence, attempts = pending.attempts, failure = %outcome.describe(), "delivery failed; will retry");
                attempt.result = AttemptResult::WillRetry;
                attempt.next_attempt_at_ms = Some(at_ms);
                pending.next_attempt_at_ms = at_ms;
                let attempts = pending.attempts;
                self.waiting.insert(pending.sequence, pending);
                DeliveryOutcome::WillRetry {
                    attempt,
                    attempts,
                    next_attempt_at_ms: at_ms,
                }
            }
            RetryDecision::DeadLetter(reason) => {
                tracing::warn!(endpoint = %self.name, sequence = pending.sequence, %reason, failure = %outcome.describe(), "delivery dead-lettered");
                attempt.result = AttemptResult::DeadLettered;
                let letter = DeadLetter {
                    endpoint: self.name.to_string(),
                    sequence: pending.sequence,
                    event_id: pending.event_id.to_string(),
                    reason: reason.to_string(),
                    attempts: pending.attempts,
                    last_status: outcome.status,
                    last_error: outcome.error.clone(),
                    dead_lettered_at_ms: now,
                };
                DeliveryOutcome::DeadLettered { attempt, letter }
            }
        }
    }
}

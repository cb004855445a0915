//! The dispatcher: one lane per configured endpoint, started, retuned and stopped as the
//! configuration changes, and woken when new rows commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::client::{ClientError, DeliveryClient};
use super::lane::{Lane, LaneCommand, LaneShared};
use super::metrics::DeliveryMetrics;
use super::recorder::Recorder;
use super::removed::{DropError, RemovedEndpoints};
use super::retry::RetrySchedule;
use super::status::{ActivityBoard, LaneActivity};
use crate::config::DeliveryConfig;
use crate::config::{Config, Webhook};
use crate::store::deliveries::outbox_endpoints;
use crate::store::{Store, StoreError};

/// Why delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("invalid delivery configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

enum SupervisorCommand {
    Rescan(Vec<String>),
    DropRemoved {
        endpoint: String,
        done: oneshot::Sender<Result<usize, DropError>>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// Delivery as a whole: a handle to the dispatcher task. Dropping it does not stop delivery; call
/// [`Dispatcher::shutdown`].
pub struct Dispatcher {
    store: Store,
    config: watch::Receiver<Arc<Config>>,
    metrics: Arc<DeliveryMetrics>,
    activity: ActivityBoard,
    commands: mpsc::UnboundedSender<SupervisorCommand>,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct LaneEntry {
    webhook: watch::Sender<Arc<Webhook>>,
    commands: mpsc::UnboundedSender<LaneCommand>,
    task: JoinHandle<()>,
}

impl Dispatcher {
    /// Starts a lane for every endpoint in `config` and follows its changes. Endpoints that have
    /// rows in the outbox but are no longer configured keep them for the removed-endpoint grace
    /// (see [`super::removed`]), then get them dead-lettered as "endpoint removed".
    pub async fn start(
        store: Store,
        config: watch::Receiver<Arc<Config>>,
        settings: DeliveryConfig,
        metrics: Arc<DeliveryMetrics>,
    ) -> Result<Dispatcher, DeliveryError> {
        let problems = settings.problems();
        if !problems.is_empty() {
            return Err(DeliveryError::Invalid(problems));
        }
        let client = DeliveryClient::new(settings.request_timeout)?;
        let known = store.read(outbox_endpoints).await?;

        let (recorder_tx, recorder_rx) = mpsc::channel(settings.record_batch.max(1) * 8);
        let recorder = Recorder {
            store: store.clone(),
            metrics: metrics.clone(),
            max_batch: settings.record_batch,
            attempt_retention: settings.attempt_retention,
            delivered_retention: settings.delivered_retention,
        };
        let recorder_task = tokio::spawn(recorder.run(recorder_rx));
        let removed = RemovedEndpoints::new(settings.removed_endpoint_grace);
        let activity = ActivityBoard::default();
        let shared = Arc::new(LaneShared {
            activity: activity.clone(),
            store: store.clone(),
            client,
            schedule: RetrySchedule::from_config(&settings),
            config: settings,
            metrics: metrics.clone(),
            recorder: recorder_tx,
            committed: store.event_sequence(),
        });

        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let mut supervisor = Supervisor {
            shared,
            lanes: HashMap::new(),
            removed,
            config: config.clone(),
        };
        let configured: Vec<String> = config.borrow().webhooks().map(|w| w.name.clone()).collect();
        for name in known.into_iter().filter(|n| !configured.contains(n)) {
            supervisor.removed.insert(name, None);
        }
        supervisor.reconcile();
        let task = tokio::spawn(supervisor.run(commands_rx, recorder_task));
        Ok(Dispatcher {
            store,
            config,
            metrics,
            activity,
            commands: commands_tx,
            task: Mutex::new(Some(task)),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<DeliveryMetrics> {
        &self.metrics
    }

    /// What each endpoint's lane has been doing since the process started, by endpoint name.
    pub fn activity(&self) -> BTreeMap<String, LaneActivity> {
        self.activity.snapshot()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    /// Tells the lanes of `endpoints` that rows were put back behind their cursor (a replay).
    pub fn rescan(&self, endpoints: Vec<String>) {
        let _ = self.commands.send(SupervisorCommand::Rescan(endpoints));
    }

    /// Dead-letters now the waiting deliveries of `endpoint`, an endpoint removed from the
    /// configuration whose grace has not ended; answers how many.
    pub async fn drop_removed(&self, endpoint: String) -> Result<usize, DropError> {
        let (done, answer) = oneshot::channel();
        self.commands
            .send(SupervisorCommand::DropRemoved { endpoint, done })
            .map_err(|_| DropError::Stopped)?;
        answer.await.map_err(|_| DropError::Stopped)?
    }

    /// Stops every lane (in-flight requests get the configured deadline), records their outcomes
    /// and returns. The store stays open; its owner shuts it down after this.
    pub async fn shutdown(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self
            .commands
            .send(SupervisorCommand::Shutdown(done_tx))
            .is_ok()
        {
            let _ = done_rx.await;
        }
        let task = self.task.lock().expect("dispatcher task lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

struct Supervisor {
    shared: Arc<LaneShared>,
    lanes: HashMap<String, LaneEntry>,
    removed: RemovedEndpoints,
    config: watch::Receiver<Arc<Config>>,
}

impl Supervisor {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<SupervisorCommand>,
        recorder: JoinHandle<()>,
    ) {
        let mut config_open = true;
        let done = loop {
            let grace_end = self.removed.next_grace_end();
            tokio::select! {
                changed = self.config.changed(), if config_open => match changed {
                    Ok(()) => self.reconcile(),
                    Err(_) => config_open = false,
                },
                () = tokio::time::sleep_until(grace_end.unwrap_or_else(Instant::now)),
                    if grace_end.is_some() =>
                {
                    self.removed.expire(&self.shared.store, &self.shared.recorder);
                }
                command = commands.recv() => match command {
                    Some(SupervisorCommand::Rescan(endpoints)) => {
                        for name in endpoints {
                            if let Some(lane) = self.lanes.get(&name) {
                                let _ = lane.commands.send(LaneCommand::Rescan);
                            }
                        }
                    }
                    Some(SupervisorCommand::DropRemoved { endpoint, done }) => {
                        self.drop_removed(endpoint, done);
                    }
                    Some(SupervisorCommand::Shutdown(done)) => break Some(done),
                    None => break None,
                },
            }
        };
        let deadline = Instant::now() + self.shared.config.shutdown_deadline;
        let lanes: Vec<LaneEntry> = self.lanes.drain().map(|(_, lane)| lane).collect();
        for lane in &lanes {
            let _ = lane.commands.send(LaneCommand::Stop { deadline });
        }
        for lane in lanes {
            let _ = lane.task.await;
        }
        // The recorder stops once the last sender is gone: every lane's and this one.
        drop(self.shared);
        let _ = recorder.await;
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    /// Brings the lanes in line with the configuration in force.
    fn reconcile(&mut self) {
        let config = self.config.borrow_and_update().clone();
        let desired: BTreeMap<&str, &Webhook> =
            config.webhooks().map(|w| (w.name.as_str(), w)).collect();
        let removed: Vec<String> = self
            .lanes
            .keys()
            .filter(|name| !desired.contains_key(name.as_str()))
            .cloned()
            .collect();
        for name in removed {
            let lane = self.lanes.remove(&name).expect("listed above");
            let deadline = Instant::now() + self.shared.config.shutdown_deadline;
            let _ = lane.commands.send(LaneCommand::Stop { deadline });
            self.removed.insert(name, Some(lane.task));
        }
        for (name, webhook) in desired {
            match self.lanes.get(name) {
                Some(lane) => {
                    // URL, secrets, enabled, ordering: the lane takes the new settings for its
                    // next request and keeps every pending delivery.
                    lane.webhook.send_if_modified(|current| {
                        let changed = **current != *webhook;
                        if changed {
                            *current = Arc::new(webhook.clone());
                        }
                        changed
                    });
                }
                None => {
                    let (webhook_tx, webhook_rx) = watch::channel(Arc::new(webhook.clone()));
                    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
                    let lane = Lane::new(self.shared.clone(), webhook_rx, commands_rx);
                    // Back from a removal: after the old lane has settled what it had in flight.
                    let previous = self.removed.take_back(name);
                    let task = tokio::spawn(async move {
                        if let Some(previous) = previous {
                            let _ = previous.await;
                        }
                        lane.run().await;
                    });
                    self.lanes.insert(
                        name.to_owned(),
                        LaneEntry {
                            webhook: webhook_tx,
                            commands: commands_tx,
                            task,
                        },
                    );
                }
            }
        }
    }

    /// An operator's drop of a removed endpoint's waiting deliveries.
    fn drop_removed(&mut self, endpoint: String, done: oneshot::Sender<Result<usize, DropError>>) {
        let configured = self.config.borrow().webhooks().any(|w| w.name == endpoint);
        if configured {
            let _ = done.send(Err(DropError::Configured(endpoint)));
            return;
        }
        let (store, recorder) = (&self.shared.store, &self.shared.recorder);
        self.removed
            .dead_letter(endpoint, store, recorder, Some(done));
    }
}

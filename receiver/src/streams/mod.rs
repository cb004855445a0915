//! Change streams: what tells the open streams that an environment changed.
//!
//! The writer moves an environment's revision and `updated_at` in the very batch that changes it
//! ([`crate::documents::FlagCache::stamp_changed`]), stores them with it, and after the durable
//! commit publishes the cache and moves its commit counter. [`StreamHub::follow`] wakes on that
//! counter and reads the *published* cache, so every source (web hooks, upstream documents,
//! flagpost bootstraps) feeds the streams, and nothing is announced that could still be lost.
//!
//! Each environment someone streams has a [`Channel`]: a broadcast of [`Notice`]s, and what the
//! native stream needs to resume a client exactly: the environment's flags as last announced and
//! the revision at which each feature last changed, since the channel began (at the revision the
//! environment had when it was first streamed; revisions are stored, so positions survive a
//! restart). A client further back than that gets one full-state event instead.
//!
//! - [`events`]: the flags a stream shows, diffs, and the bytes of each frame.

pub mod events;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{broadcast, watch};

use crate::config::Live;
use crate::documents::{EnvCache, FlagCache};
use events::{Audience, FlagTable, Position, diff, flagsmith_frame, full_frame, native_frame};

/// Notices a stream's task may fall behind on the broadcast before it counts as too slow (its
/// own buffer towards the client, `streams.buffer_events`, is the limit that normally applies).
const BROADCAST_CAPACITY: usize = 1024;

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The client closed it.
    ClientGone,
    /// Its client read too slowly: `streams.buffer_events` were waiting.
    TooSlow,
    Shutdown,
    /// Its environment's keys changed in a reload: the client reconnects with a key that holds.
    KeysReloaded,
}

impl EndReason {
    pub const ALL: [EndReason; 4] = [
        EndReason::ClientGone,
        EndReason::TooSlow,
        EndReason::Shutdown,
        EndReason::KeysReloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::ClientGone => "client_gone",
            EndReason::TooSlow => "too_slow",
            EndReason::Shutdown => "shutdown",
            EndReason::KeysReloaded => "keys_reloaded",
        }
    }
}

/// An environment changed: its new position and the frames every stream of it shares.
#[derive(Debug)]
pub struct Changed {
    pub revision: u64,
    pub updated_at_micros: i64,
    /// Flagsmith's `environment_updated` event.
    pub flagsmith: Bytes,
    /// The native event of the environment's own flags; `None` when none of them changed (an
    /// identity override or a segment may have).
    pub native: Option<Bytes>,
}

#[derive(Debug, Clone)]
pub enum Notice {
    Changed(Arc<Changed>),
    Heartbeat,
    End(EndReason),
}

/// One streamed environment.
struct Channel {
    notices: broadcast::Sender<Notice>,
    revision: u64,
    updated_at_micros: i64,
    /// The environment's own flags as last announced.
    flags: FlagTable,
    /// Feature id -> the revision at which it last changed or went, since `since`.
    changed_at: HashMap<u64, u64>,
    /// The revision the channel began at: positions from it on resume exactly.
    since: u64,
    /// The environment's keys, to end its streams when a reload changes them.
    keys: BTreeSet<String>,
}

impl Channel {
    fn position(&self, env: u64) -> Position {
        Position {
            env,
            revision: self.revision,
            updated_at_micros: self.updated_at_micros,
        }
    }
}

/// A stream's first frames and the notices that follow them, without gap or overlap.
pub struct Subscription {
    pub opening: Vec<Bytes>,
    pub notices: broadcast::Receiver<Notice>,
    /// The position the opening frames bring the client to.
    pub revision: u64,
    /// The published cache as it was when the stream subscribed: at or past `revision`.
    pub cache: Arc<FlagCache>,
    /// Turns true when the receiver stops.
    pub stopping: watch::Receiver<bool>,
}

/// A place among `streams.max_streams`; given back when dropped (when the response ends).
pub struct StreamSlot {
    hub: Arc<StreamHub>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let open = self.hub.open.fetch_sub(1, Ordering::AcqRel) - 1;
        self.hub.metrics.open.set(open as i64);
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// `flagpost_receiver_streams_*`.
#[derive(Clone, Default)]
struct StreamMetrics {
    open: Gauge,
    ended: Family<ReasonLabels, Counter>,
    refused: Counter,
}

/// Every open stream's source of notices.
pub struct StreamHub {
    channels: Mutex<HashMap<u64, Channel>>,
    /// The published cache. Read under the `channels` lock, so that a channel is never made
    /// from a cache older than one [`StreamHub::announce`] already went past.
    cache: Arc<ArcSwap<FlagCache>>,
    open: AtomicUsize,
    stopping: watch::Sender<bool>,
    metrics: StreamMetrics,
}

impl StreamHub {
    /// A hub following the published `cache`, its metrics registered in `registry`.
    pub fn new(registry: &mut Registry, cache: Arc<ArcSwap<FlagCache>>) -> Arc<StreamHub> {
        let metrics = StreamMetrics::default();
        let streams = flagpost::metrics::subsystem(registry);
        streams.register(
            "streams_open",
            "Change streams open now (Flagsmith realtime and native)",
            metrics.open.clone(),
        );
        flagpost::metrics::register_family(
            streams,
            "streams_ended",
            "Change streams ended, by reason (client_gone, too_slow: dropped for not reading, shutdown, keys_reloaded)",
            &metrics.ended,
            EndReason::ALL.map(|reason| ReasonLabels {
                reason: reason.as_str(),
            }),
        );
        streams.register(
            "streams_refused",
            "Change streams refused because streams.max_streams were open",
            metrics.refused.clone(),
        );
        Arc::new(StreamHub {
            channels: Mutex::new(HashMap::new()),
            cache,
            open: AtomicUsize::new(0),
            stopping: watch::Sender::new(false),
            metrics,
        })
    }

    /// Streams open now (for the status page).
    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A place for one more stream, unless `max` are open or the receiver is stopping.
    pub fn try_open(self: &Arc<Self>, max: usize) -> Option<StreamSlot> {
        if *self.stopping.borrow() {
            return None;
        }
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            });
        match taken {
            Ok(open) => {
                self.metrics.open.set(open as i64 + 1);
                Some(StreamSlot { hub: self.clone() })
            }
            Err(_) => {
                self.metrics.refused.inc();
                None
            }
        }
    }

    pub fn ended(&self, reason: EndReason) {
        self.metrics
            .ended
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Channel>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The channel of `env`, made from `cache` (read under the lock) on first use.
    fn channel<'a>(
        channels: &'a mut HashMap<u64, Channel>,
        env: u64,
        cache: &FlagCache,
        live: &Live,
    ) -> &'a mut Channel {
        channels.entry(env).or_insert_with(|| {
            let held = cache.env(env).map(|env| env.as_ref());
            let revision = held.map_or(0, |env| env.revision);
            Channel {
                notices: broadcast::channel(BROADCAST_CAPACITY).0,
                revision,
                updated_at_micros: held.map_or(0, |env| env.updated_at_micros),
                flags: Audience::default().evaluate(held),
                changed_at: HashMap::new(),
                since: revision,
                keys: keys_of(live, env),
            }
        })
    }

    /// Flagsmith's realtime stream: the environment's `updated_at` now (the SDKs refetch if it is
    /// newer than what they hold, which closes the gap between their fetch and this stream),
    /// then one event per change.
    pub fn subscribe_flagsmith(&self, env: u64, live: &Live) -> Subscription {
        self.subscribe(env, live, |channel, opening| {
            if channel.revision > 0 {
                opening.push(flagsmith_frame(channel.updated_at_micros));
            }
        })
    }

    /// Subscribes to `env`'s channel, `opening` adding the first frames after `retry:`.
    fn subscribe(
        &self,
        env: u64,
        live: &Live,
        opening: impl FnOnce(&Channel, &mut Vec<Bytes>),
    ) -> Subscription {
        let mut channels = self.lock();
        let cache = self.cache.load_full();
        let channel = Self::channel(&mut channels, env, &cache, live);
        let mut frames = vec![Bytes::from_static(events::RETRY)];
        opening(channel, &mut frames);
        Subscription {
            opening: frames,
            notices: channel.notices.subscribe(),
            revision: channel.revision,
            cache,
            stopping: self.stopping.subscribe(),
        }
    }

    /// The native stream of the environment's own flags, from `last_event_id` when the client
    /// sends one: the flags changed since, exactly, when the channel covers that position; every
    /// flag (`"full": true`) when it does not or none was sent.
    pub fn subscribe_native(
        &self,
        env: u64,
        last_event_id: Option<u64>,
        live: &Live,
    ) -> Subscription {
        self.subscribe(env, live, |channel, opening| {
            let at = channel.position(env);
            match last_event_id {
                Some(seen) if seen == channel.revision => {}
                Some(seen) if seen >= channel.since && seen < channel.revision => {
                    let (changed, deleted) = changes_since(channel, seen);
                    opening.push(native_frame(at, None, false, &changed, &deleted));
                }
                _ => opening.push(full_frame(at, None, &channel.flags)),
            }
        })
    }

    /// An identity's native stream: its task evaluates the subscription's cache and each change
    /// itself, so the opening is only `retry:`.
    pub fn subscribe_identity(&self, env: u64, live: &Live) -> Subscription {
        self.subscribe(env, live, |_, _| {})
    }

    /// Announces every streamed environment that moved past what its channel announced. Runs
    /// after each commit, on the cache the commit published.
    pub fn announce(&self, cache: &FlagCache) {
        let mut channels = self.lock();
        for (env_id, channel) in channels.iter_mut() {
            let Some(env) = cache.env(*env_id) else {
                continue;
            };
            if env.revision > channel.revision {
                announce_one(*env_id, env, channel);
            }
        }
    }

    /// Follows the writer's commits for the life of the task, announcing each published cache.
    pub async fn follow(self: Arc<Self>, mut commits: watch::Receiver<u64>) {
        while commits.changed().await.is_ok() {
            let published = self.cache.load_full();
            self.announce(&published);
        }
    }

    /// A comment line on every stream, every `interval()` (`streams.heartbeat_secs`, read live).
    pub async fn heartbeats(self: Arc<Self>, interval: impl Fn() -> Duration + Send + 'static) {
        loop {
            tokio::time::sleep(interval()).await;
            for channel in self.lock().values() {
                let _ = channel.notices.send(Notice::Heartbeat);
            }
        }
    }

    /// Ends the streams of every environment whose keys differ in `live`, a reloaded
    /// configuration: their clients reconnect, and are let in again only with a key that holds.
    pub fn keys_reloaded(&self, live: &Live) {
        for (env, channel) in self.lock().iter_mut() {
            let keys = keys_of(live, *env);
            if keys != channel.keys {
                channel.keys = keys;
                let _ = channel.notices.send(Notice::End(EndReason::KeysReloaded));
            }
        }
    }

    /// Ends every stream and refuses new ones: the server is stopping, and waits for open
    /// responses to end.
    pub fn shut_down(&self) {
        self.stopping.send_replace(true);
    }
}

/// The keys that select `env`, for comparison across reloads.
fn keys_of(live: &Live, env: u64) -> BTreeSet<String> {
    live.environment_keys
        .iter()
        .filter(|(_, id)| **id == env)
        .map(|(key, _)| key.clone())
        .collect()
}

/// The flags changed, and the ids of those gone, after revision `seen`.
fn changes_since(channel: &Channel, seen: u64) -> (Vec<events::StreamFlag>, Vec<u64>) {
    let mut changed = Vec::new();
    let mut deleted = Vec::new();
    for (id, at) in &channel.changed_at {
        if *at <= seen {
            continue;
        }
        match channel.flags.get(id) {
            Some(flag) => changed.push(flag.clone()),
            None => deleted.push(*id),
        }
    }
    changed.sort_by_key(|flag| flag.id);
    deleted.sort_unstable();
    (changed, deleted)
}

/// Moves one channel to `env`'s revision and tells its streams.
fn announce_one(env_id: u64, env: &EnvCache, channel: &mut Channel) {
    let flags = Audience::default().evaluate(Some(env));
    let (changed, deleted) = diff(&channel.flags, &flags);
    for id in changed
        .iter()
        .map(|flag| flag.id)
        .chain(deleted.iter().copied())
    {
        channel.changed_at.insert(id, env.revision);
    }
    channel.revision = env.revision;
    channel.updated_at_micros = env.updated_at_micros;
    channel.flags = flags;
    let at = channel.position(env_id);
    let native = (!changed.is_empty() || !deleted.is_empty())
        .then(|| native_frame(at, None, false, &changed, &deleted));
    let notice = Changed {
        revision: env.revision,
        updated_at_micros: env.updated_at_micros,
        flagsmith: flagsmith_frame(env.updated_at_micros),
        native,
    };
    // No receiver is fine: the channel still keeps its position for later resumes.
    let _ = channel.notices.send(Notice::Changed(Arc::new(notice)));
}

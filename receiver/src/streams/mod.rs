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
//! A stream is no task of its own: its response body ([`feed::Feed`]) takes the channel's notices
//! itself, whenever hyper asks it for more, so a change wakes each connection once and costs it a
//! clone of the frame rendered once for all. The channel keeps, for each stream, how many notices
//! it has taken ([`Tail`]): one that falls `streams.buffer_events` behind (its client stopped
//! reading, so hyper stopped asking) has its connection closed and is counted.
//!
//! - [`events`]: the flags a stream shows, diffs, and the bytes of each frame;
//! - [`feed`]: one stream's body.

pub mod events;
pub mod feed;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use flagpost::serve::CloseConnection;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast;

use crate::config::Live;
use crate::documents::{EnvCache, FlagCache};
use events::{
    Audience, FlagTable, Position, diff, flagsmith_frame, full_frame, native_frame, with_retry,
};

/// Notices the broadcast keeps. A stream further behind counts as too slow whatever
/// `streams.buffer_events` says (which normally applies first: see [`StreamHub::drop_slow`]).
const BROADCAST_CAPACITY: usize = 1024;

/// Dead tails are swept out of a channel at least when it holds this many (and at every
/// change and heartbeat), so opening and closing streams never grows it.
const TAILS_PRUNED_AT: usize = 1024;

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
    /// As kept in [`Tail::ended`] (0: not ended).
    fn code(self) -> u8 {
        self as u8 + 1
    }

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
    /// The cache file's id, part of every position (see [`events::event_id`]).
    file_id: u64,
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
    /// Notices sent so far; a stream's [`Tail::taken`] counts the same way.
    sent: u64,
    /// Every stream of the channel (and some that ended, until the next sweep).
    tails: Vec<Arc<Tail>>,
    /// `retry:` and the opening event at `revision`, rendered for the first stream that needs
    /// each and shared by the others: Flagsmith's, and the native full state.
    flagsmith_opening: Option<Bytes>,
    full_opening: Option<Bytes>,
}

impl Channel {
    fn send(&mut self, notice: Notice) {
        self.sent += 1;
        // No receiver is fine: the channel still keeps its position for later resumes.
        let _ = self.notices.send(notice);
    }

    fn flagsmith_opening(&mut self) -> Bytes {
        let updated_at = self.updated_at_micros;
        self.flagsmith_opening
            .get_or_insert_with(|| with_retry(&flagsmith_frame(updated_at)))
            .clone()
    }

    fn full_opening(&mut self, env: u64) -> Bytes {
        let at = self.position(env);
        let flags = &self.flags;
        self.full_opening
            .get_or_insert_with(|| with_retry(&full_frame(at, None, flags)))
            .clone()
    }

    fn position(&self, env: u64) -> Position {
        Position {
            file_id: self.file_id,
            env,
            revision: self.revision,
            updated_at_micros: self.updated_at_micros,
        }
    }
}

/// One stream as its channel sees it, shared with the stream's body.
pub struct Tail {
    /// Notices the stream has taken from its channel (counted as [`Channel::sent`]).
    taken: AtomicU64,
    /// Why it ended ([`EndReason::code`]), 0 while it is open: the first reason is the one counted.
    ended: AtomicU8,
    /// Closes the stream's connection, when the stream is too slow to end by its body.
    close: Option<CloseConnection>,
}

/// A stream's first frames and the notices that follow them, without gap or overlap.
pub struct Subscription {
    /// `retry:` and what the client must see first.
    pub opening: Bytes,
    pub notices: broadcast::Receiver<Notice>,
    /// The position the opening frames bring the client to.
    pub revision: u64,
    /// The published cache as it was when the stream subscribed: at or past `revision`.
    pub cache: Arc<FlagCache>,
    pub tail: Arc<Tail>,
    /// Set when the receiver was already stopping: the stream ends after its opening.
    pub ended: Option<EndReason>,
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
    /// The cache file's id ([`crate::storage::Storage::file_id`]).
    file_id: u64,
    open: AtomicUsize,
    /// Set, under the `channels` lock, when the receiver stops.
    stopping: std::sync::atomic::AtomicBool,
    /// `streams.buffer_events` as last configured (it applies live).
    buffer_events: AtomicUsize,
    metrics: StreamMetrics,
}

impl StreamHub {
    /// A hub following the published `cache`, its metrics registered in `registry`.
    pub fn new(
        registry: &mut Registry,
        cache: Arc<ArcSwap<FlagCache>>,
        file_id: u64,
    ) -> Arc<StreamHub> {
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
            file_id,
            open: AtomicUsize::new(0),
            stopping: Default::default(),
            buffer_events: AtomicUsize::new(usize::MAX),
            metrics,
        })
    }

    /// Streams open now (for the status page).
    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A place for one more stream, unless `max` are open or the receiver is stopping.
    pub fn try_open(self: &Arc<Self>, max: usize) -> Option<StreamSlot> {
        if self.stopping.load(Ordering::Acquire) {
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

    /// Ends `tail`'s stream for `reason` unless it ended already, and counts it; a stream too
    /// slow to take its end from its body has its connection closed.
    pub fn end(&self, tail: &Tail, reason: EndReason) {
        let first = tail
            .ended
            .compare_exchange(0, reason.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !first {
            return;
        }
        self.metrics
            .ended
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
        if reason == EndReason::TooSlow {
            // hyper waits on a socket the client does not read, and would never end the body.
            if let Some(close) = &tail.close {
                close.close();
            }
            tracing::info!("a change stream's client stopped reading: dropped");
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Channel>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The channel of `env`, made from `cache` (read under the lock) on first use.
    fn channel<'a>(
        &self,
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
                file_id: self.file_id,
                revision,
                updated_at_micros: held.map_or(0, |env| env.updated_at_micros),
                flags: Audience::default().evaluate(held),
                changed_at: HashMap::new(),
                since: revision,
                keys: keys_of(live, env),
                sent: 0,
                tails: Vec::new(),
                flagsmith_opening: None,
                full_opening: None,
            }
        })
    }

    /// Flagsmith's realtime stream: the environment's `updated_at` now (the SDKs refetch if it is
    /// newer than what they hold, which closes the gap between their fetch and this stream),
    /// then one event per change.
    pub fn subscribe_flagsmith(
        &self,
        env: u64,
        live: &Live,
        close: Option<CloseConnection>,
    ) -> Subscription {
        self.subscribe(env, live, close, |channel| {
            if channel.revision > 0 {
                channel.flagsmith_opening()
            } else {
                Bytes::from_static(events::RETRY)
            }
        })
    }

    /// Subscribes to `env`'s channel, `opening` making the first frames (`retry:` included).
    fn subscribe(
        &self,
        env: u64,
        live: &Live,
        close: Option<CloseConnection>,
        opening: impl FnOnce(&mut Channel) -> Bytes,
    ) -> Subscription {
        self.buffer_events
            .store(live.streams.buffer_events, Ordering::Relaxed);
        let mut channels = self.lock();
        let cache = self.cache.load_full();
        let channel = self.channel(&mut channels, env, &cache, live);
        let tail = Arc::new(Tail {
            taken: AtomicU64::new(channel.sent),
            ended: AtomicU8::new(0),
            close,
        });
        if channel.tails.len() >= TAILS_PRUNED_AT.max(channel.tails.capacity()) {
            channel.tails.retain(|tail| Arc::strong_count(tail) > 1);
        }
        channel.tails.push(tail.clone());
        Subscription {
            opening: opening(channel),
            notices: channel.notices.subscribe(),
            revision: channel.revision,
            cache,
            tail,
            ended: self
                .stopping
                .load(Ordering::Acquire)
                .then_some(EndReason::Shutdown),
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
        close: Option<CloseConnection>,
    ) -> Subscription {
        self.subscribe(env, live, close, |channel| {
            let at = channel.position(env);
            match last_event_id {
                Some(seen) if seen == channel.revision => Bytes::from_static(events::RETRY),
                Some(seen) if seen >= channel.since && seen < channel.revision => {
                    let (changed, deleted) = changes_since(channel, seen);
                    with_retry(&native_frame(at, None, false, &changed, &deleted))
                }
                _ => channel.full_opening(env),
            }
        })
    }

    /// An identity's native stream: its body evaluates the subscription's cache and each change
    /// itself, so the opening is only `retry:`.
    pub fn subscribe_identity(
        &self,
        env: u64,
        live: &Live,
        close: Option<CloseConnection>,
    ) -> Subscription {
        self.subscribe(env, live, close, |_| Bytes::from_static(events::RETRY))
    }

    /// The cache file's id, which every native position names.
    pub fn file_id(&self) -> u64 {
        self.file_id
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
                self.drop_slow(channel);
            }
        }
    }

    /// Ends the streams of `channel` that are more than `streams.buffer_events` notices behind
    /// (their clients stopped reading, so hyper stopped asking their bodies for more), and
    /// forgets those that ended.
    fn drop_slow(&self, channel: &mut Channel) {
        let limit = self.buffer_events.load(Ordering::Relaxed) as u64;
        let sent = channel.sent;
        channel.tails.retain(|tail| {
            if Arc::strong_count(tail) == 1 || tail.ended.load(Ordering::Acquire) != 0 {
                return false;
            }
            if sent.saturating_sub(tail.taken.load(Ordering::Acquire)) > limit {
                self.end(tail, EndReason::TooSlow);
                return false;
            }
            true
        });
    }

    /// Follows the writer's commits for the life of the task, announcing each published cache.
    pub async fn follow(self: Arc<Self>, mut commits: tokio::sync::watch::Receiver<u64>) {
        while commits.changed().await.is_ok() {
            let published = self.cache.load_full();
            self.announce(&published);
        }
    }

    /// A comment line on every stream, every `interval()` (`streams.heartbeat_secs`, read live).
    pub async fn heartbeats(self: Arc<Self>, interval: impl Fn() -> Duration + Send + 'static) {
        loop {
            tokio::time::sleep(interval()).await;
            for channel in self.lock().values_mut() {
                channel.send(Notice::Heartbeat);
                self.drop_slow(channel);
            }
        }
    }

    /// Ends the streams of every environment whose keys differ in `live`, a reloaded
    /// configuration: their clients reconnect, and are let in again only with a key that holds.
    pub fn keys_reloaded(&self, live: &Live) {
        self.buffer_events
            .store(live.streams.buffer_events, Ordering::Relaxed);
        for (env, channel) in self.lock().iter_mut() {
            let keys = keys_of(live, *env);
            if keys != channel.keys {
                channel.keys = keys;
                channel.send(Notice::End(EndReason::KeysReloaded));
            }
        }
    }

    /// Ends every stream and refuses new ones: the server is stopping, and waits for open
    /// responses to end.
    pub fn shut_down(&self) {
        let mut channels = self.lock();
        // Under the lock: a stream subscribes either before (and gets the notice) or after
        // (and sees the flag).
        self.stopping.store(true, Ordering::Release);
        for channel in channels.values_mut() {
            channel.send(Notice::End(EndReason::Shutdown));
        }
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
    channel.flagsmith_opening = None;
    channel.full_opening = None;
    channel.send(Notice::Changed(Arc::new(notice)));
}

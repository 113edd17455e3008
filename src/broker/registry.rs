//! `RegistryActor`: the one entry point of the broker. It creates channel
//! actors on demand (spread over the broker's arbiters), forwards every
//! channel message to them, answers listings, keeps the pulse book, and stops
//! channels that have gone idle.
//!
//! Stopping is race-free because every channel message is counted: the
//! registry counts what it forwarded to each channel, the channel reports
//! how many it received when it finds itself idle, and only when the two
//! counts agree (nothing in flight) is the channel forgotten and retired.
//!
//! Publishes skip the registry when their channel runs: the [`Directory`]
//! lends its address to the publish handler, which counts its message in
//! the same counter under the directory's read lock, while the registry
//! compares the counts and removes the channel under its write lock. A
//! publisher's message is therefore either counted before the comparison
//! (the channel stays) or finds the channel gone and goes through the
//! registry; none lands in a retired actor's mailbox.
//!
//! In cluster mode the registry publishes to Redis itself (the event comes
//! back to every node's channel actors through the bus), and routes bus
//! events ([`Deliver`]) to the channel actors this node has.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use actix::prelude::*;
use log::{info, warn};
use serde::Serialize;

use super::{
    BrokerError, ChannelStats,
    channel::{
        CatchUp, ChannelActor, ChannelConfig, CloseSubscribers, CountPulse, Deliver, Inspect,
        Publish, Published, Retire, Subscribe, Unsubscribe,
    },
    event::{ChannelName, Epoch, EventId, EventType},
    pulse::{PulseBook, PulseRecord},
};
use crate::{cluster::Cluster, config::Settings, metrics::Metrics};

struct ChannelEntry {
    addr: Addr<ChannelActor>,
    stats: Arc<ChannelStats>,
    /// The channel's epoch, as its `lastEventId` is shown in listings.
    head_at_start: EventId,
    /// Messages sent to this channel, by the registry and by publishers
    /// through the [`Directory`] (see the module docs).
    forwarded: Arc<AtomicU64>,
}

/// The arbiters channel actors run on: dedicated ones (`broker.arbiters`),
/// or the HTTP workers', added as each worker starts (`broker.arbiters = 0`).
#[derive(Clone, Default)]
pub struct Homes(Arc<RwLock<Vec<ArbiterHandle>>>);

impl Homes {
    pub fn add(&self, arbiter: ArbiterHandle) {
        if let Ok(mut homes) = self.0.write() {
            homes.push(arbiter);
        }
    }

    /// The home of a channel whose name hashes to `hash`; `None` while
    /// there is none (the registry then runs the channel itself).
    fn pick(&self, hash: u64) -> Option<ArbiterHandle> {
        let homes = self.0.read().ok()?;
        match homes.len() {
            0 => None,
            n => Some(homes[(hash % n as u64) as usize].clone()),
        }
    }
}

/// The running channels, shared with the publish handlers so that a
/// publish goes straight to its channel's actor: one thread hop fewer per
/// event than through the registry. The registry alone adds and removes
/// entries; see the module docs for why retiring stays race-free.
#[derive(Clone, Default)]
pub struct Directory(Arc<RwLock<HashMap<ChannelName, Route>>>);

struct Route {
    addr: Addr<ChannelActor>,
    forwarded: Arc<AtomicU64>,
}

impl Directory {
    /// Sends `msg` to its channel's actor when the channel runs; gives it
    /// back (to go through the registry) when it does not.
    pub fn publish(&self, msg: Publish) -> Result<(), Publish> {
        let Ok(routes) = self.0.read() else {
            return Err(msg);
        };
        match routes.get(&msg.channel) {
            Some(route) if route.addr.connected() => {
                // Counted while the read lock keeps the registry from
                // comparing counts: see the module docs.
                route.forwarded.fetch_add(1, Ordering::SeqCst);
                route.addr.do_send(msg);
                Ok(())
            }
            _ => Err(msg),
        }
    }

    fn insert(&self, name: &ChannelName, entry: &ChannelEntry) {
        if let Ok(mut routes) = self.0.write() {
            routes.insert(
                name.clone(),
                Route {
                    addr: entry.addr.clone(),
                    forwarded: Arc::clone(&entry.forwarded),
                },
            );
        }
    }

    /// Removes `name` if `still_idle` holds while no publisher can count a
    /// message (the write lock); answers whether it was removed.
    fn remove_if(&self, name: &ChannelName, still_idle: impl FnOnce() -> bool) -> bool {
        let Ok(mut routes) = self.0.write() else {
            return false;
        };
        if !still_idle() {
            return false;
        }
        routes.remove(name);
        true
    }
}

pub struct RegistryActor {
    channels: HashMap<ChannelName, ChannelEntry>,
    /// Arbiters that run channel actors; empty means the registry's own.
    arbiters: Homes,
    hasher: RandomState,
    channel_config: ChannelConfig,
    max_channels: usize,
    pulses: PulseBook,
    /// Set at shutdown: no new subscriptions, no new publishes (a publish
    /// accepted now could reach no subscriber: their streams are closing).
    closing: bool,
    metrics: Arc<Metrics>,
    /// The running channels, for publishers (standalone only: in cluster
    /// mode every publish goes through Redis).
    directory: Directory,
}

impl RegistryActor {
    pub fn new(settings: &Settings) -> Self {
        Self {
            channels: HashMap::new(),
            arbiters: Homes::default(),
            hasher: RandomState::new(),
            channel_config: ChannelConfig {
                history_max_events: settings.history.max_events,
                history_max_age: settings.history.max_age,
                tick: settings.stream.heartbeat,
                metrics: Metrics::detached(),
                max_subscribers: settings.limits.max_subscribers_per_channel,
                max_total_subscribers: settings.limits.max_subscribers,
                total_subscribers: Arc::new(AtomicU64::new(0)),
                cluster: None,
                store: None,
                mercure: None,
            },
            max_channels: settings.broker.max_channels,
            pulses: PulseBook::new(settings.pulses.clone()),
            closing: false,
            metrics: Metrics::detached(),
            directory: Directory::default(),
        }
    }

    /// The count of subscriptions in the whole broker, which channels keep
    /// (`limits.max_subscribers`); Mercure subscriptions count in it too.
    pub fn total_subscribers(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.channel_config.total_subscribers)
    }

    /// The directory publish handlers use to reach running channels.
    pub fn directory(&self) -> Directory {
        self.directory.clone()
    }

    /// Offers every published event to the Mercure hub as well (see
    /// `crate::mercure`): the channel actors do, or in cluster mode the
    /// registry itself.
    pub fn with_mercure(mut self, hub: Recipient<ChannelPublished>) -> Self {
        self.channel_config.mercure = Some(hub);
        self
    }

    /// Counts into `metrics` (the application's) instead of a detached set.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.channel_config.metrics = Arc::clone(&metrics);
        self.metrics = metrics;
        self
    }

    /// Runs channel actors on these arbiters instead of the registry's own.
    pub fn with_arbiters(mut self, arbiters: Homes) -> Self {
        self.arbiters = arbiters;
        self
    }

    /// Cluster mode: events are published to and read from Redis.
    pub fn with_cluster(mut self, cluster: Cluster) -> Self {
        self.channel_config.cluster = Some(cluster);
        self
    }

    /// Durable history: channels keep their log in this store too.
    pub fn with_store(mut self, store: crate::store::Store) -> Self {
        self.channel_config.store = Some(store);
        self
    }

    /// The channel `name`'s address, counting one forwarded message; the
    /// channel is created when `create` is set and there is room.
    fn route(
        &mut self,
        name: &ChannelName,
        create: bool,
        ctx: &mut Context<Self>,
    ) -> Result<Option<Addr<ChannelActor>>, BrokerError> {
        if !self.channels.contains_key(name) {
            if !create {
                return Ok(None);
            }
            if self.channels.len() >= self.max_channels {
                return Err(BrokerError::TooManyChannels(self.max_channels));
            }
            let stats = Arc::new(ChannelStats::default());
            let actor = ChannelActor::new(
                name.clone(),
                &self.channel_config,
                Arc::clone(&stats),
                ctx.address(),
            );
            let head_at_start = actor.head();
            let home = self.arbiters.pick(self.hasher.hash_one(name));
            let addr = match home {
                None => actor.start(),
                Some(arbiter) => ChannelActor::start_in_arbiter(&arbiter, move |_| actor),
            };
            let entry = ChannelEntry {
                addr,
                stats,
                head_at_start,
                forwarded: Arc::new(AtomicU64::new(0)),
            };
            if self.channel_config.cluster.is_none() {
                self.directory.insert(name, &entry);
            }
            self.channels.insert(name.clone(), entry);
        }
        Ok(self.channels.get(name).map(|entry| {
            entry.forwarded.fetch_add(1, Ordering::SeqCst);
            entry.addr.clone()
        }))
    }

    fn summary(name: &ChannelName, entry: &ChannelEntry) -> ChannelSummary {
        let last_seq = entry.stats.last_seq.load(Ordering::Relaxed);
        let epoch = match entry.stats.epoch.load(Ordering::Relaxed) {
            0 => entry.head_at_start.epoch,
            raw => Epoch::from_raw(raw),
        };
        ChannelSummary {
            name: name.to_string(),
            subscribers: entry.stats.subscribers.load(Ordering::Relaxed),
            published: entry.stats.published.load(Ordering::Relaxed),
            last_event_id: EventId {
                seq: last_seq,
                epoch,
            }
            .to_string(),
            history: entry.stats.history.load(Ordering::Relaxed),
            pulses: entry.stats.pulses.load(Ordering::Relaxed),
            evicted: entry.stats.evicted.load(Ordering::Relaxed),
        }
    }
}

impl Actor for RegistryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Forgetting silent pulse clients needs no precision: the channel tick will do.
        ctx.run_interval(self.channel_config.tick, |actor, _| {
            actor.pulses.forget_silent(Instant::now());
            actor.metrics.upkeep();
        });
    }
}

impl Handler<Publish> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: Publish, ctx: &mut Self::Context) {
        // Standalone, the channel offers it to the hub once it is accepted.
        let cluster = self.channel_config.cluster.is_some();
        let mirror = self
            .channel_config
            .mercure
            .clone()
            .filter(|_| cluster && msg.mirror)
            .map(|hub| {
                let event = ChannelPublished {
                    channel: msg.channel.clone(),
                    event_type: msg.event_type.clone(),
                    data: msg.data.clone(),
                };
                (hub, event)
            });
        if self.publish(msg, ctx)
            && let Some((hub, event)) = mirror
        {
            hub.do_send(event);
        }
    }
}

impl RegistryActor {
    /// Routes a publish to its channel; false when it was refused.
    fn publish(&mut self, msg: Publish, ctx: &mut Context<Self>) -> bool {
        if self.closing {
            if let Some(reply) = msg.reply {
                let _ = reply.send(Err(BrokerError::ShuttingDown));
            }
            return false;
        }
        if let Some(cluster) = &self.channel_config.cluster {
            // Redis assigns the id and carries the event to every node; the
            // answer waits until it is stored (503 otherwise, never 202).
            let cluster = cluster.clone();
            let metrics = Arc::clone(&self.metrics);
            let subscribers = self
                .channels
                .get(&msg.channel)
                .map_or(0, |e| e.stats.subscribers.load(Ordering::Relaxed) as usize);
            actix::spawn(async move {
                let stored = cluster
                    .publish(&msg.channel, msg.event_type.as_ref(), &msg.data)
                    .await;
                let answer = match stored {
                    Ok(id) => {
                        metrics.record_publish_latency(msg.received_at.elapsed());
                        metrics.published.increment(1);
                        Ok(Published { id, subscribers })
                    }
                    Err(err) => {
                        warn!("publish refused channel={} reason={err}", msg.channel);
                        Err(BrokerError::StoreUnavailable(err.to_string()))
                    }
                };
                if let Some(reply) = msg.reply {
                    let _ = reply.send(answer);
                }
            });
            return true;
        }
        match self.route(&msg.channel, true, ctx) {
            Ok(Some(channel)) => {
                channel.do_send(msg);
                true
            }
            Ok(None) => false,
            Err(err) => {
                warn!("publish refused channel={} reason={err}", msg.channel);
                if let Some(reply) = msg.reply {
                    let _ = reply.send(Err(err));
                }
                false
            }
        }
    }
}

/// An event published on a channel, offered to the Mercure hub.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChannelPublished {
    pub channel: ChannelName,
    pub event_type: Option<EventType>,
    pub data: String,
}

impl Handler<Subscribe> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, ctx: &mut Self::Context) {
        if self.closing {
            let _ = msg.reply.send(Err(BrokerError::ShuttingDown));
            return;
        }
        match self.route(&msg.channel, true, ctx) {
            Ok(Some(channel)) => channel.do_send(msg),
            Ok(None) => {}
            Err(err) => {
                warn!("subscribe refused channel={} reason={err}", msg.channel);
                let _ = msg.reply.send(Err(err));
            }
        }
    }
}

impl Handler<Unsubscribe> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Self::Context) {
        if let Ok(Some(channel)) = self.route(&msg.channel, false, ctx) {
            channel.do_send(msg);
        }
    }
}

impl Handler<Inspect> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: Inspect, ctx: &mut Self::Context) {
        match self.route(&msg.channel, false, ctx) {
            Ok(Some(channel)) => channel.do_send(msg),
            _ => {
                let _ = msg
                    .reply
                    .send(Err(BrokerError::UnknownChannel(msg.channel.to_string())));
            }
        }
    }
}

impl Handler<Deliver> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        // Only channels with an actor here have subscribers here.
        if let Ok(Some(channel)) = self.route(&msg.channel, false, ctx) {
            channel.do_send(msg);
        }
    }
}

/// From the bus: it (re)subscribed, so every channel reads what it missed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BusResumed;

impl Handler<BusResumed> for RegistryActor {
    type Result = ();

    fn handle(&mut self, _: BusResumed, _: &mut Self::Context) {
        for (name, entry) in &mut self.channels {
            entry.forwarded.fetch_add(1, Ordering::SeqCst);
            entry.addr.do_send(CatchUp {
                channel: name.clone(),
            });
        }
    }
}

/// A client's liveness report, optionally for one channel.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Pulse {
    pub client_id: Arc<str>,
    pub channel: Option<ChannelName>,
}

impl Handler<Pulse> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: Pulse, ctx: &mut Self::Context) {
        self.metrics.pulses.increment(1);
        self.pulses
            .record(&msg.client_id, Instant::now(), SystemTime::now());
        if let Some(channel) = msg.channel {
            // Pulses do not create channels: they count where there is one.
            if let Ok(Some(addr)) = self.route(&channel, false, ctx) {
                addr.do_send(CountPulse {
                    channel,
                    client_id: msg.client_id,
                });
            }
        }
    }
}

/// One channel in `GET /channels`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSummary {
    pub name: String,
    pub subscribers: u64,
    pub published: u64,
    pub last_event_id: String,
    pub history: u64,
    pub pulses: u64,
    /// Subscribers evicted as slow consumers.
    pub evicted: u64,
}

/// List channels, or one channel when `name` is set.
#[derive(Message)]
#[rtype(result = "Vec<ChannelSummary>")]
pub struct ListChannels {
    pub name: Option<ChannelName>,
}

impl Handler<ListChannels> for RegistryActor {
    type Result = MessageResult<ListChannels>;

    fn handle(&mut self, msg: ListChannels, _: &mut Self::Context) -> Self::Result {
        let mut list: Vec<_> = match msg.name {
            Some(name) => self
                .channels
                .get(&name)
                .map(|e| Self::summary(&name, e))
                .into_iter()
                .collect(),
            None => self
                .channels
                .iter()
                .filter(|(name, _)| !name.is_internal())
                .map(|(name, e)| Self::summary(name, e))
                .collect(),
        };
        list.sort_by(|a, b| a.name.cmp(&b.name));
        MessageResult(list)
    }
}

/// The pulse book as `GET /pulses` shows it.
#[derive(Message)]
#[rtype(result = "Vec<PulseRecord>")]
pub struct ListPulses;

impl Handler<ListPulses> for RegistryActor {
    type Result = MessageResult<ListPulses>;

    fn handle(&mut self, _: ListPulses, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.pulses.records(Instant::now()))
    }
}

/// Every client id the pulse book remembers (for `DELETE /killall`).
#[derive(Message)]
#[rtype(result = "Vec<Arc<str>>")]
pub struct KnownClients;

impl Handler<KnownClients> for RegistryActor {
    type Result = MessageResult<KnownClients>;

    fn handle(&mut self, _: KnownClients, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.pulses.client_ids())
    }
}

/// From a channel that has no subscribers and no history: may it stop?
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChannelIdle {
    pub channel: ChannelName,
    /// How many registry messages the channel had received when it checked.
    pub received: u64,
}

impl Handler<ChannelIdle> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: ChannelIdle, _: &mut Self::Context) {
        let Some(entry) = self.channels.get(&msg.channel) else {
            return;
        };
        let idle = || entry.forwarded.load(Ordering::SeqCst) == msg.received;
        let retired = match self.channel_config.cluster {
            None => self.directory.remove_if(&msg.channel, idle),
            Some(_) => idle(),
        };
        if retired && let Some(entry) = self.channels.remove(&msg.channel) {
            entry.addr.do_send(Retire);
        }
    }
}

/// Shutdown: refuse new subscriptions and end every open stream.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Shutdown;

impl Handler<Shutdown> for RegistryActor {
    type Result = usize;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> usize {
        self.closing = true;
        let mut streams = 0;
        for entry in self.channels.values() {
            streams += entry.stats.subscribers.load(Ordering::Relaxed) as usize;
            entry.addr.do_send(CloseSubscribers);
        }
        info!(
            "closing streams channels={} subscribers={streams}",
            self.channels.len()
        );
        streams
    }
}

/// Asked by `GET /readyz`: can the registry take work? It answers at once,
/// so a reply within the readiness timeout also shows its mailbox is not
/// backed up.
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct CheckReady;

impl Handler<CheckReady> for RegistryActor {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, _: CheckReady, _: &mut Self::Context) -> Self::Result {
        if self.closing {
            Err(BrokerError::ShuttingDown)
        } else {
            Ok(())
        }
    }
}

/// Asked by `GET /metrics`: set the gauges only the registry can compute
/// (channels, subscribers, channel mailbox depths, opted-in channel series).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SampleMetrics {
    /// When the scrape sent this; the wait is the registry's own backlog.
    pub sent_at: Instant,
}

impl Handler<SampleMetrics> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: SampleMetrics, _: &mut Self::Context) {
        let metrics = &self.metrics;
        metrics
            .registry_latency
            .set(msg.sent_at.elapsed().as_secs_f64());
        let (mut subscribers, mut depth_total, mut depth_max) = (0u64, 0u64, 0u64);
        for (name, entry) in &self.channels {
            let subs = entry.stats.subscribers.load(Ordering::Relaxed);
            subscribers += subs;
            let depth = entry
                .forwarded
                .load(Ordering::Relaxed)
                .saturating_sub(entry.stats.received.load(Ordering::Relaxed));
            depth_total += depth;
            depth_max = depth_max.max(depth);
            if let Some(series) = metrics.channel_series(name.as_str()) {
                series.subscribers.set(subs as f64);
            }
        }
        metrics.channels.set(self.channels.len() as f64);
        metrics.subscribers.set(subscribers as f64);
        metrics.channel_mailbox_depth.set(depth_total as f64);
        metrics.channel_mailbox_depth_max.set(depth_max as f64);
    }
}

/// How long a scrape waits for [`SampleMetrics`] before rendering what it has.
pub const SAMPLE_TIMEOUT: Duration = Duration::from_millis(500);

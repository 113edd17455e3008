//! `RegistryActor`: creates channel actors on demand (spread over the
//! broker's [`Homes`]), routes messages to channels that are not running yet,
//! answers listings, keeps the pulse book, and stops channels that have gone
//! idle.
//!
//! Messages to a running channel usually skip it: callers send through the
//! [`Directory`] (see there). Stopping stays race-free because every
//! [`ChannelMessage`] is counted twice, by the [`ChannelHandle`] that sends
//! it and by the channel actor that handles it: a channel that finds itself
//! idle reports how many it handled ([`ChannelIdle`]), and only when that
//! equals what was sent (nothing in flight) is it forgotten and retired.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use actix::prelude::*;
use log::{info, warn};
use serde::Serialize;
use tokio::sync::oneshot;

use super::{
    bridge::Bridge,
    channel::{ChannelActor, ChannelConfig, ChannelHandle, ChannelStats},
    codec::{Codec, PlainCodec},
    directory::{Directory, Homes},
    error::BrokerError,
    event::{Epoch, EventId},
    history::{Retention, budget::HistoryBudget},
    idempotency::IdempotencyBook,
    log::{DurableStore, SharedLog},
    message::{ChannelIdle, ChannelMessage},
    occupancy::OccupancyWatch,
    presence::PresenceShare,
    pulse::{PulseBook, PulseRecord},
};
use crate::{config::Settings, metrics::Metrics, names::ChannelName};

struct ChannelEntry {
    handle: ChannelHandle,
    stats: Arc<ChannelStats>,
    /// The channel's epoch, as its `lastEventId` is shown in listings.
    head_at_start: EventId,
}

pub struct RegistryActor {
    channels: HashMap<ChannelName, ChannelEntry>,
    /// Arbiters that run channel actors; none means the registry's own.
    homes: Homes,
    hasher: RandomState,
    config: ChannelConfig,
    /// Codecs of channels that do not use [`PlainCodec`] (internal ones).
    codecs: HashMap<ChannelName, Arc<dyn Codec>>,
    max_channels: usize,
    /// Internal channels among `channels`.
    internal: usize,
    pulses: PulseBook,
    /// Set at shutdown: no new channels, subscriptions or publishes (a
    /// publish accepted now could reach no subscriber).
    closing: bool,
    metrics: Arc<Metrics>,
    /// The running channels, for every caller of the broker.
    directory: Directory,
}

impl RegistryActor {
    pub fn new(settings: &Settings) -> Self {
        Self {
            channels: HashMap::new(),
            homes: Homes::default(),
            hasher: RandomState::new(),
            config: ChannelConfig {
                retention: Retention {
                    max_events: settings.history.max_events,
                    max_age: settings.history.max_age,
                    budget: (settings.history.max_total_bytes > 0).then(|| {
                        Arc::new(HistoryBudget::new(
                            settings.history.max_total_bytes,
                            settings.history.max_age,
                        ))
                    }),
                },
                tick: settings.stream.heartbeat,
                metrics: Metrics::detached(),
                max_subscribers: settings.limits.max_subscribers_per_channel,
                max_total_subscribers: settings.limits.max_subscribers,
                total_subscribers: Arc::new(AtomicU64::new(0)),
                durable: None,
                shared: None,
                bridge: None,
                presence: None,
                occupancy: None,
                max_presence_members: settings.limits.max_presence_members,
                idempotency: Arc::new(IdempotencyBook::new(
                    settings.publish.idempotency_window,
                    settings.publish.idempotency_max_keys,
                )),
            },
            codecs: HashMap::new(),
            max_channels: settings.broker.max_channels,
            internal: 0,
            pulses: PulseBook::new(settings.pulses.clone()),
            closing: false,
            metrics: Metrics::detached(),
            directory: Directory::default(),
        }
    }

    /// The directory callers use to reach running channels.
    pub fn directory(&self) -> Directory {
        self.directory.clone()
    }

    /// Where the broker counts what it does.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Counts into `metrics` (the application's) instead of a detached set.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.config.metrics = Arc::clone(&metrics);
        self.metrics = metrics;
        self
    }

    /// Runs channel actors on these arbiters instead of the registry's own.
    pub fn with_homes(mut self, homes: Homes) -> Self {
        self.homes = homes;
        self
    }

    /// Durable history: channels keep their events in this store too,
    /// and the book takes back the idempotency keys it kept.
    pub fn with_durable(mut self, store: Arc<dyn DurableStore>) -> Self {
        self.config.idempotency.restore(store.remembered());
        self.config.durable = Some(store);
        self
    }

    /// Cluster mode: channels' events are numbered and kept by this log.
    pub fn with_shared(mut self, log: Arc<dyn SharedLog>) -> Self {
        self.config.shared = Some(log);
        self
    }

    /// Every event accepted on a (non-internal) channel is offered here too.
    pub fn with_bridge(mut self, bridge: Arc<dyn Bridge>) -> Self {
        self.config.bridge = Some(bridge);
        self
    }

    /// Cluster mode: every (non-internal) channel tells its joins and
    /// leaves here.
    pub fn with_presence_share(mut self, share: Arc<dyn PresenceShare>) -> Self {
        self.config.presence = Some(share);
        self
    }

    /// Channels tell `watch` their first and last subscriber and their
    /// users' joins and leaves (the occupancy webhooks).
    pub fn with_occupancy_watch(mut self, watch: Arc<dyn OccupancyWatch>) -> Self {
        self.config.occupancy = Some(watch);
        self
    }

    /// `channel`'s events are made by `codec` (a protocol's internal channel).
    pub fn with_codec(mut self, channel: ChannelName, codec: Arc<dyn Codec>) -> Self {
        self.codecs.insert(channel, codec);
        self
    }

    /// The handle of `name`'s channel, started when `create` is set and
    /// there is room.
    fn route(
        &mut self,
        name: &ChannelName,
        create: bool,
        ctx: &mut Context<Self>,
    ) -> Result<Option<ChannelHandle>, BrokerError> {
        if let Some(entry) = self.channels.get(name) {
            return Ok(Some(entry.handle.clone()));
        }
        if !create {
            return Ok(None);
        }
        if self.closing {
            return Err(BrokerError::ShuttingDown);
        }
        // Internal channels (the Mercure hub's) are the broker's own: they
        // do not use up `broker.max_channels`.
        let public = self.channels.len() - self.internal;
        if !name.is_internal() && public >= self.max_channels {
            return Err(BrokerError::TooManyChannels(self.max_channels));
        }
        self.internal += usize::from(name.is_internal());
        let stats = Arc::new(ChannelStats::default());
        let codec = self
            .codecs
            .get(name)
            .cloned()
            .unwrap_or_else(|| Arc::new(PlainCodec));
        let actor = ChannelActor::new(
            name.clone(),
            &self.config,
            codec,
            Arc::clone(&stats),
            ctx.address().recipient(),
        );
        let head_at_start = actor.head();
        let home = self.homes.pick(self.hasher.hash_one(name));
        let handle = ChannelHandle::start(actor, home.as_ref());
        self.directory.insert(name, &handle);
        self.channels.insert(
            name.clone(),
            ChannelEntry {
                handle: handle.clone(),
                stats,
                head_at_start,
            },
        );
        Ok(Some(handle))
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
        ctx.run_interval(self.config.tick, |actor, _| {
            actor.pulses.forget_silent(Instant::now());
            actor.metrics.upkeep();
        });
    }
}

/// A message for a channel that is not (known to be) running: the registry
/// starts the channel when the message may start one, and forwards it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ToChannel {
    pub channel: ChannelName,
    pub message: ChannelMessage,
}

impl Handler<ToChannel> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: ToChannel, ctx: &mut Self::Context) {
        let ToChannel { channel, message } = msg;
        match self.route(&channel, message.starts_channel(), ctx) {
            Ok(Some(handle)) => handle.send(message),
            Ok(None) => answer_without_channel(
                &channel,
                message,
                BrokerError::UnknownChannel(channel.to_string()),
            ),
            Err(err) => {
                warn!("request refused channel={channel} reason={err}");
                answer_without_channel(&channel, message, err);
            }
        }
    }
}

/// Answers a message whose channel does not run (and was not started).
fn answer_without_channel(channel: &ChannelName, message: ChannelMessage, err: BrokerError) {
    match message {
        ChannelMessage::Publish(publish) => {
            if let Some(reply) = publish.reply {
                let _ = reply.send(Err(err));
            }
        }
        ChannelMessage::Subscribe(subscribe) => {
            let _ = subscribe.reply.send(Err(err));
        }
        // No channel here: nobody on it.
        ChannelMessage::Presence { reply, .. } => {
            let _ = reply.send(Ok(Default::default()));
        }
        ChannelMessage::Inspect { reply } => {
            let _ = reply.send(Err(BrokerError::UnknownChannel(channel.to_string())));
        }
        // No channel, so none of its streams to end.
        ChannelMessage::Disconnect { reply, .. } => {
            let _ = reply.send(Ok(Vec::new()));
        }
        ChannelMessage::ReadHistory(read) => {
            let _ = read.reply.send(Err(err));
        }
        // Nothing to tell: no channel, no subscribers, no pulses to count.
        ChannelMessage::Unsubscribe { .. }
        | ChannelMessage::Delivered { .. }
        | ChannelMessage::CatchUp
        | ChannelMessage::CountPulse { .. }
        | ChannelMessage::Announce(_)
        | ChannelMessage::CloseSubscribers => {}
    }
}

/// Revocation: asks every running channel (or only those of `channels`
/// that run) to end `user`'s streams; answers the channels' replies, each
/// the subscriber ids it ended. Starts no channel.
#[derive(Message)]
#[rtype(result = "Vec<oneshot::Receiver<Result<Vec<u64>, BrokerError>>>")]
pub struct DisconnectUser {
    pub user: Arc<str>,
    pub channels: Option<Vec<ChannelName>>,
}

impl Handler<DisconnectUser> for RegistryActor {
    type Result = MessageResult<DisconnectUser>;

    fn handle(&mut self, msg: DisconnectUser, _: &mut Self::Context) -> Self::Result {
        let ask = |handle: &ChannelHandle| {
            let (reply, answer) = oneshot::channel();
            handle.send(ChannelMessage::Disconnect {
                user: Arc::clone(&msg.user),
                reply,
            });
            answer
        };
        let answers = match &msg.channels {
            None => self.channels.values().map(|e| ask(&e.handle)).collect(),
            Some(names) => names
                .iter()
                .filter_map(|name| self.channels.get(name))
                .map(|e| ask(&e.handle))
                .collect(),
        };
        MessageResult(answers)
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
            if let Ok(Some(handle)) = self.route(&channel, false, ctx) {
                handle.send(ChannelMessage::CountPulse {
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

/// List this node's channels (internal ones only when named), or one
/// channel when `name` is set.
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

/// The pulse book as `GET /pulses` shows it: the `limit` most recently
/// seen clients.
#[derive(Message)]
#[rtype(result = "Vec<PulseRecord>")]
pub struct ListPulses {
    pub limit: usize,
}

impl Handler<ListPulses> for RegistryActor {
    type Result = MessageResult<ListPulses>;

    fn handle(&mut self, msg: ListPulses, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.pulses.records(Instant::now(), msg.limit))
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

impl Handler<ChannelIdle> for RegistryActor {
    type Result = ();

    /// Retires the channel if nothing was sent to it since it checked.
    fn handle(&mut self, msg: ChannelIdle, _: &mut Self::Context) {
        let Some(entry) = self.channels.get(&msg.channel) else {
            return;
        };
        let handle = &entry.handle;
        let retired = self
            .directory
            .remove_if(&msg.channel, || handle.sent() == msg.received);
        if retired && let Some(entry) = self.channels.remove(&msg.channel) {
            self.internal -= usize::from(msg.channel.is_internal());
            entry.handle.retire();
        }
    }
}

/// Shutdown: refuse new channels and subscriptions and end every open
/// stream; answers how many subscriptions there were.
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
            entry.handle.send(ChannelMessage::CloseSubscribers);
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
/// (channels, subscribers, channel mailbox depths, opted-in channel series,
/// the history budget).
/// Internal channels (the Mercure hub's) count in the mailbox depths only.
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
        let (mut channels, mut subscribers, mut depth_total, mut depth_max) = (0, 0u64, 0u64, 0u64);
        for (name, entry) in &self.channels {
            let depth = entry
                .handle
                .sent()
                .saturating_sub(entry.stats.received.load(Ordering::Relaxed));
            depth_total += depth;
            depth_max = depth_max.max(depth);
            if name.is_internal() {
                continue;
            }
            channels += 1;
            let subs = entry.stats.subscribers.load(Ordering::Relaxed);
            subscribers += subs;
            if let Some(series) = metrics.channel_series(name.as_str()) {
                series.subscribers.set(subs as f64);
            }
        }
        metrics.channels.set(f64::from(channels));
        metrics.subscribers.set(subscribers as f64);
        metrics.channel_mailbox_depth.set(depth_total as f64);
        metrics.channel_mailbox_depth_max.set(depth_max as f64);
        if let Some(budget) = &self.config.retention.budget {
            metrics.history_bytes.set(budget.retained_bytes() as f64);
            metrics.history_trimmed.absolute(budget.trimmed_events());
        }
    }
}

/// How long a scrape waits for [`SampleMetrics`] before rendering what it has.
pub const SAMPLE_TIMEOUT: Duration = Duration::from_millis(500);

//! `ChannelActor`: one per live channel. It owns the channel's subscribers,
//! its log position or history, and its pulse counters; it numbers events
//! (or learns their numbers from a shared log) and fans them out.
//!
//! Messages reach it through a [`ChannelHandle`], which counts what it sends;
//! the actor's one handler counts what it receives, so the registry can
//! retire an idle channel without racing a message in flight (see
//! `registry`). It answers callers on the `oneshot` in each request.
//!
//! Where a channel's events are kept decides how they are numbered:
//! - **owned** (`owned`): in memory, optionally also in a durable store. The
//!   actor numbers events; with a store an event is fanned out and
//!   acknowledged only once the store has it on disk.
//! - **shared** (`shared`): a log several nodes share (cluster mode). The log
//!   numbers events and carries them to every node that follows the channel
//!   (it does while it has subscribers); the actor delivers them in seq order
//!   and reads any hole from the log.
//!
//! Either way the fan-out is the same ([`Members`]) and never waits for a
//! subscriber.

mod owned;
mod shared;
#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix::prelude::*;
use log::{debug, info, warn};

use self::{owned::OwnedLog, shared::SharedCursor};
use super::{
    codec::Codec,
    error::BrokerError,
    event::{Event, EventId},
    history::{GapReason, Replay, Retention},
    log::{DurableStore, LogEntry, Origin, Record, SharedLog},
    members::Members,
    message::{
        ChannelDetail, ChannelIdle, ChannelMessage, Publish, Published, Retire, Subscribe,
        Subscribed,
    },
    mirror::Mirror,
    subscriber::Delivery,
};
use crate::{
    metrics::{ChannelSeries, Metrics},
    names::{ChannelName, EventType},
};

/// Most distinct clients whose pulses one channel counts separately; pulses
/// of further clients still count in the total. Bounds memory per channel.
const MAX_PULSE_CLIENTS: usize = 1024;

/// Settings and backends a channel needs, copied from the configuration once.
#[derive(Clone)]
pub struct ChannelConfig {
    /// How much history each channel keeps (and the budget they share).
    pub retention: Retention,
    /// Interval of heartbeats, dead-subscriber sweeps, expiry and idle checks.
    pub tick: Duration,
    /// Where the channel counts what it does (see `crate::metrics`).
    pub metrics: Arc<Metrics>,
    /// Most subscribers of one channel (0: no limit); internal channels
    /// (the Mercure hub's) have none.
    pub max_subscribers: usize,
    /// Most subscriptions in the whole broker (0: no limit).
    pub max_total_subscribers: usize,
    /// Subscriptions in the whole broker, kept by every channel actor.
    pub total_subscribers: Arc<AtomicU64>,
    /// Durable history: events are also kept here.
    pub durable: Option<Arc<dyn DurableStore>>,
    /// Cluster mode: events are numbered and kept by this shared log.
    pub shared: Option<Arc<dyn SharedLog>>,
    /// Offered every event accepted on a non-internal channel.
    pub mirror: Option<Arc<dyn Mirror>>,
}

/// Counters the registry reads for listings without asking the actor.
#[derive(Debug, Default)]
pub struct ChannelStats {
    pub subscribers: AtomicU64,
    pub published: AtomicU64,
    pub last_seq: AtomicU64,
    pub history: AtomicU64,
    pub pulses: AtomicU64,
    pub evicted: AtomicU64,
    /// The raw epoch of the channel's current life when it changed since
    /// the channel started (cluster mode); 0 otherwise.
    pub epoch: AtomicU64,
    /// Messages the actor has handled; the handle's sent count minus this
    /// is the actor's mailbox depth (metrics).
    pub received: AtomicU64,
}

/// The one way to send a [`ChannelMessage`]: counted, so that retiring a
/// channel is race-free (see `registry`). Cheap to clone; the registry and
/// the directory hold clones of the same handle.
#[derive(Clone)]
pub struct ChannelHandle {
    addr: Addr<ChannelActor>,
    sent: Arc<AtomicU64>,
}

impl ChannelHandle {
    /// Starts `actor` on `home` (an arbiter), or on the current one.
    pub fn start(actor: ChannelActor, home: Option<&ArbiterHandle>) -> Self {
        let addr = match home {
            None => actor.start(),
            Some(arbiter) => ChannelActor::start_in_arbiter(arbiter, move |_| actor),
        };
        Self {
            addr,
            sent: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Counts `msg` and queues it for the actor. Never waits: callers that
    /// need an answer carry a reply in the message.
    pub fn send(&self, msg: ChannelMessage) {
        self.sent.fetch_add(1, Ordering::SeqCst);
        self.addr.do_send(msg);
    }

    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Whether the actor still runs.
    pub fn is_running(&self) -> bool {
        self.addr.connected()
    }

    /// Tells the actor to stop (after the registry forgot it).
    pub fn retire(&self) {
        self.addr.do_send(Retire);
    }
}

/// Where a channel's events are kept (see the module docs).
enum ChannelLog {
    Owned(OwnedLog),
    Shared(SharedCursor),
}

pub struct ChannelActor {
    name: ChannelName,
    log: ChannelLog,
    /// Makes this channel's events from what its log keeps.
    codec: Arc<dyn Codec>,
    members: Members,
    /// Pulses per client id (bounded by `MAX_PULSE_CLIENTS`).
    pulses: HashMap<Arc<str>, u64>,
    stats: Arc<ChannelStats>,
    /// The registry, told when the channel may stop.
    idle: Recipient<ChannelIdle>,
    /// `ChannelMessage`s handled so far (see [`ChannelHandle`]).
    received: u64,
    /// Set at shutdown: publishes are refused from then on.
    closing: bool,
    /// An event went out since the last tick, so no stream of this channel
    /// is idle and the tick skips its heartbeat (see `on_tick`).
    active: bool,
    /// Offered every accepted event; `None` for internal channels.
    mirror: Option<Arc<dyn Mirror>>,
    tick: Duration,
    metrics: Arc<Metrics>,
    /// This channel's own labelled series, when the operator opted in.
    series: Option<ChannelSeries>,
}

impl ChannelActor {
    pub fn new(
        name: ChannelName,
        config: &ChannelConfig,
        codec: Arc<dyn Codec>,
        stats: Arc<ChannelStats>,
        idle: Recipient<ChannelIdle>,
    ) -> Self {
        let log = match &config.shared {
            Some(shared) => ChannelLog::Shared(SharedCursor::new(Arc::clone(shared))),
            None => ChannelLog::Owned(OwnedLog::new(
                config.durable.clone(),
                config.retention.clone(),
            )),
        };
        let internal = name.is_internal();
        Self {
            series: config.metrics.channel_series(name.as_str()),
            members: Members::new(
                Arc::clone(&config.total_subscribers),
                if internal { 0 } else { config.max_subscribers },
                config.max_total_subscribers,
            ),
            mirror: config.mirror.clone().filter(|_| !internal),
            name,
            log,
            codec,
            pulses: HashMap::new(),
            stats,
            idle,
            received: 0,
            closing: false,
            active: false,
            tick: config.tick,
            metrics: Arc::clone(&config.metrics),
        }
    }

    /// The id of the channel's newest event (seq 0 before the first; in
    /// cluster mode epoch 0 until the log was read).
    pub fn head(&self) -> EventId {
        match &self.log {
            ChannelLog::Owned(log) => log.head(),
            ChannelLog::Shared(cursor) => cursor.head(),
        }
    }

    /// Offers a delivery to every member (see [`Members::offer`]); counts
    /// evictions. Returns how many took it.
    fn fan_out(&mut self, delivery: &Delivery, seq: Option<u64>) -> u64 {
        self.active |= matches!(delivery, Delivery::Event(_));
        let (name, metrics, series) = (&self.name, &self.metrics, &self.series);
        let outcome = self.members.offer(delivery, seq, |sub| {
            metrics.evicted.increment(1);
            if let Some(series) = series {
                series.evicted.increment(1);
            }
            info!(
                "subscriber evicted channel={name} subscriber={} reason=slow queue={}",
                sub.id,
                sub.capacity()
            );
        });
        if outcome.evicted > 0 {
            self.stats
                .evicted
                .fetch_add(outcome.evicted, Ordering::Relaxed);
        }
        self.settle();
        outcome.delivered
    }

    /// Brings the subscriber counts (broker-wide and the listing's) in line.
    fn settle(&mut self) {
        let now = self.members.settle();
        self.stats.subscribers.store(now as u64, Ordering::Relaxed);
    }

    /// An event is in the log (`retained` events are in memory): fans it
    /// out, counts it, offers it to the mirror, answers its publisher.
    fn accepted(&mut self, event: Arc<Event>, retained: u64, publish: Accepted) {
        let id = event.id;
        let delivered = self.fan_out(&Delivery::Event(event), Some(id.seq));
        self.metrics.delivered.increment(delivered);
        if let Some(series) = &self.series {
            series.delivered.increment(delivered);
        }
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        self.stats.last_seq.store(id.seq, Ordering::Relaxed);
        self.stats.history.store(retained, Ordering::Relaxed);
        self.count_published(&publish);
        if let (Some(mirror), Some(record)) = (&self.mirror, publish.mirror) {
            let origin = Origin {
                channel: self.name.clone(),
                id,
            };
            mirror.accepted(origin, record);
        }
        if let Some(reply) = publish.reply {
            let _ = reply.send(Ok(Published {
                id,
                subscribers: self.members.len(),
            }));
        }
    }

    /// Counts an accepted publish (copies were counted where they came from).
    fn count_published(&self, publish: &Accepted) {
        if publish.copy {
            return;
        }
        self.metrics
            .record_publish_latency(publish.received_at.elapsed());
        self.metrics.published.increment(1);
        if let Some(series) = &self.series {
            series.published.increment(1);
        }
    }

    /// What of `msg` is kept until its event is accepted; the record is
    /// kept (cloned) only when the mirror will be offered it.
    fn accepting(&self, msg: &mut Publish) -> Accepted {
        Accepted {
            reply: msg.reply.take(),
            received_at: msg.received_at,
            copy: msg.copy,
            mirror: (self.mirror.is_some() && !msg.copy).then(|| msg.record.clone()),
        }
    }

    /// Adds a subscriber that has everything up to `head`, after its
    /// stream handler got the replay (filtered for it); settles its
    /// reservation whether or not the handler still wanted it.
    fn register(&mut self, msg: Subscribe, replay: Option<Replay>, head: EventId) {
        let replay = replay.map(|mut replay| {
            replay.events.retain(|event| msg.subscriber.admits(event));
            replay
        });
        if let Some(replay) = &replay {
            self.metrics.replayed.increment(replay.events.len() as u64);
        }
        if msg.reply.send(Ok(Subscribed { replay, head })).is_ok() {
            debug!(
                "subscribed channel={} subscriber={}",
                self.name, msg.subscriber.id
            );
            self.members.add(msg.subscriber, head.seq);
        }
        self.settle();
    }

    /// Refuses a subscription (its reserved place is given back).
    fn refuse(&mut self, msg: Subscribe, err: BrokerError) {
        info!("subscribe refused channel={} reason={err}", self.name);
        let _ = msg.reply.send(Err(err));
        self.settle();
    }

    /// Tells every subscriber that events are missing, and from where the
    /// channel goes on (the notice's id, so a reconnect resumes there).
    fn notify_gap(&mut self, reason: GapReason, last: EventId, resume_from: EventId) {
        warn!(
            "gap channel={} reason={} last={last} resume_from={resume_from}",
            self.name,
            reason.as_str()
        );
        let data = serde_json::json!({
            "channel": self.name.as_str(),
            "lastEventId": last.to_string(),
            "reason": reason.as_str(),
            "resumeFrom": resume_from.to_string(),
        });
        let notice = Event::new(
            self.name.clone(),
            resume_from,
            Some(EventType::notice("broker.gap")),
            &data.to_string(),
        );
        self.fan_out(&Delivery::Event(notice), None);
    }

    /// An event a log returned, made by this channel's codec.
    fn event_of(&self, id: EventId, entry: &LogEntry) -> Arc<Event> {
        self.codec.event(
            &self.name,
            id,
            &entry.record,
            super::event::instant_of(entry.published_ms),
        )
    }

    /// The periodic duty: heartbeat (which also finds dead subscribers),
    /// history expiry or log catch-up, and asking the registry to stop us
    /// when idle.
    ///
    /// The heartbeat goes only to an idle channel. After an event every
    /// stream of the channel had a write (which also found the dead ones),
    /// so a heartbeat would buy nothing, and it is not free: one write per
    /// subscriber at once, on every channel started in the same burst. With
    /// 10 channels of 1,000 subscribers that stalled deliveries ~100 ms every
    /// tick. A stream is still never silent for two whole intervals.
    fn on_tick(&mut self, ctx: &mut Context<Self>) {
        if !std::mem::take(&mut self.active) {
            self.fan_out(&Delivery::Heartbeat, None);
        }
        let nothing_kept = match &mut self.log {
            ChannelLog::Owned(log) => {
                let (expired, idle) = log.tick(Instant::now());
                if expired > 0 {
                    self.stats
                        .history
                        .store(log.history.len() as u64, Ordering::Relaxed);
                }
                idle
            }
            ChannelLog::Shared(cursor) => {
                let idle = cursor.is_idle();
                if self.members.is_empty() {
                    // Nobody here listens: the bus stops bringing its events.
                    cursor.stop_following(&self.name);
                } else if cursor.behind {
                    self.catch_up(ctx);
                }
                idle
            }
        };
        if self.members.is_empty() && nothing_kept {
            self.idle.do_send(ChannelIdle {
                channel: self.name.clone(),
                received: self.received,
            });
        }
    }

    fn inspect(&self) -> ChannelDetail {
        let mut pulses: Vec<_> = self
            .pulses
            .iter()
            .map(|(k, v)| (Arc::clone(k), *v))
            .collect();
        pulses.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        // In cluster mode the history is in the shared log, not counted here.
        let (history, oldest, newest_name) = match &self.log {
            ChannelLog::Owned(log) => (
                log.history.len(),
                log.history.oldest().map(|e| e.id),
                log.history
                    .newest()
                    .and_then(|e| e.tags.as_ref()?.name.clone()),
            ),
            ChannelLog::Shared(cursor) => (0, None, cursor.newest_name.clone()),
        };
        ChannelDetail {
            head: self.head(),
            subscribers: self.members.len(),
            history,
            oldest,
            newest_name,
            pulses_by_client: pulses,
        }
    }

    fn count_pulse(&mut self, client_id: Arc<str>) {
        self.stats.pulses.fetch_add(1, Ordering::Relaxed);
        if let Some(count) = self.pulses.get_mut(&client_id) {
            *count += 1;
        } else if self.pulses.len() < MAX_PULSE_CLIENTS {
            self.pulses.insert(client_id, 1);
        }
    }
}

/// What a publish leaves with the channel until its event is accepted.
struct Accepted {
    reply: Option<super::error::Reply<Published>>,
    received_at: Instant,
    copy: bool,
    /// The record to offer the mirror, when it is to be offered.
    mirror: Option<Record>,
}

impl Actor for ChannelActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Handles send with `do_send`, which queues past the mailbox
        // capacity: every sender behind it awaits its reply, which bounds
        // the queue.
        ctx.run_interval(self.tick, |actor, ctx| actor.on_tick(ctx));
        if let ChannelLog::Owned(log) = &mut self.log {
            // Before any message: the channel comes back as it was stored.
            log.load(&self.name, self.codec.as_ref());
            let head = log.head();
            self.stats.epoch.store(head.epoch.raw(), Ordering::Relaxed);
            self.stats.last_seq.store(head.seq, Ordering::Relaxed);
            self.stats
                .history
                .store(log.history.len() as u64, Ordering::Relaxed);
        }
        info!(
            "channel created channel={} epoch_id={}",
            self.name,
            self.head()
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.members.clear();
        self.settle();
        if let ChannelLog::Shared(cursor) = &mut self.log {
            cursor.stop_following(&self.name);
        }
        info!(
            "channel stopped channel={} published={}",
            self.name,
            self.head().seq
        );
    }
}

impl Handler<ChannelMessage> for ChannelActor {
    type Result = ();

    /// The one handler of every request: counted here, then dispatched.
    fn handle(&mut self, msg: ChannelMessage, ctx: &mut Self::Context) {
        self.received += 1;
        self.stats.received.store(self.received, Ordering::Relaxed);
        match msg {
            ChannelMessage::Publish(msg) => self.publish(msg, ctx),
            ChannelMessage::Subscribe(msg) => self.subscribe(msg, ctx),
            ChannelMessage::Unsubscribe { subscriber_id } => {
                self.members.remove(subscriber_id);
                self.settle();
            }
            ChannelMessage::Delivered { epoch, entries } => self.delivered(epoch, entries, ctx),
            ChannelMessage::CatchUp => self.resumed(ctx),
            ChannelMessage::CountPulse { client_id } => self.count_pulse(client_id),
            ChannelMessage::Inspect { reply } => {
                let _ = reply.send(Ok(self.inspect()));
            }
            ChannelMessage::CloseSubscribers => {
                self.closing = true;
                self.members.clear();
                self.settle();
            }
        }
    }
}

impl ChannelActor {
    fn publish(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        if self.closing {
            // No subscriber would get it: refused, never acknowledged and lost.
            if let Some(reply) = msg.reply {
                let _ = reply.send(Err(BrokerError::ShuttingDown));
            }
            return;
        }
        match self.log {
            ChannelLog::Owned(_) => self.publish_owned(msg, ctx),
            ChannelLog::Shared(_) => self.publish_shared(msg, ctx),
        }
    }

    fn subscribe(&mut self, msg: Subscribe, ctx: &mut Context<Self>) {
        if self.closing {
            let _ = msg.reply.send(Err(BrokerError::ShuttingDown));
            return;
        }
        if let Err(err) = self.members.reserve(&self.name) {
            info!("subscribe refused channel={} reason={err}", self.name);
            let _ = msg.reply.send(Err(err));
            return;
        }
        match self.log {
            ChannelLog::Owned(_) => self.subscribe_owned(msg),
            ChannelLog::Shared(_) => self.subscribe_shared(msg, ctx),
        }
    }
}

impl Handler<Retire> for ChannelActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

//! `ChannelActor`: one per live channel. It owns the channel's subscribers,
//! its history and its pulse counters, assigns event ids and fans events out.
//!
//! Only the [`RegistryActor`](super::RegistryActor) sends it messages (see the
//! module docs of `broker`); it answers callers on the `oneshot` in each
//! message. Fan-out never waits for a subscriber: each queue gets a
//! `try_send`, and a subscriber whose queue is full is evicted (its stream
//! ends, the client reconnects with Last-Event-ID and replays from history).
//!
//! A channel's events come from one of three logs ([`Log`]). Standalone, the
//! actor assigns ids and keeps the history in memory. With durable history
//! (`history.data_dir`) it assigns ids too, but an event is fanned out and
//! acknowledged only once the store has it on disk (see `store::log`;
//! events wait in seq order meanwhile). In cluster mode Redis
//! does both (see `cluster`): publishes go to Redis directly, the events
//! come back through the bus as [`Deliver`], and the actor delivers them in
//! seq order. It remembers how far it delivered; an event it already has is
//! dropped, and an event that skips ahead makes it read the hole from the
//! log first (`ctx.wait`: nothing else is handled meanwhile, so order holds).
//! Each subscriber also remembers the seq it has, so a client whose replay
//! already reached further than the actor is not sent an event twice.

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

use super::{
    BrokerError, ChannelStats, Delivery, Offer, Reply, Subscriber,
    event::{ChannelName, Epoch, Event, EventId, EventType, ResumeFrom},
    history::{GapReason, History, Replay, replay_from_log},
    registry::{ChannelIdle, ChannelPublished, RegistryActor},
};
use crate::{
    cluster::{
        Cluster, ClusterError,
        log::{FetchFrom, Fetched, LogEntry},
    },
    metrics::{ChannelSeries, Metrics},
    store::{DurableLog, Store, StoreError},
};

/// Most distinct clients whose pulses one channel counts separately; pulses
/// of further clients still count in the total. Bounds memory per channel.
const MAX_PULSE_CLIENTS: usize = 1024;

/// Cluster mode: wait before reading the log again after a failed read.
const CATCH_UP_RETRY: Duration = Duration::from_secs(1);

/// Settings a channel needs, copied from the configuration once.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub history_max_events: usize,
    pub history_max_age: Duration,
    /// Interval of heartbeats, dead-subscriber sweeps, expiry and idle checks.
    pub tick: Duration,
    /// Where the channel counts what it does (see `crate::metrics`).
    pub metrics: Arc<Metrics>,
    /// Most subscribers of one channel (0: no limit).
    pub max_subscribers: usize,
    /// Most subscriptions in the whole broker (0: no limit).
    pub max_total_subscribers: usize,
    /// Subscriptions in the whole broker, kept by every channel actor.
    pub total_subscribers: Arc<AtomicU64>,
    /// Set in cluster mode: the log is in Redis.
    pub cluster: Option<Cluster>,
    /// Set with durable history: the log is also on disk.
    pub store: Option<Store>,
    /// The Mercure hub, offered the events published here whose `mirror`
    /// is set (standalone; in cluster mode the registry offers them).
    pub mercure: Option<Recipient<ChannelPublished>>,
}

/// Where a channel's ids and history come from.
enum Log {
    /// Standalone: ids assigned here, history in memory.
    Local(History),
    /// Cluster mode: ids and history in Redis, events from the bus.
    Shared(SharedLog),
    /// Durable history: ids assigned here, history in memory and on disk.
    Durable(DurableLog),
}

struct SharedLog {
    cluster: Cluster,
    /// The newest event delivered here (epoch and seq); `None` until the
    /// log was first read, which is done before the first subscriber.
    position: Option<EventId>,
    /// A read of the log failed: events are held back until the next tick
    /// reads the hole, rather than delivered with a gap.
    behind: bool,
}

/// A subscriber as this channel holds it.
struct Member {
    subscriber: Subscriber,
    /// The seq this subscriber already has (from its replay or a delivery);
    /// only later events are sent to it.
    after: u64,
}

pub struct ChannelActor {
    name: ChannelName,
    log: Log,
    subscribers: Vec<Member>,
    /// Pulses per client id (bounded by `MAX_PULSE_CLIENTS`).
    pulses: HashMap<Arc<str>, u64>,
    /// Counters the registry reads for listings.
    stats: Arc<ChannelStats>,
    registry: Addr<RegistryActor>,
    /// Messages received so far (from the registry, and publishes through
    /// the directory). Both count the ones they sent; when the counts agree
    /// in `ChannelIdle`, none is in flight.
    received: u64,
    /// Set at shutdown: publishes that come straight from a handler (not
    /// through the closing registry) are refused too.
    closing: bool,
    /// An event went out since the last tick, so no stream of this channel
    /// is idle and the tick skips its heartbeat (see `on_tick`).
    active: bool,
    /// The Mercure hub, offered published events (see [`Publish::mirror`]).
    mercure: Option<Recipient<ChannelPublished>>,
    tick: Duration,
    metrics: Arc<Metrics>,
    /// This channel's own labelled series, when the operator opted in.
    series: Option<ChannelSeries>,
    max_subscribers: usize,
    max_total_subscribers: usize,
    total_subscribers: Arc<AtomicU64>,
    /// This channel's share of `total_subscribers`.
    counted: usize,
}

impl ChannelActor {
    pub fn new(
        name: ChannelName,
        config: &ChannelConfig,
        stats: Arc<ChannelStats>,
        registry: Addr<RegistryActor>,
    ) -> Self {
        let log = match (&config.cluster, &config.store) {
            (Some(cluster), _) => Log::Shared(SharedLog {
                cluster: cluster.clone(),
                position: None,
                behind: false,
            }),
            (None, Some(store)) => Log::Durable(DurableLog::new(
                store.clone(),
                config.history_max_events,
                config.history_max_age,
            )),
            (None, None) => Log::Local(History::new(
                Epoch::new(),
                config.history_max_events,
                config.history_max_age,
            )),
        };
        Self {
            series: config.metrics.channel_series(name.as_str()),
            name,
            log,
            subscribers: Vec::new(),
            pulses: HashMap::new(),
            stats,
            registry,
            received: 0,
            closing: false,
            active: false,
            tick: config.tick,
            mercure: config.mercure.clone(),
            metrics: Arc::clone(&config.metrics),
            max_subscribers: config.max_subscribers,
            max_total_subscribers: config.max_total_subscribers,
            total_subscribers: Arc::clone(&config.total_subscribers),
            counted: 0,
        }
    }

    /// The id of the channel's newest event (seq 0 before the first; in
    /// cluster mode epoch 0 until the log was read).
    pub fn head(&self) -> EventId {
        match &self.log {
            Log::Local(history) => history.head(),
            Log::Durable(durable) => durable.head(),
            Log::Shared(shared) => shared.position.unwrap_or(EventId {
                epoch: Epoch::from_raw(0),
                seq: 0,
            }),
        }
    }

    /// Offers a delivery to every subscriber without waiting; drops the
    /// ones that are gone or too slow. With `seq`, subscribers that already
    /// have that event are skipped. Returns how many took it.
    fn fan_out(&mut self, delivery: &Delivery, seq: Option<u64>) -> u64 {
        let name = &self.name;
        let stats = &self.stats;
        let (metrics, series) = (&self.metrics, &self.series);
        let mut delivered = 0;
        self.active |= matches!(delivery, Delivery::Event(_));
        self.subscribers.retain_mut(|member| {
            if let Some(seq) = seq {
                if seq <= member.after {
                    return true;
                }
                member.after = seq;
            }
            let sub = &member.subscriber;
            match sub.offer(delivery) {
                Offer::Taken => {
                    delivered += 1;
                    true
                }
                Offer::Closed => false,
                Offer::Full => {
                    sub.evicted.store(true, Ordering::Release);
                    stats.evicted.fetch_add(1, Ordering::Relaxed);
                    metrics.evicted.increment(1);
                    if let Some(series) = series {
                        series.evicted.increment(1);
                    }
                    info!(
                        "subscriber evicted channel={name} subscriber={} reason=slow queue={}",
                        sub.id,
                        sub.capacity()
                    );
                    false
                }
            }
        });
        self.update_subscriber_count();
        delivered
    }

    fn update_subscriber_count(&mut self) {
        let now = self.subscribers.len();
        if now < self.counted {
            self.total_subscribers
                .fetch_sub((self.counted - now) as u64, Ordering::AcqRel);
        } else if now > self.counted {
            self.total_subscribers
                .fetch_add((now - self.counted) as u64, Ordering::AcqRel);
        }
        self.counted = now;
        self.stats.subscribers.store(now as u64, Ordering::Relaxed);
    }

    /// Takes one place in the broker-wide count, or says why there is none.
    /// The count is reserved atomically, so channels on other arbiters
    /// cannot overshoot the limit together.
    fn reserve_subscriber(&mut self) -> Result<(), BrokerError> {
        if self.max_subscribers > 0 && self.subscribers.len() >= self.max_subscribers {
            return Err(BrokerError::TooManySubscribers(format!(
                "channel {} already has its maximum of {} subscribers",
                self.name, self.max_subscribers
            )));
        }
        super::reserve_subscription(&self.total_subscribers, self.max_total_subscribers)?;
        self.counted += 1;
        Ok(())
    }

    /// Counts one message from the registry (see `ChannelIdle`); the shared
    /// copy lets the registry report this actor's mailbox depth.
    fn note_received(&mut self) {
        self.received += 1;
        self.stats.received.store(self.received, Ordering::Relaxed);
    }

    /// The periodic duty: heartbeat (which also finds dead subscribers),
    /// history expiry, and asking the registry to stop us when idle.
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
        let history_empty = match &mut self.log {
            Log::Local(history) => {
                if history.expire(Instant::now()) > 0 {
                    self.stats
                        .history
                        .store(history.len() as u64, Ordering::Relaxed);
                }
                history.is_empty()
            }
            Log::Durable(durable) => {
                let (expired, idle) = durable.tick(Instant::now());
                if expired > 0 {
                    self.stats
                        .history
                        .store(durable.history.len() as u64, Ordering::Relaxed);
                }
                idle
            }
            Log::Shared(shared) => {
                if shared.behind && !self.subscribers.is_empty() {
                    self.catch_up(ctx);
                }
                true
            }
        };
        if self.subscribers.is_empty() && history_empty {
            self.registry.do_send(ChannelIdle {
                channel: self.name.clone(),
                received: self.received,
            });
        }
    }
}

impl Actor for ChannelActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The registry uses `do_send`, which queues past the mailbox capacity:
        // every sender behind it awaits its reply, which bounds the queue.
        ctx.run_interval(self.tick, |actor, ctx| actor.on_tick(ctx));
        if let Log::Durable(durable) = &mut self.log {
            // Before any message: the channel comes back as it was stored.
            durable.load(&self.name);
            let head = durable.head();
            self.stats.epoch.store(head.epoch.raw(), Ordering::Relaxed);
            self.stats.last_seq.store(head.seq, Ordering::Relaxed);
            self.stats
                .history
                .store(durable.history.len() as u64, Ordering::Relaxed);
        }
        info!(
            "channel created channel={} epoch_id={}",
            self.name,
            self.head()
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.subscribers.clear();
        self.update_subscriber_count();
        info!(
            "channel stopped channel={} published={}",
            self.name,
            self.head().seq
        );
    }
}

/// Publish an event: assign its id, keep it in history, fan it out.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    pub channel: ChannelName,
    pub event_type: Option<EventType>,
    /// The payload as it goes into `data:` lines (JSON already compacted).
    pub data: String,
    pub reply: Option<Reply<Published>>,
    /// When the publish handler started on it: the latency metric runs from
    /// here to the end of the fan-out.
    pub received_at: Instant,
    /// Offer the event to the Mercure hub too (`mercure.channel_updates`);
    /// false for the hub's own publishes, which must not come back to it.
    pub mirror: bool,
}

/// What a publisher learns about its event.
#[derive(Debug, Clone)]
pub struct Published {
    pub id: EventId,
    /// Subscribers the event was queued for.
    pub subscribers: usize,
}

impl Handler<Publish> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: Publish, ctx: &mut Self::Context) {
        self.note_received();
        if self.closing {
            // No subscriber would get it: refused, never acknowledged and lost.
            if let Some(reply) = msg.reply {
                let _ = reply.send(Err(BrokerError::ShuttingDown));
            }
            return;
        }
        // Whether the hub gets the payload once the event is accepted.
        let mirror = msg.mirror && self.mercure.is_some();
        if let Log::Durable(durable) = &mut self.log {
            let mirror = mirror.then(|| msg.data.clone());
            if let Some((seq, answer)) = durable.append(&self.name, msg, mirror) {
                // The fan-out waits for the disk; other messages do not.
                ctx.spawn(answer.into_actor(self).map(move |outcome, actor, _| {
                    actor.on_durable(seq, outcome.unwrap_or(Err(StoreError::Gone)));
                }));
            }
            return;
        }
        let Log::Local(history) = &mut self.log else {
            // In cluster mode the registry publishes to Redis itself.
            if let Some(reply) = msg.reply {
                let _ = reply.send(Err(BrokerError::Unavailable));
            }
            return;
        };
        let event = Event::new(
            self.name.clone(),
            history.next_id(),
            msg.event_type,
            &msg.data,
        );
        history.push(Arc::clone(&event));
        let retained = history.len() as u64;
        let mirror = mirror.then_some(msg.data);
        self.fan_out_published(event, retained, msg.reply, msg.received_at, mirror);
    }
}

impl ChannelActor {
    /// Fans out an event that is in the history (`retained` events long),
    /// counts it, answers its publisher and offers its `mirror` data to the
    /// Mercure hub.
    fn fan_out_published(
        &mut self,
        event: Arc<Event>,
        retained: u64,
        reply: Option<Reply<Published>>,
        received_at: Instant,
        mirror: Option<String>,
    ) {
        let id = event.id;
        let mirror = mirror.map(|data| (event.event_type.clone(), data));
        let delivered = self.fan_out(&Delivery::Event(event), Some(id.seq));
        // After the fan-out: on a worker the hub would otherwise run before
        // the subscriber writes it just queued.
        if let (Some(hub), Some((event_type, data))) = (&self.mercure, mirror) {
            hub.do_send(ChannelPublished {
                channel: self.name.clone(),
                event_type,
                data,
            });
        }
        self.metrics.record_publish_latency(received_at.elapsed());
        self.metrics.published.increment(1);
        self.metrics.delivered.increment(delivered);
        if let Some(series) = &self.series {
            series.published.increment(1);
            series.delivered.increment(delivered);
        }
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        self.stats.last_seq.store(id.seq, Ordering::Relaxed);
        self.stats.history.store(retained, Ordering::Relaxed);
        if let Some(reply) = reply {
            let _ = reply.send(Ok(Published {
                id,
                subscribers: self.subscribers.len(),
            }));
        }
    }

    /// Durable history: the writer answered for the event `seq`.
    fn on_durable(&mut self, seq: u64, outcome: Result<(), StoreError>) {
        let Log::Durable(durable) = &mut self.log else {
            return;
        };
        if let Err(err) = outcome {
            warn!(
                "publish refused channel={} seq={seq} reason={err}",
                self.name
            );
            durable.failed(seq, &err);
            return;
        }
        let ready = durable.durable(seq);
        let retained = durable.history.len() as u64;
        for pending in ready {
            self.fan_out_published(
                pending.event,
                retained,
                pending.reply,
                pending.received_at,
                pending.mirror,
            );
        }
    }
}

/// Add a subscriber, after handing it what it missed since `from`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub channel: ChannelName,
    pub subscriber: Subscriber,
    /// Where the client says it stopped; `None` starts live.
    pub from: Option<ResumeFrom>,
    pub reply: Reply<Subscribed>,
}

/// The start of a subscription: the replay (when resuming) and the position
/// the live events continue from.
#[derive(Debug)]
pub struct Subscribed {
    pub replay: Option<Replay>,
    pub head: EventId,
}

impl Handler<Subscribe> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, ctx: &mut Self::Context) {
        self.note_received();
        if let Err(err) = self.reserve_subscriber() {
            info!("subscribe refused channel={} reason={err}", self.name);
            let _ = msg.reply.send(Err(err));
            return;
        }
        let shared = match &self.log {
            Log::Local(history) => {
                // Replay and registration happen in one handler: every later
                // event goes to the queue, every earlier one is in the
                // replay. No gap, no duplicate.
                let replay = msg.from.as_ref().map(|from| history.since(from));
                let head = history.head();
                self.register(msg, replay, head);
                return;
            }
            Log::Durable(durable) => {
                // As in memory: pending events are not in the history and
                // reach this subscriber when they are on disk.
                if let Some(err) = durable.unavailable() {
                    let _ = msg.reply.send(Err(err));
                    // Gives back the place reserved for this subscriber.
                    self.update_subscriber_count();
                    return;
                }
                let replay = msg.from.as_ref().map(|from| durable.history.since(from));
                let head = durable.head();
                self.register(msg, replay, head);
                return;
            }
            Log::Shared(shared) => shared,
        };
        if let (None, Some(position)) = (&msg.from, shared.position) {
            // A live start needs nothing from the log.
            self.register(msg, None, position);
            return;
        }
        let from = match &msg.from {
            None => FetchFrom::Head,
            Some(ResumeFrom::Id(id)) => FetchFrom::After(*id),
            Some(ResumeFrom::Unknown(_)) => FetchFrom::All,
        };
        let cluster = shared.cluster.clone();
        let channel = self.name.clone();
        // `wait`: no bus event is handled until the replay is read, so the
        // new subscriber's position and the channel's stay consistent.
        ctx.wait(
            async move { cluster.fetch(&channel, from).await }
                .into_actor(self)
                .map(move |fetched, actor, ctx| actor.subscribe_from_log(msg, fetched, ctx)),
        );
    }
}

impl ChannelActor {
    /// Adds a subscriber that has everything up to `head`, once its
    /// stream handler still wants it.
    fn register(&mut self, msg: Subscribe, replay: Option<Replay>, head: EventId) {
        if let Some(replay) = &replay {
            self.metrics.replayed.increment(replay.events.len() as u64);
        }
        if msg.reply.send(Ok(Subscribed { replay, head })).is_ok() {
            debug!(
                "subscribed channel={} subscriber={}",
                self.name, msg.subscriber.id
            );
            self.subscribers.push(Member {
                subscriber: msg.subscriber,
                after: head.seq,
            });
        }
        // Settles the reservation whether or not the caller was still there.
        self.update_subscriber_count();
    }

    /// Cluster mode: the log was read for a new subscriber.
    fn subscribe_from_log(
        &mut self,
        msg: Subscribe,
        fetched: Result<Fetched, ClusterError>,
        ctx: &mut Context<Self>,
    ) {
        let fetched = match fetched {
            Ok(fetched) => fetched,
            Err(err) => {
                warn!("subscribe refused channel={} reason={err}", self.name);
                let _ = msg
                    .reply
                    .send(Err(BrokerError::StoreUnavailable(err.to_string())));
                // Gives back the place reserved for this subscriber.
                self.update_subscriber_count();
                return;
            }
        };
        let head = EventId {
            epoch: fetched.epoch,
            seq: fetched.head,
        };
        if let Log::Shared(shared) = &mut self.log {
            match shared.position {
                None => {
                    shared.position = Some(head);
                    self.stats.epoch.store(head.epoch.raw(), Ordering::Relaxed);
                }
                Some(position) if position.epoch != fetched.epoch => {
                    self.change_epoch(fetched.epoch);
                    // The others need the new life's events from its start.
                    self.catch_up(ctx);
                }
                Some(_) => {}
            }
        }
        let replay = msg.from.as_ref().map(|from| {
            let events = fetched
                .entries
                .iter()
                .map(|entry| self.event(fetched.epoch, entry))
                .collect();
            replay_from_log(fetched.epoch, fetched.head, events, from)
        });
        self.register(msg, replay, head);
    }

    /// An event of the shared log, encoded once for every subscriber here.
    fn event(&self, epoch: Epoch, entry: &LogEntry) -> Arc<Event> {
        Event::new(
            self.name.clone(),
            EventId {
                epoch,
                seq: entry.seq,
            },
            entry.event_type.clone(),
            &entry.data,
        )
    }

    /// Delivers one event of the shared log and moves the position.
    fn deliver(&mut self, epoch: Epoch, entry: &LogEntry) {
        let event = self.event(epoch, entry);
        let delivered = self.fan_out(&Delivery::Event(event), Some(entry.seq));
        // `published` counts on the node that took the publish (registry).
        self.metrics.delivered.increment(delivered);
        if let Some(series) = &self.series {
            series.delivered.increment(delivered);
        }
        if let Log::Shared(shared) = &mut self.log {
            shared.position = Some(EventId {
                epoch,
                seq: entry.seq,
            });
        }
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        self.stats.last_seq.store(entry.seq, Ordering::Relaxed);
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

    /// The shared log started a new life (Redis restarted empty, or the
    /// channel's keys expired): say so, and start over at its seq 0.
    fn change_epoch(&mut self, epoch: Epoch) {
        let Log::Shared(shared) = &mut self.log else {
            return;
        };
        let last = shared.position.unwrap_or(EventId {
            epoch: Epoch::from_raw(0),
            seq: 0,
        });
        let start = EventId { epoch, seq: 0 };
        shared.position = Some(start);
        self.stats.epoch.store(epoch.raw(), Ordering::Relaxed);
        for member in &mut self.subscribers {
            member.after = 0;
        }
        self.notify_gap(GapReason::UnknownEpoch, last, start);
    }

    /// Reads everything after the channel's position from the log and
    /// delivers it; nothing else is handled meanwhile. A failed read leaves
    /// the channel `behind`: the next tick tries again.
    fn catch_up(&mut self, ctx: &mut Context<Self>) {
        let Log::Shared(shared) = &mut self.log else {
            return;
        };
        let Some(position) = shared.position else {
            return;
        };
        shared.behind = false;
        let cluster = shared.cluster.clone();
        let channel = self.name.clone();
        ctx.wait(
            async move { cluster.fetch(&channel, FetchFrom::After(position)).await }
                .into_actor(self)
                .map(move |fetched, actor, ctx| match fetched {
                    Ok(fetched) => actor.apply_catch_up(fetched),
                    Err(err) => {
                        warn!("catch-up failed channel={} reason={err}", actor.name);
                        let Log::Shared(shared) = &mut actor.log else {
                            return;
                        };
                        shared.behind = true;
                        // With the bus down, its return triggers the next
                        // try; with the bus up, nothing would until the tick.
                        if shared.cluster.bus_is_up() {
                            ctx.run_later(CATCH_UP_RETRY, |actor, ctx| {
                                if actor.subscribers.is_empty() {
                                    return;
                                }
                                if let Log::Shared(shared) = &actor.log
                                    && shared.behind
                                {
                                    actor.catch_up(ctx);
                                }
                            });
                        }
                    }
                }),
        );
    }

    fn apply_catch_up(&mut self, fetched: Fetched) {
        let Log::Shared(shared) = &self.log else {
            return;
        };
        let Some(mut position) = shared.position else {
            return;
        };
        if position.epoch != fetched.epoch {
            self.change_epoch(fetched.epoch);
            position = EventId {
                epoch: fetched.epoch,
                seq: 0,
            };
        }
        let missing: Vec<&LogEntry> = fetched
            .entries
            .iter()
            .filter(|e| e.seq > position.seq)
            .collect();
        let first_available = missing.first().map_or(fetched.head + 1, |e| e.seq);
        if first_available > position.seq + 1 {
            // Trimmed (or expired) before this node could read it.
            let resume_from = EventId {
                epoch: fetched.epoch,
                seq: first_available - 1,
            };
            self.notify_gap(GapReason::HistoryTrimmed, position, resume_from);
            for member in &mut self.subscribers {
                member.after = member.after.max(resume_from.seq);
            }
            if let Log::Shared(shared) = &mut self.log {
                shared.position = Some(resume_from);
            }
        }
        for entry in missing {
            self.deliver(fetched.epoch, entry);
        }
    }
}

/// Cluster mode: an event from the bus (see the module docs).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub channel: ChannelName,
    pub epoch: Epoch,
    pub entry: LogEntry,
}

impl Handler<Deliver> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        self.note_received();
        let Log::Shared(shared) = &mut self.log else {
            return;
        };
        let Some(position) = shared.position else {
            // No subscriber yet: the first one reads the log anyway.
            return;
        };
        if shared.behind {
            // The next tick reads this event with the hole before it.
            return;
        }
        let position = if position.epoch == msg.epoch {
            position
        } else {
            self.change_epoch(msg.epoch);
            EventId {
                epoch: msg.epoch,
                seq: 0,
            }
        };
        if msg.entry.seq <= position.seq {
            // Already delivered from the log.
            return;
        }
        if msg.entry.seq == position.seq + 1 {
            self.deliver(msg.epoch, &msg.entry);
        } else {
            // Bus messages were missed: read the hole, this event included.
            self.catch_up(ctx);
        }
    }
}

/// Cluster mode: the bus was (re)subscribed; read what it may have missed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CatchUp {
    pub channel: ChannelName,
}

impl Handler<CatchUp> for ChannelActor {
    type Result = ();

    fn handle(&mut self, _: CatchUp, ctx: &mut Self::Context) {
        self.note_received();
        if self.subscribers.is_empty() {
            // Nobody to deliver to: the next subscriber reads the log afresh.
            if let Log::Shared(shared) = &mut self.log {
                shared.position = None;
            }
            return;
        }
        self.catch_up(ctx);
    }
}

/// A stream ended: forget its subscriber now rather than at the next tick.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub channel: ChannelName,
    pub subscriber_id: u64,
}

impl Handler<Unsubscribe> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
        self.note_received();
        self.subscribers
            .retain(|member| member.subscriber.id != msg.subscriber_id);
        self.update_subscriber_count();
    }
}

/// Count a client's pulse on this channel.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CountPulse {
    pub channel: ChannelName,
    pub client_id: Arc<str>,
}

impl Handler<CountPulse> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: CountPulse, _: &mut Self::Context) {
        self.note_received();
        self.stats.pulses.fetch_add(1, Ordering::Relaxed);
        if let Some(count) = self.pulses.get_mut(&msg.client_id) {
            *count += 1;
        } else if self.pulses.len() < MAX_PULSE_CLIENTS {
            self.pulses.insert(msg.client_id, 1);
        }
    }
}

/// Ask for the channel's detail (`GET /channels/{channel}`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Inspect {
    pub channel: ChannelName,
    pub reply: Reply<ChannelDetail>,
}

#[derive(Debug, Clone)]
pub struct ChannelDetail {
    pub head: EventId,
    pub subscribers: usize,
    pub history: usize,
    pub oldest: Option<EventId>,
    pub pulses_by_client: Vec<(Arc<str>, u64)>,
}

impl Handler<Inspect> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: Inspect, _: &mut Self::Context) {
        self.note_received();
        let mut pulses: Vec<_> = self
            .pulses
            .iter()
            .map(|(k, v)| (Arc::clone(k), *v))
            .collect();
        pulses.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        // In cluster mode the history is in Redis, not counted here.
        let (history, oldest) = match &self.log {
            Log::Local(history) | Log::Durable(DurableLog { history, .. }) => (
                history.len(),
                history
                    .since(&ResumeFrom::Id(EventId {
                        seq: 0,
                        ..history.head()
                    }))
                    .events
                    .first()
                    .map(|e| e.id),
            ),
            Log::Shared(_) => (0, None),
        };
        let _ = msg.reply.send(Ok(ChannelDetail {
            head: self.head(),
            subscribers: self.subscribers.len(),
            history,
            oldest,
            pulses_by_client: pulses,
        }));
    }
}

/// Sent by the registry once it has forgotten this channel: stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

impl Handler<Retire> for ChannelActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Shutdown: drop every subscriber so their streams end cleanly.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseSubscribers;

impl Handler<CloseSubscribers> for ChannelActor {
    type Result = ();

    fn handle(&mut self, _: CloseSubscribers, _: &mut Self::Context) {
        self.closing = true;
        self.subscribers.clear();
        self.update_subscriber_count();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{
        await_reply,
        testing::{send_publish, subscribe},
    };
    use crate::config::Settings;

    fn registry() -> Addr<RegistryActor> {
        RegistryActor::new(&Settings::defaults()).start()
    }

    async fn publish(
        registry: &Addr<RegistryActor>,
        channel: &ChannelName,
        data: &str,
    ) -> Published {
        await_reply(send_publish(registry, channel, data))
            .await
            .expect("publish succeeds")
    }

    fn event_seq(delivery: Delivery) -> u64 {
        match delivery {
            Delivery::Event(e) => e.id.seq,
            Delivery::Heartbeat => panic!("expected an event"),
        }
    }

    /// Events reach a subscriber in order with increasing ids.
    #[actix::test]
    async fn publish_reaches_subscriber_in_order() {
        let registry = registry();
        let channel = ChannelName::parse("orders").unwrap();
        let (_, _sub, mut rx) = subscribe(&registry, &channel, 16, None).await;
        for n in 1..=3 {
            let published = publish(&registry, &channel, &format!("e{n}")).await;
            assert_eq!(published.id.seq, n);
            assert_eq!(published.subscribers, 1);
        }
        for n in 1..=3 {
            assert_eq!(event_seq(rx.recv().await.unwrap()), n);
        }
    }

    /// A subscriber resuming from an id gets the rest from history, then live.
    #[actix::test]
    async fn resume_replays_then_continues_live() {
        let registry = registry();
        let channel = ChannelName::parse("news").unwrap();
        let first = publish(&registry, &channel, "1").await;
        publish(&registry, &channel, "2").await;
        let (subscribed, _sub, mut rx) =
            subscribe(&registry, &channel, 16, Some(ResumeFrom::Id(first.id))).await;
        let replay = subscribed.replay.expect("a replay was asked for");
        assert_eq!(
            replay.events.iter().map(|e| e.id.seq).collect::<Vec<_>>(),
            vec![2]
        );
        assert!(replay.gap.is_none());
        publish(&registry, &channel, "3").await;
        assert_eq!(event_seq(rx.recv().await.unwrap()), 3);
    }

    /// A full queue evicts that subscriber only; the others keep receiving.
    #[actix::test]
    async fn slow_subscriber_is_evicted_alone() {
        let registry = registry();
        let channel = ChannelName::parse("busy").unwrap();
        let (_, slow, mut slow_rx) = subscribe(&registry, &channel, 2, None).await;
        let slow_evicted = Arc::clone(&slow.evicted);
        drop(slow);
        let (_, _fast, mut fast_rx) = subscribe(&registry, &channel, 64, None).await;
        for n in 0..5 {
            publish(&registry, &channel, &n.to_string()).await;
        }
        assert!(slow_evicted.load(Ordering::Acquire));
        for n in 1..=5 {
            assert_eq!(event_seq(fast_rx.recv().await.unwrap()), n);
        }
        // The evicted queue holds what fitted, then ends.
        assert_eq!(event_seq(slow_rx.recv().await.unwrap()), 1);
        assert_eq!(event_seq(slow_rx.recv().await.unwrap()), 2);
        assert!(slow_rx.recv().await.is_none());
    }
}

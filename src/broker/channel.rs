//! `ChannelActor`: one per live channel. It owns the channel's subscribers,
//! its history and its pulse counters, assigns event ids and fans events out.
//!
//! Only the [`RegistryActor`](super::RegistryActor) sends it messages (see the
//! module docs of `broker`); it answers callers on the `oneshot` in each
//! message. Fan-out never waits for a subscriber: each queue gets a
//! `try_send`, and a subscriber whose queue is full is evicted (its stream
//! ends, the client reconnects with Last-Event-ID and replays from history).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix::prelude::*;
use log::{debug, info};
use tokio::sync::mpsc::error::TrySendError;

use super::{
    BrokerError, ChannelStats, Delivery, Reply, Subscriber,
    event::{ChannelName, Epoch, Event, EventId, EventType, ResumeFrom},
    history::{History, Replay},
    registry::{ChannelIdle, RegistryActor},
};
use crate::metrics::{ChannelSeries, Metrics};

/// Most distinct clients whose pulses one channel counts separately; pulses
/// of further clients still count in the total. Bounds memory per channel.
const MAX_PULSE_CLIENTS: usize = 1024;

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
}

pub struct ChannelActor {
    name: ChannelName,
    history: History,
    subscribers: Vec<Subscriber>,
    /// Pulses per client id (bounded by `MAX_PULSE_CLIENTS`).
    pulses: HashMap<Arc<str>, u64>,
    /// Counters the registry reads for listings.
    stats: Arc<ChannelStats>,
    registry: Addr<RegistryActor>,
    /// Messages received from the registry so far. The registry counts the
    /// ones it sent; when both agree in `ChannelIdle`, none is in flight.
    received: u64,
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
        Self {
            series: config.metrics.channel_series(name.as_str()),
            name,
            history: History::new(
                Epoch::new(),
                config.history_max_events,
                config.history_max_age,
            ),
            subscribers: Vec::new(),
            pulses: HashMap::new(),
            stats,
            registry,
            received: 0,
            tick: config.tick,
            metrics: Arc::clone(&config.metrics),
            max_subscribers: config.max_subscribers,
            max_total_subscribers: config.max_total_subscribers,
            total_subscribers: Arc::clone(&config.total_subscribers),
            counted: 0,
        }
    }

    /// The id of the channel's newest event (seq 0 before the first).
    pub fn head(&self) -> EventId {
        self.history.head()
    }

    /// Offers a delivery to every subscriber without waiting; drops the
    /// ones that are gone or too slow. Returns how many took it.
    fn fan_out(&mut self, delivery: &Delivery) -> u64 {
        let name = &self.name;
        let stats = &self.stats;
        let (metrics, series) = (&self.metrics, &self.series);
        let mut delivered = 0;
        self.subscribers
            .retain(|sub| match sub.tx.try_send(delivery.clone()) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(TrySendError::Closed(_)) => false,
                Err(TrySendError::Full(_)) => {
                    sub.evicted.store(true, Ordering::Release);
                    stats.evicted.fetch_add(1, Ordering::Relaxed);
                    metrics.evicted.increment(1);
                    if let Some(series) = series {
                        series.evicted.increment(1);
                    }
                    info!(
                        "subscriber evicted channel={name} subscriber={} reason=slow queue={}",
                        sub.id,
                        sub.tx.max_capacity()
                    );
                    false
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
        let before = self.total_subscribers.fetch_add(1, Ordering::AcqRel);
        if self.max_total_subscribers > 0 && before >= self.max_total_subscribers as u64 {
            self.total_subscribers.fetch_sub(1, Ordering::AcqRel);
            return Err(BrokerError::TooManySubscribers(format!(
                "the broker already holds its maximum of {} subscriptions",
                self.max_total_subscribers
            )));
        }
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
    fn on_tick(&mut self) {
        self.fan_out(&Delivery::Heartbeat);
        if self.history.expire(Instant::now()) > 0 {
            self.stats
                .history
                .store(self.history.len() as u64, Ordering::Relaxed);
        }
        if self.subscribers.is_empty() && self.history.is_empty() {
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
        ctx.run_interval(self.tick, |actor, _| actor.on_tick());
        info!(
            "channel created channel={} epoch_id={}",
            self.name,
            self.history.head()
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.subscribers.clear();
        self.update_subscriber_count();
        info!(
            "channel stopped channel={} published={}",
            self.name,
            self.history.head().seq
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

    fn handle(&mut self, msg: Publish, _: &mut Self::Context) {
        self.note_received();
        let event = Event::new(
            self.name.clone(),
            self.history.next_id(),
            msg.event_type,
            &msg.data,
        );
        let id = event.id;
        self.history.push(Arc::clone(&event));
        let delivered = self.fan_out(&Delivery::Event(event));
        self.metrics
            .record_publish_latency(msg.received_at.elapsed());
        self.metrics.published.increment(1);
        self.metrics.delivered.increment(delivered);
        if let Some(series) = &self.series {
            series.published.increment(1);
            series.delivered.increment(delivered);
        }
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        self.stats.last_seq.store(id.seq, Ordering::Relaxed);
        self.stats
            .history
            .store(self.history.len() as u64, Ordering::Relaxed);
        if let Some(reply) = msg.reply {
            let _ = reply.send(Ok(Published {
                id,
                subscribers: self.subscribers.len(),
            }));
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

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) {
        self.note_received();
        // Replay and registration happen in one handler: every later event
        // goes to the queue, every earlier one is in the replay. No gap, no
        // duplicate.
        if let Err(err) = self.reserve_subscriber() {
            info!("subscribe refused channel={} reason={err}", self.name);
            let _ = msg.reply.send(Err(err));
            return;
        }
        let replay = msg.from.map(|from| self.history.since(&from));
        if let Some(replay) = &replay {
            self.metrics.replayed.increment(replay.events.len() as u64);
        }
        let head = self.history.head();
        if msg.reply.send(Ok(Subscribed { replay, head })).is_ok() {
            debug!(
                "subscribed channel={} subscriber={}",
                self.name, msg.subscriber.id
            );
            self.subscribers.push(msg.subscriber);
        }
        // Settles the reservation whether or not the caller was still there.
        self.update_subscriber_count();
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
        self.subscribers.retain(|sub| sub.id != msg.subscriber_id);
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
        let oldest = self
            .history
            .since(&ResumeFrom::Id(EventId {
                seq: 0,
                ..self.history.head()
            }))
            .events
            .first()
            .map(|e| e.id);
        let _ = msg.reply.send(Ok(ChannelDetail {
            head: self.history.head(),
            subscribers: self.subscribers.len(),
            history: self.history.len(),
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
        self.subscribers.clear();
        self.update_subscriber_count();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::await_reply;
    use crate::config::Settings;
    use tokio::sync::oneshot;

    fn registry() -> Addr<RegistryActor> {
        RegistryActor::new(&Settings::defaults()).start()
    }

    async fn publish(
        registry: &Addr<RegistryActor>,
        channel: &ChannelName,
        data: &str,
    ) -> Published {
        let (reply, rx) = oneshot::channel();
        registry.do_send(Publish {
            channel: channel.clone(),
            event_type: None,
            data: data.into(),
            reply: Some(reply),
            received_at: Instant::now(),
        });
        await_reply(rx).await.expect("publish succeeds")
    }

    async fn subscribe(
        registry: &Addr<RegistryActor>,
        channel: &ChannelName,
        capacity: usize,
        from: Option<ResumeFrom>,
    ) -> (
        Subscribed,
        Subscriber,
        tokio::sync::mpsc::Receiver<Delivery>,
    ) {
        let (subscriber, rx) = Subscriber::new(capacity);
        let (reply, reply_rx) = oneshot::channel();
        registry.do_send(Subscribe {
            channel: channel.clone(),
            subscriber: subscriber.clone(),
            from,
            reply,
        });
        (
            await_reply(reply_rx).await.expect("subscribe succeeds"),
            subscriber,
            rx,
        )
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

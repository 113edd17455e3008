//! `ChannelActor`: one per live channel, and every step it takes. It owns
//! the channel's subscribers, its log (an [`OwnedLog`] or a
//! [`SharedCursor`]) and its pulse counters. Each message and each answer of
//! a log comes to one method here, which asks the log what to do and does
//! it: fans out ([`Members`], never waiting for a subscriber), answers the
//! publisher ([`PendingAnswer`]), announces a gap, or awaits the store's or
//! the shared log's answer in the actor's context.
//!
//! The actor's one handler counts every [`ChannelMessage`] it receives
//! (its [`ChannelHandle`](super::handle::ChannelHandle) counts what it
//! sends). A log's answer, and the messages only a shared log sends
//! (`Delivered`, `CatchUp`), come back to the kind of log that asked for
//! them: the other kind never gets them, and ignores them.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use actix::prelude::*;
use log::{debug, info, warn};

use super::{
    config::{ChannelConfig, ChannelStats},
    owned::{OwnedLog, Publishing, Stored},
    shared::{Append, Gap, Joining, Placed, Read, SharedCursor},
};
use crate::{
    broker::{
        bridge::Bridge,
        codec::Codec,
        error::BrokerError,
        event::{Epoch, Event, EventId},
        history::{GapReason, MAX_PAGE_BYTES, Replay},
        idempotency::Logged,
        log::{Fetched, LogEntry, LogError, Origin, Submission},
        members::Members,
        message::{
            ChannelDetail, ChannelIdle, ChannelMessage, PendingAnswer, Publish, Published,
            ReadHistory, Retire, Subscribe, Subscribed,
        },
        occupancy::{OccupancyChange, OccupancyWatch},
        presence::{ChannelPresence, MemberChange, PresenceEvent, PresenceShare},
        pulse::ChannelPulses,
        subscriber::Delivery,
    },
    metrics::{ChannelSeries, Metrics},
    names::ChannelName,
};

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
    /// Pulses per client id.
    pulses: ChannelPulses,
    stats: Arc<ChannelStats>,
    /// The registry, told when the channel may stop.
    idle: Recipient<ChannelIdle>,
    /// `ChannelMessage`s handled so far (see
    /// [`ChannelHandle`](super::handle::ChannelHandle)).
    received: u64,
    /// Set at shutdown: publishes are refused from then on.
    closing: bool,
    /// An event went out since the last tick, so no stream of this channel
    /// is idle and the tick skips its heartbeat (see `on_tick`).
    active: bool,
    /// The [`name`](crate::broker::event::Tags::name) of the newest event a
    /// shared log delivered here (an owned log's is its history's newest).
    delivered_name: Option<Arc<str>>,
    /// Offered every accepted event; `None` for internal channels.
    bridge: Option<Arc<dyn Bridge>>,
    /// Cluster mode: told every join and leave; `None` for internal
    /// channels and a broker alone.
    presence: Option<Arc<dyn PresenceShare>>,
    /// Told the first and last subscriber here and the users' joins and
    /// leaves (the occupancy webhooks); `None` for internal channels and
    /// without webhooks.
    occupancy: Option<Arc<dyn OccupancyWatch>>,
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
                Arc::clone(&config.idempotency),
            )),
        };
        let internal = name.is_internal();
        Self {
            series: config.metrics.channel_series(name.as_str()),
            members: Members::new(
                Arc::clone(&config.total_subscribers),
                if internal { 0 } else { config.max_subscribers },
                config.max_total_subscribers,
                config.max_presence_members,
            ),
            bridge: config.bridge.clone().filter(|_| !internal),
            presence: config.presence.clone().filter(|_| !internal),
            occupancy: config.occupancy.clone().filter(|_| !internal),
            name,
            log,
            codec,
            pulses: ChannelPulses::default(),
            stats,
            idle,
            received: 0,
            closing: false,
            active: false,
            delivered_name: None,
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

    // Publishing.

    /// Numbers the event, or has the shared log number it; the publisher's
    /// answer waits until the event is accepted.
    fn publish(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        if self.closing {
            // No subscriber would get it: refused, never acknowledged and lost.
            if let Some(reply) = msg.reply {
                let _ = reply.send(Err(BrokerError::ShuttingDown));
            }
            return;
        }
        let (record, idempotency, answer) = PendingAnswer::split(msg, self.bridge.is_some());
        match &mut self.log {
            ChannelLog::Owned(log) => {
                match log.publish(&self.name, self.codec.as_ref(), record, idempotency, answer) {
                    Publishing::Accept {
                        event,
                        answer,
                        retained,
                    } => self.on_accepted(event, retained, answer),
                    Publishing::Repeat { id, answer } => self.repeat(answer, id),
                    Publishing::Store { seq, stored } => {
                        // The fan-out waits for the disk; other messages do not.
                        ctx.spawn(stored.into_actor(self).map(move |outcome, actor, _| {
                            let outcome = outcome
                                .unwrap_or_else(|_| Err(LogError("the store stopped".into())));
                            actor.on_stored(seq, outcome);
                        }));
                    }
                    Publishing::Refused(answer, err) => answer.refuse(err),
                }
            }
            ChannelLog::Shared(cursor) => {
                let submission = Submission {
                    record: self.codec.logged(record),
                    idempotency,
                };
                if let Some(append) = cursor.publish(&self.name, submission, answer) {
                    self.send_append(append, ctx);
                }
            }
        }
    }

    /// An event is in the log (`retained` events are in memory): fans it
    /// out, counts it, offers it to the bridge, answers its publisher.
    fn on_accepted(&mut self, event: Arc<Event>, retained: u64, answer: PendingAnswer) {
        let id = event.id;
        let delivered = self.fan_out(&Delivery::Event(event), Some(id.seq));
        self.count_delivered(delivered);
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        self.stats.last_seq.store(id.seq, Ordering::Relaxed);
        self.stats.history.store(retained, Ordering::Relaxed);
        self.answer(answer, id);
    }

    /// Counts an accepted publish (copies were counted where they came
    /// from), offers it to the bridge, and answers its publisher.
    fn answer(&self, answer: PendingAnswer, id: EventId) {
        if !answer.copy {
            self.metrics
                .record_publish_latency(answer.received_at.elapsed());
            self.metrics.published.increment(1);
            if let Some(series) = &self.series {
                series.published.increment(1);
            }
        }
        if let (Some(bridge), Some(record)) = (&self.bridge, answer.bridge) {
            let origin = Origin {
                channel: self.name.clone(),
                id,
            };
            bridge.carry(origin, record);
        }
        if let Some(reply) = answer.reply {
            let _ = reply.send(Ok(Published {
                id,
                subscribers: self.members.len(),
            }));
        }
    }

    /// A repeat of an earlier publish (same idempotency key and body): its
    /// publisher gets that publish's id; nothing was stored or delivered,
    /// so nothing is counted as published or offered to the bridge.
    fn repeat(&self, answer: PendingAnswer, id: EventId) {
        debug!("publish repeated channel={} id={id}", self.name);
        self.metrics.deduplicated.increment(1);
        if let Some(reply) = answer.reply {
            let _ = reply.send(Ok(Published {
                id,
                subscribers: self.members.len(),
            }));
        }
    }

    /// Durable history: the store answered for the event `seq`.
    fn on_stored(&mut self, seq: u64, outcome: Result<(), LogError>) {
        let ChannelLog::Owned(log) = &mut self.log else {
            return; // only an owned log hands events to a store
        };
        match log.stored(seq, outcome) {
            Stored::Accept { ready, retained } => {
                for pending in ready {
                    self.on_accepted(pending.event, retained, pending.answer);
                }
            }
            Stored::Refused { answers, err } => {
                warn!(
                    "publish refused channel={} seq={seq} reason={err}",
                    self.name
                );
                for answer in answers {
                    answer.refuse(BrokerError::StoreUnavailable(err.to_string()));
                }
            }
        }
    }

    /// Sends an append to the shared log; when it answers, its publishers
    /// are answered and the next queued ones go.
    fn send_append(&mut self, append: Append, ctx: &mut Context<Self>) {
        let Append {
            stored,
            submissions,
            waiting,
        } = append;
        ctx.spawn(stored.into_actor(self).map(move |stored, actor, ctx| {
            actor.on_appended(stored, &submissions, waiting, ctx);
        }));
    }

    /// The shared log answered an append: the new events go to this node's
    /// subscribers when they are next (see [`SharedCursor::stored`]; other
    /// nodes get them through the bus), then the publishers learn their
    /// ids, in order, or that they repeated an earlier publish, or reused
    /// its key.
    fn on_appended(
        &mut self,
        stored: Result<Vec<Logged>, LogError>,
        submissions: &[Submission],
        waiting: Vec<PendingAnswer>,
        ctx: &mut Context<Self>,
    ) {
        match stored {
            Ok(logged) => {
                self.deliver_stored(submissions, &logged);
                for (logged, answer) in logged.into_iter().zip(waiting) {
                    match logged {
                        Logged::New(id) => self.answer(answer, id),
                        Logged::Repeat(id) => self.repeat(answer, id),
                        Logged::KeyReused => answer.refuse(BrokerError::IdempotencyKeyReused),
                    }
                }
            }
            Err(err) => {
                warn!(
                    "publish refused channel={} events={} reason={err}",
                    self.name,
                    waiting.len()
                );
                for answer in waiting {
                    answer.refuse(BrokerError::from(err.clone()));
                }
            }
        }
        let ChannelLog::Shared(cursor) = &mut self.log else {
            return; // only a shared log appends
        };
        if let Some(next) = cursor.appended(&self.name) {
            self.send_append(next, ctx);
        }
    }

    // Subscribing.

    /// Replay and registration in one step: every later event goes to the
    /// subscriber, every earlier one is in its replay. No gap, no
    /// duplicate.
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
        match &mut self.log {
            ChannelLog::Owned(log) => match log.subscribe(msg.from.as_ref()) {
                Ok((replay, head)) => self.register(msg, replay, head),
                Err(err) => self.refuse(msg, err),
            },
            ChannelLog::Shared(cursor) => match cursor.subscribe(&self.name, msg.from.as_ref()) {
                Joining::Now(head) => self.register(msg, None, head),
                // `wait`: no bus event is handled until the replay is read,
                // so the new subscriber's position and the channel's stay
                // consistent.
                Joining::Read(read) => ctx.wait(
                    read.into_actor(self)
                        .map(move |fetched, actor, ctx| actor.on_joined(msg, fetched, ctx)),
                ),
            },
        }
    }

    /// The shared log was read for a new subscriber.
    fn on_joined(
        &mut self,
        msg: Subscribe,
        fetched: Result<Fetched, LogError>,
        ctx: &mut Context<Self>,
    ) {
        let fetched = match fetched {
            Ok(fetched) => fetched,
            Err(err) => {
                warn!("subscribe refused channel={} reason={err}", self.name);
                self.refuse(msg, BrokerError::from(err));
                return;
            }
        };
        let ChannelLog::Shared(cursor) = &mut self.log else {
            return; // only a shared log is read for a subscriber
        };
        let joined = cursor.joined(&self.name, self.codec.as_ref(), &fetched, msg.from.as_ref());
        match joined.placed {
            Placed::Started(epoch) => self.stats.epoch.store(epoch.raw(), Ordering::Relaxed),
            Placed::Along => {}
            Placed::NewLife { gap, read } => {
                self.new_life(gap);
                // The others need the new life's events from its start.
                self.wait_catch_up(read, ctx);
            }
        }
        self.register(msg, joined.replay, joined.head);
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
            self.members.add(msg.subscriber, head.seq, msg.watches);
        }
        self.settle();
    }

    /// Refuses a subscription (its reserved place is given back).
    fn refuse(&mut self, msg: Subscribe, err: BrokerError) {
        info!("subscribe refused channel={} reason={err}", self.name);
        let _ = msg.reply.send(Err(err));
        self.settle();
    }

    // A shared log's deliveries.

    /// Events of the shared log, from the bus (those of one append).
    fn on_bus(&mut self, epoch: Epoch, entries: Vec<LogEntry>, ctx: &mut Context<Self>) {
        let ChannelLog::Shared(cursor) = &mut self.log else {
            return; // only a shared log has a bus
        };
        let arrived = cursor.arrived(&self.name, epoch, &entries);
        if let Some(gap) = arrived.new_life {
            self.new_life(gap);
        }
        self.deliver(epoch, &entries[arrived.next]);
        if let Some(read) = arrived.catch_up {
            self.wait_catch_up(read, ctx);
        }
    }

    /// The bus (re)started carrying this channel: read what it may have
    /// missed.
    fn on_resumed(&mut self, ctx: &mut Context<Self>) {
        let ChannelLog::Shared(cursor) = &mut self.log else {
            return; // only a shared log has a bus
        };
        if let Some(read) = cursor.resumed(&self.name, self.members.is_empty()) {
            self.wait_catch_up(read, ctx);
        }
    }

    /// Awaits a read of everything after the cursor, then delivers it;
    /// nothing else is handled meanwhile.
    fn wait_catch_up(&mut self, read: Read, ctx: &mut Context<Self>) {
        ctx.wait(
            read.into_actor(self)
                .map(|fetched, actor, ctx| actor.on_caught_up(fetched, ctx)),
        );
    }

    /// A catch-up read answered. A failed one leaves the channel behind: it
    /// tries again.
    fn on_caught_up(&mut self, fetched: Result<Fetched, LogError>, ctx: &mut Context<Self>) {
        let ChannelLog::Shared(cursor) = &mut self.log else {
            return; // only a shared log catches up
        };
        let fetched = match fetched {
            Ok(fetched) => fetched,
            Err(err) => {
                warn!("catch-up failed channel={} reason={err}", self.name);
                if let Some(after) = cursor.catch_up_failed() {
                    ctx.run_later(after, |actor, ctx| actor.retry_catch_up(ctx));
                }
                return;
            }
        };
        let Some(caught_up) = cursor.caught_up(&fetched) else {
            return;
        };
        if let Some(gap) = caught_up.new_life {
            self.new_life(gap);
        }
        if let Some(gap) = caught_up.trimmed {
            self.notify_gap(GapReason::HistoryTrimmed, gap.last, gap.resume_from);
            self.members.skip_to(gap.resume_from.seq);
        }
        self.deliver(fetched.epoch, &fetched.entries[caught_up.next]);
    }

    /// Reads the log again after a failed read, if anyone still listens.
    fn retry_catch_up(&mut self, ctx: &mut Context<Self>) {
        if self.members.is_empty() {
            return;
        }
        let ChannelLog::Shared(cursor) = &mut self.log else {
            return; // only a shared log catches up
        };
        if let Some(read) = cursor.retry(&self.name) {
            self.wait_catch_up(read, ctx);
        }
    }

    /// Delivers entries of the shared log, in order (the cursor is past
    /// them already). `published` counts on the node that took the publish.
    fn deliver(&mut self, epoch: Epoch, entries: &[LogEntry]) {
        for entry in entries {
            let event = self.codec.read_back(&self.name, epoch, entry);
            self.deliver_event(event);
        }
    }

    /// This node's publishes the shared log just numbered: those the
    /// cursor says are next go out now, made from the submissions (as the
    /// bus's copy would be, with this node's clock for their time).
    fn deliver_stored(&mut self, submissions: &[Submission], logged: &[Logged]) {
        let ChannelLog::Shared(cursor) = &mut self.log else {
            return; // only a shared log appends
        };
        let new = logged
            .iter()
            .zip(submissions)
            .filter_map(|(logged, s)| match logged {
                Logged::New(id) => Some((*id, s)),
                Logged::Repeat(_) | Logged::KeyReused => None,
            });
        let Some((first, _)) = new.clone().next() else {
            return;
        };
        let count = new.clone().count() as u64;
        let next = cursor.stored(first.epoch, first.seq, count);
        if next.is_empty() {
            return;
        }
        let now = Instant::now();
        for (id, submission) in new.filter(|(id, _)| next.contains(&id.seq)) {
            let event = self.codec.event(&self.name, id, &submission.record, now);
            self.deliver_event(event);
        }
    }

    /// Fans out one event of a shared log and counts it.
    fn deliver_event(&mut self, event: Arc<Event>) {
        let seq = event.id.seq;
        let name = event.tags.as_ref().and_then(|tags| tags.name.clone());
        let delivered = self.fan_out(&Delivery::Event(event), Some(seq));
        self.count_delivered(delivered);
        self.delivered_name = name;
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        self.stats.last_seq.store(seq, Ordering::Relaxed);
    }

    /// The shared log started a new life: every member has nothing of it
    /// yet, and every subscriber is told.
    fn new_life(&mut self, gap: Gap) {
        self.stats
            .epoch
            .store(gap.resume_from.epoch.raw(), Ordering::Relaxed);
        self.members.rewind();
        self.notify_gap(GapReason::UnknownEpoch, gap.last, gap.resume_from);
    }

    // The fan-out.

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

    /// Counts the members an event reached.
    fn count_delivered(&self, delivered: u64) {
        self.metrics.delivered.increment(delivered);
        if let Some(series) = &self.series {
            series.delivered.increment(delivered);
        }
    }

    /// Brings the subscriber counts (broker-wide and the listing's) in
    /// line, and acts on the joins and leaves the members' comings and
    /// goings made: each is announced to the watchers here and, in a
    /// cluster, shared with the other nodes. The occupancy watch hears of
    /// the first member here before its join, and of the last one's going
    /// after its leave.
    fn settle(&mut self) {
        let had = self.stats.subscribers.load(Ordering::Relaxed) > 0;
        let occupied = !had && !self.members.is_empty();
        if occupied {
            self.tell_occupancy(OccupancyChange::Occupied);
        }
        loop {
            let changes = self.members.presence_changes();
            if changes.is_empty() {
                break;
            }
            for change in &changes {
                self.on_member(change);
            }
        }
        let now = self.members.settle();
        self.stats.subscribers.store(now as u64, Ordering::Relaxed);
        if now == 0 && (had || occupied) {
            self.tell_occupancy(OccupancyChange::Vacated);
        }
    }

    /// Tells the occupancy watch, if any, without waiting.
    fn tell_occupancy(&self, change: OccupancyChange) {
        if let Some(watch) = &self.occupancy {
            watch.changed(&self.name, change);
        }
    }

    /// A listed user's connections here changed: a join or a leave is
    /// announced to the watchers here.
    fn on_member(&mut self, change: &MemberChange) {
        if let Some(event) = change.event() {
            self.announce(event);
        }
        if let Some(share) = &self.presence {
            share.changed(&self.name, change);
        }
        if let Some(joined) = change.joined {
            let (user, info) = (Arc::clone(&change.user), change.info.clone());
            self.tell_occupancy(match joined {
                true => OccupancyChange::Joined { user, info },
                false => OccupancyChange::Left { user, info },
            });
        }
    }

    /// Offers a join or a leave to the watchers (none: nothing is made).
    /// Watchers found gone or full are dropped; their own leaves follow in
    /// [`Self::settle`].
    fn announce(&mut self, event: PresenceEvent) {
        if !self.members.watched() {
            return;
        }
        let delivery = Delivery::Event(event.event(&self.name));
        let outcome = self.members.offer_watchers(&delivery);
        if outcome.evicted > 0 {
            self.metrics.evicted.increment(outcome.evicted);
            self.stats
                .evicted
                .fetch_add(outcome.evicted, Ordering::Relaxed);
        }
    }

    /// Another node's join or leave: announced here unless the user's
    /// connections here already said it (it joined here first, or it is
    /// still here after leaving there).
    fn announce_remote(&mut self, event: PresenceEvent) {
        if self.members.has_user(&event.user) {
            return;
        }
        self.announce(event);
        self.settle();
    }

    /// Who is on the channel here.
    fn presence(&self, members: bool) -> ChannelPresence {
        let (members, truncated) = match members {
            true => self.members.listing(),
            false => (Vec::new(), false),
        };
        ChannelPresence {
            count: self.members.len() as u64,
            members,
            truncated,
        }
    }

    /// Tells every subscriber that events are missing, and from where the
    /// channel goes on (the notice's id, so a reconnect resumes there).
    fn notify_gap(&mut self, reason: GapReason, last: EventId, resume_from: EventId) {
        warn!(
            "gap channel={} reason={} last={last} resume_from={resume_from}",
            self.name,
            reason.as_str()
        );
        let notice = reason.notice(&self.name, last, resume_from);
        self.fan_out(&Delivery::Event(notice), None);
    }

    // The rest of the channel's life.

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
                        .store(log.history().len() as u64, Ordering::Relaxed);
                }
                idle
            }
            ChannelLog::Shared(cursor) => {
                let (idle, read) = cursor.tick(&self.name, self.members.is_empty());
                if let Some(read) = read {
                    self.wait_catch_up(read, ctx);
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
        // In cluster mode the history is in the shared log, not counted here.
        let (history, oldest, newest_name) = match &self.log {
            ChannelLog::Owned(log) => {
                let history = log.history();
                let newest_name = history.newest().and_then(|e| e.tags.as_ref()?.name.clone());
                (history.len(), history.oldest().map(|e| e.id), newest_name)
            }
            ChannelLog::Shared(_) => (0, None, self.delivered_name.clone()),
        };
        ChannelDetail {
            head: self.head(),
            subscribers: self.members.len(),
            history,
            oldest,
            newest_name,
            pulses_by_client: self.pulses.by_client(),
        }
    }

    /// A page of the retained events: from memory (owned), or read from
    /// the shared log without holding up anything else.
    fn read_history(&mut self, msg: ReadHistory, ctx: &mut Context<Self>) {
        let ReadHistory {
            after,
            limit,
            reply,
        } = msg;
        match &self.log {
            ChannelLog::Owned(log) => {
                let _ = reply.send(log.read(after, limit));
            }
            ChannelLog::Shared(cursor) => {
                let read = cursor.read_history(&self.name, after, limit, MAX_PAGE_BYTES);
                ctx.spawn(read.into_actor(self).map(move |fetched, actor, _| {
                    let page = fetched.map_err(BrokerError::from).map(|fetched| {
                        SharedCursor::history_page(
                            &actor.name,
                            actor.codec.as_ref(),
                            &fetched,
                            after,
                            limit,
                        )
                    });
                    let _ = reply.send(page);
                }));
            }
        }
    }

    fn count_pulse(&mut self, client_id: Arc<str>) {
        self.stats.pulses.fetch_add(1, Ordering::Relaxed);
        self.pulses.count(client_id);
    }
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
                .store(log.history().len() as u64, Ordering::Relaxed);
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
            ChannelMessage::Disconnect { user, reply } => {
                let ended = self.members.revoke(&user);
                if !ended.is_empty() {
                    info!(
                        "streams revoked channel={} user={user} streams={}",
                        self.name,
                        ended.len()
                    );
                    self.settle();
                }
                let _ = reply.send(Ok(ended));
            }
            ChannelMessage::Delivered { epoch, entries } => self.on_bus(epoch, entries, ctx),
            ChannelMessage::CatchUp => self.on_resumed(ctx),
            ChannelMessage::CountPulse { client_id } => self.count_pulse(client_id),
            ChannelMessage::Inspect { reply } => {
                let _ = reply.send(Ok(self.inspect()));
            }
            ChannelMessage::ReadHistory(msg) => self.read_history(msg, ctx),
            ChannelMessage::Presence { members, reply } => {
                let _ = reply.send(Ok(self.presence(members)));
            }
            ChannelMessage::Announce(event) => self.announce_remote(event),
            ChannelMessage::CloseSubscribers => {
                self.closing = true;
                self.members.clear();
                self.settle();
            }
        }
    }
}

impl Handler<Retire> for ChannelActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

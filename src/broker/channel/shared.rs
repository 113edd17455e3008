//! A channel whose events are numbered by a log several nodes share
//! ([`SharedLog`], cluster mode).
//!
//! A publish goes to the log, which answers with the event's id; the event
//! comes back through the bus to every node that follows the channel, in
//! seq order ([`ChannelMessage::Delivered`](crate::broker::message::ChannelMessage)).
//! Publishes that arrive while an append is in flight wait and go together
//! as the next one (one round trip, one bus message), in arrival order.
//!
//! The channel follows the log (its events are carried here) from its first
//! subscriber until a tick finds it without one; it asks to follow before
//! it reads the log, so every event after the read arrives on the bus (or,
//! when carrying starts later, through a catch-up). The actor remembers how
//! far it delivered; an event it already has is dropped, and an event that
//! skips ahead makes it read the hole from the log first (`ctx.wait`:
//! nothing else is handled meanwhile, so order holds). Each member also
//! remembers the seq it has, so a client whose replay already reached
//! further than the actor is not sent an event twice.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use actix::prelude::*;
use log::warn;

use super::{Accepted, ChannelActor, ChannelLog};
use crate::{
    broker::{
        error::BrokerError,
        event::{Epoch, EventId, ResumeFrom},
        history::{GapReason, replay_from_log},
        log::{FetchFrom, Fetched, LogEntry, LogError, Origin, Record, SharedLog},
        message::{Publish, Published, Subscribe},
        subscriber::Delivery,
    },
    names::ChannelName,
};

/// Wait before reading the log again after a failed read.
const CATCH_UP_RETRY: Duration = Duration::from_secs(1);

/// Most events in one append. Each append is one script run in Redis, which
/// runs one script at a time: a bound keeps every other channel's publishes
/// from waiting long behind a burst on one channel.
const MAX_APPEND_EVENTS: usize = 256;

/// Most payload bytes in one append (a single larger event still goes,
/// alone): one bus message carries them all, to every following node.
const MAX_APPEND_BYTES: usize = 1 << 20;

pub(super) struct SharedCursor {
    log: Arc<dyn SharedLog>,
    /// The newest event delivered here (epoch and seq); `None` until the
    /// log was first read, which is done before the first subscriber.
    position: Option<EventId>,
    /// A read of the log failed: events are held back until the next tick
    /// reads the hole, rather than delivered with a gap.
    pub behind: bool,
    /// The [`name`](crate::broker::event::Tags::name) of the newest event
    /// delivered here.
    pub newest_name: Option<Arc<str>>,
    /// This channel asked the log to carry its events here
    /// ([`SharedLog::follow`]); undone by [`Self::stop_following`].
    following: bool,
    /// Publishes that came while an append was in flight, in arrival order.
    /// Bounded by the publishers waiting for their answer.
    queued: VecDeque<(Record, Accepted)>,
    /// An append is in flight.
    appending: bool,
}

impl SharedCursor {
    pub fn new(log: Arc<dyn SharedLog>) -> Self {
        Self {
            log,
            position: None,
            behind: false,
            newest_name: None,
            following: false,
            queued: VecDeque::new(),
            appending: false,
        }
    }

    pub fn head(&self) -> EventId {
        self.position.unwrap_or(EventId {
            epoch: Epoch::from_raw(0),
            seq: 0,
        })
    }

    /// The channel has no subscriber here: its events need not come. The
    /// next subscriber follows again and reads the log afresh.
    pub fn stop_following(&mut self, channel: &ChannelName) {
        if std::mem::take(&mut self.following) {
            self.log.unfollow(channel);
        }
        self.position = None;
        self.behind = false;
    }

    /// No publish is waiting for the log (so the channel may retire).
    pub fn is_idle(&self) -> bool {
        !self.appending && self.queued.is_empty()
    }

    /// The next append: the oldest queued publishes, within the bounds.
    fn next_batch(&mut self) -> (Vec<Record>, Vec<Accepted>) {
        let (mut records, mut waiting, mut bytes) = (Vec::new(), Vec::new(), 0);
        while let Some((record, _)) = self.queued.front() {
            let size = record.data.len();
            let full = records.len() == MAX_APPEND_EVENTS || bytes + size > MAX_APPEND_BYTES;
            if !records.is_empty() && full {
                break;
            }
            let Some((record, accepted)) = self.queued.pop_front() else {
                break;
            };
            bytes += size;
            records.push(record);
            waiting.push(accepted);
        }
        (records, waiting)
    }
}

impl ChannelActor {
    fn cursor(&mut self) -> Option<&mut SharedCursor> {
        match &mut self.log {
            ChannelLog::Shared(cursor) => Some(cursor),
            ChannelLog::Owned(_) => None,
        }
    }

    /// The log numbers and stores the event; the answer waits until it did
    /// (503 otherwise, never 202). The event reaches subscribers, here too,
    /// through the bus. While an append is in flight the event waits for
    /// the next one.
    pub(super) fn publish_shared(&mut self, mut msg: Publish, ctx: &mut Context<Self>) {
        let accepted = self.accepting(&mut msg);
        let record = self.codec.logged(msg.record);
        let Some(cursor) = self.cursor() else {
            return;
        };
        cursor.queued.push_back((record, accepted));
        if !cursor.appending {
            self.append_queued(ctx);
        }
    }

    /// Sends the queued publishes to the log as one append; when it
    /// answers, the next queued ones go.
    fn append_queued(&mut self, ctx: &mut Context<Self>) {
        let name = self.name.clone();
        let Some(cursor) = self.cursor() else {
            return;
        };
        let (records, waiting) = cursor.next_batch();
        if records.is_empty() {
            return;
        }
        cursor.appending = true;
        let stored = cursor.log.append(&name, records, cursor.position);
        ctx.spawn(stored.into_actor(self).map(move |stored, actor, ctx| {
            actor.appended(stored, waiting);
            if let Some(cursor) = actor.cursor() {
                cursor.appending = false;
            }
            actor.append_queued(ctx);
        }));
    }

    /// Answers the publishers of one append, in order.
    fn appended(&mut self, stored: Result<EventId, LogError>, waiting: Vec<Accepted>) {
        let subscribers = self.members.len();
        let first = match stored {
            Ok(first) => first,
            Err(err) => {
                warn!(
                    "publish refused channel={} events={} reason={err}",
                    self.name,
                    waiting.len()
                );
                for accepted in waiting {
                    if let Some(reply) = accepted.reply {
                        let _ = reply.send(Err(BrokerError::from(err.clone())));
                    }
                }
                return;
            }
        };
        for (seq, mut accepted) in (first.seq..).zip(waiting) {
            let id = EventId {
                epoch: first.epoch,
                seq,
            };
            self.count_published(&accepted);
            if let (Some(mirror), Some(record)) = (&self.mirror, accepted.mirror.take()) {
                let origin = Origin {
                    channel: self.name.clone(),
                    id,
                };
                mirror.accepted(origin, record);
            }
            if let Some(reply) = accepted.reply {
                let _ = reply.send(Ok(Published { id, subscribers }));
            }
        }
    }

    /// Reads what the new subscriber missed from the log (or only the head,
    /// the first time), unless a live start needs nothing.
    pub(super) fn subscribe_shared(&mut self, msg: Subscribe, ctx: &mut Context<Self>) {
        let name = self.name.clone();
        let Some(cursor) = self.cursor() else {
            return;
        };
        if let (None, Some(position)) = (&msg.from, cursor.position) {
            self.register(msg, None, position);
            return;
        }
        let from = match &msg.from {
            None => FetchFrom::Head,
            Some(ResumeFrom::Id(id)) => FetchFrom::After(*id),
            Some(ResumeFrom::Unknown(_) | ResumeFrom::Name(_) | ResumeFrom::Start) => {
                FetchFrom::All
            }
        };
        let log = Arc::clone(&cursor.log);
        // The first subscriber here: the log carries the channel's events
        // to this node before it is read, so nothing falls between the two.
        let follow = (!cursor.following).then(|| log.follow(&name));
        cursor.following = true;
        let read = async move {
            if let Some(follow) = follow {
                follow.await?;
            }
            log.fetch(&name, from).await
        };
        // `wait`: no bus event is handled until the replay is read, so the
        // new subscriber's position and the channel's stay consistent.
        ctx.wait(
            read.into_actor(self)
                .map(move |fetched, actor, ctx| actor.subscribe_from_log(msg, fetched, ctx)),
        );
    }

    /// The log was read for a new subscriber.
    fn subscribe_from_log(
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
        let head = EventId {
            epoch: fetched.epoch,
            seq: fetched.head,
        };
        let Some(cursor) = self.cursor() else {
            return;
        };
        match cursor.position {
            None => {
                cursor.position = Some(head);
                self.stats
                    .epoch
                    .store(head.epoch.raw(), std::sync::atomic::Ordering::Relaxed);
            }
            Some(position) if position.epoch != fetched.epoch => {
                self.change_epoch(fetched.epoch);
                // The others need the new life's events from its start.
                self.catch_up(ctx);
            }
            Some(_) => {}
        }
        let replay = msg.from.as_ref().map(|from| {
            let events = fetched
                .entries
                .iter()
                .map(|entry| {
                    let id = EventId {
                        epoch: fetched.epoch,
                        seq: entry.seq,
                    };
                    self.event_of(id, entry)
                })
                .collect();
            replay_from_log(fetched.epoch, fetched.head, events, from)
        });
        self.register(msg, replay, head);
    }

    /// Delivers one event of the shared log and moves the position.
    fn deliver(&mut self, epoch: Epoch, entry: &LogEntry) {
        let event = self.event_of(
            EventId {
                epoch,
                seq: entry.seq,
            },
            entry,
        );
        let name = event.tags.as_ref().and_then(|tags| tags.name.clone());
        let delivered = self.fan_out(&Delivery::Event(event), Some(entry.seq));
        // `published` counts on the node that took the publish.
        self.metrics.delivered.increment(delivered);
        if let Some(series) = &self.series {
            series.delivered.increment(delivered);
        }
        if let Some(cursor) = self.cursor() {
            cursor.position = Some(EventId {
                epoch,
                seq: entry.seq,
            });
            cursor.newest_name = name;
        }
        let stats = &self.stats;
        stats
            .published
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        stats
            .last_seq
            .store(entry.seq, std::sync::atomic::Ordering::Relaxed);
    }

    /// The shared log started a new life (Redis restarted empty, or the
    /// channel's keys expired): say so, and start over at its seq 0.
    fn change_epoch(&mut self, epoch: Epoch) {
        let Some(cursor) = self.cursor() else {
            return;
        };
        let last = cursor.head();
        let start = EventId { epoch, seq: 0 };
        cursor.position = Some(start);
        self.stats
            .epoch
            .store(epoch.raw(), std::sync::atomic::Ordering::Relaxed);
        self.members.rewind();
        self.notify_gap(GapReason::UnknownEpoch, last, start);
    }

    /// Events from the bus: each delivered when it is the next one, dropped
    /// when it is already here; at a hole the log is read (it has the rest).
    pub(super) fn delivered(
        &mut self,
        epoch: Epoch,
        entries: Vec<LogEntry>,
        ctx: &mut Context<Self>,
    ) {
        for entry in entries {
            if !self.delivered_one(epoch, &entry, ctx) {
                return;
            }
        }
    }

    /// One event from the bus; false when the rest is left to a read of
    /// the log.
    fn delivered_one(&mut self, epoch: Epoch, entry: &LogEntry, ctx: &mut Context<Self>) -> bool {
        let Some(cursor) = self.cursor() else {
            return false;
        };
        let Some(position) = cursor.position else {
            // No subscriber yet: the first one reads the log anyway.
            return false;
        };
        if cursor.behind {
            // The next tick reads this event with the hole before it.
            return false;
        }
        let position = if position.epoch == epoch {
            position
        } else {
            self.change_epoch(epoch);
            EventId { epoch, seq: 0 }
        };
        if entry.seq <= position.seq {
            // Already delivered from the log.
            return true;
        }
        if entry.seq == position.seq + 1 {
            self.deliver(epoch, entry);
            true
        } else {
            // Bus messages were missed: read the hole, this event included.
            self.catch_up(ctx);
            false
        }
    }

    /// The bus (re)started carrying this channel: read what it may have
    /// missed.
    pub(super) fn resumed(&mut self, ctx: &mut Context<Self>) {
        let nobody = self.members.is_empty();
        let Some(cursor) = self.cursor() else {
            return;
        };
        if nobody {
            // Nobody to deliver to: the next subscriber reads the log afresh.
            cursor.position = None;
            return;
        }
        self.catch_up(ctx);
    }

    /// Reads everything after the channel's position from the log and
    /// delivers it; nothing else is handled meanwhile. A failed read leaves
    /// the channel `behind`: it tries again.
    pub(super) fn catch_up(&mut self, ctx: &mut Context<Self>) {
        let name = self.name.clone();
        let Some(cursor) = self.cursor() else {
            return;
        };
        let Some(position) = cursor.position else {
            return;
        };
        cursor.behind = false;
        let log = Arc::clone(&cursor.log);
        ctx.wait(
            log.fetch(&name, FetchFrom::Since(position))
                .into_actor(self)
                .map(move |fetched, actor, ctx| match fetched {
                    Ok(fetched) => actor.apply_catch_up(fetched),
                    Err(err) => actor.catch_up_failed(err, ctx),
                }),
        );
    }

    fn catch_up_failed(&mut self, err: LogError, ctx: &mut Context<Self>) {
        warn!("catch-up failed channel={} reason={err}", self.name);
        let Some(cursor) = self.cursor() else {
            return;
        };
        cursor.behind = true;
        // With the bus down, its return triggers the next try; with the bus
        // up, nothing would until the tick.
        if cursor.log.receiving() {
            ctx.run_later(CATCH_UP_RETRY, |actor, ctx| {
                if actor.members.is_empty() {
                    return;
                }
                if actor.cursor().is_some_and(|cursor| cursor.behind) {
                    actor.catch_up(ctx);
                }
            });
        }
    }

    fn apply_catch_up(&mut self, fetched: Fetched) {
        let Some(mut position) = self.cursor().and_then(|cursor| cursor.position) else {
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
            self.members.skip_to(resume_from.seq);
            if let Some(cursor) = self.cursor() {
                cursor.position = Some(resume_from);
            }
        }
        for entry in missing {
            self.deliver(fetched.epoch, entry);
        }
    }
}

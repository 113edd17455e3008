//! A channel whose events are numbered by a log several nodes share
//! ([`SharedLog`], cluster mode).
//!
//! A publish goes to the log, which answers with the event's id; the event
//! comes back to every node's channel actor through the bus, in seq order
//! ([`ChannelMessage::Delivered`](crate::broker::message::ChannelMessage)).
//! The actor remembers how far it delivered; an event it already has is
//! dropped, and an event that skips ahead makes it read the hole from the
//! log first (`ctx.wait`: nothing else is handled meanwhile, so order
//! holds). Each member also remembers the seq it has, so a client whose
//! replay already reached further than the actor is not sent an event twice.

use std::{sync::Arc, time::Duration};

use actix::prelude::*;
use log::warn;

use super::{ChannelActor, ChannelLog};
use crate::broker::{
    error::BrokerError,
    event::{Epoch, EventId, ResumeFrom},
    history::{GapReason, replay_from_log},
    log::{FetchFrom, Fetched, LogEntry, LogError, Origin, SharedLog},
    message::{Publish, Subscribe},
    subscriber::Delivery,
};

/// Wait before reading the log again after a failed read.
const CATCH_UP_RETRY: Duration = Duration::from_secs(1);

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
}

impl SharedCursor {
    pub fn new(log: Arc<dyn SharedLog>) -> Self {
        Self {
            log,
            position: None,
            behind: false,
            newest_name: None,
        }
    }

    pub fn head(&self) -> EventId {
        self.position.unwrap_or(EventId {
            epoch: Epoch::from_raw(0),
            seq: 0,
        })
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
    /// through the bus.
    pub(super) fn publish_shared(&mut self, mut msg: Publish, ctx: &mut Context<Self>) {
        let accepted = self.accepting(&mut msg);
        let subscribers = self.members.len();
        let name = self.name.clone();
        let record = self.codec.logged(msg.record);
        let Some(cursor) = self.cursor() else {
            return;
        };
        let stored = cursor.log.append(&name, record);
        ctx.spawn(stored.into_actor(self).map(move |stored, actor, _| {
            let mut accepted = accepted;
            let answer = match stored {
                Ok(id) => {
                    actor.count_published(&accepted);
                    if let (Some(mirror), Some(record)) = (&actor.mirror, accepted.mirror.take()) {
                        let origin = Origin {
                            channel: actor.name.clone(),
                            id,
                        };
                        mirror.accepted(origin, record);
                    }
                    Ok(crate::broker::message::Published { id, subscribers })
                }
                Err(err) => {
                    warn!("publish refused channel={} reason={err}", actor.name);
                    Err(BrokerError::from(err))
                }
            };
            if let Some(reply) = accepted.reply {
                let _ = reply.send(answer);
            }
        }));
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
        // `wait`: no bus event is handled until the replay is read, so the
        // new subscriber's position and the channel's stay consistent.
        ctx.wait(
            log.fetch(&name, from)
                .into_actor(self)
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

    /// An event from the bus: delivered when it is the next one, dropped
    /// when it is already here, and a hole is read first.
    pub(super) fn delivered(&mut self, epoch: Epoch, entry: LogEntry, ctx: &mut Context<Self>) {
        let Some(cursor) = self.cursor() else {
            return;
        };
        let Some(position) = cursor.position else {
            // No subscriber yet: the first one reads the log anyway.
            return;
        };
        if cursor.behind {
            // The next tick reads this event with the hole before it.
            return;
        }
        let position = if position.epoch == epoch {
            position
        } else {
            self.change_epoch(epoch);
            EventId { epoch, seq: 0 }
        };
        if entry.seq <= position.seq {
            // Already delivered from the log.
            return;
        }
        if entry.seq == position.seq + 1 {
            self.deliver(epoch, &entry);
        } else {
            // Bus messages were missed: read the hole, this event included.
            self.catch_up(ctx);
        }
    }

    /// The bus was (re)subscribed: read what it may have missed.
    pub(super) fn bus_resumed(&mut self, ctx: &mut Context<Self>) {
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
            log.fetch(&name, FetchFrom::After(position))
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

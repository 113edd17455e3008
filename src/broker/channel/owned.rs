//! A channel whose events are numbered here: history in memory and, with
//! durable history, on disk as well ([`DurableStore`]).
//!
//! The retained events are in memory (a [`History`], so replays never touch
//! the disk). In memory mode an event joins the history and is fanned out at
//! once. With a store it gets the next id at once but waits in `pending`, in
//! seq order, until the store says its commit is on disk; only then does it
//! join the history, reach the subscribers and get its `202`. The actor
//! meanwhile handles other messages. A resuming client is served from the
//! history: it never sees a pending event, so no id a client saw can be
//! reused after a crash.
//!
//! A mirror's copy (a record with an [`Origin`](crate::broker::log::Origin),
//! e.g. a channel event on the Mercure hub's channel) is stored as a
//! reference to its original, which is on disk already; when the channel is
//! read back, the store gives the original's record with its origin and the
//! channel's codec makes the copy again.

use std::{collections::VecDeque, sync::Arc, time::Instant};

use actix::prelude::*;
use log::{error, info, warn};

use super::{Accepted, ChannelActor, ChannelLog};
use crate::{
    broker::{
        codec::Codec,
        error::BrokerError,
        event::{Epoch, Event, EventId, now_ms},
        history::{History, Retention},
        log::{DurableStore, LogError},
        message::{Publish, Subscribe},
    },
    names::ChannelName,
};

/// An event whose commit is not yet known to be on disk.
struct Pending {
    event: Arc<Event>,
    accepted: Accepted,
}

pub(super) struct OwnedLog {
    /// The accepted events still retained (nothing pending is in here).
    pub history: History,
    /// Durable history: where events are also kept.
    store: Option<Arc<dyn DurableStore>>,
    /// Events handed to the store, oldest first, with contiguous seqs after
    /// the history's head.
    pending: VecDeque<Pending>,
    /// Set when the channel could not be read from the store: publishes and
    /// subscriptions answer 503 rather than start an empty history.
    unreadable: Option<String>,
    /// A publish arrived since the last tick (the channel is not idle).
    busy: bool,
    retention: Retention,
}

impl OwnedLog {
    /// A log of a fresh epoch; [`Self::load`] restores a stored one.
    pub fn new(store: Option<Arc<dyn DurableStore>>, retention: Retention) -> Self {
        Self {
            history: History::new(Epoch::new(), retention.clone()),
            store,
            pending: VecDeque::new(),
            unreadable: None,
            busy: false,
            retention,
        }
    }

    /// Restores the channel as last committed: same epoch, head and
    /// history, so ids go on where they stopped. A channel the store does
    /// not know (or any channel, in memory mode) starts a new epoch.
    pub fn load(&mut self, channel: &ChannelName, codec: &dyn Codec) {
        let Some(store) = &self.store else {
            return;
        };
        match store.load(channel) {
            Ok(Some(stored)) => {
                let events = stored
                    .entries
                    .into_iter()
                    .map(|entry| {
                        let id = EventId {
                            epoch: stored.epoch,
                            seq: entry.seq,
                        };
                        let at = crate::broker::event::instant_of(entry.published_ms);
                        codec.event(channel, id, &entry.record, at)
                    })
                    .collect();
                let mut history =
                    History::restore(stored.epoch, stored.head, events, self.retention.clone());
                history.expire(Instant::now());
                info!(
                    "channel restored channel={channel} head={} history={}",
                    history.head(),
                    history.len()
                );
                self.history = history;
            }
            Ok(None) => {}
            Err(err) => {
                error!("channel unreadable channel={channel} reason={err}");
                self.unreadable = Some(err.to_string());
            }
        }
    }

    /// Why the channel cannot be used, if it cannot.
    fn unavailable(&self) -> Option<BrokerError> {
        self.unreadable
            .as_ref()
            .map(|why| BrokerError::StoreUnavailable(why.clone()))
    }

    /// The id of the newest accepted event.
    pub fn head(&self) -> EventId {
        self.history.head()
    }

    /// The tick: drops expired events from memory; whether the channel may
    /// stop (nothing pending, no publish since the last tick). With a store
    /// the history stays on disk and is read again if the channel comes back.
    pub fn tick(&mut self, now: Instant) -> (usize, bool) {
        let expired = self.history.expire(now);
        let idle = match self.store {
            Some(_) => self.pending.is_empty() && !self.busy,
            None => self.history.is_empty(),
        };
        self.busy = false;
        (expired, idle)
    }

    /// The event `seq` is on disk, and so is every earlier one (the store
    /// commits a channel's appends in order): moves them into the history
    /// and returns them for the fan-out, oldest first.
    fn durable(&mut self, seq: u64) -> Vec<Pending> {
        let mut ready = Vec::new();
        while self.pending.front().is_some_and(|p| p.event.id.seq <= seq) {
            let Some(pending) = self.pending.pop_front() else {
                break;
            };
            self.history.push(Arc::clone(&pending.event));
            ready.push(pending);
        }
        ready
    }

    /// The commit of `seq` failed, and so will every later one (the store
    /// refuses writes after a failure): those publishers get the error and
    /// their seqs are free again, since no client saw them.
    fn failed(&mut self, seq: u64, err: &LogError) {
        let keep = self
            .pending
            .iter()
            .position(|p| p.event.id.seq >= seq)
            .unwrap_or(self.pending.len());
        for pending in self.pending.split_off(keep) {
            if let Some(reply) = pending.accepted.reply {
                let _ = reply.send(Err(BrokerError::StoreUnavailable(err.to_string())));
            }
        }
    }
}

impl ChannelActor {
    fn owned(&mut self) -> Option<&mut OwnedLog> {
        match &mut self.log {
            ChannelLog::Owned(log) => Some(log),
            ChannelLog::Shared(_) => None,
        }
    }

    /// Numbers the event; fans it out now (memory) or once the store has it.
    pub(super) fn publish_owned(&mut self, mut msg: Publish, ctx: &mut Context<Self>) {
        let accepted = self.accepting(&mut msg);
        let (name, codec) = (self.name.clone(), Arc::clone(&self.codec));
        let Some(log) = self.owned() else {
            return;
        };
        if let Some(err) = log.unavailable() {
            if let Some(reply) = accepted.reply {
                let _ = reply.send(Err(err));
            }
            return;
        }
        let head = log.history.head();
        let id = EventId {
            epoch: head.epoch,
            seq: head.seq + log.pending.len() as u64 + 1,
        };
        let event = codec.event(&name, id, &msg.record, Instant::now());
        let Some(store) = log.store.clone() else {
            log.history.push(Arc::clone(&event));
            let retained = log.history.len() as u64;
            self.accepted(event, retained, accepted);
            return;
        };
        log.busy = true;
        log.pending.push_back(Pending { event, accepted });
        // A copy is kept as a reference to its original (module docs).
        let record = match msg.record.origin {
            Some(_) => msg.record,
            None => codec.logged(msg.record),
        };
        let answer = store.append(&name, id, now_ms(), record);
        // The fan-out waits for the disk; other messages do not.
        ctx.spawn(answer.into_actor(self).map(move |outcome, actor, _| {
            let outcome = outcome.unwrap_or_else(|_| Err(LogError("the store stopped".into())));
            actor.on_durable(id.seq, outcome);
        }));
    }

    /// Durable history: the store answered for the event `seq`.
    fn on_durable(&mut self, seq: u64, outcome: Result<(), LogError>) {
        let name = self.name.clone();
        let Some(log) = self.owned() else {
            return;
        };
        if let Err(err) = outcome {
            warn!("publish refused channel={name} seq={seq} reason={err}");
            log.failed(seq, &err);
            return;
        }
        let ready = log.durable(seq);
        let retained = log.history.len() as u64;
        for pending in ready {
            self.accepted(pending.event, retained, pending.accepted);
        }
    }

    /// Replay and registration in one handler: every later event goes to
    /// the subscriber, every earlier one is in its replay. No gap, no
    /// duplicate. Pending events are not in the history and reach it once
    /// they are on disk.
    pub(super) fn subscribe_owned(&mut self, msg: Subscribe) {
        let Some(log) = self.owned() else {
            return;
        };
        if let Some(err) = log.unavailable() {
            self.refuse(msg, err);
            return;
        }
        let replay = msg.from.as_ref().map(|from| log.history.since(from));
        let head = log.history.head();
        self.register(msg, replay, head);
    }
}

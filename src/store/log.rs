//! `DurableLog`: a channel's log in durable mode, as its
//! [`ChannelActor`](crate::broker::ChannelActor) holds it.
//!
//! The retained events are in memory (a [`History`], so replays never touch
//! the disk) and on disk. A publish gets the next id at once but waits in
//! `pending`, in seq order, until the writer says its commit is on disk;
//! only then does it join the history, reach the subscribers and get its
//! `202`. The actor meanwhile handles other messages and other channels
//! are not held up (the writer commits every channel's appends together).
//! A resuming client is served from the history: it never sees a pending
//! event, so no id a client saw can be reused after a crash.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use log::{error, info};
use tokio::sync::oneshot;

use super::{Append, Store, StoreError, now_ms};
use crate::broker::{
    BrokerError, ChannelName, Event, EventId, Reply,
    channel::{Publish, Published},
    event::Epoch,
    history::History,
};

/// An event whose commit is not yet known to be on disk.
pub struct Pending {
    pub event: Arc<Event>,
    pub reply: Option<Reply<Published>>,
    pub received_at: Instant,
    /// The payload to offer the Mercure hub once durable, if it is to be.
    pub mirror: Option<String>,
}

pub struct DurableLog {
    /// The durable events still retained (nothing pending is in here).
    pub history: History,
    store: Store,
    /// Events sent to the writer, oldest first, with contiguous seqs after
    /// the history's head.
    pending: VecDeque<Pending>,
    /// Set when the channel could not be read from the store: publishes and
    /// subscriptions answer 503 rather than start an empty history.
    unreadable: Option<String>,
    /// A publish arrived since the last tick (the channel is not idle).
    busy: bool,
    max_events: usize,
    max_age: Duration,
}

impl DurableLog {
    /// A log not read yet; [`Self::load`] fills it when the actor starts.
    pub fn new(store: Store, max_events: usize, max_age: Duration) -> Self {
        Self {
            history: History::new(Epoch::new(), max_events, max_age),
            store,
            pending: VecDeque::new(),
            unreadable: None,
            busy: false,
            max_events,
            max_age,
        }
    }

    /// Restores the channel as last committed: same epoch, head and
    /// history, so ids go on where they stopped. A channel the store does
    /// not know starts a new epoch.
    pub fn load(&mut self, channel: &ChannelName) {
        match self.store.load(channel) {
            Ok(Some(stored)) => {
                let mut history = History::restore(
                    stored.epoch,
                    stored.head,
                    stored.events,
                    self.max_events,
                    self.max_age,
                );
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
    pub fn unavailable(&self) -> Option<BrokerError> {
        self.unreadable
            .as_ref()
            .map(|why| BrokerError::StoreUnavailable(why.clone()))
    }

    /// Gives the event its id and sends it to the writer. Returns its seq
    /// and the answer to wait for, or `None` when the publish was refused
    /// (the publisher has been told).
    pub fn append(
        &mut self,
        channel: &ChannelName,
        msg: Publish,
        mirror: Option<String>,
    ) -> Option<(u64, oneshot::Receiver<Result<(), StoreError>>)> {
        if let Some(err) = self.unavailable() {
            if let Some(reply) = msg.reply {
                let _ = reply.send(Err(err));
            }
            return None;
        }
        self.busy = true;
        let head = self.history.head();
        let id = EventId {
            epoch: head.epoch,
            seq: head.seq + self.pending.len() as u64 + 1,
        };
        let event = Event::new(channel.clone(), id, msg.event_type.clone(), &msg.data);
        let (done, answer) = oneshot::channel();
        self.store.append(Append {
            channel: channel.clone(),
            id,
            published_ms: now_ms(),
            event_type: msg.event_type,
            data: msg.data,
            done,
        });
        self.pending.push_back(Pending {
            event,
            reply: msg.reply,
            received_at: msg.received_at,
            mirror,
        });
        Some((id.seq, answer))
    }

    /// The event `seq` is on disk, and so is every earlier one (the writer
    /// commits in order): moves them into the history and returns them for
    /// the fan-out, oldest first.
    pub fn durable(&mut self, seq: u64) -> Vec<Pending> {
        let mut ready = Vec::new();
        while self.pending.front().is_some_and(|p| p.event.id.seq <= seq) {
            let pending = self.pending.pop_front().expect("front was just checked");
            self.history.push(Arc::clone(&pending.event));
            ready.push(pending);
        }
        ready
    }

    /// The commit of `seq` failed, and so will every later one (the store
    /// refuses writes after a failure): those publishers get the error and
    /// their seqs are free again, since no client saw them.
    pub fn failed(&mut self, seq: u64, err: &StoreError) {
        let keep = self
            .pending
            .iter()
            .position(|p| p.event.id.seq >= seq)
            .unwrap_or(self.pending.len());
        for pending in self.pending.split_off(keep) {
            if let Some(reply) = pending.reply {
                let _ = reply.send(Err(BrokerError::StoreUnavailable(err.to_string())));
            }
        }
    }

    /// The tick: drops expired events from memory; whether the channel may
    /// stop (nothing pending, no publish since the last tick). Its history
    /// stays on disk and is read again if it comes back.
    pub fn tick(&mut self, now: Instant) -> (usize, bool) {
        let expired = self.history.expire(now);
        let idle = self.pending.is_empty() && !self.busy;
        self.busy = false;
        (expired, idle)
    }

    /// The id of the newest durable event.
    pub fn head(&self) -> EventId {
        self.history.head()
    }
}

//! `OwnedLog`: the log of a channel whose events are numbered here, as plain
//! state. The history is in memory and, with durable history, on disk as
//! well ([`DurableStore`]). Its methods say what the actor is to do next
//! ([`Publishing`], [`Stored`]); they never fan out or answer anyone.
//!
//! The retained events are in memory (a [`History`], so replays never touch
//! the disk). In memory mode an event joins the history and is accepted at
//! once. With a store it gets the next id at once but waits in `pending`, in
//! seq order, until the store says its commit is on disk; only then does it
//! join the history and get accepted (fanned out, `202`). The actor
//! meanwhile handles other messages. A resuming client is served from the
//! history: it never sees a pending event, so no id a client saw can be
//! reused after a crash.
//!
//! A publish with an idempotency key is checked against the broker's
//! [`IdempotencyBook`] before it is numbered: a repeat is answered the
//! first publish's id at once ([`Publishing::Repeat`]) and stores nothing.
//! A new key is remembered with the event's id as it is numbered; with a
//! store it goes to disk in the event's commit, and is forgotten again if
//! that commit fails. A repeat that arrives while the first is still on its
//! way to disk is refused (409: retry), never answered before the first.
//!
//! A bridged copy (a record with an [`Origin`](crate::broker::log::Origin),
//! e.g. a channel event on the Mercure hub's channel) is stored as a
//! reference to its original, which is on disk already; when the channel is
//! read back, the store gives the original's record with its origin and the
//! channel's codec makes the copy again.

use std::{collections::VecDeque, sync::Arc, time::Instant};

use log::{error, info};
use tokio::sync::oneshot;

use crate::broker::message::PendingAnswer;
use crate::{
    broker::{
        codec::Codec,
        error::BrokerError,
        event::{Epoch, Event, EventId, ResumeFrom, now_ms},
        history::{History, HistoryPage, Replay, Retention},
        idempotency::{Idempotency, IdempotencyBook, Known},
        log::{DurableStore, LogError, Record},
    },
    names::ChannelName,
};

/// An event whose commit is not yet known to be on disk, and its publisher.
pub struct Pending {
    pub event: Arc<Event>,
    pub answer: PendingAnswer,
    /// Forgotten from the book if the commit fails.
    idempotency: Option<Idempotency>,
}

/// What became of a publish on an owned log.
pub enum Publishing {
    /// In memory: the event is in the history (`retained` events are):
    /// accept it now.
    Accept {
        event: Arc<Event>,
        answer: PendingAnswer,
        retained: u64,
    },
    /// With a store: the event `seq` waits in seq order until the store's
    /// answer says it is on disk (then [`OwnedLog::stored`]).
    Store {
        seq: u64,
        stored: oneshot::Receiver<Result<(), LogError>>,
    },
    /// A repeat of the publish that stored the event `id` (its idempotency
    /// key and digest are remembered): answer that id, store nothing.
    Repeat { id: EventId, answer: PendingAnswer },
    /// The channel could not be read from its store (503), or the
    /// idempotency key was used for another body (422) or by a publish not
    /// yet on disk (409): refused.
    Refused(PendingAnswer, BrokerError),
}

/// What the store's answer for one event settled.
pub enum Stored {
    /// These events are on disk and in the history, oldest first
    /// (`retained` events are): accept them.
    Accept { ready: Vec<Pending>, retained: u64 },
    /// The commit failed, and so will every later one: these publishers get
    /// the error (their seqs are free again, since no client saw them).
    Refused {
        answers: Vec<PendingAnswer>,
        err: LogError,
    },
}

pub struct OwnedLog {
    /// The accepted events still retained (nothing pending is in here).
    history: History,
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
    /// The idempotency keys of every owned log in the broker.
    book: Arc<IdempotencyBook>,
}

impl OwnedLog {
    /// A log of a fresh epoch; [`Self::load`] restores a stored one.
    pub fn new(
        store: Option<Arc<dyn DurableStore>>,
        retention: Retention,
        book: Arc<IdempotencyBook>,
    ) -> Self {
        Self {
            history: History::new(Epoch::new(), retention.clone()),
            store,
            pending: VecDeque::new(),
            unreadable: None,
            busy: false,
            retention,
            book,
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
                    .iter()
                    .map(|entry| codec.read_back(channel, stored.epoch, entry))
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

    /// The accepted events still retained.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The id of the newest accepted event.
    pub fn head(&self) -> EventId {
        self.history.head()
    }

    /// Why the channel cannot be used, if it cannot.
    fn unavailable(&self) -> Option<BrokerError> {
        self.unreadable
            .as_ref()
            .map(|why| BrokerError::StoreUnavailable(why.clone()))
    }

    /// Numbers a publish's event (after the pending ones) and makes it with
    /// `codec`: into the history at once (memory), or handed to the store;
    /// unless its idempotency key makes it a repeat (module docs).
    pub fn publish(
        &mut self,
        channel: &ChannelName,
        codec: &dyn Codec,
        record: Record,
        idempotency: Option<Idempotency>,
        answer: PendingAnswer,
    ) -> Publishing {
        if let Some(err) = self.unavailable() {
            return Publishing::Refused(answer, err);
        }
        let now = Instant::now();
        if let Some(idempotency) = &idempotency {
            match self.book.check(channel, idempotency, now) {
                Known::Unknown => {}
                Known::Same(id) if self.is_pending(id) => {
                    return Publishing::Refused(answer, BrokerError::IdempotencyKeyInFlight);
                }
                Known::Same(id) => return Publishing::Repeat { id, answer },
                Known::Other => {
                    return Publishing::Refused(answer, BrokerError::IdempotencyKeyReused);
                }
            }
        }
        let head = self.history.head();
        let id = EventId {
            epoch: head.epoch,
            seq: head.seq + self.pending.len() as u64 + 1,
        };
        if let Some(idempotency) = &idempotency {
            self.book.remember(channel, idempotency, id, now);
        }
        let event = codec.event(channel, id, &record, now);
        let Some(store) = &self.store else {
            self.history.push(Arc::clone(&event));
            return Publishing::Accept {
                event,
                answer,
                retained: self.history.len() as u64,
            };
        };
        self.busy = true;
        self.pending.push_back(Pending {
            event,
            answer,
            idempotency: idempotency.clone(),
        });
        // A copy is kept as a reference to its original (module docs).
        let record = match record.origin {
            Some(_) => record,
            None => codec.logged(record),
        };
        let stored = store.append(channel, id, now_ms(), record, idempotency);
        Publishing::Store {
            seq: id.seq,
            stored,
        }
    }

    /// The store answered for the event `seq`. On success it is on disk,
    /// and so is every earlier one (the store commits a channel's appends in
    /// order): they move into the history. On failure every later commit
    /// fails too (the store refuses writes after a failure).
    pub fn stored(&mut self, seq: u64, outcome: Result<(), LogError>) -> Stored {
        if let Err(err) = outcome {
            let keep = self
                .pending
                .iter()
                .position(|p| p.event.id.seq >= seq)
                .unwrap_or(self.pending.len());
            let refused = self.pending.split_off(keep);
            let answers = refused
                .into_iter()
                .map(|pending| {
                    if let Some(idempotency) = &pending.idempotency {
                        // Not stored: a retry may store it.
                        self.book.forget(&pending.event.channel, &idempotency.key);
                    }
                    pending.answer
                })
                .collect();
            return Stored::Refused { answers, err };
        }
        let mut ready = Vec::new();
        while self.pending.front().is_some_and(|p| p.event.id.seq <= seq) {
            let Some(pending) = self.pending.pop_front() else {
                break;
            };
            self.history.push(Arc::clone(&pending.event));
            ready.push(pending);
        }
        Stored::Accept {
            ready,
            retained: self.history.len() as u64,
        }
    }

    /// What a new subscriber resuming from `from` (live: `None`) gets: its
    /// replay from the history and the head it continues from. Pending
    /// events are not in either: they reach it once they are on disk.
    pub fn subscribe(
        &self,
        from: Option<&ResumeFrom>,
    ) -> Result<(Option<Replay>, EventId), BrokerError> {
        if let Some(err) = self.unavailable() {
            return Err(err);
        }
        let replay = from.map(|from| self.history.since(from));
        Ok((replay, self.history.head()))
    }

    /// Whether the event `id` is still on its way to disk.
    fn is_pending(&self, id: EventId) -> bool {
        let head = self.history.head();
        id.epoch == head.epoch && id.seq > head.seq
    }

    /// Up to `limit` retained events after `after` (from the oldest
    /// without it), with the replay's gap rules. Pending events are not
    /// read: no reader sees an event before it is on disk.
    pub fn read(&self, after: Option<EventId>, limit: usize) -> Result<HistoryPage, BrokerError> {
        if let Some(err) = self.unavailable() {
            return Err(err);
        }
        let from = after.map_or(ResumeFrom::Start, ResumeFrom::Id);
        Ok(HistoryPage::of(self.history.since(&from), limit))
    }

    /// The tick: drops expired events from memory; returns how many, and
    /// whether the channel may stop (nothing pending, no publish since the
    /// last tick). With a store the history stays on disk and is read again
    /// if the channel comes back.
    pub fn tick(&mut self, now: Instant) -> (usize, bool) {
        let expired = self.history.expire(now);
        let idle = match self.store {
            Some(_) => self.pending.is_empty() && !self.busy,
            None => self.history.is_empty(),
        };
        self.busy = false;
        (expired, idle)
    }
}

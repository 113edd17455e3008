//! `SharedCursor`: how far a channel whose events are numbered by a log
//! several nodes share ([`SharedLog`], cluster mode) has delivered them, as
//! plain state. Its methods say what the actor is to do next (send an
//! [`Append`], deliver these entries, announce a [`Gap`], await a read);
//! they never fan out or answer anyone.
//!
//! A publish goes to the log, which answers with the event's id; the event
//! comes back through the bus to every node that follows the channel, in
//! seq order ([`ChannelMessage::Delivered`](crate::broker::message::ChannelMessage)).
//! The publishing node does not wait for that: when the answer's events
//! come right after the cursor it delivers them from the answer
//! ([`SharedCursor::stored`]), and the bus's copy is dropped as one it has.
//! Publishes that arrive while an append is in flight wait and go together
//! as the next one (one round trip, one bus message), in arrival order. A
//! publish's idempotency key goes with it: the log checks and records it in
//! the append itself, and answers a repeat with the first publish's id
//! (appends of a channel go one at a time, so a retry through this node
//! always finds its first publish settled).
//!
//! The channel follows the log (its events are carried here) from its first
//! subscriber until a tick finds it without one; it asks to follow before
//! it reads the log, so every event after the read arrives on the bus (or,
//! when carrying starts later, through a catch-up). The cursor remembers how
//! far the channel delivered; an event it already has is dropped, and an
//! event that skips ahead makes it read the hole from the log first (the
//! actor awaits that read with `ctx.wait`: nothing else is handled
//! meanwhile, so order holds). Each member also remembers the seq it has,
//! so a client whose replay already reached further than the cursor is not
//! sent an event twice.

use std::{collections::VecDeque, future::Future, ops::Range, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;

use crate::broker::message::PendingAnswer;
use crate::{
    broker::{
        codec::Codec,
        event::{Epoch, EventId, ResumeFrom},
        history::{HistoryPage, Replay, replay_from_log},
        idempotency::Logged,
        log::{FetchFrom, Fetched, LogEntry, LogError, SharedLog, Submission},
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

/// A read of the log: what the channel has after the cursor.
pub type Read = BoxFuture<'static, Result<Fetched, LogError>>;

/// An append to send: the log's answer (what became of each publish), the
/// submissions it answers for and their publishers, in order.
pub struct Append {
    pub stored: BoxFuture<'static, Result<Vec<Logged>, LogError>>,
    pub submissions: Arc<[Submission]>,
    pub waiting: Vec<PendingAnswer>,
}

/// Events the subscribers will not get: after `last` the channel goes on
/// at `resume_from` (the cursor is there now).
pub struct Gap {
    pub last: EventId,
    pub resume_from: EventId,
}

/// How a new subscriber joins.
pub enum Joining<F> {
    /// A live start on a channel read already: at this head, no replay.
    Now(EventId),
    /// Read the log first (having asked it to carry the channel here, for
    /// the first subscriber), then [`SharedCursor::joined`].
    Read(F),
}

/// What a read for a new subscriber brought.
pub struct Joined {
    pub placed: Placed,
    /// The subscriber's replay (when it resumes) and the head it goes on from.
    pub replay: Option<Replay>,
    pub head: EventId,
}

/// What a read for a new subscriber did to the cursor.
pub enum Placed {
    /// The first read since the channel follows the log: the cursor starts
    /// at its head, in this life.
    Started(Epoch),
    /// The cursor was in the log's life already.
    Along,
    /// The log started a new life since (Redis restarted empty, or the
    /// channel's keys expired): announce the gap, and await `read` (the
    /// new life's events from its start, which the others need).
    NewLife { gap: Gap, read: Read },
}

/// What to do with the events of one bus message (in this order).
pub struct Arrived {
    /// The log started a new life: announce the gap first.
    pub new_life: Option<Gap>,
    /// The entries to deliver, in order; the cursor is past them.
    pub next: Range<usize>,
    /// Events were missed after those: await this read of the hole (the
    /// rest of the message included).
    pub catch_up: Option<Read>,
}

/// What a catch-up read brought (in this order).
pub struct CaughtUp {
    /// The log started a new life: announce the gap first.
    pub new_life: Option<Gap>,
    /// Events left the log before this node read them: announce the gap,
    /// and every member counts as having everything up to its
    /// `resume_from`.
    pub trimmed: Option<Gap>,
    /// The entries to deliver, in order; the cursor is past them.
    pub next: Range<usize>,
}

pub struct SharedCursor {
    log: Arc<dyn SharedLog>,
    /// The newest event delivered here (epoch and seq); `None` until the
    /// log was first read, which is done before the first subscriber.
    position: Option<EventId>,
    /// A read of the log failed: events are held back until the next tick
    /// reads the hole, rather than delivered with a gap.
    behind: bool,
    /// This channel asked the log to carry its events here
    /// ([`SharedLog::follow`]); undone by [`Self::stop_following`].
    following: bool,
    /// Publishes that came while an append was in flight, in arrival order.
    /// Bounded by the publishers waiting for their answer.
    queued: VecDeque<(Submission, PendingAnswer)>,
    /// An append is in flight.
    appending: bool,
}

impl SharedCursor {
    pub fn new(log: Arc<dyn SharedLog>) -> Self {
        Self {
            log,
            position: None,
            behind: false,
            following: false,
            queued: VecDeque::new(),
            appending: false,
        }
    }

    /// The newest event delivered here (epoch 0 until the log was read).
    pub fn head(&self) -> EventId {
        self.position.unwrap_or(EventId {
            epoch: Epoch::from_raw(0),
            seq: 0,
        })
    }

    /// No publish is waiting for the log (so the channel may retire).
    pub fn is_idle(&self) -> bool {
        !self.appending && self.queued.is_empty()
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

    /// The tick, with `nobody` subscribed here: whether no publish waits
    /// for the log, and a read to await when the channel is behind.
    pub fn tick(&mut self, channel: &ChannelName, nobody: bool) -> (bool, Option<Read>) {
        let idle = self.is_idle();
        if nobody {
            // Nobody here listens: the bus stops bringing its events.
            self.stop_following(channel);
            return (idle, None);
        }
        (idle, self.retry(channel))
    }

    /// Queues a publish (its record as the log keeps it). The log numbers
    /// and stores the event; the publisher's answer waits until it did.
    /// Returns the append to send now, unless one is in flight: then this
    /// publish goes with the next.
    pub fn publish(
        &mut self,
        channel: &ChannelName,
        submission: Submission,
        answer: PendingAnswer,
    ) -> Option<Append> {
        self.queued.push_back((submission, answer));
        if self.appending {
            return None;
        }
        self.next_append(channel)
    }

    /// The append in flight answered: the next one, if publishes queued
    /// meanwhile.
    pub fn appended(&mut self, channel: &ChannelName) -> Option<Append> {
        self.appending = false;
        self.next_append(channel)
    }

    /// The oldest queued publishes as one append, within the bounds.
    fn next_append(&mut self, channel: &ChannelName) -> Option<Append> {
        let (mut submissions, mut waiting, mut bytes) = (Vec::new(), Vec::new(), 0);
        while let Some((submission, _)) = self.queued.front() {
            let size = submission.record.data.len();
            let full = submissions.len() == MAX_APPEND_EVENTS || bytes + size > MAX_APPEND_BYTES;
            if !submissions.is_empty() && full {
                break;
            }
            let Some((submission, answer)) = self.queued.pop_front() else {
                break;
            };
            bytes += size;
            submissions.push(submission);
            waiting.push(answer);
        }
        if submissions.is_empty() {
            return None;
        }
        self.appending = true;
        let submissions: Arc<[Submission]> = submissions.into();
        let stored = self
            .log
            .append(channel, Arc::clone(&submissions), self.position);
        Some(Append {
            stored,
            submissions,
            waiting,
        })
    }

    /// The log numbered this node's publishes `first..first + count` (one
    /// append's new events: consecutive seqs) in `epoch`: the seqs to
    /// deliver here now, from the answer, rather than when the bus brings
    /// them back. Only those right after the cursor: when the bus brought
    /// them first, when another node's events come between (not here yet),
    /// in a new life, before the first read or while the channel is
    /// behind, the bus (or the read it leads to) delivers them as any
    /// other node's, in order. Whatever is delivered here moves the cursor,
    /// so the bus's copy is dropped as one the channel has.
    pub fn stored(&mut self, epoch: Epoch, first: u64, count: u64) -> Range<u64> {
        let Some(position) = self
            .position
            .filter(|position| !self.behind && position.epoch == epoch)
        else {
            return 0..0;
        };
        let end = first.saturating_add(count);
        let next = position.seq.saturating_add(1);
        if count == 0 || first > next || end <= next {
            return 0..0;
        }
        self.position = Some(EventId {
            epoch,
            seq: end - 1,
        });
        next..end
    }

    /// How a subscriber resuming from `from` (live: `None`) joins: at once
    /// when it starts live on a channel read already, or after reading what
    /// it missed from the log (or only the head, the first time).
    pub fn subscribe(
        &mut self,
        channel: &ChannelName,
        from: Option<&ResumeFrom>,
    ) -> Joining<impl Future<Output = Result<Fetched, LogError>> + use<>> {
        if let (None, Some(position)) = (from, self.position) {
            return Joining::Now(position);
        }
        let from = match from {
            None => FetchFrom::Head,
            Some(ResumeFrom::Id(id)) => FetchFrom::After(*id),
            Some(ResumeFrom::Unknown(_) | ResumeFrom::Name(_) | ResumeFrom::Start) => {
                FetchFrom::All
            }
        };
        let (log, channel) = (Arc::clone(&self.log), channel.clone());
        // The first subscriber here: the log carries the channel's events
        // to this node before it is read, so nothing falls between the two.
        let follow = (!self.following).then(|| log.follow(&channel));
        self.following = true;
        Joining::Read(async move {
            if let Some(follow) = follow {
                follow.await?;
            }
            log.fetch(&channel, from).await
        })
    }

    /// The log was read for a subscriber resuming from `from`: moves the
    /// cursor, and makes the replay with `codec`.
    pub fn joined(
        &mut self,
        channel: &ChannelName,
        codec: &dyn Codec,
        fetched: &Fetched,
        from: Option<&ResumeFrom>,
    ) -> Joined {
        let head = EventId {
            epoch: fetched.epoch,
            seq: fetched.head,
        };
        let placed = match self.position {
            None => {
                self.position = Some(head);
                Placed::Started(head.epoch)
            }
            Some(position) if position.epoch != fetched.epoch => {
                let gap = self.new_life(fetched.epoch);
                let read = self.read_since(channel, gap.resume_from);
                Placed::NewLife { gap, read }
            }
            Some(_) => Placed::Along,
        };
        let replay = from.map(|from| {
            let events = fetched
                .entries
                .iter()
                .map(|entry| codec.read_back(channel, fetched.epoch, entry))
                .collect();
            replay_from_log(fetched.epoch, fetched.head, events, from)
        });
        Joined {
            placed,
            replay,
            head,
        }
    }

    /// The events of one bus message (one append's, consecutive seqs): each
    /// is delivered when it is the next one, dropped when it is here
    /// already; at a hole the log is read (it has the rest). Nothing is
    /// delivered before the first subscriber read the log (it reads it
    /// anyway) or while the channel is behind (the tick reads these with
    /// the hole before them).
    pub fn arrived(
        &mut self,
        channel: &ChannelName,
        epoch: Epoch,
        entries: &[LogEntry],
    ) -> Arrived {
        let mut arrived = Arrived {
            new_life: None,
            next: 0..0,
            catch_up: None,
        };
        let Some(mut position) = self
            .position
            .filter(|_| !self.behind && !entries.is_empty())
        else {
            return arrived;
        };
        if position.epoch != epoch {
            let gap = self.new_life(epoch);
            position = gap.resume_from;
            arrived.new_life = Some(gap);
        }
        // Already delivered from the log.
        let first = entries.partition_point(|entry| entry.seq <= position.seq);
        let mut end = first;
        while entries
            .get(end)
            .is_some_and(|entry| entry.seq == position.seq + 1)
        {
            position.seq += 1;
            end += 1;
        }
        arrived.next = first..end;
        self.position = Some(position);
        if end < entries.len() {
            // Bus messages were missed: read the hole, the rest included.
            arrived.catch_up = self.catch_up(channel);
        }
        arrived
    }

    /// The bus (re)started carrying this channel: a read of what it may
    /// have missed, unless `nobody` is subscribed here (then the next
    /// subscriber reads the log afresh).
    pub fn resumed(&mut self, channel: &ChannelName, nobody: bool) -> Option<Read> {
        if nobody {
            self.position = None;
            return None;
        }
        self.catch_up(channel)
    }

    /// A read of everything after the cursor (none before the first read).
    fn catch_up(&mut self, channel: &ChannelName) -> Option<Read> {
        let position = self.position?;
        Some(self.read_since(channel, position))
    }

    /// A read of everything after `position`, the cursor's.
    fn read_since(&mut self, channel: &ChannelName, position: EventId) -> Read {
        self.behind = false;
        self.log.fetch(channel, FetchFrom::Since(position))
    }

    /// A read after a failed one, while the channel is behind.
    pub fn retry(&mut self, channel: &ChannelName) -> Option<Read> {
        if !self.behind {
            return None;
        }
        self.catch_up(channel)
    }

    /// A catch-up read failed: the channel is behind until a read succeeds.
    /// Returns when to [`retry`](Self::retry) on our own: with the bus up,
    /// nothing else would until the tick; with the bus down, its return
    /// triggers the next read.
    pub fn catch_up_failed(&mut self) -> Option<Duration> {
        self.behind = true;
        self.log.receiving().then_some(CATCH_UP_RETRY)
    }

    /// A catch-up read answered: what of it to deliver (everything after
    /// the cursor), and the gaps to announce first.
    pub fn caught_up(&mut self, fetched: &Fetched) -> Option<CaughtUp> {
        let mut position = self.position?;
        let mut caught_up = CaughtUp {
            new_life: None,
            trimmed: None,
            next: 0..0,
        };
        if position.epoch != fetched.epoch {
            let gap = self.new_life(fetched.epoch);
            position = gap.resume_from;
            caught_up.new_life = Some(gap);
        }
        let first = fetched
            .entries
            .partition_point(|entry| entry.seq <= position.seq);
        let first_available = fetched
            .entries
            .get(first)
            .map_or(fetched.head + 1, |entry| entry.seq);
        if first_available > position.seq + 1 {
            // Trimmed (or expired) before this node could read it.
            let resume_from = EventId {
                epoch: fetched.epoch,
                seq: first_available - 1,
            };
            caught_up.trimmed = Some(Gap {
                last: position,
                resume_from,
            });
            position = resume_from;
        }
        if let Some(last) = fetched
            .entries
            .last()
            .filter(|_| first < fetched.entries.len())
        {
            position.seq = last.seq;
        }
        caught_up.next = first..fetched.entries.len();
        self.position = Some(position);
        Some(caught_up)
    }

    /// A read of the log for a history reader: the retained events after
    /// `after`, or all of them. It moves nothing: the cursor is the
    /// subscribers' business.
    /// Reads what a history page of at most `limit` events and about
    /// `bytes` of data needs: one event more than the page, so that it
    /// knows whether more follow.
    pub fn read_history(
        &self,
        channel: &ChannelName,
        after: Option<EventId>,
        limit: usize,
        bytes: usize,
    ) -> Read {
        let most = limit.saturating_add(1);
        self.log
            .fetch(channel, FetchFrom::Page { after, most, bytes })
    }

    /// A history reader's page of what the log returned, with `codec`:
    /// the same events and gap rules as a subscriber's replay.
    pub fn history_page(
        channel: &ChannelName,
        codec: &dyn Codec,
        fetched: &Fetched,
        after: Option<EventId>,
        limit: usize,
    ) -> HistoryPage {
        let events = fetched
            .entries
            .iter()
            .map(|entry| codec.read_back(channel, fetched.epoch, entry))
            .collect();
        let from = after.map_or(ResumeFrom::Start, ResumeFrom::Id);
        let replay = replay_from_log(fetched.epoch, fetched.head, events, &from);
        HistoryPage::of(replay, limit)
    }

    /// The log started a new life: the cursor goes to its start.
    fn new_life(&mut self, epoch: Epoch) -> Gap {
        let last = self.head();
        let resume_from = EventId { epoch, seq: 0 };
        self.position = Some(resume_from);
        Gap { last, resume_from }
    }
}

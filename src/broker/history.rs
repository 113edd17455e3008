//! A channel's retained events, bounded by count, age and the broker-wide
//! memory budget, and the answer to "what did a client miss since this id?".
//!
//! Owned by one `ChannelActor`; nothing else touches it, so it needs no lock
//! (the memory budget it shares with every other history has its own, see
//! [`budget`]).

pub mod budget;

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use self::budget::HistoryBudget;
use super::event::{Epoch, Event, EventId, ResumeFrom};
use crate::names::{ChannelName, EventType};

/// How much history a channel keeps: the configured bounds, the same for
/// every channel.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Events kept per channel (`history.max_events`); 0 keeps none.
    pub max_events: usize,
    /// Events older than this leave (`history.max_age`), at the tick.
    pub max_age: Duration,
    /// The memory every channel's history shares (`history.max_total_bytes`);
    /// `None`: no bound beyond the two above.
    pub budget: Option<Arc<HistoryBudget>>,
}

/// Why a resume could not be served completely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The id belongs to another lifetime of the channel (e.g. before a restart).
    UnknownEpoch,
    /// The id is not one the broker issues.
    UnknownId,
    /// The events right after the id have already left the history.
    HistoryTrimmed,
}

impl GapReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownEpoch => "unknown-epoch",
            Self::UnknownId => "unknown-id",
            Self::HistoryTrimmed => "history-trimmed",
        }
    }

    /// The `broker.gap` notice a channel sends its subscribers live: events
    /// after `last` are missing, and the channel goes on from `resume_from`
    /// (the notice's id, so a reconnect resumes there).
    pub fn notice(self, channel: &ChannelName, last: EventId, resume_from: EventId) -> Arc<Event> {
        let data = serde_json::json!({
            "channel": channel.as_str(),
            "lastEventId": last.to_string(),
            "reason": self.as_str(),
            "resumeFrom": resume_from.to_string(),
        });
        Event::new(
            channel.clone(),
            resume_from,
            Some(EventType::notice("broker.gap")),
            &data.to_string(),
        )
    }
}

/// What a resuming subscriber gets: the retained events it has not seen and,
/// when that is not everything it missed, the reason.
#[derive(Debug)]
pub struct Replay {
    pub events: Vec<Arc<Event>>,
    pub gap: Option<GapReason>,
    /// The position the replay continues from: the requested id, or after a
    /// gap the last id that is no longer retained.
    pub from: EventId,
}

/// Most event bytes in one history page, whatever its `limit` says: an
/// answer is built in memory, so a page of 1,000 events of the largest
/// body (`server.max_body_bytes`) would otherwise be a GB per request, and
/// in cluster mode as much read from Redis. A page always holds at least
/// one event; past this it ends early and its `next` reads on. 4 MiB is
/// thousands of typical events.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// A page of a channel's retained events, for a reader rather than a
/// subscriber (`GET /channels/{channel}/history`): the same events and gap
/// rules as a replay, at most a page of them.
#[derive(Debug)]
pub struct HistoryPage {
    /// Oldest first.
    pub events: Vec<Arc<Event>>,
    /// The last event of the page when more follow it: the next page is
    /// read after it.
    pub next: Option<EventId>,
    /// When the position read after is not covered: why, and where the
    /// events go on from (as a stream's `broker.gap` notice says).
    pub gap: Option<(GapReason, EventId)>,
}

impl HistoryPage {
    /// The first `limit` events of `replay`.
    pub fn of(replay: Replay, limit: usize) -> Self {
        let limit = limit.max(1);
        let Replay {
            mut events,
            gap,
            from,
        } = replay;
        let next = (events.len() > limit).then(|| events[limit - 1].id);
        events.truncate(limit);
        Self {
            events,
            next,
            gap: gap.map(|reason| (reason, from)),
        }
    }
}

#[derive(Debug)]
pub struct History {
    epoch: Epoch,
    events: VecDeque<Arc<Event>>,
    retention: Retention,
    /// The newest seq that is no longer retained (0 when nothing was dropped):
    /// a client at or after it can be served completely.
    floor: u64,
    /// The seq of the newest event ever appended in this epoch.
    head: u64,
}

impl History {
    pub fn new(epoch: Epoch, retention: Retention) -> Self {
        Self {
            epoch,
            events: VecDeque::with_capacity(retention.max_events.min(16)),
            retention,
            floor: 0,
            head: 0,
        }
    }

    /// A history as a durable store kept it: `events` are the newest
    /// retained ones, contiguous and ending at `head` (or empty).
    pub fn restore(epoch: Epoch, head: u64, events: Vec<Arc<Event>>, retention: Retention) -> Self {
        let surplus = events.len().saturating_sub(retention.max_events);
        let mut history = Self::new(epoch, retention);
        history.head = head;
        history.floor = events
            .get(surplus)
            .map_or(head, |e| e.id.seq.saturating_sub(1));
        for event in events.into_iter().skip(surplus) {
            history.keep(event);
        }
        history.trim_to_budget();
        history
    }

    /// The id the next event gets.
    pub fn next_id(&self) -> EventId {
        EventId {
            epoch: self.epoch,
            seq: self.head + 1,
        }
    }

    /// The id of the newest event (seq 0 before the first).
    pub fn head(&self) -> EventId {
        EventId {
            epoch: self.epoch,
            seq: self.head,
        }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The oldest retained event.
    pub fn oldest(&self) -> Option<&Arc<Event>> {
        self.events.front()
    }

    /// The newest retained event.
    pub fn newest(&self) -> Option<&Arc<Event>> {
        self.events.back()
    }

    /// Appends the event made with [`Self::next_id`], trimming to
    /// `max_events` and to the budget.
    pub fn push(&mut self, event: Arc<Event>) {
        debug_assert_eq!(event.id, self.next_id());
        self.head = event.id.seq;
        if self.retention.max_events == 0 {
            self.floor = self.head;
            return;
        }
        if self.events.len() == self.retention.max_events {
            self.drop_oldest();
        }
        self.keep(event);
        self.trim_to_budget();
    }

    /// Drops events older than `max_age`, and those the budget cut; returns
    /// how many left.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        while let Some(oldest) = self.events.front() {
            if now.saturating_duration_since(oldest.published_at) < self.retention.max_age {
                break;
            }
            self.drop_oldest();
            dropped += 1;
        }
        dropped + self.trim_to_budget()
    }

    /// Drops the events before the budget's cut (the oldest of the whole
    /// broker); returns how many.
    fn trim_to_budget(&mut self) -> usize {
        let Some(budget) = self.retention.budget.clone() else {
            return 0;
        };
        let mut trimmed = 0;
        while self
            .events
            .front()
            .is_some_and(|oldest| budget.is_cut(oldest.published_at))
        {
            self.drop_oldest();
            trimmed += 1;
        }
        if trimmed > 0 {
            budget.count_trimmed(trimmed as u64);
        }
        trimmed
    }

    fn keep(&mut self, event: Arc<Event>) {
        if let Some(budget) = &self.retention.budget {
            budget.charge(event.published_at, HistoryBudget::cost(&event));
        }
        self.events.push_back(event);
    }

    fn drop_oldest(&mut self) {
        if let Some(old) = self.events.pop_front() {
            self.floor = old.id.seq;
            if let Some(budget) = &self.retention.budget {
                budget.refund(old.published_at, HistoryBudget::cost(&old));
            }
        }
    }

    /// Everything retained after `from`, and whether that covers all the
    /// client missed. An unusable `from` replays the whole history after a gap.
    pub fn since(&self, from: &ResumeFrom) -> Replay {
        let floor = EventId {
            epoch: self.epoch,
            seq: self.floor,
        };
        let gap_from_floor = |gap| Replay {
            events: self.events.iter().cloned().collect(),
            gap: Some(gap),
            from: floor,
        };
        let id = match from {
            ResumeFrom::Unknown(_) => return gap_from_floor(GapReason::UnknownId),
            ResumeFrom::Start => {
                return Replay {
                    events: self.events.iter().cloned().collect(),
                    gap: None,
                    from: floor,
                };
            }
            ResumeFrom::Name(name) => {
                return match self.events.iter().position(|e| is_named(e, name)) {
                    Some(at) => Replay {
                        events: self.events.iter().skip(at + 1).cloned().collect(),
                        gap: None,
                        from: self.events[at].id,
                    },
                    None => gap_from_floor(GapReason::UnknownId),
                };
            }
            ResumeFrom::Id(id) => *id,
        };
        if id.epoch != self.epoch {
            return gap_from_floor(GapReason::UnknownEpoch);
        }
        if id.seq > self.head {
            return gap_from_floor(GapReason::UnknownId);
        }
        if id.seq < self.floor {
            return gap_from_floor(GapReason::HistoryTrimmed);
        }
        // Retained seqs are contiguous, so the start is found by arithmetic.
        let first_retained = self.floor + 1;
        let skip = (id.seq + 1).saturating_sub(first_retained) as usize;
        Replay {
            events: self.events.iter().skip(skip).cloned().collect(),
            gap: None,
            from: id,
        }
    }
}

impl Drop for History {
    /// A stopped channel gives its events' share of the budget back.
    fn drop(&mut self) {
        if let Some(budget) = &self.retention.budget {
            for event in &self.events {
                budget.refund(event.published_at, HistoryBudget::cost(event));
            }
        }
    }
}

/// The replay for a client resuming from `from`, out of what a shared log
/// (cluster mode) returned: its epoch and head, and the retained `events`
/// after `from` (every retained event when `from` is not an id of this
/// epoch up to the head). Same rules as [`History::since`].
pub fn replay_from_log(
    epoch: Epoch,
    head: u64,
    events: Vec<Arc<Event>>,
    from: &ResumeFrom,
) -> Replay {
    // The newest seq no longer retained: everything after it is in `events`.
    let floor = events.first().map_or(head, |e| e.id.seq.saturating_sub(1));
    let with_gap = |gap, events| Replay {
        events,
        gap: Some(gap),
        from: EventId { epoch, seq: floor },
    };
    let id = match from {
        ResumeFrom::Unknown(_) => return with_gap(GapReason::UnknownId, events),
        ResumeFrom::Start => {
            return Replay {
                events,
                gap: None,
                from: EventId { epoch, seq: floor },
            };
        }
        ResumeFrom::Name(name) => {
            return match events.iter().position(|e| is_named(e, name)) {
                Some(at) => Replay {
                    from: events[at].id,
                    events: events.into_iter().skip(at + 1).collect(),
                    gap: None,
                },
                None => with_gap(GapReason::UnknownId, events),
            };
        }
        ResumeFrom::Id(id) => *id,
    };
    if id.epoch != epoch {
        return with_gap(GapReason::UnknownEpoch, events);
    }
    if id.seq > head {
        return with_gap(GapReason::UnknownId, events);
    }
    if id.seq < floor {
        return with_gap(GapReason::HistoryTrimmed, events);
    }
    Replay {
        events: events.into_iter().filter(|e| e.id.seq > id.seq).collect(),
        gap: None,
        from: id,
    }
}

/// Whether `event` is the one a client names by its own id.
fn is_named(event: &Event, name: &str) -> bool {
    event.name() == Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::ChannelName;

    fn retention(max_events: usize, max_age: Duration) -> Retention {
        Retention {
            max_events,
            max_age,
            budget: None,
        }
    }

    fn history(max_events: usize) -> History {
        History::new(Epoch::new(), retention(max_events, Duration::from_secs(60)))
    }

    fn publish(history: &mut History, n: usize) {
        let channel = ChannelName::parse("c").unwrap();
        for _ in 0..n {
            let event = Event::new(channel.clone(), history.next_id(), None, "x");
            history.push(event);
        }
    }

    fn seqs(replay: &Replay) -> Vec<u64> {
        replay.events.iter().map(|e| e.id.seq).collect()
    }

    /// A client a few events behind gets exactly those events.
    #[test]
    fn replays_exactly_what_was_missed() {
        let mut h = history(10);
        publish(&mut h, 5);
        let from = ResumeFrom::Id(EventId {
            epoch: h.epoch,
            seq: 2,
        });
        let replay = h.since(&from);
        assert_eq!(seqs(&replay), vec![3, 4, 5]);
        assert_eq!(replay.gap, None);
        let up_to_date = h.since(&ResumeFrom::Id(h.head()));
        assert!(up_to_date.events.is_empty() && up_to_date.gap.is_none());
    }

    /// Once events were trimmed, a client behind the floor is told of the gap.
    #[test]
    fn trimmed_history_reports_gap() {
        let mut h = history(3);
        publish(&mut h, 7);
        let replay = h.since(&ResumeFrom::Id(EventId {
            epoch: h.epoch,
            seq: 2,
        }));
        assert_eq!(replay.gap, Some(GapReason::HistoryTrimmed));
        assert_eq!(seqs(&replay), vec![5, 6, 7]);
        assert_eq!(replay.from.seq, 4);
        // Exactly at the floor nothing is missing.
        let replay = h.since(&ResumeFrom::Id(EventId {
            epoch: h.epoch,
            seq: 4,
        }));
        assert_eq!((seqs(&replay), replay.gap), (vec![5, 6, 7], None));
    }

    /// Ids from another epoch, from the future or not ours are gaps.
    #[test]
    fn foreign_ids_are_gaps() {
        let mut h = history(3);
        publish(&mut h, 2);
        let old = ResumeFrom::Id(EventId {
            epoch: Epoch::new(),
            seq: 1,
        });
        assert_eq!(h.since(&old).gap, Some(GapReason::UnknownEpoch));
        let future = ResumeFrom::Id(EventId {
            epoch: h.epoch,
            seq: 9,
        });
        assert_eq!(h.since(&future).gap, Some(GapReason::UnknownId));
        let junk = h.since(&ResumeFrom::Unknown("zz".into()));
        assert_eq!(
            (junk.gap, seqs(&junk)),
            (Some(GapReason::UnknownId), vec![1, 2])
        );
    }

    /// Age expiry moves the floor like trimming does.
    #[test]
    fn expiry_drops_old_events() {
        let mut h = History::new(Epoch::new(), retention(10, Duration::ZERO));
        publish(&mut h, 3);
        assert_eq!(h.expire(Instant::now()), 3);
        assert!(h.is_empty());
        assert_eq!(h.next_id().seq, 4);
        let replay = h.since(&ResumeFrom::Id(EventId {
            epoch: h.epoch,
            seq: 1,
        }));
        assert_eq!(replay.gap, Some(GapReason::HistoryTrimmed));
    }

    /// A shared log's answer is judged by the same rules as local history.
    #[test]
    fn replay_from_shared_log() {
        let channel = ChannelName::parse("c").unwrap();
        let epoch = Epoch::new();
        let events = |seqs: std::ops::RangeInclusive<u64>| -> Vec<Arc<Event>> {
            seqs.map(|seq| Event::new(channel.clone(), EventId { epoch, seq }, None, "x"))
                .collect()
        };
        let at = |seq| ResumeFrom::Id(EventId { epoch, seq });
        let exact = replay_from_log(epoch, 5, events(3..=5), &at(2));
        assert_eq!((seqs(&exact), exact.gap), (vec![3, 4, 5], None));
        let trimmed = replay_from_log(epoch, 5, events(4..=5), &at(1));
        assert_eq!(trimmed.gap, Some(GapReason::HistoryTrimmed));
        assert_eq!(trimmed.from.seq, 3);
        let other = replay_from_log(
            epoch,
            5,
            events(1..=5),
            &ResumeFrom::Id(EventId {
                epoch: Epoch::new(),
                seq: 5,
            }),
        );
        assert_eq!(other.gap, Some(GapReason::UnknownEpoch));
        let future = replay_from_log(epoch, 5, events(1..=5), &at(9));
        assert_eq!(future.gap, Some(GapReason::UnknownId));
        let expired = replay_from_log(epoch, 5, Vec::new(), &at(2));
        assert_eq!(
            (expired.gap, expired.from.seq),
            (Some(GapReason::HistoryTrimmed), 5)
        );
        let current = replay_from_log(epoch, 5, Vec::new(), &at(5));
        assert!(current.gap.is_none() && current.events.is_empty());
    }

    /// A restored history goes on from its head and knows its floor.
    #[test]
    fn restore_continues_from_head() {
        let channel = ChannelName::parse("c").unwrap();
        let epoch = Epoch::new();
        let events = (4..=6)
            .map(|seq| Event::new(channel.clone(), EventId { epoch, seq }, None, "x"))
            .collect();
        let h = History::restore(epoch, 6, events, retention(2, Duration::from_secs(60)));
        assert_eq!(h.next_id(), EventId { epoch, seq: 7 });
        assert_eq!(h.len(), 2);
        let replay = h.since(&ResumeFrom::Id(EventId { epoch, seq: 4 }));
        assert_eq!((seqs(&replay), replay.gap), (vec![5, 6], None));
        let trimmed = h.since(&ResumeFrom::Id(EventId { epoch, seq: 3 }));
        assert_eq!(trimmed.gap, Some(GapReason::HistoryTrimmed));
    }

    /// Two histories share a budget: once it is full, the oldest events of
    /// either leave first (the other trims at its tick), a client behind
    /// them is told of the gap, and what stays is within the budget.
    #[test]
    fn the_budget_trims_the_oldest_across_histories() {
        let channel = ChannelName::parse("c").unwrap();
        let start = Instant::now();
        let event_at = |history: &History, second: u64| {
            let mut event = Event::new(channel.clone(), history.next_id(), None, "x");
            Arc::get_mut(&mut event).expect("a new event").published_at =
                start + Duration::from_secs(second);
            event
        };
        let cost = HistoryBudget::cost(&event_at(&history(1), 0));
        let budget = Arc::new(HistoryBudget::new(10 * cost, Duration::from_secs(3600)));
        let shared = Retention {
            max_events: 100,
            max_age: Duration::from_secs(3600),
            budget: Some(Arc::clone(&budget)),
        };
        let mut older = History::new(Epoch::new(), shared.clone());
        let mut newer = History::new(Epoch::new(), shared);
        for second in 0..6 {
            let event = event_at(&older, second);
            older.push(event);
        }
        for second in 6..11 {
            let event = event_at(&newer, second);
            newer.push(event);
        }
        // Eleven events in a budget of ten: the three oldest (all in `older`) go.
        assert_eq!((older.len(), newer.len()), (6, 5));
        assert_eq!(older.expire(start), 3);
        assert_eq!((older.len(), newer.len()), (3, 5));
        assert_eq!(budget.retained_bytes(), 8 * cost);
        assert_eq!(budget.trimmed_events(), 3);
        let replay = older.since(&ResumeFrom::Id(EventId {
            epoch: older.epoch,
            seq: 1,
        }));
        assert_eq!(replay.gap, Some(GapReason::HistoryTrimmed));
        assert_eq!(seqs(&replay), vec![4, 5, 6]);
        // A history that goes gives its share back.
        drop(newer);
        assert_eq!(budget.retained_bytes(), 3 * cost);
    }

    /// With history off every resume past the head is a gap, but ids still count up.
    #[test]
    fn no_history() {
        let mut h = history(0);
        publish(&mut h, 2);
        assert_eq!(h.len(), 0);
        assert_eq!(h.head().seq, 2);
        let replay = h.since(&ResumeFrom::Id(EventId {
            epoch: h.epoch,
            seq: 1,
        }));
        assert_eq!(replay.gap, Some(GapReason::HistoryTrimmed));
    }
}

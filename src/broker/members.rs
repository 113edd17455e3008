//! `Members`: a channel's subscribers and the fan-out loop over them.
//!
//! The fan-out never waits for a subscriber: each gets one non-blocking
//! offer of the event's shared bytes, straight to its sink
//! ([`Sink::offer`](super::subscriber::Sink::offer)); one whose sink is
//! full is evicted (its stream ends, the client reconnects with
//! `Last-Event-ID` and replays from history), one whose stream is over is
//! dropped. Each member remembers the seq it has, so an event its replay
//! already held is not sent twice, and a member whose filter does not admit
//! an event is skipped.
//!
//! Members also keep the channel's share of the broker-wide count of
//! subscriptions (`limits.max_subscribers`), and the per-channel limit
//! (`limits.max_subscribers_per_channel`), and its presence: the
//! [`Roster`] of the users its subscribers are, changed whenever a member
//! with an identity comes or goes (however it goes: unsubscribed, gone,
//! evicted, revoked). The joins and leaves wait in
//! [`Members::presence_changes`] for the actor; a member without an
//! identity costs presence one branch when it comes and when it goes.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use super::{
    error::BrokerError,
    presence::{Listed, Member as Listing, MemberChange, Roster},
    subscriber::{Delivery, Offer, Subscriber, reserve_subscription},
};
use crate::names::ChannelName;

/// A subscriber as one channel holds it.
struct Member {
    subscriber: Subscriber,
    /// The seq this subscriber already has (from its replay or a delivery);
    /// only later events are sent to it.
    after: u64,
    /// It asked for presence events (`?presence=1`).
    watches: bool,
    /// Whether the roster listed its identity (`None`: it has none).
    listed: Option<Listed>,
}

pub struct Members {
    list: Vec<Member>,
    /// Subscriptions in the whole broker, kept by every channel.
    total: Arc<AtomicU64>,
    /// This channel's share of `total` (members plus reservations).
    counted: usize,
    /// Most members of this channel (0: no limit).
    max: usize,
    /// Most subscriptions in the whole broker (0: no limit).
    max_total: usize,
    /// The users of the members that have an identity.
    roster: Roster,
    /// Members that watch presence: none, and no join or leave is made.
    watchers: usize,
    /// Joins and leaves the actor has not handled yet, in order.
    changes: Vec<MemberChange>,
}

/// What one fan-out did.
#[derive(Debug, Default, Clone, Copy)]
pub struct FanOut {
    /// Members that took the delivery.
    pub delivered: u64,
    /// Members evicted as slow consumers.
    pub evicted: u64,
}

impl Members {
    /// Members of one channel: at most `max` (0: no limit), the broker's
    /// `total` bounded by `max_total`, at most `max_listed` users listed.
    pub fn new(total: Arc<AtomicU64>, max: usize, max_total: usize, max_listed: usize) -> Self {
        Self {
            list: Vec::new(),
            total,
            counted: 0,
            max,
            max_total,
            roster: Roster::new(max_listed),
            watchers: 0,
            changes: Vec::new(),
        }
    }

    /// The listed users here, by user id, and whether some were left out.
    pub fn listing(&self) -> (Vec<Listing>, bool) {
        self.roster.members()
    }

    /// Whether `user` has a listed connection here.
    pub fn has_user(&self, user: &str) -> bool {
        self.roster.has(user)
    }

    /// Whether any member watches presence.
    pub fn watched(&self) -> bool {
        self.watchers > 0
    }

    /// The joins and leaves since the last call, in order.
    pub fn presence_changes(&mut self) -> Vec<MemberChange> {
        std::mem::take(&mut self.changes)
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Takes one place for a subscriber about to join, or says why there is
    /// none. The broker-wide count is reserved atomically, so channels on
    /// other threads cannot overshoot the limit together; [`Self::settle`]
    /// gives an unused place back.
    pub fn reserve(&mut self, channel: &ChannelName) -> Result<(), BrokerError> {
        if self.max > 0 && self.list.len() >= self.max {
            return Err(BrokerError::TooManySubscribers(format!(
                "channel {channel} already has its maximum of {} subscribers",
                self.max
            )));
        }
        reserve_subscription(&self.total, self.max_total)?;
        self.counted += 1;
        Ok(())
    }

    /// Brings the broker-wide count in line with the members (after
    /// reservations and removals); returns how many there are.
    pub fn settle(&mut self) -> usize {
        let now = self.list.len();
        if now < self.counted {
            self.total
                .fetch_sub((self.counted - now) as u64, Ordering::AcqRel);
        } else if now > self.counted {
            self.total
                .fetch_add((now - self.counted) as u64, Ordering::AcqRel);
        }
        self.counted = now;
        now
    }

    /// Adds a subscriber that has everything up to `after` (its place was
    /// reserved); `watches` when it asked for presence events.
    pub fn add(&mut self, subscriber: Subscriber, after: u64, watches: bool) {
        let listed = subscriber.identity.as_ref().map(|identity| {
            let (listed, change) = self.roster.join(identity);
            self.changes.extend(change);
            listed
        });
        self.watchers += usize::from(watches);
        self.list.push(Member {
            subscriber,
            after,
            watches,
            listed,
        });
    }

    pub fn remove(&mut self, subscriber_id: u64) {
        if let Some(at) = self
            .list
            .iter()
            .position(|member| member.subscriber.id == subscriber_id)
        {
            let member = self.list.remove(at);
            self.forget(&member);
        }
    }

    /// Removes every member of `user` and ends its stream
    /// ([`Sink::revoked`](super::subscriber::Sink::revoked)); returns their
    /// subscriber ids.
    pub fn revoke(&mut self, user: &str) -> Vec<u64> {
        let mut ended = Vec::new();
        let (roster, changes, watchers) = (&mut self.roster, &mut self.changes, &mut self.watchers);
        self.list.retain(|member| {
            if !member.subscriber.is_user(user) {
                return true;
            }
            member.subscriber.sink.revoked();
            ended.push(member.subscriber.id);
            forget(roster, changes, watchers, member);
            false
        });
        ended
    }

    /// Lets go of every member (each sink hears of it).
    pub fn clear(&mut self) {
        for member in std::mem::take(&mut self.list) {
            member.subscriber.release();
            self.forget(&member);
        }
    }

    /// A member is gone: its share of the roster and of the watchers too.
    fn forget(&mut self, member: &Member) {
        forget(
            &mut self.roster,
            &mut self.changes,
            &mut self.watchers,
            member,
        );
    }

    /// Offers a join or a leave to the members that watch presence (those
    /// found gone or full are dropped, their own leaves queued in turn).
    pub fn offer_watchers(&mut self, delivery: &Delivery) -> FanOut {
        let mut outcome = FanOut::default();
        if self.watchers == 0 {
            return outcome;
        }
        let (roster, changes, watchers) = (&mut self.roster, &mut self.changes, &mut self.watchers);
        self.list.retain(|member| {
            !member.watches
                || offer_to(
                    member,
                    delivery,
                    &mut outcome,
                    roster,
                    changes,
                    watchers,
                    &mut |_| {},
                )
        });
        outcome
    }

    /// The log started a new life: every member has nothing of it yet.
    pub fn rewind(&mut self) {
        for member in &mut self.list {
            member.after = 0;
        }
    }

    /// Every member counts as having everything up to `seq` (events before
    /// it are gone from the log, and the members were told).
    pub fn skip_to(&mut self, seq: u64) {
        for member in &mut self.list {
            member.after = member.after.max(seq);
        }
    }

    /// Offers `delivery` to every member, without waiting, and drops those
    /// that are gone or too slow. With `seq`, members that already have
    /// that event are skipped. `evicted` hears of each eviction.
    pub fn offer(
        &mut self,
        delivery: &Delivery,
        seq: Option<u64>,
        mut evicted: impl FnMut(&Subscriber),
    ) -> FanOut {
        let mut outcome = FanOut::default();
        let event = match delivery {
            Delivery::Event(event) => Some(event),
            Delivery::Heartbeat => None,
        };
        let (roster, changes, watchers) = (&mut self.roster, &mut self.changes, &mut self.watchers);
        self.list.retain_mut(|member| {
            if let Some(seq) = seq {
                if seq <= member.after {
                    return true;
                }
                member.after = seq;
            }
            if let Some(event) = event
                && !member.subscriber.admits(event)
            {
                return true;
            }
            offer_to(
                member,
                delivery,
                &mut outcome,
                roster,
                changes,
                watchers,
                &mut evicted,
            )
        });
        outcome
    }
}

/// Offers `delivery` to one member's sink, without waiting: whether the
/// member stays. One that took it is counted in `outcome`; a closed one is
/// forgotten; a full one is marked evicted, counted, reported to `evicted`
/// and forgotten (see [`forget`]).
#[inline]
fn offer_to(
    member: &Member,
    delivery: &Delivery,
    outcome: &mut FanOut,
    roster: &mut Roster,
    changes: &mut Vec<MemberChange>,
    watchers: &mut usize,
    evicted: &mut impl FnMut(&Subscriber),
) -> bool {
    let sub = &member.subscriber;
    match sub.sink.offer(delivery) {
        Offer::Taken => {
            outcome.delivered += 1;
            return true;
        }
        Offer::Closed => {}
        Offer::Full => {
            sub.evicted.store(true, Ordering::Release);
            outcome.evicted += 1;
            evicted(sub);
        }
    }
    forget(roster, changes, watchers, member);
    false
}

/// A member is gone: its share of the roster and of the watchers goes with
/// it (a free function, so the fan-out loop can call it while it holds the
/// list).
fn forget(
    roster: &mut Roster,
    changes: &mut Vec<MemberChange>,
    watchers: &mut usize,
    member: &Member,
) {
    *watchers -= usize::from(member.watches);
    if let (Some(listed), Some(identity)) = (member.listed, &member.subscriber.identity) {
        changes.extend(roster.leave(identity, listed));
    }
}

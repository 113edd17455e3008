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
//! (`limits.max_subscribers_per_channel`).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use super::{
    error::BrokerError,
    subscriber::{Delivery, Offer, Subscriber, reserve_subscription},
};
use crate::names::ChannelName;

/// A subscriber as one channel holds it.
struct Member {
    subscriber: Subscriber,
    /// The seq this subscriber already has (from its replay or a delivery);
    /// only later events are sent to it.
    after: u64,
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
    pub fn new(total: Arc<AtomicU64>, max: usize, max_total: usize) -> Self {
        Self {
            list: Vec::new(),
            total,
            counted: 0,
            max,
            max_total,
        }
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
    /// reserved).
    pub fn add(&mut self, subscriber: Subscriber, after: u64) {
        self.list.push(Member { subscriber, after });
    }

    pub fn remove(&mut self, subscriber_id: u64) {
        self.list
            .retain(|member| member.subscriber.id != subscriber_id);
    }

    /// Lets go of every member (each sink hears of it).
    pub fn clear(&mut self) {
        for member in self.list.drain(..) {
            member.subscriber.release();
        }
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
        self.list.retain_mut(|member| {
            if let Some(seq) = seq {
                if seq <= member.after {
                    return true;
                }
                member.after = seq;
            }
            let sub = &member.subscriber;
            if let Some(event) = event
                && !sub.admits(event)
            {
                return true;
            }
            match sub.sink.offer(delivery) {
                Offer::Taken => {
                    outcome.delivered += 1;
                    true
                }
                Offer::Closed => false,
                Offer::Full => {
                    sub.evicted.store(true, Ordering::Release);
                    outcome.evicted += 1;
                    evicted(sub);
                    false
                }
            }
        });
        outcome
    }
}

//! A subscriber as the broker sees it: where its bytes go (a [`Sink`]), which
//! events it wants (a [`Filter`]), and the limit on how many subscriptions
//! the whole broker holds.
//!
//! The broker never writes to a socket itself: an event stream's sink (the
//! HTTP layer's outbox) does, and a test's sink is a queue. A sink must take
//! an offer without waiting: the fan-out loop offers each event to every
//! subscriber of a channel in turn, and one slow subscriber must not hold up
//! the others (see [`Offer`]).

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use super::{error::BrokerError, event::Event};

/// What travels to a subscriber. One pointer wide (the unit variant fills
/// the `Arc`'s niche): sinks that queue deliveries keep one per slot.
#[derive(Debug, Clone)]
pub enum Delivery {
    Event(Arc<Event>),
    /// Time for a heartbeat comment.
    Heartbeat,
}

/// What became of an offered delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Written, or queued behind what is already queued.
    Taken,
    /// The queue was full: the subscriber is evicted (its stream ends, the
    /// client reconnects with `Last-Event-ID` and replays from history).
    Full,
    /// The stream is over (client gone, evicted, or ended by the broker).
    Closed,
}

/// Where a subscriber's deliveries go. Implemented by the HTTP layer's
/// outbox (bytes to a socket) and by test queues.
pub trait Sink: Send + Sync {
    /// Takes one delivery without waiting, or says why not.
    fn offer(&self, delivery: &Delivery) -> Offer;
    /// Deliveries that may wait before the subscriber counts as slow.
    fn capacity(&self) -> usize;
    /// A channel let go of this subscriber without it asking (the channel
    /// closed its subscribers at shutdown, or stopped): once every channel
    /// it subscribed to has, its stream is over.
    fn released(&self) {}
}

/// Which events a subscriber wants, for subscribers that do not want all
/// of their channel's (a Mercure subscriber: its topic selectors and its
/// right to private updates). Applied to live events and to replays alike.
pub trait Filter: Send + Sync {
    fn admits(&self, event: &Event) -> bool;
}

/// A subscription's handle, as channel actors hold it. A multi-channel
/// stream gives a clone to each of its channels; each channel that lets go
/// of it on its own tells the sink ([`Sink::released`]).
#[derive(Clone)]
pub struct Subscriber {
    pub id: u64,
    /// Where its deliveries go. The fan-out offers each one straight to it
    /// ([`Sink::offer`], after [`Self::admits`]): one dynamic call, no
    /// wrapper in between.
    pub sink: Arc<dyn Sink>,
    filter: Option<Arc<dyn Filter>>,
    /// Set by the channel that found the sink full. Shared by all channels
    /// of a multi-channel stream.
    pub evicted: Arc<AtomicBool>,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("id", &self.id)
            .field("filtered", &self.filter.is_some())
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// A subscriber with a fresh id whose deliveries go to `sink`.
    pub fn new(sink: Arc<dyn Sink>) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            sink,
            filter: None,
            evicted: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Only the events `filter` admits reach this subscriber.
    pub fn with_filter(mut self, filter: Arc<dyn Filter>) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Whether this subscriber wants `event`.
    pub fn admits(&self, event: &Event) -> bool {
        self.filter.as_ref().is_none_or(|f| f.admits(event))
    }

    /// Deliveries that may wait before the subscriber counts as slow.
    pub fn capacity(&self) -> usize {
        self.sink.capacity()
    }

    /// This channel lets go of the subscriber (see [`Sink::released`]).
    pub fn release(&self) {
        self.sink.released();
    }
}

/// Takes one place in the broker's total of subscriptions
/// (`limits.max_subscribers`, 0: no limit), shared by every channel actor;
/// the caller gives it back with `fetch_sub(1)`.
pub fn reserve_subscription(total: &AtomicU64, max: usize) -> Result<(), BrokerError> {
    let before = total.fetch_add(1, Ordering::AcqRel);
    if max > 0 && before >= max as u64 {
        total.fetch_sub(1, Ordering::AcqRel);
        return Err(BrokerError::TooManySubscribers(format!(
            "the broker already holds its maximum of {max} subscriptions"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A delivery is one pointer wide.
    #[test]
    fn delivery_is_pointer_sized() {
        assert_eq!(
            std::mem::size_of::<super::Delivery>(),
            std::mem::size_of::<usize>()
        );
    }
}

//! The broker proper, free of HTTP: channel actors, the registry that routes
//! to them, pulses and the demo publisher.
//!
//! Message flow: an HTTP handler sends one message (`Publish`, `Subscribe`,
//! `Pulse`, …) to the [`RegistryActor`], which finds or creates the
//! [`ChannelActor`] for the channel and forwards the message unchanged; the
//! channel actor answers on the `oneshot` the message carries. Every message
//! reaches a channel through the registry, in order, which is what lets the
//! registry stop idle channels without racing a late subscriber.

pub mod channel;
pub mod demo;
pub mod event;
pub mod history;
pub mod pulse;
pub mod registry;
#[cfg(test)]
pub(crate) mod testing;

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub use crate::outbox::Offer;
use crate::outbox::OutboxHandle;
pub use channel::ChannelActor;
pub use event::{ChannelName, Event, EventId, EventType, ResumeFrom};
pub use registry::RegistryActor;

/// Why the broker could not do what was asked.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BrokerError {
    #[error("the broker already holds its maximum of {0} channels")]
    TooManyChannels(usize),
    #[error("{0}")]
    TooManySubscribers(String),
    #[error("no channel named {0:?}")]
    UnknownChannel(String),
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("the broker did not answer")]
    Unavailable,
    /// Cluster mode: Redis, which stores and orders the events, failed.
    #[error("the cluster store is unavailable: {0}")]
    StoreUnavailable(String),
}

/// The answer to a caller awaiting a broker message.
pub type Reply<T> = oneshot::Sender<Result<T, BrokerError>>;

/// Awaits a reply; a dropped sender means the actor is gone.
pub async fn await_reply<T>(
    rx: oneshot::Receiver<Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    rx.await.unwrap_or(Err(BrokerError::Unavailable))
}

/// What travels down a subscriber's queue. One pointer wide (the unit
/// variant fills the `Arc`'s niche): queue blocks are allocated per
/// subscriber, so their slot size counts in the memory of every idle stream.
#[derive(Debug, Clone)]
pub enum Delivery {
    Event(Arc<Event>),
    /// Time for a heartbeat comment.
    Heartbeat,
}

/// The heartbeat comment, shared by every stream.
pub const HEARTBEAT: Bytes = Bytes::from_static(b": heartbeat\n\n");

/// A subscriber as a channel actor holds it: where its deliveries go. A
/// multi-channel stream gives a clone to each of its channels.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub id: u64,
    sink: Sink,
    /// Set by the channel that found the queue full: the stream must end so
    /// the client reconnects and replays from history. Shared by all
    /// channels of a multi-channel stream.
    pub evicted: Arc<AtomicBool>,
}

#[derive(Debug, Clone)]
enum Sink {
    /// A queue read by a task of the broker's (the Mercure hub's log
    /// reader, tests).
    Queue(mpsc::Sender<Delivery>),
    /// An event-stream connection, written directly (see `crate::outbox`).
    Stream(OutboxHandle),
}

impl Subscriber {
    /// A new queue of `capacity` frames and its subscriber handle.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self::with_sink(Sink::Queue(tx)), rx)
    }

    /// A subscriber whose deliveries go to an event stream's outbox.
    pub fn streaming(outbox: OutboxHandle) -> Self {
        Self::with_sink(Sink::Stream(outbox))
    }

    fn with_sink(sink: Sink) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            sink,
            evicted: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Hands over one delivery without waiting (see [`Offer`]).
    pub fn offer(&self, delivery: &Delivery) -> Offer {
        match &self.sink {
            Sink::Queue(tx) => match tx.try_send(delivery.clone()) {
                Ok(()) => Offer::Taken,
                Err(mpsc::error::TrySendError::Full(_)) => Offer::Full,
                Err(mpsc::error::TrySendError::Closed(_)) => Offer::Closed,
            },
            Sink::Stream(outbox) => outbox.offer(delivery),
        }
    }

    /// Deliveries that may wait before the subscriber counts as slow.
    pub fn capacity(&self) -> usize {
        match &self.sink {
            Sink::Queue(tx) => tx.max_capacity(),
            Sink::Stream(outbox) => outbox.capacity(),
        }
    }
}

/// Takes one place in the broker's total of subscriptions
/// (`limits.max_subscribers`, 0: no limit), shared by every channel actor
/// and the Mercure hub; the caller gives it back with `fetch_sub(1)`.
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

/// Broker-wide counters, read by `GET /channels` without asking any actor.
#[derive(Debug, Default)]
pub struct ChannelStats {
    pub subscribers: AtomicU64,
    pub published: AtomicU64,
    pub last_seq: AtomicU64,
    pub history: AtomicU64,
    pub pulses: AtomicU64,
    pub evicted: AtomicU64,
    /// The raw epoch of the channel's current life when it changed since
    /// the channel started (cluster mode); 0 otherwise.
    pub epoch: AtomicU64,
    /// Registry messages the channel actor has handled; the registry's
    /// forwarded count minus this is the actor's mailbox depth (metrics).
    pub received: AtomicU64,
}

#[cfg(test)]
mod tests {
    /// A queue slot is one pointer wide.
    #[test]
    fn delivery_is_pointer_sized() {
        assert_eq!(
            std::mem::size_of::<super::Delivery>(),
            std::mem::size_of::<usize>()
        );
    }
}

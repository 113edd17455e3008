//! What is said to a channel actor: the one message type
//! [`ChannelMessage`] (its variants carry the requests and their reply
//! channels), and the two messages of a channel's life with the registry
//! ([`ChannelIdle`], [`Retire`]). Beside the publish request, what it
//! leaves with its channel until its event is accepted ([`PendingAnswer`]).
//!
//! Every `ChannelMessage` reaches its actor through a
//! [`ChannelHandle`](super::channel::ChannelHandle), which counts it, and is
//! handled by one handler, which counts it too: so the registry can tell
//! that none is in flight before it retires an idle channel, whatever the
//! message (see `registry`).

use std::{sync::Arc, time::Instant};

use actix::prelude::*;

use super::{
    error::{BrokerError, Reply},
    event::{Epoch, EventId, ResumeFrom},
    history::{HistoryPage, Replay},
    idempotency::Idempotency,
    log::{LogEntry, Record},
    presence::{ChannelPresence, PresenceEvent},
    subscriber::Subscriber,
};
use crate::names::ChannelName;

/// A request to one channel's actor.
#[derive(Message)]
#[rtype(result = "()")]
pub enum ChannelMessage {
    Publish(Publish),
    Subscribe(Subscribe),
    /// A stream ended: forget its subscriber now rather than at the next tick.
    Unsubscribe {
        subscriber_id: u64,
    },
    /// Revocation: end the streams of `user` on this channel (each ends
    /// whole, on every channel it holds); answers their subscriber ids.
    Disconnect {
        user: Arc<str>,
        reply: Reply<Vec<u64>>,
    },
    /// Cluster mode: events of the shared log, from the bus (those of one
    /// append, in seq order).
    Delivered {
        epoch: Epoch,
        entries: Vec<LogEntry>,
    },
    /// Cluster mode: the log (re)started carrying this channel's events
    /// here; read what may have been missed meanwhile.
    CatchUp,
    /// Count a client's pulse on this channel.
    CountPulse {
        client_id: Arc<str>,
    },
    /// The channel's detail (`GET /channels/{channel}`).
    Inspect {
        reply: Reply<ChannelDetail>,
    },
    /// A page of the channel's retained events
    /// (`GET /channels/{channel}/history`).
    ReadHistory(ReadHistory),
    /// Who is on the channel here (`GET /channels/{channel}/presence`):
    /// its connections, and its listed users when `members` is set.
    Presence {
        members: bool,
        reply: Reply<ChannelPresence>,
    },
    /// Cluster mode: another node's join or leave, from the channel's bus,
    /// for the watchers here.
    Announce(PresenceEvent),
    /// Shutdown: drop every subscriber so their streams end cleanly, and
    /// refuse publishes from now on.
    CloseSubscribers,
}

impl ChannelMessage {
    /// Whether this message may start its channel when none runs (the
    /// others are answered, or dropped, without one).
    pub fn starts_channel(&self) -> bool {
        // A history read starts its channel too: with durable history or a
        // shared log the events outlive the channel's actor.
        matches!(
            self,
            Self::Publish(_) | Self::Subscribe(_) | Self::ReadHistory(_)
        )
    }
}

/// Publish an event: the channel gives it its id, keeps it and fans it out.
pub struct Publish {
    pub record: Record,
    /// The publisher's idempotency key and its request's digest: a repeat
    /// of a publish with this key is answered that publish's id and stores
    /// nothing (see `idempotency`). Never set on a copy. Boxed: most
    /// publishes have none, and every message is as large as this one.
    pub idempotency: Option<Box<Idempotency>>,
    pub reply: Option<Reply<Published>>,
    /// When the publish handler started on it: the latency metric runs from
    /// here to the end of the fan-out.
    pub received_at: Instant,
    /// A copy of an event accepted elsewhere (a channel event on its way to
    /// the Mercure hub, or a Mercure update on its way to a channel): it is
    /// not offered to the bridge again, so nothing loops, and not counted in
    /// `events_published_total` twice.
    pub copy: bool,
}

/// What a publisher learns about its event.
#[derive(Debug, Clone)]
pub struct Published {
    pub id: EventId,
    /// Subscribers the event was offered to.
    pub subscribers: usize,
}

/// Add a subscriber, after handing it what it missed since `from`.
pub struct Subscribe {
    pub subscriber: Subscriber,
    /// Where the client says it stopped; `None` starts live.
    pub from: Option<ResumeFrom>,
    /// It wants the channel's `broker.join` / `broker.leave` events
    /// (`?presence=1`).
    pub watches: bool,
    pub reply: Reply<Subscribed>,
}

/// The start of a subscription: the replay (when resuming; only the events
/// the subscriber's filter admits) and the position live events go on from.
#[derive(Debug)]
pub struct Subscribed {
    pub replay: Option<Replay>,
    pub head: EventId,
}

/// Read the retained events after `after` (from the oldest retained
/// without it), at most `limit` of them, oldest first.
pub struct ReadHistory {
    pub after: Option<EventId>,
    pub limit: usize,
    pub reply: Reply<HistoryPage>,
}

/// A channel's state as `GET /channels/{channel}` shows it.
#[derive(Debug, Clone)]
pub struct ChannelDetail {
    pub head: EventId,
    pub subscribers: usize,
    pub history: usize,
    pub oldest: Option<EventId>,
    /// The [`name`](super::event::Tags::name) of the newest retained event.
    pub newest_name: Option<Arc<str>>,
    pub pulses_by_client: Vec<(Arc<str>, u64)>,
}

/// From a channel with no subscribers and nothing retained: may it stop?
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChannelIdle {
    pub channel: ChannelName,
    /// How many `ChannelMessage`s the channel had handled when it checked.
    pub received: u64,
}

/// Sent by the registry once it has forgotten the channel: stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// What a publish leaves with its channel until its event is accepted (in
/// the log, fanned out) or refused. Both kinds of log keep one per event
/// they wait for (an owned log until the store has it on disk, a shared log
/// until its append answers); the actor settles it: whom to answer, and
/// what the acceptance counts and offers the bridge.
pub(crate) struct PendingAnswer {
    /// `None` for a publish nobody waits on (the demo, a batch's copies).
    pub reply: Option<Reply<Published>>,
    /// When the publish handler started on it (the latency metric).
    pub received_at: Instant,
    /// A copy of an event accepted elsewhere: neither counted as published
    /// nor offered to the bridge again (see [`Publish::copy`]).
    pub copy: bool,
    /// The record to offer the bridge, kept (cloned) only when it will be.
    pub bridge: Option<Record>,
}

impl PendingAnswer {
    /// Splits a publish into its record and idempotency key (for the log)
    /// and what waits for the answer; `bridged`: the channel offers its
    /// events to a bridge.
    pub fn split(msg: Publish, bridged: bool) -> (Record, Option<Idempotency>, Self) {
        let Publish {
            record,
            idempotency,
            reply,
            received_at,
            copy,
        } = msg;
        let bridge = (bridged && !copy).then(|| record.clone());
        let answer = Self {
            reply,
            received_at,
            copy,
            bridge,
        };
        (record, idempotency.map(|boxed| *boxed), answer)
    }

    /// The event will not be accepted: the publisher learns why.
    pub fn refuse(self, err: BrokerError) {
        if let Some(reply) = self.reply {
            let _ = reply.send(Err(err));
        }
    }
}

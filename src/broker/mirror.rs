//! `Mirror`: where the events accepted on our channels are offered as well.
//! The Mercure adapter is one (`mercure.channel_updates`: a channel event
//! becomes a public update on the channel's name); the core only calls it,
//! once per accepted event, after the event's own fan-out and never for a
//! copy ([`Publish::copy`](super::message::Publish::copy)) or an internal
//! channel, so nothing loops.
//!
//! A copy the mirror publishes carries its [`Origin`]. A durable store keeps
//! only that reference (the original is on disk on its own channel already),
//! so a copy costs no second write of the event; when the copies' channel is
//! read back, the store gives the original's record with its origin, and the
//! channel's [`Codec`](super::codec::Codec) makes the copy again. The copy of
//! an event must therefore be the same every time it is made (ids included).

use super::log::{Origin, Record};

pub trait Mirror: Send + Sync {
    /// The event `origin` was accepted (it is in its channel's log);
    /// `record` is a copy of what the log keeps of it.
    fn accepted(&self, origin: Origin, record: Record);
}

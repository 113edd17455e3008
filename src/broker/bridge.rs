//! `Bridge`: where the events accepted on our channels are carried as well.
//! The Mercure adapter is one (`mercure.channel_updates`: a channel event
//! becomes an update on the channel's name, `crate::mercure::bridge`); the core only calls it,
//! once per accepted event, after the event's own fan-out and never for a
//! copy ([`Publish::copy`](super::message::Publish::copy)) or an internal
//! channel, so nothing loops.
//!
//! A copy the bridge publishes carries its [`Origin`]. A durable store keeps
//! only that reference (the original is on disk on its own channel already),
//! so a copy costs no second write of the event; when the copies' channel is
//! read back, the store gives the original's record with its origin, and the
//! channel's [`Codec`](super::codec::Codec) makes the copy again. The copy of
//! an event must therefore be the same every time it is made (ids included).

use super::log::{Origin, Record};

pub trait Bridge: Send + Sync {
    /// The event `origin` was accepted (it is in its channel's log);
    /// `record` is a copy of what the log keeps of it.
    fn carry(&self, origin: Origin, record: Record);
}

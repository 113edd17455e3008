//! `Mirror`: where the events accepted on our channels are offered as well.
//! The Mercure adapter is one (`mercure.channel_updates`: a channel event
//! becomes a public update on the channel's name); the core only calls it,
//! once per accepted event, after the event's own fan-out and never for a
//! copy ([`Publish::copy`](super::message::Publish::copy)) or an internal
//! channel, so nothing loops.

use super::{event::EventId, log::Record};
use crate::names::ChannelName;

pub trait Mirror: Send + Sync {
    /// The event `id` was accepted on `channel` (it is in the channel's
    /// log); `record` is a copy of what the log keeps of it.
    fn accepted(&self, channel: &ChannelName, id: EventId, record: Record);
}

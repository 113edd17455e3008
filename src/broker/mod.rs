//! The broker core: channel actors, the registry that starts and retires
//! them, event ids and history, the fan-out, pulses and the demo publisher.
//! It knows no HTTP, Redis or database code: it defines what it needs from
//! its surroundings as traits, and the backends implement them.
//!
//! ## Parts
//! - [`handle`]: [`Broker`], the one handle callers use; it sends each
//!   request to its channel, through the [`directory`] when the channel runs
//!   and through the [`registry`] otherwise.
//! - [`channel`]: [`ChannelActor`], one per live channel; [`members`] its
//!   subscribers and the fan-out loop; [`history`] its replay buffer, and
//!   [`history::budget`] the memory all replay buffers share.
//! - [`message`]: what is said to a channel ([`ChannelMessage`], counted by
//!   construction).
//! - [`event`]: epochs, event ids, resume points and the [`Event`].
//! - [`codec`]: how a channel turns a stored record into an event.
//! - [`idempotency`]: idempotency keys, so a retried publish is stored once
//!   (the book an owned log keeps; a shared log keeps its own).
//! - Traits the surroundings implement: [`subscriber::Sink`] (where a
//!   subscriber's bytes go: the HTTP layer's outbox), [`subscriber::Filter`]
//!   (which events a subscriber wants: Mercure's selectors),
//!   [`log::DurableStore`] (`crate::store`), [`log::SharedLog`] and
//!   [`peers::Peers`] (`crate::cluster`), [`bridge::Bridge`] (the Mercure
//!   bridge), and [`codec::Codec`] (Mercure's update encoding).
//! - [`identity`]: who a subscriber is; [`presence`]: who is on a channel
//!   (its roster of users, the `broker.join` / `broker.leave` events, and
//!   [`presence::PresenceShare`], implemented by `crate::cluster`);
//!   [`revocation`]: ending one user's streams on every node;
//!   [`occupancy`]: a channel's first and last subscriber here, told to
//!   [`occupancy::OccupancyWatch`] (implemented by `crate::webhooks`).
//! - [`pulse`]: the pulse book; [`demo`]: the demo publisher.

pub mod bridge;
pub mod channel;
pub mod codec;
pub mod demo;
pub mod directory;
pub mod error;
pub mod event;
pub mod handle;
pub mod history;
pub mod idempotency;
pub mod identity;
pub mod log;
pub mod members;
pub mod message;
pub mod occupancy;
pub mod peers;
pub mod presence;
pub mod pulse;
pub mod registry;
pub mod revocation;
pub mod subscriber;
#[cfg(test)]
pub(crate) mod testing;

pub use channel::ChannelActor;
pub use error::{BrokerError, Reply, await_reply};
pub use event::{Event, EventId, ResumeFrom};
pub use handle::Broker;
pub use message::ChannelMessage;
pub use registry::{ChannelSummary, RegistryActor};

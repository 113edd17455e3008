//! A channel: one actor per live channel, and the plain state it keeps.
//! The actor owns the channel's subscribers, its log and its pulse counters;
//! it numbers events (or learns their numbers from a shared log) and fans
//! them out.
//!
//! - `actor`: [`ChannelActor`], every handler and every step it takes.
//! - `owned` and `shared`: the two kinds of log, plain state (no actix)
//!   whose methods say what the actor does next: accept this event now,
//!   await this answer of the store or the shared log, here is the replay
//!   and head, deliver these entries, announce this gap. The kind is fixed
//!   when the actor starts:
//!   - **owned** (`OwnedLog`): in memory, optionally also in a durable
//!     store. The actor numbers events; with a store an event is fanned out
//!     and acknowledged only once the store has it on disk.
//!   - **shared** (`SharedCursor`): a log several nodes share (cluster
//!     mode). The log numbers events and carries them to every node that
//!     follows the channel (it does while it has subscribers); the actor
//!     delivers them in seq order and reads any hole from the log.
//! - `handle`: [`ChannelHandle`], the one way in: it counts what it sends,
//!   the actor's one handler counts what it receives, so the registry can
//!   retire an idle channel without racing a message in flight (see
//!   `registry`). Callers are answered on the `oneshot` in each request.
//! - `config`: [`ChannelConfig`] (what every channel is given) and
//!   [`ChannelStats`] (the counters the registry reads).
//!
//! Either way the fan-out is the same ([`Members`](super::members::Members))
//! and never waits for a subscriber. The files import each other one way:
//! `handle → actor → config, owned, shared`; none of them imports this
//! file. A publisher waiting for its event is a
//! [`PendingAnswer`](super::message::PendingAnswer), beside the request.

mod actor;
mod config;
mod handle;
mod owned;
mod shared;
#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod tests;

pub use self::{
    actor::ChannelActor,
    config::{ChannelConfig, ChannelStats},
    handle::ChannelHandle,
};

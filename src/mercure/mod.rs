//! The Mercure protocol (<https://mercure.rocks>): a hub at
//! `/.well-known/mercure` that Mercure publishers and subscribers (Symfony,
//! API Platform, Laravel packages, the JavaScript `EventSource` examples)
//! use unchanged, running on the broker's actors beside our own channels.
//!
//! ## Parts
//! - [`hub`]: `HubActor`, the Mercure history and subscribers, fan-out with
//!   per-subscriber topic and authorization filtering, subscription events.
//! - [`routes`]: the HTTP endpoints (subscribe, publish, subscriptions API)
//!   and the `MercureStream` response body.
//! - [`auth`]: finding and checking JWTs (`mercure.publish`,
//!   `mercure.subscribe`, `mercure.payload` claims, and draft-08
//!   `authorization_details`).
//! - [`topic`]: topic selectors: `*`, exact topics, URI templates (`topic`)
//!   and the draft-08 matcher types `Exact` and `URLPattern` (`match*`).
//! - [`update`]: an update, its id and its event-stream encoding.
//! - [`error`]: `MercureError`, the statuses the Mercure spec asks for.
//!
//! ## Bridge to our channels
//! A public update whose topic is a valid channel name is also published on
//! that channel (`/stream/{channel}` subscribers get it); an event published
//! on a channel (`POST /publish/{channel}`, batches, the demo) is also a
//! public Mercure update whose topic is the channel name. Channel actors
//! offer their events to the hub ([`crate::broker::registry::ChannelPublished`],
//! the registry in cluster mode); the hub publishes its own with `mirror`
//! unset, which are not offered back, so nothing loops.

pub mod auth;
pub mod error;
pub mod hub;
pub mod routes;
pub mod topic;
pub mod update;

use std::sync::Arc;

use actix::Addr;

pub use hub::HubActor;

use crate::{config::Settings, metrics::Metrics};

/// What the Mercure handlers share.
pub struct MercureState {
    pub hub: Addr<HubActor>,
    /// Subscriptions in the whole broker, shared with the channels
    /// (`limits.max_subscribers` counts both APIs).
    pub total_subscribers: Arc<std::sync::atomic::AtomicU64>,
    pub tokens: auth::TokenChecker,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
}

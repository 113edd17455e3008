//! # sse-broker
//!
//! A Server-Sent Events broker: browsers subscribe with `EventSource` to
//! `GET /stream/{channel}`, backend jobs publish with `POST /publish/{channel}`,
//! clients report liveness with `POST /pulse`, a debug console is served at
//! `/`, and a Mercure hub at `/.well-known/mercure`.
//!
//! ## Layout
//! Imports run one way (`tests/architecture.rs` checks it):
//! `startup → http, mercure → broker ← store, cluster, webhooks`, with `mercure → http`
//! (the hub's streams are opened and written by the stream machinery), and
//! every module may use the leaves.
//!
//! - [`startup`]: `Application` binds the listener, builds the backends and
//!   the broker, starts the HTTP server, and stops everything cleanly. The
//!   only module that knows every other.
//! - [`broker`]: the core. Channel actors, the registry that starts and
//!   retires them, event ids and history, idempotent publishing, the
//!   fan-out, presence, pulses, revocation, the demo publisher; and the
//!   traits it asks of its surroundings (a subscriber's
//!   sink and filter, a durable store, a shared log, the cluster's peers, a
//!   bridge, a codec). No HTTP, Redis or database code.
//! - [`store`]: durable history on an embedded database (redb): the
//!   broker's `DurableStore`.
//! - [`cluster`]: cluster mode on Redis (one server, a Redis Cluster or
//!   Sentinel): the broker's `SharedLog` (ids, history, and the bus that
//!   carries each channel's events to the nodes with subscribers on it),
//!   `Peers` (the cluster-wide subscriber counts and pulses), presence's
//!   members on every node, revocations across nodes, and the webhooks'
//!   `SharedOccupancy` (each channel transition decided once).
//! - [`http`]: thin handlers, one file per resource, and the event-stream
//!   machinery every protocol uses: opening a stream, the subscriber's
//!   outbox, and the two stream writers.
//! - [`webhooks`]: the occupancy webhooks (`channel.occupied`,
//!   `channel.vacated`, member events), signed as Standard Webhooks and
//!   retried in order per channel: the broker's `OccupancyWatch`; in a
//!   cluster it records changes in the cluster's `SharedOccupancy` and
//!   sends the channels whose lease it takes.
//! - [`mercure`]: the Mercure protocol (1.0, and 0.x in compatibility
//!   mode), an adapter over the core: the hub is one of the broker's
//!   channels, Mercure subscribers are its members with a topic filter.
//!
//! Leaves (they import no other module, or only other leaves):
//! - [`names`]: channel names and event types.
//! - [`config`]: the `Settings` tree, loaded from compiled-in defaults, an
//!   overlay file, environment variables and flags (the `[mercure]` section
//!   in `config/mercure.rs`).
//! - [`auth`]: the one access policy every way in asks (may this caller
//!   subscribe to, publish to or inspect this channel), and our tokens (and
//!   the `[auth]` settings).
//! - [`hooks`]: the application's authorization hooks (asked before a
//!   stream opens, with the client's cookies, and optionally before every
//!   publish): the HTTP client, answer cache and circuit breaker; a stream's
//!   answer is a credential `auth`'s policy weighs.
//! - [`sse`]: the `text/event-stream` encoding, done once per event.
//! - [`error`]: `ApiError`, mapped to `application/problem+json` in one place.
//! - [`metrics`]: the Prometheus metrics and their handles (`GET /metrics`).
//! - [`readiness`]: the checks behind `GET /readyz`.
//! - [`tls`]: HTTPS for the listener (rustls), its certificate from files
//!   (reloaded live) or from ACME, and the redirect listener; used by
//!   `startup` only.

pub mod auth;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod error;
pub mod hooks;
pub mod http;
pub mod mercure;
pub mod metrics;
pub mod names;
pub mod readiness;
pub mod sse;
pub mod startup;
pub mod store;
pub mod tls;
pub mod webhooks;

//! # sse-broker
//!
//! A Server-Sent Events broker: browsers subscribe with `EventSource` to
//! `GET /stream/{channel}`, backend jobs publish with `POST /publish/{channel}`,
//! clients report liveness with `POST /pulse`, and a debug console is served
//! at `/`.
//!
//! ## Layout
//! - [`config`]: the `Settings` tree, loaded from compiled-in defaults, an
//!   overlay file, environment variables and flags.
//! - [`startup`]: `Application` binds the listener, starts the actors and the
//!   HTTP server, and stops them cleanly.
//! - [`broker`]: the actors. `broker::registry` routes every message to the
//!   `broker::channel` actor of its channel; `broker::history` is a channel's
//!   replay buffer; `broker::event` defines names and event ids;
//!   `broker::pulse` the pulse book; `broker::demo` the demo publisher.
//! - [`cluster`]: cluster mode on Redis: the shared event log (ids and
//!   history), the bus that carries events between nodes, and the
//!   cluster-wide directory of subscriber counts and pulses.
//! - [`store`]: durable history on an embedded database: each channel's
//!   events, id sequence and epoch survive a restart or a crash; one writer
//!   thread commits every channel's appends in groups.
//! - [`http`]: thin handlers, one file per resource (`stream`, `publish`,
//!   `pulse`, `channels`, `session`) and request-body handling (`body`).
//! - [`sse`]: the `text/event-stream` encoding, done once per event.
//! - [`outbox`]: a stream's outbox, where channel actors write each event
//!   straight to the subscriber's socket (queued, in order, only when the
//!   socket is full), and the stream ids of multi-channel streams.
//! - [`error`]: `ApiError`, mapped to `application/problem+json` in one place.
//! - [`metrics`]: the Prometheus metrics and their handles (`GET /metrics`).
//! - [`readiness`]: the checks behind `GET /readyz`.
//! - [`mercure`]: the Mercure protocol hub at `/.well-known/mercure`
//!   (`HubActor`, its routes, JWT checks, topic selectors), bridged to the
//!   channels.

pub mod auth;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod error;
pub mod http;
pub mod mercure;
pub mod metrics;
pub mod outbox;
pub mod readiness;
pub mod sse;
pub mod startup;
pub mod store;

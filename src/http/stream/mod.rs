//! Event streams: our `/stream` routes, and the machinery every protocol's
//! streams go through (the Mercure hub's too), one concern a file.
//!
//! - [`routes`]: `GET /stream/{channel}` and `GET /stream?channel=…`.
//! - [`opening`]: a request becomes a subscription of an outbox to its
//!   channels, then a response handed to a writer.
//! - [`writer`]: the two writers that send the outbox's bytes after the
//!   response head (direct and body).
//! - [`end`]: how a stream ends: its last bytes, and what it gives back
//!   (its subscriptions, its slot, the close log line).
//! - [`slots`]: open streams per client IP, one taken while a stream is open.
//! - [`outbox`]: a subscriber's queue and the slow-consumer policy; the
//!   broker's `Sink`, where the fan-out's offer of each event lands.
//! - [`cursor`]: how far a client got on each channel: a stream's event ids,
//!   and `Last-Event-ID` read back.
//! - [`socket`]: every system call on a client's socket, and every
//!   `unsafe` block, in one file.
//!
//! Each file imports only files below it in this list, so there is no
//! circle (`tests/architecture.rs` checks that): `routes` uses `opening`
//! and `cursor`; `opening` the rest; `writer` uses `end`, `outbox` and
//! `socket`; `end` uses `outbox` and `slots`; `outbox` uses `cursor` and
//! `socket`.

pub mod cursor;
pub mod end;
pub mod opening;
pub mod outbox;
pub mod routes;
pub mod slots;
pub mod socket;
pub mod writer;

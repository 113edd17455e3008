//! Where a channel's events are kept, as the broker core sees it: the
//! record a log stores for each event, and the two kinds of backend a
//! channel can use besides memory.
//!
//! - [`DurableStore`] (implemented by `crate::store`): the channel numbers
//!   its events itself and the store keeps them on disk; an event is
//!   delivered and acknowledged only once the store has it.
//! - [`SharedLog`] (implemented by `crate::cluster`): several broker nodes
//!   share one log that numbers the events and carries each to the nodes
//!   that follow its channel (the bus), so a client can resume on any node.
//!
//! The core owns no database or network code: the traits say what it needs,
//! and `startup` hands the backends in.

use std::{any::Any, fmt, sync::Arc};

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::{
    error::BrokerError,
    event::{Epoch, EventId},
    idempotency::{Idempotency, Logged, RememberedKey},
};
use crate::names::{ChannelName, EventType};

/// What a log keeps of one event: enough to make it again. For our own
/// channels `data` is the payload; a protocol adapter may store its own
/// serialised record there, which its codec reads back (see `codec`).
#[derive(Clone)]
pub struct Record {
    pub event_type: Option<EventType>,
    pub data: String,
    /// The record as its publisher built it, for a codec that would
    /// otherwise parse it out of `data` (a Mercure update): such a record's
    /// `data` may be left empty until a log outside memory needs it
    /// ([`Codec::logged`](super::codec::Codec::logged)). Never logged itself.
    pub prepared: Option<Arc<dyn Any + Send + Sync>>,
    /// Set on a [bridge](super::bridge::Bridge)'s copy: the event it copies.
    /// A durable store keeps only this reference (the original is on disk
    /// already, on its own channel) and reads the original back in its
    /// place, with `origin` set, so the bridge makes the copy again.
    pub origin: Option<Box<Origin>>,
}

/// The event a copy was made of: its channel and its id there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub channel: ChannelName,
    pub id: EventId,
}

impl Record {
    /// A record of `data` (an event of our own channels).
    pub fn plain(event_type: Option<EventType>, data: String) -> Self {
        Self {
            event_type,
            data,
            prepared: None,
            origin: None,
        }
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("event_type", &self.event_type)
            .field("data", &self.data)
            .field("prepared", &self.prepared.is_some())
            .field("origin", &self.origin)
            .finish()
    }
}

/// A record on its way into a shared log, with its publisher's
/// idempotency key (if it gave one): the log checks and records the key in
/// the same step as it stores the record.
#[derive(Debug, Clone)]
pub struct Submission {
    pub record: Record,
    pub idempotency: Option<Idempotency>,
}

/// One event as a log returns it.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub seq: u64,
    /// When the log accepted it, in ms since 1970 (history age counts from here).
    pub published_ms: u64,
    pub record: Record,
}

/// A channel as a log has it: its epoch and head, and retained events.
#[derive(Debug)]
pub struct Fetched {
    pub epoch: Epoch,
    /// The seq of the newest event ever published in this epoch.
    pub head: u64,
    /// Retained events in seq order (contiguous up to `head` when they
    /// come from a durable store).
    pub entries: Vec<LogEntry>,
}

/// What to read from a shared log.
#[derive(Debug, Clone, Copy)]
pub enum FetchFrom {
    /// Only the epoch and the head.
    Head,
    /// Every retained event.
    All,
    /// The retained events after this position (all of them when it is of
    /// another epoch or beyond the head).
    After(EventId),
    /// As `After`, from a position this node had from the log itself (never
    /// a client's): a log whose head is behind it went back in time (a
    /// Redis restarted from an older snapshot) and moves its numbering past
    /// it, so that no id this node delivered is given again.
    Since(EventId),
    /// A history reader's page: as `After` (or `All` without a position),
    /// but at most `most` events, and none past the one whose data takes
    /// the page beyond `bytes` (so a reader's small `limit` never loads a
    /// whole long history of large events).
    Page {
        after: Option<EventId>,
        most: usize,
        bytes: usize,
    },
}

/// A backend's failure, said in words a publisher may read (503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LogError(pub String);

impl From<LogError> for BrokerError {
    fn from(err: LogError) -> Self {
        BrokerError::StoreUnavailable(err.0)
    }
}

/// Durable history: the channel numbers its events; the store keeps them.
pub trait DurableStore: Send + Sync {
    /// The channel as last committed, `None` when the store does not know
    /// it. Blocks the caller for one read (a channel coming back).
    fn load(&self, channel: &ChannelName) -> Result<Option<Fetched>, LogError>;

    /// Hands one event to the store; the answer comes once it is on disk.
    /// Appends of one channel are committed in the order they are handed in.
    /// A record with an [`Origin`] is kept as a reference to it: [`load`]
    /// gives back the original's record with `origin` set (or leaves the
    /// event out, and everything before it, when the original is gone).
    ///
    /// `idempotency`, when set, is kept in the event's own commit (so a
    /// restart remembers it) until `publish.idempotency_window` has passed.
    ///
    /// [`load`]: DurableStore::load
    fn append(
        &self,
        channel: &ChannelName,
        id: EventId,
        published_ms: u64,
        record: Record,
        idempotency: Option<Idempotency>,
    ) -> oneshot::Receiver<Result<(), LogError>>;

    /// The idempotency keys the store kept whose window had not ended when
    /// it opened, oldest first (the broker's book takes them at start).
    fn remembered(&self) -> Vec<RememberedKey>;
}

/// A log shared by the nodes of a cluster: it numbers the events, keeps
/// the retained ones and carries them to the nodes that follow the channel,
/// in seq order per channel, as
/// [`Delivered`](super::message::ChannelMessage::Delivered).
///
/// A node follows a channel while it has subscribers on it. When carrying
/// (re)starts without a [`follow`](Self::follow) waiting for it (the log's
/// connection came back, or the channel moved), the log sends the channel
/// a [`CatchUp`](super::message::ChannelMessage::CatchUp), so it reads what
/// it may have missed: no event is lost in a hand-over.
pub trait SharedLog: Send + Sync {
    /// Stores (and broadcasts) events of one channel, in the order given,
    /// and answers what became of each, in that order, once the log has
    /// them all: the new ones are numbered in order (same epoch,
    /// consecutive seqs); a submission whose idempotency key the log
    /// remembers (for `publish.idempotency_window`) is a repeat, or refused
    /// when its digest differs, and is neither stored nor broadcast. `seen`
    /// is the newest event of the channel this node delivered, if any: the
    /// log never numbers at or below it again, even when it lost it.
    ///
    /// The log also carries the new events back to every node that follows
    /// the channel, this one included; the channel may deliver them here
    /// from the answer first (see `SharedCursor::stored`) and then drops
    /// the bus's copy as one it has.
    fn append(
        &self,
        channel: &ChannelName,
        submissions: Arc<[Submission]>,
        seen: Option<EventId>,
    ) -> BoxFuture<'static, Result<Vec<Logged>, LogError>>;

    /// Reads the channel's epoch, head and retained events.
    fn fetch(
        &self,
        channel: &ChannelName,
        from: FetchFrom,
    ) -> BoxFuture<'static, Result<Fetched, LogError>>;

    /// Carry `channel`'s events to this node from now on. Resolves once they
    /// are carried, so that a read of the log made after it misses nothing;
    /// fails when that is not so in time (the wish stands anyway, until
    /// [`unfollow`](Self::unfollow)).
    fn follow(&self, channel: &ChannelName) -> BoxFuture<'static, Result<(), LogError>>;

    /// Undoes one [`follow`](Self::follow): the channel's events stop coming
    /// once nobody here follows it.
    fn unfollow(&self, channel: &ChannelName);

    /// Whether events are arriving from the bus now. When they are not, the
    /// bus's return makes every followed channel read what it missed; when
    /// they are, a channel that failed to read retries on its own.
    fn receiving(&self) -> bool;
}

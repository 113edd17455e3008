//! Occupancy: whether a channel has subscribers on this node, and which
//! users came and went, as the channel actor tells it to whoever watches
//! ([`OccupancyWatch`], implemented by `crate::webhooks`). The actor only
//! says what changed here, at once and without waiting: what a change
//! means for the whole broker (a grace before a channel counts as vacated,
//! the other nodes of a cluster) is the watcher's to decide. In a cluster
//! it records them in [`SharedOccupancy`] (implemented by
//! `crate::cluster`), which decides each transition once for every node
//! and queues it as a [`Notice`].

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::value::RawValue;

use super::error::BrokerError;
use crate::names::ChannelName;

/// What changed about one channel on this node.
#[derive(Debug, Clone)]
pub enum OccupancyChange {
    /// Its first subscriber here came.
    Occupied,
    /// Its last subscriber here went (however it went: it left, was
    /// evicted or revoked, or the channel stopped).
    Vacated,
    /// A user's first connection here came (presence's join).
    Joined {
        user: Arc<str>,
        info: Option<Arc<RawValue>>,
    },
    /// A user's last connection here went (presence's leave).
    Left {
        user: Arc<str>,
        info: Option<Arc<RawValue>>,
    },
}

/// Told every occupancy change of every channel that is not internal, in
/// order per channel, from the channel's actor: it must not wait (it
/// queues the work, or drops it and counts that).
pub trait OccupancyWatch: Send + Sync {
    fn changed(&self, channel: &ChannelName, change: OccupancyChange);
}

/// A new notice's id (a Standard Webhooks `webhook-id`): `msg_` and a
/// random UUID, made once when the transition is decided and kept across
/// retries and nodes.
pub fn notice_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// One transition decided for the whole cluster, queued for its channel.
#[derive(Debug, Clone)]
pub struct Notice {
    /// Where it is in the channel's queue (to take it out once sent).
    pub key: String,
    /// Its id (see [`notice_id`]).
    pub id: String,
    pub change: OccupancyChange,
    /// When it was decided, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// What recording a change did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// A notice was queued: a sender is wanted now.
    pub queued: bool,
    /// Older notices of the channel's queue dropped to keep it bounded.
    pub dropped: u64,
}

/// Occupancy decided for the whole cluster (implemented by
/// `crate::cluster`): every node records its own changes, the shared
/// store decides atomically which are transitions of the cluster (the
/// first subscriber anywhere, the last one gone and none back within the
/// grace, a user's first and last connection anywhere) and queues each
/// once per channel; one node at a time holds a channel's queue and sends
/// it, in order.
pub trait SharedOccupancy: Send + Sync {
    /// Records this node's `change` of `channel`; answers whether it
    /// queued a notice, and what it dropped.
    fn record(
        &self,
        channel: &ChannelName,
        change: &OccupancyChange,
    ) -> BoxFuture<'static, Result<Recorded, BrokerError>>;
    /// Channels whose queue or grace needs a sender now, at most `max`.
    fn due(&self, max: usize) -> BoxFuture<'static, Result<Vec<ChannelName>, BrokerError>>;
    /// Takes (or keeps) the channel's queue for this node for a while;
    /// `false`: another node holds it.
    fn lease(&self, channel: &ChannelName) -> BoxFuture<'static, Result<bool, BrokerError>>;
    /// Settles what time decided (a grace that ended, nodes that died)
    /// and reads the channel's first `max` notices, oldest first.
    fn notices(
        &self,
        channel: &ChannelName,
        max: usize,
    ) -> BoxFuture<'static, Result<Vec<Notice>, BrokerError>>;
    /// The notice `key` was delivered or given up: out of the queue.
    fn done(&self, channel: &ChannelName, key: &str)
    -> BoxFuture<'static, Result<(), BrokerError>>;
    /// Lets go of the channel's queue, scheduling its next look (notices
    /// left, a grace running, an occupied channel's check for nodes gone).
    fn release(&self, channel: &ChannelName) -> BoxFuture<'static, Result<(), BrokerError>>;
}

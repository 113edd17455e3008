//! Occupancy: whether a channel has subscribers on this node, and which
//! users came and went, as the channel actor tells it to whoever watches
//! ([`OccupancyWatch`], implemented by `crate::webhooks`). The actor only
//! says what changed here, at once and without waiting: what a change
//! means for the whole broker (a grace before a channel counts as vacated,
//! the other nodes of a cluster) is the watcher's to decide.

use std::sync::Arc;

use serde_json::value::RawValue;

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

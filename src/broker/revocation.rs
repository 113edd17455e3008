//! Revocation: ending one user's streams now, on every node, because the
//! application says so (a logout, a ban, a permission taken away). The
//! words the broker uses for it: a [`Revocation`] (whose streams, and on
//! which channels), and what it did ([`Revoked`]).
//!
//! A node ends its own streams by asking its channels
//! ([`ChannelMessage::Disconnect`](super::message::ChannelMessage)): every
//! running channel, or only the named ones. It keeps no index of users:
//! subscribing and leaving pay nothing for revocation, nothing can go out
//! of step with the channels, and a revocation (rare, next to connects) is
//! one message per running channel and one look at each member.
//! In a cluster the other nodes hear of it through
//! [`Peers::revoke`](super::peers::Peers::revoke) and answer with their
//! counts. Whatever else remembers a user's right to a stream (the
//! application hook's answer cache) hears of every revocation carried out
//! on the node, as a [`Listener`], so the revoked user's next stream is
//! decided afresh.

use std::sync::Arc;

use crate::names::ChannelName;

/// Whose streams to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The user id, as its streams' identities carry it.
    pub user: Arc<str>,
    /// Only the streams that hold one of these channels (`None`: all of
    /// the user's streams, Mercure subscriptions included).
    pub channels: Option<Vec<ChannelName>>,
}

/// What a revocation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Revoked {
    /// Streams ended: this node's, plus those the other nodes reported in
    /// time.
    pub streams: usize,
    /// Nodes that reported (this one included).
    pub nodes: usize,
    /// Other nodes that received the revocation but did not report in
    /// time: they end their streams all the same, uncounted.
    pub unanswered: usize,
}

/// Told of every revocation carried out on this node (implemented by the
/// application hook's answer cache, which forgets the user's answers).
pub trait Listener: Send + Sync {
    fn revoked(&self, revocation: &Revocation);
}

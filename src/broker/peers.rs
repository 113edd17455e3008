//! `Peers`: what the other nodes of a cluster know, as the broker core asks
//! it (implemented by `crate::cluster`): their subscriber counts, summed into
//! `GET /channels`, and the cluster-wide pulse book behind `POST /pulse`,
//! `GET /pulses` and `DELETE /killall`, and revocation on every node
//! (`POST /users/{user}/disconnect`), and who is on a channel there (`GET
//! /channels/{channel}/presence`). A broker alone has none.

use std::collections::HashMap;

use futures_util::future::BoxFuture;

use crate::names::ChannelName;

use super::{
    error::BrokerError,
    presence::ChannelPresence,
    pulse::PulseRecord,
    revocation::{Revocation, Revoked},
};

/// What the other nodes of a cluster know (implemented by `crate::cluster`):
/// their subscriber counts and the cluster-wide pulse book.
pub trait Peers: Send + Sync {
    /// Subscribers per channel on every other live node, summed.
    fn subscriber_counts(&self) -> BoxFuture<'static, Result<HashMap<String, u64>, BrokerError>>;
    /// Records one pulse of `client` in the cluster-wide book.
    fn record_pulse(&self, client: &str) -> BoxFuture<'static, Result<(), BrokerError>>;
    /// The cluster-wide pulse book as `GET /pulses` shows it.
    /// The `limit` most recently seen clients of the cluster's pulse book.
    fn pulse_records(
        &self,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<PulseRecord>, BrokerError>>;
    /// Every remembered client id, most recently seen first.
    fn pulse_clients(&self) -> BoxFuture<'static, Result<Vec<String>, BrokerError>>;
    /// Has every other node carry out `revocation`; answers what those that
    /// reported in time did (their streams and their number, and how many
    /// did not report).
    fn revoke(&self, revocation: &Revocation) -> BoxFuture<'static, Result<Revoked, BrokerError>>;
    /// Who is on `channel` on every other live node: their connections and
    /// (when `members` is set) their listed users, summed per user.
    fn presence(
        &self,
        channel: &ChannelName,
        members: bool,
    ) -> BoxFuture<'static, Result<ChannelPresence, BrokerError>>;
}

//! `Peers`: what the other nodes of a cluster know, as the broker core asks
//! it (implemented by `crate::cluster`): their subscriber counts, summed into
//! `GET /channels`, and the cluster-wide pulse book behind `POST /pulse`,
//! `GET /pulses` and `DELETE /killall`. A broker alone has none.

use std::collections::HashMap;

use futures_util::future::BoxFuture;

use super::{error::BrokerError, pulse::PulseRecord};

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
}

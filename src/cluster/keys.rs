//! Redis key names. Every key of one channel, and the pub/sub channel its
//! events travel on, share the hash tag `{<channel>}`: in a Redis Cluster
//! they live in one slot, so the channel's scripts run on one shard and its
//! events are published (sharded pub/sub) where its subscribers' nodes
//! listen. The presence keys share `{nodes}` and the pulse book's
//! `{pulse}`, so each of those is read and written in one round trip too;
//! the webhooks' schedule of channels to look at is `{webhooks}`.
//! Channel names cannot hold braces, and `cluster.key_prefix` may not
//! either, so the first `{…}` of a key is always the tag.

use crate::{broker::idempotency::IdempotencyKey, names::ChannelName};

/// The internal channel whose bus carries the cluster's control messages
/// (no actor runs for it; its name is one no client can use).
pub fn control_channel() -> ChannelName {
    ChannelName::internal("control")
}

/// The names of this broker's keys (see the module docs).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// Hash of the channel's log state: `e` its epoch, `s` the seq it
    /// numbered last, `f` the fence (the seq this Redis process wrote last,
    /// kept on the primary only and never replicated: a promoted replica
    /// lacks it, which is how the publish script notices a failover) and
    /// `x` when its TTLs were set last (ms). See `log`.
    pub fn state(&self, channel: &ChannelName) -> String {
        format!("{}{{{channel}}}:log", self.prefix)
    }

    pub fn stream(&self, channel: &ChannelName) -> String {
        format!("{}{{{channel}}}:events", self.prefix)
    }

    /// A publisher's idempotency key on the channel: the first publish's
    /// request digest and event id, for `publish.idempotency_window` (see
    /// `log`). The key may hold braces: the channel's tag comes first.
    pub fn idempotency(&self, channel: &ChannelName, key: &IdempotencyKey) -> String {
        format!("{}{{{channel}}}:idempotency:{}", self.prefix, key.as_str())
    }

    /// Hash user → `{"connections", "info"}` of one node's members of the
    /// channel (see `members`).
    pub fn members(&self, channel: &ChannelName, node: &str) -> String {
        format!("{}{{{channel}}}:members:{node}", self.prefix)
    }

    /// The pub/sub channel that carries the channel's events (and its
    /// members' joins and leaves, see `members`).
    pub fn bus(&self, channel: &ChannelName) -> String {
        format!("{}{{{channel}}}:bus", self.prefix)
    }

    /// The channel a [`Self::bus`] name carries.
    pub fn channel_of_bus(&self, bus: &str) -> Option<ChannelName> {
        let name = bus
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('{')?
            .strip_suffix("}:bus")?;
        ChannelName::parse_recorded(name).ok()
    }

    /// The pub/sub channel every node listens on for the cluster's control
    /// messages (revocations and their reports, see `revoke`): the bus of
    /// the internal channel [`control_channel`], so the bus keeps its
    /// subscription as it keeps a channel's.
    pub fn control(&self) -> String {
        self.bus(&control_channel())
    }

    /// The channel's occupancy in the cluster (see `occupancy`):
    /// `occupied`, `vacating:<deadline ms>`, or absent (vacant).
    pub fn occupancy(&self, channel: &ChannelName) -> String {
        format!("{}{{{channel}}}:occupancy", self.prefix)
    }

    /// Hash node → until when (ms) the node has subscribers on the channel.
    pub fn occupancy_nodes(&self, channel: &ChannelName) -> String {
        format!("{}{{{channel}}}:occupancy:nodes", self.prefix)
    }

    /// Hash `<node>\n<user>` → 1: the users each node has on the channel
    /// (for member webhooks).
    pub fn occupancy_users(&self, channel: &ChannelName) -> String {
        format!("{}{{{channel}}}:occupancy:users", self.prefix)
    }

    /// Stream of the channel's webhook notices waiting to be sent.
    pub fn webhooks(&self, channel: &ChannelName) -> String {
        format!("{}{{{channel}}}:webhooks", self.prefix)
    }

    /// The node that sends the channel's notices now (expiring).
    pub fn webhooks_lease(&self, channel: &ChannelName) -> String {
        format!("{}{{{channel}}}:webhooks:lease", self.prefix)
    }

    /// Sorted set channel → when (ms) a node should look at its notices.
    pub fn webhooks_due(&self) -> String {
        format!("{}{{webhooks}}:due", self.prefix)
    }

    /// Sorted set of nodes by the time their presence entry expires.
    pub fn nodes(&self) -> String {
        format!("{}{{nodes}}", self.prefix)
    }

    /// Hash channel → local subscriber count of one node.
    pub fn node_subscribers(&self, node: &str) -> String {
        format!("{}{{nodes}}:{node}:subscribers", self.prefix)
    }

    /// Sorted set of pulse clients by last pulse (ms since the Unix epoch).
    pub fn pulse_clients(&self) -> String {
        format!("{}{{pulse}}:clients", self.prefix)
    }

    /// List of one client's pulse times, newest first.
    pub fn pulse_times(&self, client: &str) -> String {
        format!("{}{{pulse}}:{client}:times", self.prefix)
    }

    /// One client's pulse count.
    pub fn pulse_count(&self, client: &str) -> String {
        format!("{}{{pulse}}:{client}:count", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel's keys and its bus share one hash tag; the bus name leads back to the channel.
    #[test]
    fn channel_keys_share_a_slot() {
        let keys = Keys::new("sse:");
        let orders = ChannelName::parse("orders").unwrap();
        let slot = |key: &str| redis::cluster_routing::Slot::for_key(key);
        let bus = keys.bus(&orders);
        let retry = IdempotencyKey::parse("job {7}").unwrap();
        for key in [
            keys.state(&orders),
            keys.stream(&orders),
            keys.idempotency(&orders, &retry),
            keys.members(&orders, "n1"),
        ] {
            assert_eq!(slot(&key), slot(&bus), "{key}");
        }
        assert_eq!(keys.channel_of_bus(&bus), Some(orders));
        let hub = ChannelName::internal("mercure");
        assert_eq!(keys.channel_of_bus(&keys.bus(&hub)), Some(hub));
        assert_eq!(keys.channel_of_bus("other:{orders}:bus"), None);
        assert_eq!(slot(&keys.nodes()), slot(&keys.node_subscribers("n1")));
        assert_eq!(slot(&keys.pulse_clients()), slot(&keys.pulse_times("tab")));
    }
}

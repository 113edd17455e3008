//! Presence, cluster-wide in Redis: how many subscribers each node has
//! per channel (summed by `GET /channels` and a channel's presence count),
//! and the pulse book (`POST /pulse`, `GET /pulses`, `DELETE /killall`).
//! Which *users* each node has on a channel is `super::members`.
//!
//! Subscriber counts: every `presence_interval` a node replaces its hash
//! `node:<id>:subscribers` (channel → count) and its entry in the `nodes`
//! sorted set, both valid for three intervals. A node that dies simply stops
//! counting after that. Counts of other nodes are therefore up to one
//! interval old; the asking node's own counts are always current. The same
//! refresh extends the expiry of the log keys of every channel that has
//! subscribers here, so a quiet channel that is still listened to keeps its
//! epoch (its clients' ids stay valid) however long it goes without events.
//!
//! Pulses: per client a list of pulse times (newest first, at most
//! `pulses.keep_timestamps`) and a counter, both expiring after
//! `pulses.retention`, and one sorted set of clients by last pulse, capped at
//! `pulses.max_clients`. "Alive" compares the last pulse with this node's
//! clock, so node clocks should be synchronised (NTP).

use std::{collections::HashMap, time::Duration};

use futures_util::future::BoxFuture;
use redis::cluster_routing::Slot;

use super::{
    Cluster, ClusterError, members, occupancy, revoke,
    script::{Lua, millis},
};
use crate::{
    broker::{
        Broker, BrokerError,
        event::now_ms,
        peers::Peers,
        presence::ChannelPresence,
        pulse::{PulseRecord, rfc3339},
        revocation::{Revocation, Revoked},
    },
    names::ChannelName,
};

/// KEYS: clients set, times list, count. ARGV: client, now ms, keep,
/// retention ms, max clients.
const RECORD_PULSE: &str = r#"
local now = tonumber(ARGV[2])
local retention = tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - retention))
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[5])
if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1) end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
redis.call('PEXPIRE', KEYS[2], retention)
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], retention)
return 1
"#;

fn record_script() -> &'static Lua {
    static SCRIPT: std::sync::OnceLock<Lua> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| Lua::new(RECORD_PULSE))
}

/// Refreshes this node's subscriber counts every interval, until aborted.
pub async fn run(cluster: Cluster, broker: Broker) {
    let mut tick = tokio::time::interval(cluster.inner.presence_interval);
    loop {
        tick.tick().await;
        let Ok(counts) = broker.local_subscriber_counts().await else {
            return;
        };
        if let Err(err) = cluster.write_subscriber_counts(&counts).await {
            log::debug!("subscriber counts not written error={err}");
        }
        if let Some(tracking) = cluster.inner.occupancy.get() {
            let channels: Vec<ChannelName> = counts
                .iter()
                .filter(|(_, count)| *count > 0)
                .filter_map(|(name, _)| ChannelName::parse_recorded(name).ok())
                .collect();
            if let Err(err) = occupancy::refresh(&cluster, tracking, &channels, now_ms()).await {
                log::debug!("occupancy not refreshed error={err}");
            }
        }
    }
}

impl Cluster {
    async fn write_subscriber_counts(&self, counts: &[(String, u64)]) -> Result<(), ClusterError> {
        let keys = self.keys();
        let hash = keys.node_subscribers(self.node_id());
        let valid_for = self.entry_lifetime_ms();
        let now = now_ms();
        // The node's hash and the node set share a slot: one transaction.
        let mut pipe = redis::pipe();
        pipe.atomic().del(&hash).ignore();
        if !counts.is_empty() {
            pipe.hset_multiple(&hash, counts).ignore();
            pipe.pexpire(&hash, i64::try_from(valid_for).unwrap_or(i64::MAX))
                .ignore();
        }
        pipe.zadd(keys.nodes(), self.node_id(), now + valid_for)
            .ignore()
            .zrembyscore(keys.nodes(), "-inf", now as f64)
            .ignore();
        let mut conn = self.conn();
        self.run(pipe.query_async::<()>(&mut conn)).await?;
        // Each channel's keys are in the channel's own slot: one pipeline
        // per slot on a Redis Cluster, one in all otherwise.
        let log_ttl =
            i64::try_from(super::log::state_ttl_ms(self.inner.history.max_age)).unwrap_or(i64::MAX);
        let mut pipes: HashMap<Option<Slot>, redis::Pipeline> = HashMap::new();
        for channel in counts
            .iter()
            .filter_map(|(name, _)| ChannelName::parse_recorded(name).ok())
        {
            let state = keys.state(&channel);
            let slot = conn.is_cluster().then(|| Slot::for_key(&state));
            let pipe = pipes.entry(slot).or_default();
            for key in [state, keys.stream(&channel)] {
                pipe.pexpire(key, log_ttl).ignore();
            }
        }
        let refreshed = futures_util::future::join_all(pipes.into_values().map(|pipe| {
            let mut conn = conn.clone();
            async move { pipe.query_async::<()>(&mut conn).await }
        }));
        for outcome in self.run(async { Ok(refreshed.await) }).await? {
            outcome?;
        }
        Ok(())
    }

    /// Subscriber counts per channel on every *other* live node, summed.
    pub async fn remote_subscriber_counts(&self) -> Result<HashMap<String, u64>, ClusterError> {
        let keys = self.keys();
        let others = self.other_live_nodes().await?;
        let mut conn = self.conn();
        let mut totals = HashMap::new();
        if others.is_empty() {
            return Ok(totals);
        }
        let mut pipe = redis::pipe();
        for node in &others {
            pipe.hgetall(keys.node_subscribers(node));
        }
        let hashes: Vec<HashMap<String, u64>> = self.run(pipe.query_async(&mut conn)).await?;
        for hash in hashes {
            for (channel, count) in hash {
                *totals.entry(channel).or_insert(0) += count;
            }
        }
        Ok(totals)
    }

    /// Records one pulse of `client` in the cluster-wide book.
    pub async fn record_pulse(&self, client: &str) -> Result<(), ClusterError> {
        let keys = self.keys();
        let settings = &self.inner.pulses;
        let script = record_script();
        let mut invocation = script.call(3);
        invocation
            .arg(keys.pulse_clients())
            .arg(keys.pulse_times(client))
            .arg(keys.pulse_count(client))
            .arg(client)
            .arg(now_ms())
            .arg(settings.keep_timestamps.max(1))
            .arg(millis(settings.retention).max(1))
            .arg(settings.max_clients.max(1));
        let mut conn = self.conn();
        self.run(script.run::<i64>(&invocation, &mut conn)).await?;
        Ok(())
    }

    /// Every remembered client id, most recently seen first.
    pub async fn pulse_clients(&self) -> Result<Vec<String>, ClusterError> {
        self.recent_pulse_clients(self.inner.pulses.max_clients)
            .await
    }

    /// The `limit` most recently seen clients, newest first.
    async fn recent_pulse_clients(&self, limit: usize) -> Result<Vec<String>, ClusterError> {
        let settings = &self.inner.pulses;
        let since = now_ms().saturating_sub(millis(settings.retention));
        let mut conn = self.conn();
        self.run(
            redis::cmd("ZREVRANGEBYSCORE")
                .arg(self.keys().pulse_clients())
                .arg("+inf")
                .arg(since)
                .arg("LIMIT")
                .arg(0)
                .arg(limit.min(settings.max_clients))
                .query_async(&mut conn),
        )
        .await
    }

    /// The cluster-wide pulse book as `GET /pulses` shows it.
    pub async fn pulse_records(&self, limit: usize) -> Result<Vec<PulseRecord>, ClusterError> {
        let clients = self.recent_pulse_clients(limit).await?;
        if clients.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys();
        let mut pipe = redis::pipe();
        for client in &clients {
            pipe.lrange(keys.pulse_times(client), 0, -1)
                .get(keys.pulse_count(client));
        }
        let mut conn = self.conn();
        let answers: Vec<redis::Value> = self.run(pipe.query_async(&mut conn)).await?;
        let stale_after = millis(self.inner.pulses.stale_after);
        let now = now_ms();
        let mut records = Vec::with_capacity(clients.len());
        for (client, pair) in clients.into_iter().zip(answers.chunks(2)) {
            let times: Vec<u64> = redis::from_redis_value_ref(&pair[0]).unwrap_or_default();
            let count: Option<u64> = redis::from_redis_value_ref(&pair[1]).unwrap_or_default();
            let Some(&last) = times.first() else {
                // Its keys expired between the two reads: forgotten.
                continue;
            };
            let wall = |ms: u64| std::time::UNIX_EPOCH + Duration::from_millis(ms);
            records.push(PulseRecord {
                tab_id: client,
                timestamps: times.iter().map(|ms| rfc3339(wall(*ms))).collect(),
                count: count.unwrap_or(times.len() as u64),
                last_seen: rfc3339(wall(last)),
                alive: now.saturating_sub(last) < stale_after,
            });
        }
        Ok(records)
    }
}

/// The other nodes, as the broker asks about them.
impl Peers for Cluster {
    fn subscriber_counts(&self) -> BoxFuture<'static, Result<HashMap<String, u64>, BrokerError>> {
        let cluster = self.clone();
        Box::pin(async move { Ok(cluster.remote_subscriber_counts().await?) })
    }

    fn record_pulse(&self, client: &str) -> BoxFuture<'static, Result<(), BrokerError>> {
        let (cluster, client) = (self.clone(), client.to_owned());
        Box::pin(async move { Ok(Cluster::record_pulse(&cluster, &client).await?) })
    }

    fn pulse_records(
        &self,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<PulseRecord>, BrokerError>> {
        let cluster = self.clone();
        Box::pin(async move { Ok(Cluster::pulse_records(&cluster, limit).await?) })
    }

    fn pulse_clients(&self) -> BoxFuture<'static, Result<Vec<String>, BrokerError>> {
        let cluster = self.clone();
        Box::pin(async move { Ok(Cluster::pulse_clients(&cluster).await?) })
    }

    fn presence(
        &self,
        channel: &ChannelName,
        members: bool,
    ) -> BoxFuture<'static, Result<ChannelPresence, BrokerError>> {
        let (cluster, channel) = (self.clone(), channel.clone());
        Box::pin(async move { Ok(members::remote(&cluster, &channel, members).await?) })
    }

    fn revoke(&self, revocation: &Revocation) -> BoxFuture<'static, Result<Revoked, BrokerError>> {
        let (cluster, revocation) = (self.clone(), revocation.clone());
        Box::pin(async move { Ok(revoke::ask(&cluster, &revocation).await?) })
    }
}

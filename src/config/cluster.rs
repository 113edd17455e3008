//! The `[cluster]` section: the Redis that joins this node to a cluster
//! (one server, a Redis Cluster or Sentinel) and how it is used. Every key is
//! documented in `config/default.toml`.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Where Redis is: one URL (`redis://[:password@]host:port[/db]`), or a
    /// comma-separated list of seeds (Redis Cluster nodes, or the sentinels
    /// with `redis_mode = "sentinel"`). Empty runs the broker alone, in memory.
    pub redis_url: String,
    /// What `redis_url` names: one `redis-server`, a Redis Cluster, or the
    /// sentinels watching a primary.
    pub redis_mode: RedisMode,
    /// The name the sentinels know the primary by (`redis_mode = "sentinel"`).
    pub sentinel_master: String,
    /// Prefix of every Redis key and pub/sub channel, so several
    /// independent brokers can share one Redis.
    pub key_prefix: String,
    /// Longest a Redis command may take before it counts as failed (a
    /// publish then answers 503).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Longest wait between two reconnection attempts (the wait doubles
    /// from 100 ms up to this).
    #[serde(with = "humantime_serde")]
    pub max_reconnect_delay: Duration,
    /// How often a node writes its subscriber counts to Redis and pings the
    /// bus; counts of a node silent for three intervals are ignored.
    #[serde(with = "humantime_serde")]
    pub presence_interval: Duration,
    /// Replicas that must have a publish before it is acknowledged (Redis
    /// `WAIT`); 0 acknowledges once the primary has it. Trades publish
    /// latency for not losing acknowledged events in a failover.
    pub publish_wait_replicas: u32,
    /// Longest a publish waits for those replicas; it answers 503 after.
    #[serde(with = "humantime_serde")]
    pub publish_wait_timeout: Duration,
}

/// What kind of Redis `cluster.redis_url` names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One `redis-server`.
    #[default]
    Standalone,
    /// A Redis Cluster (≥ 7): the URLs are seed nodes; each channel lives in
    /// one slot and its events travel by sharded pub/sub.
    Cluster,
    /// A primary with replicas, failed over by Redis Sentinel: the URLs are
    /// the sentinels'.
    Sentinel,
}

impl ClusterSettings {
    /// Whether a Redis URL was given.
    pub fn enabled(&self) -> bool {
        !self.redis_urls().is_empty()
    }

    /// The URLs of `redis_url`, split at commas.
    pub fn redis_urls(&self) -> Vec<&str> {
        self.redis_url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect()
    }

    /// The rules of the `[cluster]` section (when it is enabled).
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.command_timeout.is_zero() {
            return Err("cluster.command_timeout must be greater than 0".into());
        }
        if self.presence_interval.is_zero() {
            return Err("cluster.presence_interval must be greater than 0".into());
        }
        if self.redis_mode == RedisMode::Standalone && self.redis_urls().len() > 1 {
            return Err(
                "cluster.redis_url lists several URLs: set cluster.redis_mode to \
                 \"cluster\" (Redis Cluster seeds) or \"sentinel\" (sentinels)"
                    .into(),
            );
        }
        if self.redis_mode == RedisMode::Sentinel && self.sentinel_master.trim().is_empty() {
            return Err("cluster.redis_mode = \"sentinel\" needs cluster.sentinel_master".into());
        }
        if self.key_prefix.contains(['{', '}']) {
            return Err(
                "cluster.key_prefix must not contain { or } (they make Redis hash tags)".into(),
            );
        }
        if self.publish_wait_replicas > 0
            && (self.publish_wait_timeout.is_zero()
                || self.publish_wait_timeout >= self.command_timeout)
        {
            return Err(
                "cluster.publish_wait_timeout must be greater than 0 and shorter than \
                 cluster.command_timeout"
                    .into(),
            );
        }
        Ok(())
    }
}

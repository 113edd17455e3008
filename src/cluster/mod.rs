//! Cluster mode: many broker nodes, one set of channels, through Redis.
//!
//! A node started with a Redis URL hands three jobs to Redis and keeps the
//! rest. Redis is the *log* (per channel an epoch, a seq counter and a Redis
//! Stream with the retained events: [`log`]), the *bus* (one pub/sub
//! connection per node carries every event to every node: [`bus`]) and the
//! *directory* (subscriber counts per node and the pulse book: [`presence`]).
//! The channel actors stay the local fan-out point: they receive bus events
//! through the broker, deliver them in seq order, and read the log to
//! replay and to fill any hole in what the bus brought.
//!
//! [`Cluster`] is the node's handle on all of this, cheap to clone. The
//! broker core sees it only through the traits it defines: the shared log
//! ([`SharedLog`](crate::broker::log::SharedLog), in `log`) and the other
//! nodes ([`Peers`](crate::broker::peers::Peers), in `presence`); its
//! [`ReadinessCheck`] is the node's readiness.

pub mod bus;
pub mod log;
pub mod presence;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::task::AbortHandle;

use crate::{
    broker::{Broker, BrokerError, log::LogError},
    config::{ClusterSettings, HistorySettings, PulseSettings},
    names::ChannelName,
    readiness::ReadinessCheck,
};

/// Why Redis could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Redis is unreachable: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis answered something unexpected: {0}")]
    Protocol(String),
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
}

impl From<ClusterError> for LogError {
    fn from(err: ClusterError) -> Self {
        LogError(err.to_string())
    }
}

impl From<ClusterError> for BrokerError {
    /// Redis failed: the request cannot be served now (503, Retry-After).
    fn from(err: ClusterError) -> Self {
        BrokerError::StoreUnavailable(err.to_string())
    }
}

/// The node's handle on the cluster (see the module docs).
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.inner.node_id)
            .field("connected", &self.is_connected())
            .finish()
    }
}

struct Inner {
    client: redis::Client,
    /// One multiplexed connection for every command of this node; it
    /// reconnects by itself after a failure.
    conn: ConnectionManager,
    keys: Keys,
    /// Names this node in the presence directory.
    node_id: String,
    command_timeout: Duration,
    max_reconnect_delay: Duration,
    presence_interval: Duration,
    history: HistorySettings,
    pulses: PulseSettings,
    /// The bus connection is subscribed (set and cleared by [`bus`]).
    bus_up: AtomicBool,
    /// The last command failed (cleared by the next one that succeeds).
    commands_failing: AtomicBool,
    /// The bus and presence tasks, stopped by [`Cluster::shutdown`].
    tasks: Mutex<Vec<AbortHandle>>,
}

/// Redis key names. A channel's keys share the hash tag `{<channel>}`, so
/// the publish script's keys stay in one slot.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn epoch(&self, channel: &ChannelName) -> String {
        format!("{}{{{channel}}}:epoch", self.prefix)
    }
    pub fn seq(&self, channel: &ChannelName) -> String {
        format!("{}{{{channel}}}:seq", self.prefix)
    }
    pub fn stream(&self, channel: &ChannelName) -> String {
        format!("{}{{{channel}}}:events", self.prefix)
    }
    /// The one pub/sub channel that carries every event.
    pub fn bus(&self) -> String {
        format!("{}bus", self.prefix)
    }
    /// Sorted set of nodes by the time their presence entry expires.
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }
    /// Hash channel → local subscriber count of one node.
    pub fn node_subscribers(&self, node: &str) -> String {
        format!("{}node:{node}:subscribers", self.prefix)
    }
    /// Sorted set of pulse clients by last pulse (ms since the Unix epoch).
    pub fn pulse_clients(&self) -> String {
        format!("{}pulse:clients", self.prefix)
    }
    /// List of one client's pulse times, newest first.
    pub fn pulse_times(&self, client: &str) -> String {
        format!("{}pulse:{client}:times", self.prefix)
    }
    /// One client's pulse count.
    pub fn pulse_count(&self, client: &str) -> String {
        format!("{}pulse:{client}:count", self.prefix)
    }
}

impl Cluster {
    /// Prepares the connection to Redis without waiting for it: a node
    /// whose Redis is down still starts, reports not ready, and connects
    /// once Redis answers.
    pub fn new(
        settings: &ClusterSettings,
        history: &HistorySettings,
        pulses: &PulseSettings,
    ) -> Result<Self, ClusterError> {
        let info = redis::IntoConnectionInfo::into_connection_info(settings.redis_url.trim())
            .map_err(|err| ClusterError::InvalidUrl(err.to_string()))?;
        // Commands are pipelined on one socket: without TCP_NODELAY, Nagle
        // holds small writes back until an ACK (tens of ms of tail latency).
        let tcp = info.tcp_settings().clone().set_nodelay(true);
        let client = redis::Client::open(info.set_tcp_settings(tcp))
            .map_err(|err| ClusterError::InvalidUrl(err.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.command_timeout))
            .set_response_timeout(Some(settings.command_timeout))
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(settings.max_reconnect_delay)
            // Each failed command triggers a new attempt; a request must not
            // wait through a long series of retries before it can answer 503.
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                conn,
                keys: Keys {
                    prefix: settings.key_prefix.clone(),
                },
                node_id: node_id(),
                command_timeout: settings.command_timeout,
                max_reconnect_delay: settings.max_reconnect_delay,
                presence_interval: settings.presence_interval,
                history: history.clone(),
                pulses: pulses.clone(),
                bus_up: AtomicBool::new(false),
                commands_failing: AtomicBool::new(false),
                tasks: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Starts the bus (events from Redis to the `broker`) and the presence
    /// refresh. Must run inside the actix system.
    pub fn start(&self, broker: Broker) {
        let bus = actix::spawn(bus::run(self.clone(), broker.clone()));
        let presence = actix::spawn(presence::run(self.clone(), broker));
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.push(bus.abort_handle());
        tasks.push(presence.abort_handle());
    }

    /// Stops the bus and presence tasks (the node leaves the cluster).
    pub fn shutdown(&self) {
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
        }
        self.inner.bus_up.store(false, Ordering::Release);
    }

    /// Readiness: the bus is subscribed and the last command succeeded. A
    /// node that is not connected answers publishes with 503 and does not
    /// receive events; its open streams stay open and catch up afterwards.
    pub fn is_connected(&self) -> bool {
        self.inner.bus_up.load(Ordering::Acquire)
            && !self.inner.commands_failing.load(Ordering::Acquire)
    }

    /// Whether the bus connection is subscribed (events are arriving).
    pub fn bus_is_up(&self) -> bool {
        self.inner.bus_up.load(Ordering::Acquire)
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// Runs one command future with the configured timeout and records the
    /// outcome for [`Self::is_connected`].
    async fn run<T>(
        &self,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ClusterError> {
        let outcome = match tokio::time::timeout(self.inner.command_timeout, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(ClusterError::Redis(err)),
            Err(_) => Err(ClusterError::Timeout(self.inner.command_timeout)),
        };
        self.inner
            .commands_failing
            .store(outcome.is_err(), Ordering::Release);
        outcome
    }

    /// A connection for one command (clones share the multiplexed socket).
    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }
}

/// `GET /readyz`: not ready while Redis is out of reach (publishes would
/// answer 503 and no events arrive).
impl ReadinessCheck for Cluster {
    fn name(&self) -> &'static str {
        "cluster"
    }

    fn check(&self) -> futures_util::future::BoxFuture<'static, Result<(), String>> {
        let outcome = match (self.bus_is_up(), self.is_connected()) {
            (_, true) => Ok(()),
            (false, _) => Err("the bus connection to Redis is down".into()),
            (true, false) => Err("the last Redis command failed".into()),
        };
        Box::pin(std::future::ready(outcome))
    }
}

/// A node id unique enough for a directory entry: pid and start time.
fn node_id() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("{:x}-{:x}", std::process::id(), micros)
}

/// The URL without its password, for logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Passwords never reach the logs.
    #[test]
    fn redacts_password() {
        assert_eq!(
            redacted("redis://:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
    }
}

//! Cluster mode: many broker nodes, one set of channels, through Redis.
//!
//! A node started with a Redis URL hands three jobs to Redis and keeps the
//! rest. Redis is the *log* (per channel an epoch, a seq counter and a Redis
//! Stream with the retained events: [`log`]), the *bus* (each channel's
//! events reach the nodes that have subscribers on it: [`bus`]) and the
//! *presence* (subscriber counts per node and the pulse book: [`presence`]).
//! The channel actors stay the local fan-out point: they receive bus events
//! through the broker, deliver them in seq order, and read the log to
//! replay and to fill any hole in what the bus brought.
//!
//! Redis also carries revocations ([`revoke`]): a user's streams end on
//! every node, each node reporting what it ended; and channels' members
//! ([`members`]): which users each node has on a channel, listed by
//! `GET /channels/{channel}/presence`, their joins and leaves told on the
//! channel's bus; and, with the occupancy webhooks on, which channel
//! transitions they announce, decided once for the cluster and queued per
//! channel ([`occupancy`]).
//!
//! Redis is one `redis-server`, a Redis Cluster or a primary watched by
//! Sentinel (`cluster.redis_mode`; [`connections`] makes the connections, [`keys`]
//! names the keys so that each channel stays in one slot, `script` runs
//! every Lua script the same way).
//!
//! [`Cluster`] is the node's handle on all of this, cheap to clone. The
//! broker core sees it only through the traits it defines: the shared log
//! ([`SharedLog`](crate::broker::log::SharedLog), in `log`) and the other
//! nodes ([`Peers`](crate::broker::peers::Peers), in `presence`) and
//! presence's [`PresenceShare`] (here, filling [`members`]) and the
//! webhooks' [`SharedOccupancy`] (here, with [`occupancy`]'s scripts); its
//! [`ReadinessCheck`] is the node's readiness.

pub mod bus;
pub mod connections;
pub mod keys;
pub mod log;
pub mod members;
pub mod occupancy;
pub mod presence;
pub mod revoke;
mod script;

use std::{
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::future::BoxFuture;
use tokio::task::AbortHandle;

use self::{
    bus::{Bus, single::Server},
    connections::{BusSource, Commands},
    keys::Keys,
};
use crate::{
    broker::{
        Broker, BrokerError,
        event::now_ms,
        log::LogError,
        occupancy::{Notice, OccupancyChange, Recorded, SharedOccupancy},
        presence::{MemberChange, PresenceShare},
    },
    config::{ClusterSettings, HistorySettings, PublishSettings, PulseSettings},
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
    #[error("cluster bus: {0}")]
    Bus(String),
    #[error("not replicated: {0}")]
    NotReplicated(String),
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
    /// The connection every command goes through; clones share it.
    commands: Commands,
    /// Where the bus connects; taken by [`Cluster::start`].
    bus_source: Mutex<Option<BusSource>>,
    /// This node's subscriptions (see [`bus`]).
    bus: Bus,
    keys: Keys,
    /// Names this node in the presence keys.
    node_id: String,
    command_timeout: Duration,
    max_reconnect_delay: Duration,
    presence_interval: Duration,
    /// Replicas a publish waits for (`WAIT`), and how long.
    publish_wait_replicas: u32,
    publish_wait_timeout: Duration,
    history: HistorySettings,
    /// How long the publish script keeps an idempotency key
    /// (`publish.idempotency_window`, its TTL).
    idempotency_window: Duration,
    pulses: PulseSettings,
    /// The last command failed (cleared by the next one that succeeds).
    commands_failing: AtomicBool,
    /// The bus, presence and members tasks, stopped by [`Cluster::shutdown`].
    tasks: Mutex<Vec<AbortHandle>>,
    /// This node's revocations waiting for the other nodes' reports.
    revocations: revoke::Pending,
    /// This node's channels' members, to write to Redis (see [`members`]).
    members: members::MemberBook,
    /// Set when the occupancy webhooks are on (see [`occupancy`]): the
    /// presence refresh then also refreshes this node's occupancy entries.
    occupancy: OnceLock<occupancy::Tracking>,
}

impl Cluster {
    /// Prepares the connections to Redis without waiting for them: a node
    /// whose Redis is down still starts, reports not ready, and connects
    /// once Redis answers.
    pub fn new(
        settings: &ClusterSettings,
        history: &HistorySettings,
        publish: &PublishSettings,
        pulses: &PulseSettings,
    ) -> Result<Self, ClusterError> {
        let connections = connections::connect(settings)?;
        let keys = Keys::new(&settings.key_prefix);
        let node_id = node_id();
        Ok(Self {
            inner: Arc::new(Inner {
                commands: connections.commands,
                bus_source: Mutex::new(Some(connections.bus)),
                bus: Bus::new(keys.clone(), settings.command_timeout, node_id.clone()),
                keys,
                node_id,
                command_timeout: settings.command_timeout,
                max_reconnect_delay: settings.max_reconnect_delay,
                presence_interval: settings.presence_interval,
                publish_wait_replicas: settings.publish_wait_replicas,
                publish_wait_timeout: settings.publish_wait_timeout,
                history: history.clone(),
                idempotency_window: publish.idempotency_window,
                pulses: pulses.clone(),
                commands_failing: AtomicBool::new(false),
                tasks: Mutex::new(Vec::new()),
                revocations: revoke::Pending::default(),
                members: members::MemberBook::default(),
                occupancy: OnceLock::new(),
            }),
        })
    }

    /// Starts the bus (events from Redis to the `broker`) and the presence
    /// refresh. Must run inside the actix system, once.
    pub fn start(&self, broker: Broker) {
        let source = self
            .inner
            .bus_source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut tasks = Vec::new();
        if let Some(source) = source {
            let (cluster, bus_broker) = (self.clone(), broker.clone());
            let bus = match source {
                BusSource::Direct(client) => actix::spawn(bus::single::run(
                    cluster,
                    bus_broker,
                    Server::Direct(client),
                )),
                BusSource::Sentinel(link) => actix::spawn(bus::single::run(
                    cluster,
                    bus_broker,
                    Server::Sentinel(link),
                )),
                BusSource::Cluster(client) => {
                    actix::spawn(bus::sharded::run(cluster, bus_broker, *client))
                }
            };
            tasks.push(bus.abort_handle());
        }
        if let Some(control) = self.inner.bus.take_control() {
            let task = actix::spawn(revoke::run(self.clone(), broker.clone(), control));
            tasks.push(task.abort_handle());
            // Followed for as long as the node runs: the wish stands whether
            // or not it is confirmed in time (revocations wait for it).
            drop(self.inner.bus.follow(&keys::control_channel()));
        }
        tasks.push(actix::spawn(presence::run(self.clone(), broker)).abort_handle());
        tasks.push(actix::spawn(members::run(self.clone())).abort_handle());
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tasks);
    }

    /// Stops the bus and presence tasks (the node leaves the cluster).
    pub fn shutdown(&self) {
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
        }
        self.inner.bus.down();
    }

    /// Readiness: the bus is subscribed and the last command succeeded. A
    /// node that is not connected answers publishes with 503 and does not
    /// receive events; its open streams stay open and catch up afterwards.
    pub fn is_connected(&self) -> bool {
        self.bus_is_up() && !self.inner.commands_failing.load(Ordering::Acquire)
    }

    /// Whether the bus is connected (events are arriving).
    pub fn bus_is_up(&self) -> bool {
        self.inner.bus.is_up()
    }

    /// This node's subscriptions.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
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
            Err(_) => {
                self.inner.commands.timed_out();
                Err(ClusterError::Timeout(self.inner.command_timeout))
            }
        };
        self.inner
            .commands_failing
            .store(outcome.is_err(), Ordering::Release);
        outcome
    }

    /// A connection for one command (clones share the connections).
    fn conn(&self) -> Commands {
        self.inner.commands.clone()
    }

    /// The pub/sub command that reaches `key`'s followers: `SPUBLISH` on a
    /// Redis Cluster (only the key's shard carries it), `PUBLISH` otherwise.
    fn publish_command(&self) -> &'static str {
        if self.inner.commands.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Publishes `message` as JSON on the pub/sub channel `key`; answers
    /// how many subscribers (nodes) it reached.
    async fn publish_json(
        &self,
        key: String,
        message: &impl serde::Serialize,
    ) -> Result<usize, ClusterError> {
        let payload =
            serde_json::to_string(message).map_err(|e| ClusterError::Protocol(e.to_string()))?;
        let mut conn = self.conn();
        self.run(
            redis::cmd(self.publish_command())
                .arg(key)
                .arg(payload)
                .query_async(&mut conn),
        )
        .await
    }

    /// The other nodes that are alive now (their presence entry has not
    /// expired).
    async fn other_live_nodes(&self) -> Result<Vec<String>, ClusterError> {
        let mut conn = self.conn();
        let nodes: Vec<String> = self
            .run(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(self.keys().nodes())
                    .arg(now_ms())
                    .arg("+inf")
                    .query_async(&mut conn),
            )
            .await?;
        Ok(nodes
            .into_iter()
            .filter(|node| node != self.node_id())
            .collect())
    }
}

/// Every channel actor tells this node's members book of its users'
/// changes, without waiting (see [`members`]).
impl PresenceShare for Cluster {
    fn changed(&self, channel: &ChannelName, change: &MemberChange) {
        self.inner.members.note(channel, change);
    }
}

impl Cluster {
    /// Turns occupancy tracking on (the occupancy webhooks, see
    /// [`occupancy`]), before [`Self::start`].
    pub fn track_occupancy(&self, tracking: occupancy::Tracking) {
        let _ = self.inner.occupancy.set(tracking);
    }

    /// The occupancy tracking, if on; a Redis error for a caller that
    /// should not have asked.
    fn tracking(&self) -> Result<&occupancy::Tracking, ClusterError> {
        self.inner
            .occupancy
            .get()
            .ok_or_else(|| ClusterError::Protocol("occupancy tracking is off".into()))
    }
}

/// The occupancy webhooks' decisions, in Redis (see [`occupancy`]).
impl SharedOccupancy for Cluster {
    fn record(
        &self,
        channel: &ChannelName,
        change: &OccupancyChange,
    ) -> BoxFuture<'static, Result<Recorded, BrokerError>> {
        let (cluster, channel, change) = (self.clone(), channel.clone(), change.clone());
        Box::pin(async move {
            let tracking = cluster.tracking()?;
            Ok(occupancy::record(&cluster, tracking, &channel, &change, now_ms()).await?)
        })
    }

    fn due(&self, max: usize) -> BoxFuture<'static, Result<Vec<ChannelName>, BrokerError>> {
        let cluster = self.clone();
        Box::pin(async move { Ok(occupancy::due(&cluster, now_ms(), max).await?) })
    }

    fn lease(&self, channel: &ChannelName) -> BoxFuture<'static, Result<bool, BrokerError>> {
        let (cluster, channel) = (self.clone(), channel.clone());
        Box::pin(async move { Ok(occupancy::lease(&cluster, &channel).await?) })
    }

    fn notices(
        &self,
        channel: &ChannelName,
        max: usize,
    ) -> BoxFuture<'static, Result<Vec<Notice>, BrokerError>> {
        let (cluster, channel) = (self.clone(), channel.clone());
        Box::pin(async move {
            let tracking = cluster.tracking()?;
            Ok(occupancy::notices(&cluster, tracking, &channel, now_ms(), max).await?)
        })
    }

    fn done(
        &self,
        channel: &ChannelName,
        key: &str,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        let (cluster, channel, key) = (self.clone(), channel.clone(), key.to_owned());
        Box::pin(async move { Ok(occupancy::done(&cluster, &channel, &key).await?) })
    }

    fn release(&self, channel: &ChannelName) -> BoxFuture<'static, Result<(), BrokerError>> {
        let (cluster, channel) = (self.clone(), channel.clone());
        Box::pin(async move {
            let tracking = cluster.tracking()?;
            Ok(occupancy::release(&cluster, tracking, &channel, now_ms()).await?)
        })
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
            (false, _) => Err("the bus connection to Redis (or to a shard) is down".into()),
            (true, false) => Err("the last Redis command failed".into()),
        };
        Box::pin(std::future::ready(outcome))
    }
}

/// A node id unique enough for a presence entry: pid and start time.
fn node_id() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("{:x}-{:x}", std::process::id(), micros)
}

/// The URLs without their passwords, for logs.
pub fn redacted(urls: &str) -> String {
    let redact = |url: &str| match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    };
    urls.split(',')
        .map(|url| redact(url.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

impl Cluster {
    /// How long what a node writes for its subscribers (its counts, its
    /// channels' members and occupancy entries, a webhook lease) lasts
    /// without a refresh: three `cluster.presence_interval`s, at least a
    /// second, so a node that dies stops counting soon and one that is only
    /// slow does not.
    pub(crate) fn entry_lifetime_ms(&self) -> u64 {
        script::millis(self.inner.presence_interval.saturating_mul(3)).max(1000)
    }
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
        assert_eq!(
            redacted("redis://:a@h1:7000, redis://:b@h2:7000"),
            "redis://***@h1:7000,redis://***@h2:7000"
        );
    }
}

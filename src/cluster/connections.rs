//! How this node reaches Redis in each `cluster.redis_mode`: the connection
//! every command goes through ([`Commands`]) and where the bus connects
//! ([`BusSource`]). The redis crate does the hard parts: the connection
//! manager reconnects to one server, the cluster client routes by slot and
//! follows `MOVED`/`ASK` and failovers, the sentinel client finds the
//! primary. Only the sentinel case needs a little of our own: forgetting a
//! primary that stopped being one, so the next command asks again.

use std::sync::{Arc, Mutex};

use redis::{
    AsyncConnectionConfig, Client, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline,
    ProtocolVersion, RedisFuture, ServerErrorKind, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig},
    cluster_async::ClusterConnection,
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
};

use super::ClusterError;
use crate::config::{ClusterSettings, RedisMode};

/// Attempts the cluster client makes for one command (a redirect, a
/// `TRYAGAIN` during a slot migration, a reconnect) before it gives up; the
/// command timeout bounds the whole anyway.
const CLUSTER_RETRIES: u32 = 5;

/// The connection commands go through; cheap to clone (clones share it).
#[derive(Clone)]
pub enum Commands {
    /// One `redis-server`: one multiplexed connection that reconnects by itself.
    Direct(ConnectionManager),
    /// A Redis Cluster: a connection per primary, routed by slot.
    Cluster(ClusterConnection),
    /// The primary the sentinels name, asked again after a failure.
    Sentinel(Arc<SentinelLink>),
}

/// Where the bus connects (its connections use RESP3, whose pushes carry
/// messages and subscription changes on a connection that also answers
/// commands).
pub enum BusSource {
    /// One server: a pub/sub connection to it.
    Direct(Client),
    /// A Redis Cluster: sharded pub/sub, each subscription on its slot's shard.
    Cluster(Box<ClusterClient>),
    /// The primary the sentinels name at each (re)connection.
    Sentinel(Arc<SentinelLink>),
}

/// Both, as [`connect`] makes them.
pub struct Link {
    pub commands: Commands,
    pub bus: BusSource,
}

/// Prepares the connections for `settings` without waiting for Redis: a
/// node whose Redis is down still starts, reports not ready, and connects
/// once Redis answers.
pub fn connect(settings: &ClusterSettings) -> Result<Link, ClusterError> {
    let seeds = settings
        .redis_urls()
        .into_iter()
        .map(seed)
        .collect::<Result<Vec<_>, _>>()?;
    let invalid = |err: redis::RedisError| ClusterError::InvalidUrl(err.to_string());
    let timeout = settings.command_timeout;
    match settings.redis_mode {
        RedisMode::Standalone => {
            let info = seeds
                .into_iter()
                .next()
                .ok_or_else(|| ClusterError::InvalidUrl("no Redis URL".into()))?;
            let client = Client::open(info.clone()).map_err(invalid)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_min_delay(std::time::Duration::from_millis(100))
                .set_max_delay(settings.max_reconnect_delay)
                // Each failed command triggers a new attempt; a request must
                // not wait through a long series of retries before it can
                // answer 503.
                .set_number_of_retries(1);
            let commands = ConnectionManager::new_lazy_with_config(client, config)?;
            Ok(Link {
                commands: Commands::Direct(commands),
                bus: BusSource::Direct(Client::open(resp3(info)).map_err(invalid)?),
            })
        }
        RedisMode::Cluster => {
            let builder = |protocol| {
                ClusterClientBuilder::new(seeds.clone())
                    .use_protocol(protocol)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(CLUSTER_RETRIES)
            };
            let client = builder(ProtocolVersion::RESP2).build().map_err(invalid)?;
            let config = ClusterConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            Ok(Link {
                commands: Commands::Cluster(
                    client.get_pending_async_connection_with_config(config),
                ),
                bus: BusSource::Cluster(Box::new(
                    builder(ProtocolVersion::RESP3).build().map_err(invalid)?,
                )),
            })
        }
        RedisMode::Sentinel => {
            let link = Arc::new(SentinelLink::new(
                seeds,
                settings.sentinel_master.trim(),
                timeout,
            )?);
            Ok(Link {
                commands: Commands::Sentinel(Arc::clone(&link)),
                bus: BusSource::Sentinel(link),
            })
        }
    }
}

/// One seed URL as connection settings, with `TCP_NODELAY`: commands are
/// pipelined on one socket, and without it Nagle holds small writes back
/// until an ACK (tens of ms of tail latency).
fn seed(url: &str) -> Result<ConnectionInfo, ClusterError> {
    let info = url
        .into_connection_info()
        .map_err(|err| ClusterError::InvalidUrl(err.to_string()))?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    Ok(info.set_tcp_settings(tcp))
}

/// The same server, spoken to in RESP3.
fn resp3(info: ConnectionInfo) -> ConnectionInfo {
    let redis = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    info.set_redis_settings(redis)
}

/// A client of the same server that speaks RESP3 (the bus's pushes).
pub fn resp3_client(client: &Client) -> redis::RedisResult<Client> {
    Client::open(resp3(client.get_connection_info().clone()))
}

impl Commands {
    /// A command timed out: with Sentinel, the primary may be gone without
    /// closing its socket, so the next command asks the sentinels again.
    pub fn timed_out(&self) {
        if let Self::Sentinel(link) = self {
            link.forget();
        }
    }

    /// Whether this is a Redis Cluster (pipelines must stay in one slot).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Direct(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
            Self::Sentinel(link) => Box::pin(async move {
                let mut conn = link.primary().await?;
                link.check(conn.req_packed_command(cmd).await)
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Direct(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Sentinel(link) => Box::pin(async move {
                let mut conn = link.primary().await?;
                link.check(conn.req_packed_commands(cmd, offset, count).await)
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Direct(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
            Self::Sentinel(_) => 0,
        }
    }
}

/// The sentinels, and a connection to the primary they named last.
pub struct SentinelLink {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    /// The current primary's connection; `None` after a failure.
    primary: Mutex<Option<MultiplexedConnection>>,
    config: AsyncConnectionConfig,
}

impl SentinelLink {
    /// The sentinels at `seeds`, watching the primary named `master`. The
    /// first seed's credentials and database are used for the primary too.
    fn new(
        seeds: Vec<ConnectionInfo>,
        master: &str,
        timeout: std::time::Duration,
    ) -> Result<Self, ClusterError> {
        let node = seeds
            .first()
            .map(|info| {
                SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(info.redis_settings().clone())
                    .set_tcp_settings(info.tcp_settings().clone())
            })
            .ok_or_else(|| ClusterError::InvalidUrl("no sentinel URL".into()))?;
        let sentinels = SentinelClient::build(
            seeds,
            master.to_owned(),
            Some(node),
            SentinelServerType::Master,
        )
        .map_err(|err| ClusterError::InvalidUrl(err.to_string()))?;
        Ok(Self {
            sentinels: tokio::sync::Mutex::new(sentinels),
            primary: Mutex::new(None),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout)),
        })
    }

    /// The primary as the sentinels name it now (they check its role).
    pub async fn primary_client(&self) -> redis::RedisResult<Client> {
        self.sentinels.lock().await.async_get_client().await
    }

    /// The connection to the current primary, made when there is none.
    async fn primary(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let mut sentinels = self.sentinels.lock().await;
        // Another command may have connected while this one waited.
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let client = sentinels.async_get_client().await?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        *self.primary.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.primary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn forget(&self) {
        self.primary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Forgets the primary when an answer says it is gone or no longer one.
    fn check<T>(&self, outcome: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(err) = &outcome
            && (err.is_io_error()
                || err.is_connection_dropped()
                || err.is_connection_refusal()
                || err.is_timeout()
                || matches!(
                    err.kind(),
                    ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
                ))
        {
            self.forget();
        }
        outcome
    }
}

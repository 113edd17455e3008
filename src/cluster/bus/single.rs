//! The bus on one server (`redis_mode` standalone or sentinel): one RESP3
//! connection that `SUBSCRIBE`s to the followed channels' pub/sub channels.
//!
//! When the connection drops, a ping goes unanswered, or (Sentinel) the
//! server is no longer the primary, the node marks the bus down and
//! reconnects with a wait that doubles from 100 ms up to
//! `cluster.max_reconnect_delay`; with Sentinel each connection first asks
//! the sentinels where the primary is. On the new connection every followed
//! channel is subscribed again, and each confirmation makes its channel read
//! what it missed from the log.

use std::sync::Arc;

use log::{info, warn};
use redis::{AsyncConnectionConfig, Client, PushInfo, Value, aio::MultiplexedConnection};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{Bus, MIN_RETRY_DELAY, Pushed};
use crate::{
    broker::Broker,
    cluster::{
        Cluster, ClusterError,
        connections::{SentinelLink, resp3_client},
    },
};

/// Where each connection goes.
pub enum Server {
    Direct(Client),
    Sentinel(Arc<SentinelLink>),
}

/// Connects, forwards, reconnects, until the task is aborted.
pub async fn run(cluster: Cluster, broker: Broker, server: Server) {
    let bus = cluster.bus();
    let max_delay = cluster.inner.max_reconnect_delay.max(MIN_RETRY_DELAY);
    let mut delay = MIN_RETRY_DELAY;
    let mut attempts = 0u32;
    loop {
        match session(&cluster, &broker, &server).await {
            Ok(()) => {
                delay = MIN_RETRY_DELAY;
                attempts = 0;
                warn!(
                    "cluster bus lost node={} retry_in={delay:?}",
                    cluster.node_id()
                );
            }
            Err(err) => {
                attempts += 1;
                // One line per outage and then every tenth try, not one per try.
                if attempts == 1 || attempts.is_multiple_of(10) {
                    warn!(
                        "cluster bus unreachable node={} attempts={attempts} retry_in={delay:?} error={err}",
                        cluster.node_id()
                    );
                }
            }
        }
        bus.lost();
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(max_delay);
    }
}

/// One connection's life. `Ok` when a connection was made and then lost,
/// `Err` when none could be made.
async fn session(cluster: &Cluster, broker: &Broker, server: &Server) -> Result<(), ClusterError> {
    let timeout = cluster.inner.command_timeout;
    let bus = cluster.bus();
    let (tx, mut pushes) = tokio::sync::mpsc::unbounded_channel();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_push_sender(tx);
    let connect = async {
        let client = match server {
            Server::Direct(client) => client.clone(),
            Server::Sentinel(link) => resp3_client(&link.primary_client().await?)?,
        };
        let address = client.get_connection_info().addr().to_string();
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok::<_, redis::RedisError>((conn, address))
    };
    let (conn, address) = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| ClusterError::Timeout(timeout))??;
    bus.connected();
    info!(
        "cluster bus connected node={} redis={address}",
        cluster.node_id()
    );
    let sentinel = matches!(server, Server::Sentinel(_));
    tokio::select! {
        () = forward(bus, broker, &mut pushes) => Ok(()),
        outcome = subscribe(bus, conn.clone()) => outcome,
        () = keep_alive(cluster, conn, sentinel) => Ok(()),
    }
}

/// Hands pushes to the bus until the connection closes.
async fn forward(bus: &Bus, broker: &Broker, pushes: &mut UnboundedReceiver<PushInfo>) {
    while let Some(push) = pushes.recv().await {
        if bus.on_push(push, broker) == Pushed::Disconnected {
            return;
        }
    }
}

/// Sends the wanted subscription changes as they come, in batches (one
/// `SUBSCRIBE` names many channels). A failure ends the connection.
async fn subscribe(bus: &Bus, mut conn: MultiplexedConnection) -> Result<(), ClusterError> {
    loop {
        let (add, drop) = bus.changes();
        if add.is_empty() && drop.is_empty() {
            bus.changed().await;
            continue;
        }
        if !add.is_empty()
            && let Err(err) = conn.subscribe(bus.names(&add)).await
        {
            bus.failed(&add);
            return Err(err.into());
        }
        if !drop.is_empty() {
            conn.unsubscribe(bus.names(&drop)).await?;
        }
    }
}

/// Pings every `presence_interval`: a Redis that stopped answering does not
/// close the socket. With Sentinel, also asks the server's role: a primary
/// that was demoted keeps its connections, but its replacement has the
/// channels' publishes now.
async fn keep_alive(cluster: &Cluster, mut conn: MultiplexedConnection, sentinel: bool) {
    let timeout = cluster.inner.command_timeout;
    let mut tick = tokio::time::interval(cluster.inner.presence_interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        let command = redis::cmd(if sentinel { "ROLE" } else { "PING" });
        let answer = tokio::time::timeout(timeout, command.query_async::<Value>(&mut conn));
        match answer.await {
            Ok(Ok(value)) if !sentinel || is_primary(&value) => {}
            Ok(Ok(_)) => {
                info!(
                    "cluster bus server is no longer the primary node={}",
                    cluster.node_id()
                );
                return;
            }
            _ => return,
        }
    }
}

/// `ROLE` answered `master …`.
fn is_primary(role: &Value) -> bool {
    match role {
        Value::Array(parts) => matches!(
            parts.first(),
            Some(Value::BulkString(role)) if role == b"master"
        ),
        _ => false,
    }
}

//! The bus on a Redis Cluster: sharded pub/sub (`SSUBSCRIBE`, Redis ≥ 7)
//! through the redis crate's cluster connection, which keeps a connection to
//! each primary, sends each subscription to the shard that owns its slot,
//! follows `MOVED` and a changed topology, and subscribes again after it
//! reconnects to a shard.
//!
//! What this module adds:
//! - a subscription Redis ends itself (its slot migrated to another shard)
//!   is made again, where the slot is now; its confirmation makes the
//!   channel read what it missed meanwhile (see [`Bus::on_push`]);
//! - every `presence_interval` a `PING` to every primary; while one fails
//!   (or a shard's connection closed), the bus counts as down (readiness),
//!   the checks come faster (100 ms doubling up to
//!   `cluster.max_reconnect_delay`), and they let the client find the new
//!   topology (a replica promoted after its primary died). When every
//!   primary answers again, every followed channel is subscribed again and
//!   catches up.

use futures_util::{StreamExt, stream};
use log::{info, warn};
use redis::{
    PushInfo,
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
    cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo},
};
use tokio::sync::{Notify, mpsc::UnboundedReceiver};

use super::{Bus, MIN_RETRY_DELAY, Pushed};
use crate::{broker::Broker, cluster::Cluster, names::ChannelName};

/// Subscriptions sent at once (each is one command to its shard; after a
/// reconnection every followed channel is subscribed again).
const SUBSCRIBE_CONCURRENCY: usize = 64;

/// Runs the bus until the task is aborted.
pub async fn run(cluster: Cluster, broker: Broker, client: ClusterClient) {
    let timeout = cluster.inner.command_timeout;
    let (tx, mut pushes) = tokio::sync::mpsc::unbounded_channel();
    let config = ClusterConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
        .set_push_sender(tx);
    let conn = client.get_pending_async_connection_with_config(config);
    let recheck = Notify::new();
    tokio::join!(
        forward(cluster.bus(), &broker, &mut pushes, &recheck),
        subscribe(&cluster, conn.clone()),
        watch(&cluster, conn, &recheck),
    );
}

/// Hands pushes to the bus; a closed shard connection triggers a check.
async fn forward(
    bus: &Bus,
    broker: &Broker,
    pushes: &mut UnboundedReceiver<PushInfo>,
    recheck: &Notify,
) {
    while let Some(push) = pushes.recv().await {
        if bus.on_push(push, broker) == Pushed::Disconnected {
            bus.down();
            recheck.notify_one();
        }
    }
}

/// Sends the wanted subscription changes as they come; failed ones are
/// tried again after a wait.
async fn subscribe(cluster: &Cluster, conn: ClusterConnection) {
    let bus = cluster.bus();
    let max_delay = cluster.inner.max_reconnect_delay.max(MIN_RETRY_DELAY);
    let mut delay = MIN_RETRY_DELAY;
    loop {
        let (add, drop) = bus.changes();
        if add.is_empty() && drop.is_empty() {
            bus.changed().await;
            continue;
        }
        let failed: Vec<(ChannelName, redis::RedisError)> = stream::iter(add)
            .map(|channel| {
                let (mut conn, name) = (conn.clone(), bus.names(std::slice::from_ref(&channel)));
                async move { conn.ssubscribe(name).await.err().map(|err| (channel, err)) }
            })
            .buffer_unordered(SUBSCRIBE_CONCURRENCY)
            .filter_map(std::future::ready)
            .collect()
            .await;
        for channel in drop {
            // A shard that cannot be reached has no subscription to drop.
            let _ = conn.clone().sunsubscribe(bus.names(&[channel])).await;
        }
        let Some((_, err)) = failed.first() else {
            delay = MIN_RETRY_DELAY;
            continue;
        };
        warn!(
            "cluster bus subscriptions failed node={} channels={} retry_in={delay:?} error={err}",
            cluster.node_id(),
            failed.len()
        );
        let channels: Vec<ChannelName> = failed.into_iter().map(|(channel, _)| channel).collect();
        bus.failed(&channels);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(max_delay);
    }
}

/// Pings every primary, and marks the bus up or down (see the module docs).
async fn watch(cluster: &Cluster, mut conn: ClusterConnection, recheck: &Notify) {
    let bus = cluster.bus();
    let timeout = cluster.inner.command_timeout;
    let max_delay = cluster.inner.max_reconnect_delay.max(MIN_RETRY_DELAY);
    let mut delay = MIN_RETRY_DELAY;
    let all_primaries = || {
        RoutingInfo::MultiNode((
            MultipleNodeRoutingInfo::AllMasters,
            Some(ResponsePolicy::AllSucceeded),
        ))
    };
    loop {
        let ping = conn.route_command(redis::cmd("PING"), all_primaries());
        let answered = matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)));
        let wait = if answered {
            if !bus.is_up() {
                info!(
                    "cluster bus connected node={} shards=all",
                    cluster.node_id()
                );
                bus.connected();
            }
            delay = MIN_RETRY_DELAY;
            cluster.inner.presence_interval
        } else {
            if bus.is_up() {
                warn!(
                    "cluster bus lost a shard node={} retry_in={delay:?}",
                    cluster.node_id()
                );
                bus.down();
            }
            let wait = delay;
            delay = (delay * 2).min(max_delay);
            wait
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = recheck.notified() => {}
        }
    }
}

//! The bus: this node's one Redis pub/sub connection. Every event published
//! on any node arrives here, in seq order per channel, and goes to the
//! broker, which hands it to the channel actor of that channel if this node
//! runs one (otherwise it is dropped: nobody here listens).
//!
//! When the connection drops (or a ping goes unanswered) the node marks
//! itself not connected and reconnects with a wait that doubles from 100 ms
//! up to `cluster.max_reconnect_delay`. After each (re)subscription it tells
//! the broker ([`Broker::bus_resumed`]), and every channel actor reads what
//! it missed from the log: no event is lost to an outage of the bus.

use std::{sync::atomic::Ordering, time::Duration};

use futures_util::StreamExt;
use log::{debug, info, warn};

use super::{Cluster, ClusterError, log::parse_event_type};
use crate::{
    broker::{
        Broker,
        event::Epoch,
        log::{LogEntry, Record},
    },
    names::ChannelName,
};

/// First wait before reconnecting; doubled after each failure.
const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// Connects, forwards, reconnects, until the task is aborted.
pub async fn run(cluster: Cluster, broker: Broker) {
    let mut delay = MIN_RECONNECT_DELAY;
    let mut attempts = 0u32;
    loop {
        match listen(&cluster, &broker).await {
            Ok(()) => {
                delay = MIN_RECONNECT_DELAY;
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
        cluster.inner.bus_up.store(false, Ordering::Release);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(cluster.inner.max_reconnect_delay.max(MIN_RECONNECT_DELAY));
    }
}

/// One connection's life: subscribe, then forward until it breaks. `Ok`
/// when a subscribed connection ended, `Err` when none could be made.
async fn listen(cluster: &Cluster, broker: &Broker) -> Result<(), ClusterError> {
    let timeout = cluster.inner.command_timeout;
    let bus = cluster.keys().bus();
    let connect = async {
        let mut pubsub = cluster.inner.client.get_async_pubsub().await?;
        pubsub.subscribe(&bus).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    let pubsub = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| ClusterError::Timeout(timeout))??;
    let (mut sink, mut messages) = pubsub.split();
    cluster.inner.bus_up.store(true, Ordering::Release);
    info!(
        "cluster bus subscribed node={} channel={bus}",
        cluster.node_id()
    );
    broker.bus_resumed();
    let mut ping = tokio::time::interval(cluster.inner.presence_interval);
    ping.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { return Ok(()) };
                match parse(message.get_payload_bytes()) {
                    Some((channel, epoch, entry)) => broker.deliver(&channel, epoch, entry),
                    None => debug!("cluster bus message ignored reason=unreadable"),
                }
            }
            _ = ping.tick() => {
                // A Redis that stopped answering does not close the socket.
                // (A subscribed connection answers PING with an array, not
                // PONG: any answer will do.)
                let answered = tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await;
                if !matches!(answered, Ok(Ok(_))) {
                    return Ok(());
                }
            }
        }
    }
}

/// `<channel>\n<epoch>\n<seq>\n<ms>\n<type>\n<data>` (data may hold line breaks).
fn parse(payload: &[u8]) -> Option<(ChannelName, Epoch, LogEntry)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(6, '\n');
    let channel = ChannelName::parse_recorded(parts.next()?).ok()?;
    let epoch = Epoch::from_raw(parts.next()?.parse().ok()?);
    let seq = parts.next()?.parse().ok()?;
    let published_ms = parts.next()?.parse().ok()?;
    let event_type = parse_event_type(parts.next()?);
    let data = parts.next()?.to_owned();
    Some((
        channel,
        epoch,
        LogEntry {
            seq,
            published_ms,
            record: Record::plain(event_type, data),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bus message with line breaks in its data parses whole.
    #[test]
    fn parses_bus_message() {
        let (channel, _, entry) =
            parse(b"orders\n1700000000000001\n3\n99\nuser.created\nline 1\nline 2").unwrap();
        assert_eq!(channel.as_str(), "orders");
        assert_eq!(entry.seq, 3);
        assert_eq!(entry.record.data, "line 1\nline 2");
        assert_eq!(entry.record.event_type.unwrap().as_str(), "user.created");
        assert!(parse(b"bad channel\n1\n1\n1\n\nx").is_none());
    }
}

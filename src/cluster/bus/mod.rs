//! The bus: how a channel's events reach the nodes that have subscribers on
//! it. Every channel has its own pub/sub channel (`<prefix>{<channel>}:bus`,
//! see `keys`); a node subscribes to it while one of its channel actors
//! follows the channel ([`Bus::follow`]) and unsubscribes when none does,
//! so a node receives only the traffic of the channels it serves.
//!
//! Two transports carry it, one per kind of Redis:
//! - [`single`]: one RESP3 connection to one server (standalone, or the
//!   primary the sentinels name) with `SUBSCRIBE`; reconnects with backoff;
//! - [`sharded`]: the redis crate's cluster connection with `SSUBSCRIBE`,
//!   each subscription on its slot's shard (Redis ≥ 7 sharded pub/sub, so an
//!   event only crosses the shard that holds its channel).
//!
//! Both feed Redis' pushes to [`Bus::on_push`] and apply the wanted
//! subscriptions with [`Bus::changes`]. One pub/sub channel is not a
//! channel's: the cluster's control channel (`keys::control_channel`),
//! which every node follows for as long as it runs; its messages go to the
//! revocation task (`super::revoke`), not to the broker. A channel's bus
//! also carries its members' joins and leaves (JSON objects, see
//! `super::members`). A subscription is confirmed by a
//! push; a confirmation that no [`Bus::follow`] waits for (after a
//! reconnection, a failover or a slot migration) asks the channel to catch
//! up from the log, so a hand-over never loses an event.

pub mod sharded;
pub mod single;

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use log::debug;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{Notify, mpsc, oneshot};

use super::{
    ClusterError,
    keys::{Keys, control_channel},
    log::parse_event_type,
    members,
};
use crate::{
    broker::{
        Broker,
        event::Epoch,
        log::{LogEntry, Record},
    },
    names::ChannelName,
};

/// First wait before reconnecting or retrying a subscription; doubled
/// after each failure up to `cluster.max_reconnect_delay`.
pub const MIN_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Control messages that may wait for the revocation task; past it they
/// are dropped (with a warning): a revocation is also told to the hook
/// cache and ends streams as they reconnect through the hook, and nodes do
/// not send control messages faster than their HTTP clients revoke.
pub const CONTROL_QUEUE: usize = 1024;

/// This node's subscriptions: which channels it wants and what Redis has.
pub struct Bus {
    keys: Keys,
    routes: Mutex<Routes>,
    /// Wakes the transport's subscriber: `routes.dirty` has work.
    changed: Notify,
    /// The transport is connected (for readiness and catch-up retries).
    up: AtomicBool,
    /// How long a [`Self::follow`] waits for Redis' confirmation.
    timeout: Duration,
    /// The control channel's pub/sub name.
    control: String,
    /// Where control messages go (see [`Self::take_control`]).
    control_tx: mpsc::Sender<Vec<u8>>,
    /// The other end, until the revocation task takes it.
    control_rx: Mutex<Option<mpsc::Receiver<Vec<u8>>>>,
    /// This node's id: its own presence announcements are not announced
    /// again (see `super::members`).
    node_id: String,
}

#[derive(Default)]
struct Routes {
    /// Channels this node follows, with how many channel actors asked (a
    /// retiring actor and its successor may overlap).
    wanted: HashMap<ChannelName, Wanted>,
    /// Channels whose subscription was sent on the current connection.
    requested: HashSet<ChannelName>,
    /// Channels whose subscription Redis confirmed on it.
    confirmed: HashSet<ChannelName>,
    /// Channels whose `wanted` and `requested` may disagree.
    dirty: HashSet<ChannelName>,
}

#[derive(Default)]
struct Wanted {
    followers: usize,
    /// Follows waiting for the confirmation.
    waiters: Vec<oneshot::Sender<()>>,
}

/// What a push meant for the connection it came on.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Handled,
    /// The library says a connection closed.
    Disconnected,
}

impl Bus {
    pub fn new(keys: Keys, timeout: Duration, node_id: String) -> Self {
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        Self {
            node_id,
            control: keys.control(),
            control_tx,
            control_rx: Mutex::new(Some(control_rx)),
            keys,
            routes: Mutex::new(Routes::default()),
            changed: Notify::new(),
            up: AtomicBool::new(false),
            timeout,
        }
    }

    /// The control messages the bus receives, for the one task that
    /// handles them (`None` once taken).
    pub fn take_control(&self) -> Option<mpsc::Receiver<Vec<u8>>> {
        self.control_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One more follower of `channel`; resolves once Redis confirmed the
    /// subscription (at once when it had), or fails after the command
    /// timeout (the subscription goes on being tried meanwhile).
    pub fn follow(
        &self,
        channel: &ChannelName,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        {
            let mut routes = self.routes();
            let confirmed = routes.confirmed.contains(channel);
            let wanted = routes.wanted.entry(channel.clone()).or_default();
            wanted.followers += 1;
            if confirmed {
                let _ = tx.send(());
            } else {
                wanted.waiters.push(tx);
            }
            routes.dirty.insert(channel.clone());
        }
        self.changed.notify_one();
        let (timeout, channel) = (self.timeout, channel.clone());
        async move {
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(ClusterError::Bus(format!(
                    "the subscription to channel {channel} was not confirmed within {timeout:?}"
                ))),
            }
        }
    }

    /// One follower of `channel` less; the last one's leaving unsubscribes.
    pub fn unfollow(&self, channel: &ChannelName) {
        {
            let mut routes = self.routes();
            let Some(wanted) = routes.wanted.get_mut(channel) else {
                return;
            };
            wanted.followers = wanted.followers.saturating_sub(1);
            if wanted.followers > 0 {
                return;
            }
            routes.wanted.remove(channel);
            routes.dirty.insert(channel.clone());
        }
        self.changed.notify_one();
    }

    /// Waits until [`Self::changes`] may have work.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The subscriptions to send now (marked as sent) and those to drop.
    pub fn changes(&self) -> (Vec<ChannelName>, Vec<ChannelName>) {
        let mut routes = self.routes();
        let (mut add, mut drop) = (Vec::new(), Vec::new());
        for channel in std::mem::take(&mut routes.dirty) {
            match (
                routes.wanted.contains_key(&channel),
                routes.requested.contains(&channel),
            ) {
                (true, false) => add.push(channel),
                (false, true) => drop.push(channel),
                _ => {}
            }
        }
        for channel in &add {
            routes.requested.insert(channel.clone());
        }
        for channel in &drop {
            routes.requested.remove(channel);
            routes.confirmed.remove(channel);
        }
        (add, drop)
    }

    /// Subscribing to `channels` failed: they are to be tried again.
    pub fn failed(&self, channels: &[ChannelName]) {
        let mut routes = self.routes();
        for channel in channels {
            routes.requested.remove(channel);
            routes.dirty.insert(channel.clone());
        }
    }

    /// A connection is up and has no subscription yet: every wanted channel
    /// is to be subscribed (its confirmation makes it catch up).
    pub fn connected(&self) {
        self.reset();
        self.up.store(true, Ordering::Release);
    }

    /// The connection was lost: what it had subscribed is gone.
    pub fn lost(&self) {
        self.down();
        self.reset();
    }

    /// Not connected for now (a shard of a Redis Cluster could not be
    /// reached); [`Self::connected`] says when it is again.
    pub fn down(&self) {
        self.up.store(false, Ordering::Release);
    }

    fn reset(&self) {
        {
            let mut routes = self.routes();
            routes.requested.clear();
            routes.confirmed.clear();
            routes.dirty = routes.wanted.keys().cloned().collect();
        }
        self.changed.notify_one();
    }

    /// The pub/sub names of `channels`.
    pub fn names(&self, channels: &[ChannelName]) -> Vec<String> {
        channels.iter().map(|c| self.keys.bus(c)).collect()
    }

    /// One push from Redis: events go to the broker, confirmations settle
    /// the subscriptions.
    pub fn on_push(&self, push: PushInfo, broker: &Broker) -> Pushed {
        let name = || match push.data.first() {
            Some(Value::BulkString(name)) => std::str::from_utf8(name)
                .ok()
                .and_then(|name| self.keys.channel_of_bus(name)),
            _ => None,
        };
        match push.kind {
            PushKind::Message | PushKind::SMessage if self.is_control(&push) => {
                if let Some(Value::BulkString(payload)) = push.data.get(1)
                    && self.control_tx.try_send(payload.clone()).is_err()
                {
                    log::warn!("cluster control message dropped reason=queue-full");
                }
            }
            PushKind::Message | PushKind::SMessage => match push.data.get(1) {
                Some(Value::BulkString(payload))
                    if name().is_some_and(|channel| {
                        members::on_bus(&channel, payload, &self.node_id, broker)
                    }) => {}
                Some(Value::BulkString(payload)) => match parse(payload) {
                    Some((channel, epoch, entries)) => broker.deliver(&channel, epoch, entries),
                    None => debug!("cluster bus message ignored reason=unreadable"),
                },
                _ => debug!("cluster bus message ignored reason=no-payload"),
            },
            PushKind::Subscribe | PushKind::SSubscribe => {
                if let Some(channel) = name() {
                    self.confirmed(channel, broker);
                }
            }
            PushKind::Unsubscribe | PushKind::SUnsubscribe => {
                if let Some(channel) = name() {
                    self.unsubscribed(channel);
                }
            }
            PushKind::Disconnection => return Pushed::Disconnected,
            _ => {}
        }
        Pushed::Handled
    }

    /// Whether a message push came on the control channel.
    fn is_control(&self, push: &PushInfo) -> bool {
        matches!(push.data.first(), Some(Value::BulkString(name)) if *name == self.control.as_bytes())
    }

    /// Redis confirmed a subscription: the follows waiting for it go on;
    /// with none waiting (a resubscription), the channel catches up (the
    /// control channel has no log to catch up on).
    fn confirmed(&self, channel: ChannelName, broker: &Broker) {
        let waiters = {
            let mut routes = self.routes();
            let Some(wanted) = routes.wanted.get_mut(&channel) else {
                // Unfollowed meanwhile: the subscriber drops it.
                return;
            };
            let waiters = std::mem::take(&mut wanted.waiters);
            routes.requested.insert(channel.clone());
            routes.confirmed.insert(channel.clone());
            waiters
        };
        let woken = waiters.into_iter().filter_map(|w| w.send(()).ok()).count();
        if woken == 0 && channel != control_channel() {
            broker.catch_up(&channel);
        }
    }

    /// A subscription ended: asked for, or by Redis (the slot moved to
    /// another shard), in which case it is made again where the slot is now.
    fn unsubscribed(&self, channel: ChannelName) {
        let again = {
            let mut routes = self.routes();
            routes.confirmed.remove(&channel);
            routes.requested.remove(&channel);
            let again = routes.wanted.contains_key(&channel);
            if again {
                routes.dirty.insert(channel);
            }
            again
        };
        if again {
            self.changed.notify_one();
        }
    }
}

/// One bus message: the events of one append.
///
/// `<channel>\n<epoch>\n<first seq>\n<ms>\n<count>`, then per event
/// `\n<type>\n<data length in bytes>\n<data>` (data may hold line breaks).
pub fn parse(payload: &[u8]) -> Option<(ChannelName, Epoch, Vec<LogEntry>)> {
    let mut rest = payload;
    let channel = ChannelName::parse_recorded(line(&mut rest)?).ok()?;
    let epoch = Epoch::from_raw(line(&mut rest)?.parse().ok()?);
    let first: u64 = line(&mut rest)?.parse().ok()?;
    let published_ms: u64 = line(&mut rest)?.parse().ok()?;
    let count: u64 = line(&mut rest)?.parse().ok()?;
    let end = first.checked_add(count)?;
    let mut entries = Vec::with_capacity(count.min(1024) as usize);
    for seq in first..end {
        let event_type = parse_event_type(line(&mut rest)?);
        let len: usize = line(&mut rest)?.parse().ok()?;
        let data = std::str::from_utf8(rest.get(..len)?).ok()?.to_owned();
        rest = &rest[len..];
        if seq + 1 < end {
            rest = rest.strip_prefix(b"\n")?;
        }
        entries.push(LogEntry {
            seq,
            published_ms,
            record: Record::plain(event_type, data),
        });
    }
    rest.is_empty().then_some((channel, epoch, entries))
}

/// The text up to the next line break, which is consumed too.
fn line<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    let end = memchr::memchr(b'\n', rest)?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    *rest = &rest[end + 1..];
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bus message of two events, one with line breaks in its data, parses whole.
    #[test]
    fn parses_bus_message() {
        let (channel, epoch, entries) =
            parse(b"orders\n1700000000000001\n3\n99\n2\nuser.created\n13\nline 1\nline 2\n\n1\nx")
                .unwrap();
        assert_eq!(channel.as_str(), "orders");
        assert_eq!(epoch.raw(), 1_700_000_000_000_001);
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].seq, entries[1].seq), (3, 4));
        assert_eq!(entries[0].record.data, "line 1\nline 2");
        assert_eq!(
            entries[0].record.event_type.as_ref().unwrap().as_str(),
            "user.created"
        );
        assert!(entries[1].record.event_type.is_none());
        assert_eq!(entries[1].record.data, "x");
        assert!(parse(b"bad channel\n1\n1\n1\n1\n\n1\nx").is_none());
        assert!(
            parse(b"orders\n1\n1\n1\n2\n\n1\nx").is_none(),
            "one event short"
        );
        assert!(
            parse(b"orders\n1\n1\n1\n1\n\n5\nx").is_none(),
            "data too short"
        );
    }

    /// Following twice and unfollowing once keeps the subscription; the last unfollow drops it.
    #[tokio::test]
    async fn subscriptions_follow_the_followers() {
        let bus = Bus::new(Keys::new("sse:"), Duration::from_secs(1), "n1".into());
        let orders = ChannelName::parse("orders").unwrap();
        let first = bus.follow(&orders);
        let second = bus.follow(&orders);
        assert_eq!(bus.changes(), (vec![orders.clone()], vec![]));
        assert_eq!(bus.changes(), (vec![], vec![]), "sent once");
        {
            // What a confirmation push does, without a broker.
            let mut routes = bus.routes();
            routes.confirmed.insert(orders.clone());
            for waiter in std::mem::take(&mut routes.wanted.get_mut(&orders).unwrap().waiters) {
                let _ = waiter.send(());
            }
        }
        first.await.expect("confirmed");
        second.await.expect("confirmed");
        bus.follow(&orders).await.expect("already confirmed");
        bus.unfollow(&orders);
        bus.unfollow(&orders);
        assert_eq!(bus.changes(), (vec![], vec![]), "one follower is left");
        bus.unfollow(&orders);
        assert_eq!(bus.changes(), (vec![], vec![orders.clone()]));
        // After a lost connection every wanted channel is subscribed again.
        let _pending = bus.follow(&orders);
        bus.changes();
        bus.lost();
        assert_eq!(bus.changes(), (vec![orders], vec![]));
    }
}
